"""Qwen2.5-VL: dynamic resolution; one token per 2x2 merged 14-px patches; video on a temporal grid.

Tokens of an image or video with grid (t, h, w) come in raster order over (t, h/2, w/2); the model gives
them 3-D M-RoPE ids, which the hook keeps because it slices the (cos, sin) computed from them.
"""
from __future__ import annotations

import torch
from torch import nn

from ..geometry import grid_boxes
from .base import Family, feature_counts

QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


class Qwen2_5_VL(Family):
    name = "qwen2_5_vl"
    classes = ("Qwen2_5_VLForConditionalGeneration",)

    def describe(self, model: nn.Module, kind: str, call: dict, output) -> list[dict]:
        vc = model.config.vision_config
        thw = call.get("image_grid_thw" if kind == "image" else "video_grid_thw")
        counts = feature_counts(output)
        if thw is None or len(thw) != len(counts):
            return [{"count": n} for n in counts]
        m = vc.spatial_merge_size
        return [{"count": n, "thw": tuple(int(x) for x in g), "merge": m, "patch": vc.patch_size,
                 "temporal_patch": vc.temporal_patch_size} for n, g in zip(counts, thw.tolist())]

    def grid(self, info: dict) -> tuple[int, int, int] | None:
        if "thw" not in info:
            return None
        t, h, w = info["thw"]
        m = info["merge"]
        return (t, h // m, w // m) if t * (h // m) * (w // m) == info["count"] else None

    def boxes(self, model, info, size=None, processor=None):
        """Each token is one merged 28-px cell of the resized frame; frames give its first sampled frame."""
        g = self.grid(info)
        if g is None:
            return [None] * info["count"], None, size
        t, rows, cols = g
        cell = info["patch"] * info["merge"]
        view = (cols * cell, rows * cell)
        W, H = size if size is not None else view
        boxes = grid_boxes(rows, cols, 0, 0, W, H) * t
        frames = [ti * info["temporal_patch"] for ti in range(t) for _ in range(rows * cols)] if t > 1 else None
        return boxes, frames, (W, H)

    def tiny(self, seed: int = 0, attn_implementation: str = "sdpa", text_layers: int = 4):
        """A random tiny Qwen2.5-VL (vision depth 2, text 4 layers) and its processor (image-only on CPU)."""
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        from ._tokenizer import make_tokenizer, image_processor
        torch.manual_seed(seed)
        tok = make_tokenizer(extra_special=SPECIAL, chat_template=QWEN_TEMPLATE)
        ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
        cfg = Qwen2_5_VLConfig(
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                               fullatt_block_indexes=[1]),
            text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                             num_hidden_layers=text_layers, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=1024,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                              "mrope_section": [2, 3, 3]},
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
        model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
        model.set_attn_implementation(attn_implementation)
        size = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16}
        ip = image_processor("Qwen2VLImageProcessor", size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
        return model, qwen_processor(ip, tok, size)


def qwen_processor(image_processor, tokenizer, size: dict):
    """Qwen2_5_VLProcessor with a video processor where torchvision exists, else image-only (processors.py)."""
    import transformers
    from .processors import with_video_if_possible
    return with_video_if_possible(
        transformers.Qwen2_5_VLProcessor,
        lambda: transformers.Qwen2VLVideoProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2),
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN_TEMPLATE)
