"""Analytic FLOP counts of a prefill: vision encoder + decoder layers, pruned after layer K.

A multiply-add counts 2 FLOPs. Counted: every matrix product (projections, MLPs, attention scores and
attention-weighted values, patch embedding, projector / merger, the LM head on the last token). Not
counted: norms, activations, softmax, RoPE, the selector itself (cheap next to the layers; it is timed).
Causal attention counts the lower triangle only (i attends to i + 1 keys), as flash/efficient kernels do.
"""
from __future__ import annotations


def decoder_layer_flops(text_cfg, n: int) -> int:
    """One decoder layer (GQA attention + gated MLP) over a causal prefill of n tokens."""
    h, inter = text_cfg.hidden_size, text_cfg.intermediate_size
    hq, hkv = text_cfg.num_attention_heads, text_cfg.num_key_value_heads
    d = getattr(text_cfg, "head_dim", None) or h // hq
    proj = 2 * n * h * (hq * d + 2 * hkv * d) + 2 * n * hq * d * h       # q, k, v, o
    mlp = 2 * n * 3 * h * inter                                          # gate, up, down
    attn = 2 * 2 * hq * d * (n * (n + 1) // 2)                           # q.k and p.v, causal half
    return proj + mlp + attn


def decoder_prefill_flops(text_cfg, n_full: int, n_kept: int | None = None, layer: int = 0) -> int:
    """Layers before `layer` at n_full tokens, layers from `layer` at n_kept, plus the LM head on one token."""
    n_kept = n_full if n_kept is None else n_kept
    n_layers = text_cfg.num_hidden_layers
    before = min(max(layer, 0), n_layers)
    head = 2 * text_cfg.hidden_size * text_cfg.vocab_size               # logits of the last token only
    return (before * decoder_layer_flops(text_cfg, n_full)
            + (n_layers - before) * decoder_layer_flops(text_cfg, n_kept) + head)


def siglip_flops(vision_cfg, n_images: int, projector_out: int | None = None) -> int:
    """SigLIP-style ViT (LLaVA-OneVision) over n_images crops/frames, plus the 2-layer MLP projector."""
    h, inter, p = vision_cfg.hidden_size, vision_cfg.intermediate_size, vision_cfg.patch_size
    n = (vision_cfg.image_size // p) ** 2
    embed = 2 * n * 3 * p * p * h
    layer = 2 * n * 4 * h * h + 2 * n * 2 * h * inter + 2 * 2 * n * n * h   # qkvo, fc1/fc2, full attention
    total = embed + vision_cfg.num_hidden_layers * layer
    if projector_out is not None:
        total += 2 * n * (h * projector_out + projector_out * projector_out)
    return n_images * total


def _qwen_windows(grid_h: int, grid_w: int, merge: int, window_units: int) -> list[int]:
    """Token counts (in patches) of the attention windows of one temporal slice (Qwen2.5-VL get_window_index)."""
    gh, gw = grid_h // merge, grid_w // merge
    sizes = []
    for r0 in range(0, gh, window_units):
        for c0 in range(0, gw, window_units):
            units = (min(r0 + window_units, gh) - r0) * (min(c0 + window_units, gw) - c0)
            sizes.append(units * merge * merge)
    return sizes


def qwen_vision_flops(vision_cfg, grid_thw: list[tuple[int, int, int]]) -> int:
    """Qwen2.5-VL window-attention ViT + patch merger over images/videos given by (t, h, w) patch grids."""
    h, inter, p = vision_cfg.hidden_size, vision_cfg.intermediate_size, vision_cfg.patch_size
    merge, tp = vision_cfg.spatial_merge_size, vision_cfg.temporal_patch_size
    window_units = vision_cfg.window_size // merge // p
    full_layers = set(vision_cfg.fullatt_block_indexes)
    out = vision_cfg.out_hidden_size
    total = 0
    for t, gh, gw in grid_thw:
        n = t * gh * gw
        total += 2 * n * 3 * tp * p * p * h                                       # conv3d patch embedding
        dense = 2 * n * 4 * h * h + 2 * n * 3 * h * inter                         # qkv + proj, gated MLP
        full_attn = 4 * h * t * (gh * gw) ** 2                                    # one block per temporal slice
        win_attn = 4 * h * t * sum(s * s for s in _qwen_windows(gh, gw, merge, window_units))
        for i in range(vision_cfg.depth):
            total += dense + (full_attn if i in full_layers else win_attn)
        m = n // (merge * merge)
        hm = h * merge * merge
        total += 2 * m * hm * hm + 2 * m * hm * out                               # merger MLP
    return total


def qwen3_vision_flops(vision_cfg, grid_thw: list[tuple[int, int, int]]) -> int:
    """Qwen3-VL ViT (full attention within each temporal slice, plain 2-matmul MLP) + the patch merger and
    one DeepStack merger per DeepStack layer, over images/videos given by (t, h, w) patch grids."""
    h, inter, p = vision_cfg.hidden_size, vision_cfg.intermediate_size, vision_cfg.patch_size
    merge, tp, out = vision_cfg.spatial_merge_size, vision_cfg.temporal_patch_size, vision_cfg.out_hidden_size
    mergers = 1 + len(vision_cfg.deepstack_visual_indexes)
    total = 0
    for t, gh, gw in grid_thw:
        n = t * gh * gw
        total += 2 * n * 3 * tp * p * p * h                                       # conv3d patch embedding
        layer = 2 * n * 4 * h * h + 2 * n * 2 * h * inter + 4 * h * t * (gh * gw) ** 2
        total += vision_cfg.depth * layer
        m, hm = n // (merge * merge), h * merge * merge
        total += mergers * (2 * m * hm * hm + 2 * m * hm * out)
    return total


def ideal_speedups(vision: int, dec_full: int, dec_pruned: int) -> dict[str, float]:
    """FLOP ratios unpruned / pruned: decoder prefill alone, and time to first token (vision included)."""
    return {"decoder": dec_full / dec_pruned, "ttft": (vision + dec_full) / (vision + dec_pruned)}


def tflops(x: int) -> float:
    return round(x / 1e12, 4)


__all__ = ["decoder_layer_flops", "decoder_prefill_flops", "siglip_flops", "qwen_vision_flops", "qwen3_vision_flops",
           "ideal_speedups", "tflops"]
