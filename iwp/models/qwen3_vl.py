"""Qwen3-VL: Qwen2.5-VL's token layout (one token per 2x2 merged patches, here 16 px) plus DeepStack.

DeepStack adds features of several vision layers into the hidden states at the visual positions, after
each of the first decoder layers. When the cut at layer K comes before the last of them, those additions
must follow the cut: the hook hands them the kept visual positions and the kept tokens' features only
(patch_instance). A video's frames sit between timestamp text, so its tokens are not one run.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import compat
from .qwen2_5_vl import QWEN_TEMPLATE, SPECIAL, Qwen2_5_VL


class Qwen3_VL(Qwen2_5_VL):
    name = "qwen3_vl"
    classes = ("Qwen3VLForConditionalGeneration",)

    def patch_instance(self, model: nn.Module, current_cut) -> list[tuple[object, str]]:
        """Make DeepStack's additions after layer K follow the cut; returns (object, attribute) to undo."""
        lm = compat.language_model(model)
        stock = compat.deepstack_process(lm)

        def process(hidden_states: Tensor, visual_pos_masks: Tensor, visual_embeds: Tensor):
            cut = current_cut()
            if cut is None or hidden_states.shape[1] == visual_pos_masks.shape[1]:
                return stock(hidden_states, visual_pos_masks, visual_embeds)
            return stock(hidden_states, *kept_deepstack(visual_pos_masks, visual_embeds, cut.idx, cut.valid))

        setattr(lm, compat.DEEPSTACK_PROCESS, process)
        return [(lm, compat.DEEPSTACK_PROCESS)]

    def tiny(self, seed: int = 0, attn_implementation: str = "sdpa", text_layers: int = 4):
        """A random tiny Qwen3-VL (vision depth 2 with DeepStack after layers 0 and 1 of 4) and its processor."""
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
        from ._tokenizer import image_processor, make_tokenizer
        torch.manual_seed(seed)
        tok = make_tokenizer(extra_special=SPECIAL, chat_template=QWEN_TEMPLATE)
        ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
        cfg = Qwen3VLConfig(
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                               patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                               deepstack_visual_indexes=[0, 1]),
            text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=text_layers,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                              "mrope_interleaved": True},
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
        model = Qwen3VLForConditionalGeneration(cfg).eval()
        model.set_attn_implementation(attn_implementation)
        size = {"shortest_edge": 64 * 64, "longest_edge": 32 * 32 * 16}
        ip = image_processor("Qwen2VLImageProcessor", size=size, patch_size=16, merge_size=2, temporal_patch_size=2)
        return model, qwen3_processor(ip, tok)


def kept_deepstack(visual_pos_masks: Tensor, visual_embeds: Tensor, idx: Tensor, valid: Tensor | None):
    """The visual mask over the kept positions idx [B, L'] and the features of the kept visual tokens.

    visual_embeds holds one row per visual token in row-major (prompt, position) order, as the mask's
    True entries; dummies (valid False) are never visual."""
    mask = visual_pos_masks.to(idx.device)                     # [B, L], one row per prompt, as idx
    rank = (mask.flatten().cumsum(0) - 1).view(mask.shape)      # each visual token's row in visual_embeds
    kept = mask.gather(1, idx)
    if valid is not None:
        kept = kept & valid
    return kept, visual_embeds[rank.gather(1, idx)[kept].to(visual_embeds.device)]


def qwen3_processor(image_processor, tokenizer):
    """Qwen3VLProcessor with a video processor where torchvision exists, else image-only (processors.py)."""
    import transformers
    from .processors import with_video_if_possible
    return with_video_if_possible(
        transformers.Qwen3VLProcessor,
        lambda: transformers.Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2),
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN_TEMPLATE)
