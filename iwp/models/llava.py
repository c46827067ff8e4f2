"""LLaVA-1.5 (and the embedded toy model): one square view per image, a g x g grid of patch tokens."""
from __future__ import annotations

import torch
from torch import nn

from ..geometry import Box, grid_boxes, square_view_boxes
from .base import Family, feature_counts


class Llava(Family):
    name = "llava"
    classes = ("LlavaForConditionalGeneration",)

    def describe(self, model: nn.Module, kind: str, call: dict, output) -> list[dict]:
        vc = model.config.vision_config
        side = vc.image_size // vc.patch_size
        return [{"count": n, "side": side, "view": vc.image_size, "cls": n == side * side + 1}
                for n in feature_counts(output)]

    def grid(self, info: dict) -> tuple[int, int, int] | None:
        s = info.get("side")
        return (1, s, s) if s and info["count"] == s * s else None

    def boxes(self, model, info, size=None, processor=None):
        """Boxes of the patch grid; the view is what the processor showed the model (crop, pad or squash)."""
        side, view = info.get("side"), info.get("view")
        if not side or info["count"] not in (side * side, side * side + 1):
            return [None] * info["count"], None, size
        region = (0.0, 0.0, float(view), float(view)) if size is None else \
            square_view_boxes(size[0], size[1], view, view_mode(processor))
        boxes: list[Box | None] = list(grid_boxes(side, side, *region))
        if info.get("cls"):
            boxes = [None] + boxes           # vision_feature_select_strategy="full" keeps CLS first
        return boxes, None, size if size is not None else (view, view)

    def tiny(self, seed: int = 0, attn_implementation: str = "sdpa", text_layers: int = 4):
        """A random tiny LLaVA (CLIP 28 px / patch 7 -> 16 image tokens, Llama text) and its processor."""
        from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                                  LlavaImageProcessor, LlavaProcessor)
        from ._tokenizer import CHAT_TEMPLATE, image_processor, make_tokenizer
        torch.manual_seed(seed)
        tok = make_tokenizer()
        vcfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=28, patch_size=7, projection_dim=32)
        tcfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=text_layers,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                           pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg, image_token_id=tok.convert_tokens_to_ids("<image>"),
                          vision_feature_layer=-2, vision_feature_select_strategy="default",
                          projector_hidden_act="gelu")
        cfg._attn_implementation = attn_implementation
        model = LlavaForConditionalGeneration(cfg).eval()
        model.set_attn_implementation(attn_implementation)
        ip = image_processor("LlavaImageProcessor", size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
        proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=7, vision_feature_select_strategy="default",
                              num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)
        return model, proc


def view_mode(processor) -> str:
    """How a LLaVA image processor turns an image into its square view: "pad", "crop" or "squash"."""
    ip = getattr(processor, "image_processor", processor)
    if ip is None:
        return "crop"                        # LLaVA-1.5's processor: shortest edge, centre crop
    if getattr(ip, "do_pad", False):
        return "pad"
    return "crop" if getattr(ip, "do_center_crop", True) else "squash"
