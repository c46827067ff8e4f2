"""LLaVA-OneVision: anyres images (base view + unpadded high-res grid, a newline after each row) and
video (each frame pooled to ceil(n/2)^2 tokens, one newline at the very end). Newline tokens are
visual tokens the selector may keep or drop; they have no box.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..geometry import Box, anyres_boxes, grid_boxes, square_view_boxes
from .base import Family, feature_counts


class LlavaOnevision(Family):
    name = "llava_onevision"
    classes = ("LlavaOnevisionForConditionalGeneration",)

    def describe(self, model: nn.Module, kind: str, call: dict, output) -> list[dict]:
        cfg = model.config
        crop, patch = cfg.vision_config.image_size, cfg.vision_config.patch_size
        counts = feature_counts(output)
        if kind == "video":
            pv = call.get("pixel_values_videos", call.get("pixel_values"))   # renamed after 5.17
            view = (int(pv.shape[-1]), int(pv.shape[-2])) if pv is not None else (crop, crop)
            s = math.ceil(crop // patch / 2)                                  # apply_pooling: ceil(n / 2)
            # the trailing newline is part of the features from 5.18 on; 5.17's forward appends it later
            counts = [n + 1 if n % (s * s) == 0 else n for n in counts]
            return [{"count": n, "frames": (n - 1) // (s * s) if (n - 1) % (s * s) == 0 else None,
                     "pooled": s, "view": view} for n in counts]
        sizes = call.get("image_sizes")
        if sizes is None or len(sizes) != len(counts):
            return [{"count": n} for n in counts]
        per_prompt = call.get("batch_num_images")
        patched = [True] * len(counts) if per_prompt is None else [int(k) == 1 for k in per_prompt for _ in range(int(k))]
        ratio = call.get("vision_aspect_ratio") or cfg.vision_aspect_ratio
        return [{"count": n, "image_size": (int(w), int(h)), "patched": p, "crop": crop, "patch": patch,
                 "pinpoints": cfg.image_grid_pinpoints, "max_num_patches": int(ratio.replace("anyres_max_", ""))}
                for n, (h, w), p in zip(counts, sizes.tolist(), patched)]

    def boxes(self, model, info, size=None, processor=None):
        """Images: anyres boxes in original pixels (OneVision receives the sizes). Video: the squashed frame."""
        n = info["count"]
        if "frames" in info and info["frames"]:
            T, s = info["frames"], info["pooled"]
            if n != T * s * s + 1:
                return [None] * n, None, size
            W, H = size if size is not None else info["view"]
            boxes: list[Box | None] = grid_boxes(s, s, 0, 0, W, H) * T + [None]
            return boxes, [f for f in range(T) for _ in range(s * s)] + [None], (W, H)
        if "image_size" not in info:
            return [None] * n, None, size
        W, H = info["image_size"]
        if info["patched"]:
            boxes = anyres_boxes(H, W, info["pinpoints"], info["crop"], info["patch"], info["max_num_patches"])
        else:                                   # multi-image prompts: padded to a square, one view + newline
            side = info["crop"] // info["patch"]
            boxes = grid_boxes(side, side, *square_view_boxes(W, H, info["crop"], "pad")) + [None]
        return (boxes if len(boxes) == n else [None] * n), None, (W, H)

    def tiny(self, seed: int = 0, attn_implementation: str = "sdpa", text_layers: int = 4):
        """A random tiny OneVision (SigLIP 28 px / patch 7: 16 tokens per crop, anyres_max_4; Qwen2 text)."""
        from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2Config,
                                  SiglipVisionConfig)
        from ._tokenizer import image_processor, make_tokenizer
        torch.manual_seed(seed)
        tok = make_tokenizer(extra_special=("<image>", "<video>"))
        pinpoints = [[28 * i, 28 * j] for i in range(1, 4) for j in range(1, 4)]
        vc = SiglipVisionConfig(image_size=28, patch_size=7, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=2)
        tc = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=text_layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        cfg = LlavaOnevisionConfig(vision_config=vc, text_config=tc, image_token_id=tok.convert_tokens_to_ids("<image>"),
                                   video_token_id=tok.convert_tokens_to_ids("<video>"), image_grid_pinpoints=pinpoints,
                                   vision_aspect_ratio="anyres_max_4", vision_feature_select_strategy="full",
                                   vision_feature_layer=-1)
        model = LlavaOnevisionForConditionalGeneration(cfg).eval()
        model.set_attn_implementation(attn_implementation)
        ip = image_processor("LlavaOnevisionImageProcessor", size={"height": 28, "width": 28},
                             image_grid_pinpoints=pinpoints)
        return model, onevision_processor(ip, tok, num_image_tokens=16, vision_aspect_ratio="anyres_max_4",
                                          video_size={"height": 28, "width": 28})


def onevision_processor(image_processor, tokenizer, num_image_tokens: int, vision_aspect_ratio: str,
                        video_size: dict):
    """LlavaOnevisionProcessor with a video processor where torchvision exists, else image-only (processors.py)."""
    import transformers
    from .processors import with_video_if_possible
    return with_video_if_possible(
        transformers.LlavaOnevisionProcessor, lambda: transformers.LlavaOnevisionVideoProcessor(size=video_size),
        image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template,
        num_image_tokens=num_image_tokens, vision_feature_select_strategy="full",
        vision_aspect_ratio=vision_aspect_ratio)
