"""Qwen3-VL: Qwen2.5-VL's token layout (merged 2x2 patches, now 16 px; 3-D M-RoPE, interleaved) plus
timestamps and DeepStack.

- Video: every temporal patch is its own `<t seconds> <|vision_start|> tokens <|vision_end|>` run, so one
  video's placeholders are several runs with text between them; they form one group (one budget over the
  video), its tokens in raster order over (t, h/2, w/2) as before. The timestamps are text, never pruned.
- DeepStack: after each of the first decoder layers, features from intermediate vision layers are added
  to the visual tokens' hidden states (`_deepstack_process(hidden, visual_pos_masks, embeds)`, one row of
  embeds per visual token in row-major order). Once layer K has cut the sequence, those additions must
  follow the kept tokens: the mask is cut like the sequence and the dropped tokens' rows are dropped.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import compat
from .qwen2_5_vl import QWEN_TEMPLATE, SPECIAL, Qwen2_5_VL


def kept_deepstack(visual_pos_masks: Tensor, embeds: Tensor, idx: Tensor, valid: Tensor | None
                   ) -> tuple[Tensor, Tensor]:
    """The DeepStack mask and rows after the cut: idx [B, L'] kept positions (valid False on dummies)."""
    rows = torch.full(visual_pos_masks.shape, -1, dtype=torch.long, device=visual_pos_masks.device)
    rows[visual_pos_masks] = torch.arange(embeds.shape[0], device=visual_pos_masks.device)
    kept = rows.gather(1, idx.to(rows.device).expand(rows.shape[0], -1))
    if valid is not None:
        kept = kept.masked_fill(~valid.to(kept.device), -1)
    mask = kept >= 0
    return mask, embeds[kept[mask].to(embeds.device)]


class _Unset:
    """A hook-handle look-alike that removes an instance attribute (iwp.remove calls .remove())."""

    def __init__(self, owner: nn.Module, name: str):
        self.owner, self.name = owner, name

    def remove(self) -> None:
        if self.name in vars(self.owner):
            delattr(self.owner, self.name)


class Qwen3VL(Qwen2_5_VL):
    name = "qwen3_vl"
    classes = ("Qwen3VLForConditionalGeneration",)

    def install(self, model: nn.Module, state) -> list:
        """Wrap this instance's DeepStack step so that, after the cut, it adds to the kept tokens only."""
        lm = self.language_model(model)
        original = compat.deepstack_process(lm)

        def deepstack(hidden_states, visual_pos_masks, visual_embeds):
            if visual_pos_masks is not None and hidden_states.shape[1] != visual_pos_masks.shape[1]:
                cut = state.cut
                if cut is None or cut.length != visual_pos_masks.shape[1]:
                    raise compat.unsupported("a DeepStack addition met a cut sequence iwp did not make")
                visual_pos_masks, visual_embeds = kept_deepstack(visual_pos_masks, visual_embeds, cut.idx,
                                                                 cut.valid)
            return original(hidden_states, visual_pos_masks, visual_embeds)

        setattr(lm, compat.DEEPSTACK_PROCESS, deepstack)
        return [_Unset(lm, compat.DEEPSTACK_PROCESS)]

    def tiny(self, seed: int = 0, attn_implementation: str = "sdpa", text_layers: int = 4):
        """A random tiny Qwen3-VL (vision depth 3, DeepStack after decoder layers 0-2; text 4 layers) and its
        processor (image-only on CPU)."""
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
        from ._tokenizer import image_processor, make_tokenizer
        torch.manual_seed(seed)
        tok = make_tokenizer(extra_special=SPECIAL, chat_template=QWEN_TEMPLATE)
        ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
        cfg = Qwen3VLConfig(
            vision_config=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                               patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                               num_position_embeddings=64, deepstack_visual_indexes=[0, 1, 2]),
            text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, head_dim=16,
                             num_hidden_layers=text_layers, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=1024,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                              "mrope_section": [2, 3, 3], "mrope_interleaved": True},
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
        model = Qwen3VLForConditionalGeneration(cfg).eval()
        model.set_attn_implementation(attn_implementation)
        size = {"shortest_edge": 64 * 64, "longest_edge": 32 * 32 * 16}
        ip = image_processor("Qwen2VLImageProcessor", size=size, patch_size=16, merge_size=2, temporal_patch_size=2)
        return model, qwen3_processor(ip, tok)


def qwen3_processor(image_processor, tokenizer):
    """Qwen3VLProcessor for images only (its video processor needs torchvision, absent on CPU here)."""
    from transformers import Qwen3VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen3Processor(Qwen3VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            self.vision_start_token, self.vision_end_token = "<|vision_start|>", "<|vision_end|>"
            self.vision_start_token_id = tokenizer.convert_tokens_to_ids(self.vision_start_token)
            self.vision_end_token_id = tokenizer.convert_tokens_to_ids(self.vision_end_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyQwen3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN_TEMPLATE)
