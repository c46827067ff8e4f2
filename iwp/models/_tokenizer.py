"""Helpers for the tiny test models: an in-memory character-level tokenizer, image processors; no hub."""
from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'video' %}<video>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %} {% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def make_tokenizer(extra_special: tuple[str, ...] = ("<image>",), vocab_words: int = 200,
                   chat_template: str = CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    """Printable characters, newline and words w0..w{n-1}, plus the given special tokens; left padding."""
    specials = ["<pad>", "<s>", "</s>", "<unk>", *extra_special]
    words = [chr(c) for c in range(32, 127)] + ["\n"] + [f"w{i}" for i in range(vocab_words)]
    vocab = {t: i for i, t in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")   # one token per character
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(specials))
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>", padding_side="left")
    out.chat_template = chat_template
    return out


def image_processor(name: str, **kwargs):
    """The torchvision image processor where torchvision works, else its PIL twin (without the warning)."""
    import transformers
    try:
        import torchvision  # noqa: F401
        return getattr(transformers, name)(**kwargs)
    except Exception:
        return (getattr(transformers, name + "Pil", None) or getattr(transformers, name))(**kwargs)
