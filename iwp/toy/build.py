"""The toy model's tokenizer, processor and LlavaForConditionalGeneration, built from configs alone."""
from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                          LlavaImageProcessor, LlavaProcessor, PreTrainedTokenizerFast)

from . import scenes, scenes2

# Images first, then the text of each user turn; "<sep>" opens the answer.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set parts = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set parts = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{% for part in parts %}{% if part['type'] == 'image' %}<image> {% endif %}{% endfor %}"
    "{% for part in parts %}{% if part['type'] == 'text' %}{{ part['text'] }} {% endif %}{% endfor %}"
    "{% elif message['role'] == 'assistant' %}"
    "<sep> {% for part in parts %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}</s> "
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<sep>{% endif %}"
)


def _spec(version: int):
    return scenes2 if version == 2 else scenes


def build_tokenizer(version: int = 1) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the scenes' WORDS; lowercases and drops punctuation so typed questions work."""
    words = {w: i for i, w in enumerate(_spec(version).WORDS)}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(),
                                           normalizers.Replace(Regex(r"[^a-z0-9]+"), " ")])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)   # joins words with spaces
    tok.add_special_tokens(scenes.SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", padding_side="left",
                                   model_max_length=512 if version == 1 else 8192,
                                   extra_special_tokens={"image_token": "<image>"})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(tokenizer: PreTrainedTokenizerFast | None = None, version: int = 1) -> LlavaProcessor:
    """Resize + centre-crop to the scenes' size, scale to [-1, 1]; expands <image> into GRID x GRID tokens
    (v1: 176 px, 121 tokens; v2: 336 px, 576 tokens as in LLaVA-1.5)."""
    scenes = _spec(version)
    tokenizer = tokenizer or build_tokenizer(version)
    size = scenes.IMAGE
    image_processor = LlavaImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                          image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=scenes.PATCH,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def build_config() -> LlavaConfig:
    """A one-layer CLIP vision tower (tokens stay local) and a 4-layer Llama decoder."""
    vision = CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=1, num_attention_heads=4,
                              image_size=scenes.IMAGE, patch_size=scenes.PATCH, projection_dim=128)
    text = LlamaConfig(vocab_size=len(scenes.WORDS), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=32, max_position_embeddings=1024,
                       pad_token_id=scenes.PAD, bos_token_id=scenes.BOS, eos_token_id=scenes.EOS,
                       tie_word_embeddings=False)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=scenes.IMAGE_TOKEN,
                       vision_feature_layer=-1, vision_feature_select_strategy="default",
                       projector_hidden_act="gelu", image_seq_length=scenes.GRID * scenes.GRID,
                       pad_token_id=scenes.PAD, bos_token_id=scenes.BOS, eos_token_id=scenes.EOS,
                       tie_word_embeddings=False)


def build_config_v2() -> LlavaConfig:
    """v2: a one-layer CLIP tower on 336 px / 14 px patches (576 tokens, as LLaVA-1.5) and an 8-layer Llama
    decoder (so K = 2 is early), narrow enough for 8-frame videos on 2 CPU cores."""
    s = scenes2
    vision = CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=1, num_attention_heads=4,
                              image_size=s.IMAGE, patch_size=s.PATCH, projection_dim=128)
    text = LlamaConfig(vocab_size=len(s.WORDS), hidden_size=192, intermediate_size=512, num_hidden_layers=8,
                       num_attention_heads=6, num_key_value_heads=2, head_dim=32, max_position_embeddings=8192,
                       pad_token_id=s.PAD, bos_token_id=s.BOS, eos_token_id=s.EOS, tie_word_embeddings=False)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=s.IMAGE_TOKEN,
                       vision_feature_layer=-1, vision_feature_select_strategy="default",
                       projector_hidden_act="gelu", image_seq_length=s.N_TOKENS,
                       pad_token_id=s.PAD, bos_token_id=s.BOS, eos_token_id=s.EOS, tie_word_embeddings=False)


def build_model(version: int = 1) -> LlavaForConditionalGeneration:
    """A freshly initialised toy model (v1 or v2) with greedy, short generation defaults."""
    model = LlavaForConditionalGeneration(build_config_v2() if version == 2 else build_config())
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = scenes.BOS, scenes.EOS, scenes.PAD
    gc.do_sample, gc.max_new_tokens = False, 4
    return model
