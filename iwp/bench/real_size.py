"""Speed at real model sizes: vision, prefill, decode and memory of unpruned vs pruned generate().

Real-size architectures are built from configs with random bf16 weights on the device (no download).
Inputs are tensors of the shapes the real processors produce (pixel values and text ids are random); the
visual-token counts follow the processors' rules (OneVision images: counted by the model's own encoder).
Every configuration (unpruned, and each method x keep ratio through the same iwp.apply hook) runs once
per round, in a shuffled order, all in one process; medians are taken after the warm-up rounds.
The arms: "none" is the unpatched model (iwp.remove restores it exactly), --keep-one adds IWP at keep
ratio 1.0 (the hook's cost when nothing is dropped), then each method x keep ratio below 1.
Both arms run the exact vision speed-ups of iwp.accelerate_vision (Qwen2.5-VL: one attention call per
window length; OneVision: channels-last video pooling, a vision tower that keeps only the layer it
reads), once their vision features are found bitwise equal to transformers' own on the prompt, on the
device; --stock-vision keeps transformers' vision side, --stock-pooling only its OneVision pooling. The
JSON's "vision_speed" says what ran, with the check and both vision times; "pooling" and
"vision_hidden_states" (OneVision) are as before. --inexact-vision adds, in both arms, the parts of
accelerate_vision(model, exact=False) that are NOT bitwise equal to stock (Qwen2.5-VL: "aligned_mlp");
"vision_speed" then lists them under "inexact", with their vision time and difference from stock.
Each row's "median" holds a breakdown per phase: before the vision encoder, vision, decoder layers before
K, the cut at K, layers from K (and the LM head), decode (ms per token and in all).

    python -m iwp.bench models --model-shape llava-onevision-7b --input video32 --json out.json
    python -m iwp.bench models --report assets/benchmarks/models-*.json --plot speed.png
    python -m iwp.bench models --model-shape qwen2.5-vl-3b --input image,video32 --keep-one --ratios 1.0,0.222,0.111
    python -m iwp.bench models --small --repeats 1 --warmup 0    (CPU dry run: tiny widths, real token counts)
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..clock import Clock
from . import flops

RATIOS = (1.0, 0.333, 0.222, 0.111)
METHODS = ("iwp", "fastv", "divprune", "random")
PHASES = ("pre_vision_ms", "layers_after_k_ms", "decode_ms", "decode_ms_per_token")   # medians added by issue 17
TARGETS = {"decoder_speedup": 4.5, "ttft_speedup": 2.2, "selection_share": 0.02}   # issue 7, at 11.1% kept
N_TEXT = (14, 49)          # text tokens before / after the visual tokens (63 in all, as in the reference)
DEFAULT_INPUTS = {         # input kind -> geometry, per model family
    "llava_onevision": {"image": {"size": (1080, 1920)}, "video32": {"frames": 32}},
    "qwen2_5_vl": {"image": {"size": (720, 1280)}, "video32": {"frames": 32, "size": (720, 1280), "fps": 2.0}},
    "qwen3_vl": {"image": {"size": (720, 1280)}, "video32": {"frames": 32, "size": (720, 1280), "fps": 2.0}},
}


# --------------------------------------------------------------------------------------------- shapes

SHAPES = ("llava-onevision-7b", "qwen2.5-vl-7b", "llava-onevision-0.5b", "qwen2.5-vl-3b", "qwen3-vl-8b")


def real_config(shape: str, small: bool = False):
    """The published architecture of a real-size model as a config (the builders of iwp.bench.configs); small:
    the same shapes at tiny widths."""
    from . import configs as realsize
    builders = {"llava-onevision-7b": realsize.onevision_config, "qwen2.5-vl-7b": realsize.qwen_config,
                "llava-onevision-0.5b": realsize.onevision_05b_config, "qwen2.5-vl-3b": realsize.qwen3b_config,
                "qwen3-vl-8b": realsize.qwen3_config}
    return builders[shape](small=small)


def family(model) -> str:
    kind = model.config.model_type
    if kind not in DEFAULT_INPUTS:
        raise ValueError(f"no benchmark inputs for model type {kind!r}")
    return kind


def build_model(config, device: str, dtype: torch.dtype = torch.bfloat16):
    """Random weights made directly on the device, sdpa attention."""
    from transformers import (LlavaOnevisionForConditionalGeneration, Qwen2_5_VLForConditionalGeneration,
                              Qwen3VLForConditionalGeneration)
    cls = {"llava_onevision": LlavaOnevisionForConditionalGeneration, "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
           "qwen3_vl": Qwen3VLForConditionalGeneration}[config.model_type]
    torch.manual_seed(0)
    with torch.device(device):
        model = cls._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.generation_config.pad_token_id = 0
    return model.eval()


# --------------------------------------------------------------------------------------------- inputs

@dataclass
class Prompt:
    """One benchmark input: generate() kwargs and what the FLOP model needs to know about it."""
    kind: str
    kwargs: dict
    n_total: int
    n_visual: int
    vision_flops: int
    geometry: dict = field(default_factory=dict)


def _text_ids(config, n: int, seed: int) -> torch.Tensor:
    """Random ordinary token ids (never one of the config's special multimodal ids)."""
    special = {getattr(config, a, None) for a in ("image_token_id", "video_token_id", "vision_start_token_id",
                                                 "vision_end_token_id")}
    vocab = config.text_config.vocab_size
    top = min([s for s in special if s is not None] + [vocab])
    high = top if top > 16 else vocab
    ids = torch.randint(1, high, (n,), generator=torch.Generator().manual_seed(seed))
    return torch.where(torch.isin(ids, torch.tensor([s for s in special if s is not None])), 1, ids)


def _ids(config, visual: list[int], seed: int = 0) -> torch.Tensor:
    pre, post = N_TEXT
    return torch.cat([_text_ids(config, pre, seed), torch.tensor(visual, dtype=torch.long),
                      _text_ids(config, post, seed + 1)])[None]


def _pooled(out) -> torch.Tensor:
    """The features of a get_*_features call, across transformers versions (tensor, list or output object)."""
    feats = getattr(out, "pooler_output", out)
    return torch.cat(list(feats)) if isinstance(feats, (list, tuple)) else feats.reshape(-1, feats.shape[-1])


def build_prompt(model, kind: str, geometry: dict | None = None, seed: int = 0) -> Prompt:
    """Inputs of the shapes the family's processor returns, for `kind` in ("image", "video32")."""
    fam = family(model)
    geo = dict(DEFAULT_INPUTS[fam][kind] if kind in DEFAULT_INPUTS[fam] else {})
    geo.update(geometry or {})
    builder = {"llava_onevision": _ov_prompt, "qwen2_5_vl": _qwen_prompt, "qwen3_vl": _qwen3_prompt}[fam]
    return builder(model, kind, geo, seed)


def _ov_prompt(model, kind: str, geo: dict, seed: int) -> Prompt:
    from transformers.image_processing_utils import select_best_resolution
    cfg, dev, dt = model.config, model.device, model.dtype
    side = cfg.vision_config.image_size
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        if kind == "image":
            h, w = geo["size"]
            best_h, best_w = select_best_resolution((h, w), cfg.image_grid_pinpoints)
            crops = 1 + (best_h // side) * (best_w // side)
            pv = torch.randn(1, crops, 3, side, side, generator=gen).to(dev, dt)
            sizes = torch.tensor([[h, w]], device=dev)
            n_vis = _pooled(model.model.get_image_features(pixel_values=pv, image_sizes=sizes)).shape[0]
            ids = _ids(cfg, [cfg.image_token_id] * n_vis, seed).to(dev)
            kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pv, image_sizes=sizes)
            geometry = {"image_size": [h, w], "crops": crops, "grid": [best_h // side, best_w // side]}
        else:
            frames = geo["frames"]
            crops = frames
            pv = torch.randn(1, frames, 3, side, side, generator=gen).to(dev, dt)
            # frames x pooled grid + one newline (LlavaOnevisionProcessor's count); counted, not read off
            # get_video_features, which appends the newline only from transformers 5.18 on
            n_vis = frames * math.ceil(side // cfg.vision_config.patch_size / 2) ** 2 + 1
            ids = _ids(cfg, [cfg.video_token_id] * n_vis, seed).to(dev)
            kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=pv)
            geometry = {"frames": frames, "frame_size": [side, side]}
    vis = flops.siglip_flops(cfg.vision_config, crops, projector_out=cfg.text_config.hidden_size)
    return Prompt(kind, kwargs, ids.shape[1], n_vis, vis, geometry)


def smart_resize(h: int, w: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize rule (multiples of factor, pixel count clamped); transformers' copy needs torchvision."""
    rh, rw = max(factor, round(h / factor) * factor), max(factor, round(w / factor) * factor)
    if rh * rw > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        rh = max(factor, math.floor(h / beta / factor) * factor)
        rw = max(factor, math.floor(w / beta / factor) * factor)
    elif rh * rw < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        rh, rw = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return rh, rw


def _qwen_prompt(model, kind: str, geo: dict, seed: int) -> Prompt:
    cfg, dev, dt = model.config, model.device, model.dtype
    vc = cfg.vision_config
    p, merge, tp = vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size
    h, w = geo["size"]
    if kind == "image":                     # Qwen2VLImageProcessor defaults
        rh, rw = smart_resize(h, w, factor=p * merge, min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
        t = 1
    else:                                   # Qwen2VLVideoProcessor defaults, frames sampled at geo["fps"]
        rh, rw = smart_resize(h, w, factor=p * merge, min_pixels=128 * 28 * 28, max_pixels=768 * 28 * 28)
        t = math.ceil(geo["frames"] / tp)
    grid = (t, rh // p, rw // p)
    n_patch = grid[0] * grid[1] * grid[2]
    n_vis = n_patch // merge ** 2
    pv = torch.randn(n_patch, 3 * tp * p * p, generator=torch.Generator().manual_seed(seed)).to(dev, dt)
    token = cfg.image_token_id if kind == "image" else cfg.video_token_id
    ids = _ids(cfg, [cfg.vision_start_token_id] + [token] * n_vis + [cfg.vision_end_token_id], seed).to(dev)
    kwargs = _qwen_batch(ids, token, kind, pv, torch.tensor([grid], device=dev))
    if kind == "image":
        geometry = {"image_size": [h, w], "resized": [rh, rw], "grid_thw": list(grid)}
    else:
        kwargs.update(second_per_grid_ts=torch.tensor([tp / geo["fps"]], device=dev))
        geometry = {"frames": geo["frames"], "frame_size": [h, w], "resized": [rh, rw], "grid_thw": list(grid)}
    return Prompt(kind, kwargs, ids.shape[1], n_vis, flops.qwen_vision_flops(vc, [grid]), geometry)


def _qwen_batch(ids, token: int, kind: str, pv, thw) -> dict:
    """generate() kwargs of a Qwen-family prompt: ids, mask, M-RoPE token types (1 image, 2 video), pixels, grid."""
    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                  mm_token_type_ids=torch.where(ids == token, 1 if kind == "image" else 2, 0))
    if kind == "image":
        return {**kwargs, "pixel_values": pv, "image_grid_thw": thw}
    return {**kwargs, "pixel_values_videos": pv, "video_grid_thw": thw}


N_TIMESTAMP = 6            # text tokens of one Qwen3-VL timestamp, e.g. "<1.0 seconds>"


def _qwen3_prompt(model, kind: str, geo: dict, seed: int) -> Prompt:
    """Qwen3-VL: Qwen3VLProcessor's published defaults (image: 65536-16777216 pixels; video: 4096-25165824
    pixels over all frames), factor 32; a video is one `<timestamp> <vision_start> tokens <vision_end>` run
    per temporal patch, which is what its M-RoPE ids (one frame each) are computed from."""
    cfg, dev, dt = model.config, model.device, model.dtype
    vc = cfg.vision_config
    p, merge, tp = vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size
    h, w = geo["size"]
    factor = p * merge
    if kind == "image":
        rh, rw = smart_resize(h, w, factor=factor, min_pixels=65536, max_pixels=16777216)
        t = 1
    else:                                   # Qwen3VLVideoProcessor.smart_resize bounds all frames' pixels
        frames = geo["frames"]
        rh, rw = smart_resize(h, w, factor=factor, min_pixels=4096 // frames, max_pixels=25165824 // frames)
        t = math.ceil(frames / tp)
    grid = (t, rh // p, rw // p)
    n_patch = grid[0] * grid[1] * grid[2]
    per_frame = grid[1] * grid[2] // merge ** 2
    pv = torch.randn(n_patch, 3 * tp * p * p, generator=torch.Generator().manual_seed(seed)).to(dev, dt)
    token = cfg.image_token_id if kind == "image" else cfg.video_token_id
    visual = []
    for f in range(t):
        stamp = _text_ids(cfg, N_TIMESTAMP, seed + 100 + f).tolist() if kind != "image" else []
        visual += stamp + [cfg.vision_start_token_id] + [token] * per_frame + [cfg.vision_end_token_id]
    ids = _ids(cfg, visual, seed).to(dev)
    kwargs = _qwen_batch(ids, token, kind, pv, torch.tensor([grid], device=dev))
    if kind == "image":
        geometry = {"image_size": [h, w], "resized": [rh, rw], "grid_thw": list(grid)}
    else:
        geometry = {"frames": geo["frames"], "frame_size": [h, w], "resized": [rh, rw], "grid_thw": list(grid),
                    "timestamp_tokens": N_TIMESTAMP * t}
    return Prompt(kind, kwargs, ids.shape[1], t * per_frame, flops.qwen3_vision_flops(vc, [grid]), geometry)


# --------------------------------------------------------------------------------------------- timing

class Probe:
    """Timestamps at the stage boundaries of one generate() call: CUDA events on a GPU, host clocks on CPU.

    Marks (first occurrence per call unless noted): vision (encoder starts), decoder (language model
    starts), before_k (layer K-1 done), at_k (layer K's attention starts: scoring, selection and slicing
    are behind it), logits (every LM-head call). On a GPU it also splits the memory peak at the decoder
    mark: `peaks["vision"]` is the peak from the start of the call to the decoder start (vision encoder,
    projector, merge), and the allocator's peak is reset there so that what it reads at the end is the
    decoder's own (prefill, KV cache, decoding).
    """

    def __init__(self, model, layer: int):
        self.cuda = model.device.type == "cuda"
        self.device = model.device
        self.clock = Clock(self.device)             # the library's clock: CUDA events, or the host clock
        self.marks: dict[str, list] = {}
        self.peaks: dict[str, int] = {}
        inner = model.model
        vision = next(getattr(inner, a) for a in ("vision_tower", "visual", "vision_model") if hasattr(inner, a))
        lm = inner.language_model
        layers = lm.layers
        self.handles = [vision.register_forward_pre_hook(lambda *a: self.mark("vision", first=True)),
                        lm.register_forward_pre_hook(lambda *a: self.mark("decoder", first=True)),
                        model.get_output_embeddings().register_forward_hook(lambda *a: self.mark("logits"))]
        if 0 < layer < len(layers):
            self.handles.append(layers[layer - 1].register_forward_hook(
                lambda *a: self.mark("before_k", first=True)))
        if 0 <= layer < len(layers):   # inside layer K, so after the pruning hook's own pre-hook on the layer
            self.handles.append(layers[layer].self_attn.register_forward_pre_hook(
                lambda *a: self.mark("at_k", first=True)))

    def _now(self) -> int:
        return self.clock.mark()

    def mark(self, name: str, first: bool = False) -> None:
        if first and name in self.marks:
            return
        self.marks.setdefault(name, []).append(self._now())
        if name == "decoder" and self.cuda:              # allocator bookkeeping on the host: no device sync
            self.peaks["vision"] = torch.cuda.max_memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def reset(self) -> None:
        self.marks, self.peaks = {}, {}
        self.clock.marks.clear()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peaks_gb(self) -> dict:
        """Peak GB before the decoder, from the decoder start to now, and over the whole call (None on CPU)."""
        if not self.cuda:
            return {"vision_peak_gb": None, "decoder_peak_gb": None, "peak_mem_gb": None}
        decoder = torch.cuda.max_memory_allocated(self.device)
        vision = self.peaks.get("vision", decoder)
        return {"vision_peak_gb": vision / 2**30, "decoder_peak_gb": decoder / 2**30,
                "peak_mem_gb": max(vision, decoder) / 2**30}

    def ms(self, a: int, b: int) -> float:
        return self.clock.seconds(a, b) * 1e3

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _sync(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def parse_method(spec: str) -> tuple[str, dict]:
    """"iwp" -> ("iwp", {}); "iwp:first_chunk=8:growth=4" -> ("iwp", {"first_chunk": 8, "growth": 4.0})."""
    name, *pairs = spec.split(":")
    params = {}
    for pair in pairs:
        key, value = pair.split("=")
        params[key] = int(value) if value.lstrip("-").isdigit() else float(value)
    return name, params


def configure(model, method: str | None, keep_ratio: float, layer: int) -> None:
    """Unpruned (method None): the plain model. Otherwise the iwp.apply hook with these settings."""
    import iwp
    if method is None:
        iwp.remove(model)
    else:
        name, params = parse_method(method)
        iwp.apply(model, keep_ratio=keep_ratio, method=name, layer=layer, **params)


def _kept_tokens(model, prompt: Prompt) -> tuple[int, float | None]:
    """Sequence length after pruning and the hook's own selection seconds, from iwp.last_selection."""
    import iwp
    sels = iwp.last_selection(model)
    if not sels:
        return prompt.n_total, None
    sel = sels[0]
    dropped = sum(len(g.positions) - len(g.kept) for g in sel.groups)
    return prompt.n_total - dropped, sel.seconds


def timed_generate(model, prompt: Prompt, probe: Probe, new_tokens: int) -> tuple[dict, torch.Tensor]:
    """One generate() of 1 + new_tokens tokens: stage times from the probe's marks (ms), decode tokens/s,
    and the output ids."""
    _sync(model)
    probe.reset()
    start = probe._now()
    with torch.no_grad():
        out = model.generate(**prompt.kwargs, max_new_tokens=1 + new_tokens, min_new_tokens=1 + new_tokens,
                             do_sample=False)
    end = probe._now()
    _sync(model)
    m = probe.marks
    logits = m["logits"]
    res = {
        "ttft_ms": probe.ms(start, logits[0]),
        "vision_ms": probe.ms(m["vision"][0], m["decoder"][0]) if "vision" in m else None,
        "decoder_prefill_ms": probe.ms(m["decoder"][0], logits[0]),
        "total_ms": probe.ms(start, end),
        "new_tokens": int(out.shape[1] - prompt.kwargs["input_ids"].shape[1]),
        "decode_tok_s": (len(logits) - 1) / (probe.ms(logits[0], logits[-1]) / 1e3) if len(logits) > 1 else None,
    }
    if len(logits) > 1:
        res["decode_ms"] = probe.ms(logits[0], logits[-1])
        res["decode_ms_per_token"] = res["decode_ms"] / (len(logits) - 1)
    if "vision" in m:
        res["pre_vision_ms"] = probe.ms(start, m["vision"][0])
    return res, out


def run_once(model, prompt: Prompt, probe: Probe, new_tokens: int) -> dict:
    """timed_generate's times, the gap at layer K, and the memory peaks in GB."""
    res, _ = timed_generate(model, prompt, probe, new_tokens)
    m = probe.marks
    if "at_k" in m:   # the gap where the hook scores, selects and slices (layer K-1 done -> layer K starts)
        res["layer_k_gap_ms"] = probe.ms(m.get("before_k", m["decoder"])[0], m["at_k"][0])
        res["layers_before_k_ms"] = probe.ms(m["decoder"][0], m.get("before_k", m["decoder"])[0])
        res["layers_after_k_ms"] = probe.ms(m["at_k"][0], m["logits"][0])     # layers K.. and the LM head
    res.update(probe.peaks_gb())
    return res


def _median(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


STOCK_ARM = "none-stock-vision"


def bench(model, prompt: Prompt, ratios=RATIOS, methods=METHODS, layer: int = 2, repeats: int = 3,
          warmup: int = 1, new_tokens: int = 16, time_budget: float | None = None, log=print,
          on_round=None, keep_one: bool = False, stock_arm=None) -> list[dict]:
    """All configurations, interleaved round by round; returns one summary row per configuration: the unpatched
    model ("none", when 1.0 is among the ratios), IWP at keep ratio 1.0 (keep_one), each method x ratio < 1.
    stock_arm: (to_stock, to_fast) callables that switch the vision side; adds the unpatched model with
    transformers' own vision ("none-stock-vision"), so stock vs accelerated + pruned is a ratio of one run."""
    confs = [(None, 1.0)] if 1.0 in ratios else []
    confs += [(STOCK_ARM, 1.0)] if stock_arm is not None else []
    confs += [("iwp", 1.0)] if keep_one else []
    confs += [(m, r) for r in ratios if r < 1.0 for m in methods]
    vision_stock = False
    rows = {c: {"method": c[0] or "none", "keep_ratio": c[1], "samples": [], "kept": [], "selection_s": [],
                "error": None} for c in confs}
    probe = Probe(model, layer)
    t0 = time.perf_counter()
    try:
        for rnd in range(warmup + repeats):
            if time_budget is not None and rnd > warmup and time.perf_counter() - t0 > time_budget:
                log(f"time budget reached after {rnd - warmup} measured rounds")
                break
            order = list(confs)
            random.Random(rnd).shuffle(order)          # no configuration always follows the same neighbour
            for conf in order:
                row = rows[conf]
                if row["error"]:
                    continue
                try:
                    if stock_arm is not None and (conf[0] == STOCK_ARM) != vision_stock:
                        vision_stock = conf[0] == STOCK_ARM
                        stock_arm[0 if vision_stock else 1]()
                    configure(model, None if conf[0] == STOCK_ARM else conf[0], conf[1], layer)
                    res = run_once(model, prompt, probe, new_tokens)
                    pruned = conf[0] not in (None, STOCK_ARM)
                    n_kept, sel_s = _kept_tokens(model, prompt) if pruned else (prompt.n_total, None)
                except Exception as e:                   # OOM or a failure: record it, go on with the others
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    log(f"{row['method']} @ {conf[1]}: {row['error']}")
                    continue
                if rnd >= warmup:
                    row["samples"].append(res)
                    row["kept"].append(n_kept)
                    row["selection_s"].append(sel_s)
                log(f"round {rnd}{' (warm-up)' if rnd < warmup else ''} {row['method']:>8} @ {conf[1]:.3f}: "
                    f"ttft {res['ttft_ms']:.1f} ms, decoder {res['decoder_prefill_ms']:.1f} ms, kept {n_kept}")
            if on_round is not None:
                on_round(summarize(model, prompt, list(rows.values()), layer))
    finally:
        probe.remove()
        configure(model, None, 1.0, layer)
        if vision_stock:
            stock_arm[1]()
    return summarize(model, prompt, list(rows.values()), layer)


def summarize(model, prompt: Prompt, rows: list[dict], layer: int) -> list[dict]:
    """Medians per configuration, analytic FLOPs, speed-ups against the unpruned row, measured / ideal."""
    tc = model.config.text_config
    dec_full = flops.decoder_prefill_flops(tc, prompt.n_total)
    out = []
    for row in rows:
        s = row["samples"]
        med = {k: _median(s, k) for k in ("vision_ms", "ttft_ms", "decoder_prefill_ms", "layer_k_gap_ms",
                                          "layers_before_k_ms", "decode_tok_s", "peak_mem_gb", "vision_peak_gb",
                                          "decoder_peak_gb", "total_ms", *PHASES)}
        sel = [x for x in row["selection_s"] if x is not None]
        med["selection_ms"] = statistics.median(sel) * 1e3 if sel else None
        n_kept = int(statistics.median(row["kept"])) if row["kept"] else None
        entry = {"method": row["method"], "keep_ratio": row["keep_ratio"], "error": row["error"],
                 "repeats": len(s), "n_tokens": n_kept, "median": med, "samples": s}
        if n_kept is not None:
            unpruned = row["method"] in ("none", STOCK_ARM)
            dec = flops.decoder_prefill_flops(tc, prompt.n_total, n_kept, 0 if unpruned else layer)
            entry["flops"] = {"vision_tflop": flops.tflops(prompt.vision_flops), "decoder_tflop": flops.tflops(dec)}
            entry["ideal"] = flops.ideal_speedups(prompt.vision_flops, dec_full, dec)
        out.append(entry)
    base = next((r for r in out if r["method"] == "none" and r["repeats"]), None)
    for r in out:
        if base is None or not r["repeats"]:
            continue
        b, m = base["median"], r["median"]
        r["speedup"] = {"decoder": b["decoder_prefill_ms"] / m["decoder_prefill_ms"],
                        "ttft": b["ttft_ms"] / m["ttft_ms"]}
        r["efficiency"] = {k: r["speedup"][k] / r["ideal"][k] for k in ("decoder", "ttft")}
    return out


# --------------------------------------------------------------------------------------------- pooling

def _pooling_input(model, pixel_values_videos: torch.Tensor) -> torch.Tensor:
    """The projected frame features that get_video_features hands to apply_pooling, for this video."""
    seen = []
    hook = model.model.multi_modal_projector.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        with torch.no_grad():
            model.model.get_video_features(pixel_values_videos)
    finally:
        hook.remove()
    return seen[0]


def time_ms(fn, repeats: int, device) -> float:
    """Median time of fn() in ms after one warm-up call: CUDA events on a GPU, the host clock on CPU."""
    cuda = torch.device(device).type == "cuda"
    times = []
    with torch.no_grad():
        fn()
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize(device)
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _time_ms(model, fn, repeats: int) -> float:
    return time_ms(fn, repeats, model.device)


def set_pooling(model, prompt: Prompt, stock: bool = False, repeats: int = 5) -> dict | None:
    """OneVision video: whether the channels-last pooling (iwp.vision_speed) is bitwise equal to transformers' own
    on this prompt's features (checked here, on this device), and both times. "fast" says whether both arms may
    use it (equal and not stock); set_vision_speed applies it. None when the input has no video to pool."""
    if family(model) != "llava_onevision":
        return None
    from .. import vision_speed
    vision_speed.stock_vision(model)
    if prompt.kwargs.get("pixel_values_videos") is None:
        return None
    feats = _pooling_input(model, prompt.kwargs["pixel_values_videos"])
    run_stock = lambda: type(model.model).apply_pooling(model.model, feats)                  # noqa: E731
    run_fast = lambda: vision_speed.apply_pooling_channels_last(model.model, feats)           # noqa: E731
    with torch.no_grad():
        equal = bool(torch.equal(run_stock(), run_fast()))
    return {"fast": equal and not stock, "bitwise_equal": equal, "stock_ms": _time_ms(model, run_stock, repeats),
            "fast_ms": _time_ms(model, run_fast, repeats)}


def _vision_features(model, prompt: Prompt):
    """The call that turns this prompt's pixels into the visual tokens the decoder receives (vision encoder,
    projector or merger, OneVision's pooling and newlines): a function of no arguments."""
    kw, base = prompt.kwargs, model.model
    if kw.get("pixel_values_videos") is not None:
        args = (kw["pixel_values_videos"],) + ((kw["video_grid_thw"],) if "video_grid_thw" in kw else ())
        return lambda: base.get_video_features(*args)
    if "image_grid_thw" in kw:
        return lambda: base.get_image_features(kw["pixel_values"], kw["image_grid_thw"])
    return lambda: base.get_image_features(pixel_values=kw["pixel_values"], image_sizes=kw["image_sizes"])


def set_vision_speed(model, prompt: Prompt, stock: bool = False, pooling: dict | None = None,
                     repeats: int = 3, exact: bool = True) -> dict:
    """iwp.accelerate_vision for both arms, unless stock, kept only when the visual tokens it gives on this
    prompt are bitwise equal to transformers' own (checked here, on this device). OneVision's pooling part
    is left out unless `pooling` (set_pooling's check) allows it. Returns what ran, the check and the median
    vision times (stock / accelerated, the whole features call). exact=False then adds the not-bitwise parts
    (accelerate_vision(model, exact=False)) on top of the exact ones that passed: "inexact" lists them,
    "inexact_ms" is the vision time with them, "inexact_diff" their features' difference from stock."""
    from .. import vision_speed
    vision_speed.stock_vision(model)
    res = {"accelerate_vision": False, "applied": [], "skipped": {}, "bitwise_equal": None,
           "stock_ms": None, "fast_ms": None}
    if not exact:
        res.update(inexact=[], inexact_ms=None, inexact_diff=None)
    if stock:
        res["skipped"] = {part: "--stock-vision" for part in vision_speed.vision_parts(model, exact=exact)}
        return res
    skip = ["channels_last_pooling"] if pooling is not None and not pooling["fast"] else []
    report = vision_speed.accelerate_vision(model, skip=skip)
    vision_speed.stock_vision(model)
    res["skipped"] = report["skipped"]
    if not report["applied"] and exact:
        return res
    run = _vision_features(model, prompt)
    with torch.no_grad():
        ref = _pooled(run())
        res["stock_ms"] = _time_ms(model, run, repeats)
        if report["applied"]:
            vision_speed.accelerate_vision(model, skip=skip)
            fast = _pooled(run())
            res.update(bitwise_equal=bool(torch.equal(ref, fast)), fast_ms=_time_ms(model, run, repeats))
            if res["bitwise_equal"]:
                res.update(accelerate_vision=True, applied=report["applied"])
            else:
                vision_speed.stock_vision(model)
                res["skipped"].update({p: "not bitwise equal to stock on this input" for p in report["applied"]})
        if not exact:                               # the inexact parts on top of the exact ones kept
            left_out = skip + [p for p in vision_speed.vision_parts(model) if p not in res["applied"]]
            loose = vision_speed.accelerate_vision(model, skip=left_out, exact=False)
            inexact = set(vision_speed.vision_parts(model, exact=False)) - set(vision_speed.vision_parts(model))
            res["skipped"].update({p: why for p, why in loose["skipped"].items() if p in inexact})
            if loose["inexact"]:
                from .vision import difference
                res.update(accelerate_vision=True, applied=loose["applied"], inexact=loose["inexact"],
                           inexact_diff=difference(ref, _pooled(run())), inexact_ms=_time_ms(model, run, repeats))
    return res


def set_vision_hidden_states(model, vision: dict) -> str | None:
    """OneVision: what its vision tower kept in both arms ("selected layer" / "transformers' own"), from
    set_vision_speed's result; None for other families."""
    if family(model) != "llava_onevision":
        return None
    return "selected layer" if "lean_hidden_states" in vision["applied"] else "transformers' own"


def vision_note(vision: dict | None) -> str:
    """The table header's words on the vision speed-ups both arms ran ("" when none were offered)."""
    if not vision or not (vision["applied"] or vision["skipped"]):
        return ""
    times = (f" (vision features stock {_f(vision['stock_ms'])} ms, accelerated {_f(vision['fast_ms'])} ms)"
             if vision.get("stock_ms") is not None else "")
    inexact = vision.get("inexact") or []
    if inexact:
        d = vision["inexact_diff"]
        exact = [p for p in vision["applied"] if p not in inexact]
        return (f"; iwp.accelerate_vision: {', '.join(exact) or 'no exact part'}"
                f"{', bitwise equal to stock on this input' if exact else ''}, + {', '.join(inexact)} NOT bitwise "
                f"(visual tokens vs stock: max |diff| {d['max_abs_diff']:.3g}, relative L2 {d['rel_l2_diff']:.3g};"
                f" {vision['inexact_ms']:.1f} ms){times}")
    if vision["accelerate_vision"]:
        return f"; iwp.accelerate_vision: {', '.join(vision['applied'])}, bitwise equal to stock on this input{times}"
    return f"; vision: transformers' own ({'; '.join(sorted(set(vision['skipped'].values())))}){times}"


def pooling_note(pooling: dict | None) -> str:
    """The table header's words on which OneVision video pooling both arms ran ("" when there was none)."""
    if not pooling:
        return ""
    times = f"stock {pooling['stock_ms']:.2f} ms, channels-last {pooling['fast_ms']:.2f} ms"
    if pooling["fast"]:
        return f"; video pooling: channels-last, bitwise equal to stock on this input ({times})"
    why = "turned off" if pooling["bitwise_equal"] else "channels-last is not bitwise equal on this input"
    return f"; video pooling: stock ({why}; {times})"


# --------------------------------------------------------------------------------------------- report

def targets(result: dict) -> dict | None:
    """Issue 7's targets, checked on the IWP row at the smallest keep ratio (11.1% in the standard run)."""
    runs = [r for r in result["runs"] if r["method"] == "iwp" and r.get("speedup")]   # default parameters
    base = next((r for r in result["runs"] if r["method"] == "none" and r["repeats"]), None)
    if not runs or base is None:
        return None
    r = min(runs, key=lambda x: x["keep_ratio"])
    m = r["median"]
    # the event-timed gap at layer K (scoring, selection, slicing); the hook's own seconds are shown beside it
    share = m["layer_k_gap_ms"] / m["ttft_ms"] if m.get("layer_k_gap_ms") is not None else None
    checks = {
        "keep_ratio": r["keep_ratio"],
        "decoder_speedup": [round(r["speedup"]["decoder"], 3), r["speedup"]["decoder"] >= TARGETS["decoder_speedup"]],
        "ttft_speedup": [round(r["speedup"]["ttft"], 3), r["speedup"]["ttft"] >= TARGETS["ttft_speedup"]],
        "selection_share_of_ttft": [None if share is None else round(share, 4),
                                    None if share is None else share <= TARGETS["selection_share"]],
    }
    for key in ("peak_mem_gb", "decoder_peak_gb"):   # the whole call's peak, and the decoder's own
        if m.get(key) is not None and base["median"].get(key) is not None:
            checks[key] = [round(m[key], 3), m[key] < base["median"][key]]
    return checks


def _f(x, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def markdown(results: list[dict]) -> str:
    """One markdown table per result file, with the GPU and versions named."""
    parts = []
    for res in results:
        done = sorted({r["repeats"] for r in res["runs"] if r["repeats"]}) or [0]
        n = str(done[0]) if len(done) == 1 else f"{done[0]}-{done[-1]}"
        parts.append(f"**{res['model_shape']}, {res['input']}** ({res['n_visual']} visual of {res['n_total']} "
                     f"tokens, K = {res['layer']}; {res['device']}, torch {res['torch']}, transformers "
                     f"{res['transformers']}; medians of {n} interleaved rounds after {res['warmup']} warm-up"
                     f"{pooling_note(res.get('pooling'))}"
                     + (f"; vision tower hidden states kept: {res['vision_hidden_states']}"
                        if res.get("vision_hidden_states") else "") + vision_note(res.get("vision_speed")) + ")\n")
        parts.append("| method | kept | tokens | vision ms | TTFT ms | decoder ms | cut at K ms | selection ms (hook) "
                     "| decode tok/s | peak GB | vision peak GB | decoder peak GB | decoder x (ideal) "
                     "| TTFT x (ideal) |")
        parts.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in res["runs"]:
            m = r["median"]
            if r["error"] or not r["repeats"]:
                parts.append(f"| {r['method']} | {r['keep_ratio']:.1%} | {r['error'] or 'not run'} |" + " |" * 11)
                continue
            sp, ide = r.get("speedup", {}), r.get("ideal", {})
            parts.append(
                f"| {r['method']} | {r['keep_ratio']:.1%} | {r['n_tokens']} | {_f(m['vision_ms'])} | "
                f"{_f(m['ttft_ms'])} | {_f(m['decoder_prefill_ms'])} | {_f(m['layer_k_gap_ms'], '{:.2f}')} | "
                f"{_f(m['selection_ms'], '{:.2f}')} | "
                f"{_f(m['decode_tok_s'])} | {_f(m['peak_mem_gb'], '{:.2f}')} | "
                f"{_f(m.get('vision_peak_gb'), '{:.2f}')} | {_f(m.get('decoder_peak_gb'), '{:.2f}')} | "
                f"{_f(sp.get('decoder'), '{:.2f}')} ({_f(ide.get('decoder'), '{:.2f}')}) | "
                f"{_f(sp.get('ttft'), '{:.2f}')} ({_f(ide.get('ttft'), '{:.2f}')}) |")
        parts.append(phase_table(res))
        t = res.get("targets")
        if t:
            ok = lambda v: "met" if v[1] else ("n/a" if v[1] is None else "MISSED")   # noqa: E731
            parts.append(f"\nTargets at {t['keep_ratio']:.1%} kept (IWP): decoder speed-up {t['decoder_speedup'][0]}x "
                         f"(>= {TARGETS['decoder_speedup']}: {ok(t['decoder_speedup'])}), TTFT speed-up "
                         f"{t['ttft_speedup'][0]}x (>= {TARGETS['ttft_speedup']}: {ok(t['ttft_speedup'])}), "
                         f"cut at K (scoring + selection + slicing) {_f(t['selection_share_of_ttft'][0], '{:.2%}')} "
                         f"of TTFT (<= 2%: "
                         f"{ok(t['selection_share_of_ttft'])})"
                         + (f", peak memory {t['peak_mem_gb'][0]} GB (below unpruned: {ok(t['peak_mem_gb'])})"
                            if "peak_mem_gb" in t else "")
                         + (f", decoder-phase peak {t['decoder_peak_gb'][0]} GB (below unpruned: "
                            f"{ok(t['decoder_peak_gb'])})" if "decoder_peak_gb" in t else "") + ".")
        parts.append("")
    return "\n".join(parts)


def phase_table(res: dict) -> str:
    """Where each arm's time goes (medians, ms): "" for results written before the breakdown existed."""
    runs = [r for r in res["runs"] if r["repeats"] and not r["error"] and "decode_ms_per_token" in r["median"]]
    if not runs:
        return ""
    lines = ["\n| method | kept | before vision | vision | layers < K | cut at K | layers >= K + head | TTFT "
             "| decode ms/token | decode ms (all) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        m = r["median"]
        lines.append(f"| {r['method']} | {r['keep_ratio']:.1%} | {_f(m.get('pre_vision_ms'))} | {_f(m['vision_ms'])} | "
                     f"{_f(m.get('layers_before_k_ms'))} | {_f(m.get('layer_k_gap_ms'), '{:.2f}')} | "
                     f"{_f(m.get('layers_after_k_ms'))} | {_f(m['ttft_ms'])} | "
                     f"{_f(m.get('decode_ms_per_token'), '{:.2f}')} | {_f(m.get('decode_ms'))} |")
    return "\n".join(lines)


def plot(results: list[dict], path: str) -> None:
    """Decoder-prefill and TTFT speed-up vs keep ratio, one panel per result, ideal (FLOPs) dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    colors = {"iwp": "C3", "fastv": "C0", "divprune": "C2", "random": "C7"}
    for ax, res in zip(axes[0], results):
        rows = [r for r in res["runs"] if r.get("speedup") and r["method"] != "none" and ":" not in r["method"]]
        for method in dict.fromkeys(r["method"] for r in rows):
            rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["keep_ratio"])
            x = [r["keep_ratio"] for r in rs]
            ax.plot(x, [r["speedup"]["decoder"] for r in rs], "o-", color=colors.get(method), label=f"{method} decoder")
            ax.plot(x, [r["speedup"]["ttft"] for r in rs], "s:", color=colors.get(method), alpha=0.6,
                    label=f"{method} TTFT")
        ideal = sorted((r for r in rows if r["method"] == "iwp"), key=lambda r: r["keep_ratio"])
        if ideal:
            ax.plot([r["keep_ratio"] for r in ideal], [r["ideal"]["decoder"] for r in ideal], "k--", lw=1,
                    label="ideal decoder (FLOPs)")
            ax.plot([r["keep_ratio"] for r in ideal], [r["ideal"]["ttft"] for r in ideal], "k:", lw=1,
                    label="ideal TTFT (FLOPs)")
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set_title(f"{res['model_shape']} {res['input']}", fontsize=9)
        ax.set_xlabel("keep ratio")
        ax.set_ylabel("prefill speed-up (x)")
        ax.invert_xaxis()
    axes[0][-1].legend(fontsize=6, loc="upper left")
    fig.suptitle(f"Prefill speed-up, {results[0]['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# --------------------------------------------------------------------------------------------- CLI

def _env(model) -> dict:
    import transformers
    dev = model.device
    return {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(), "dtype": str(model.dtype),
            "attn_implementation": "sdpa"}


def gpu_tag(model) -> str:
    """A short device name for file names: "h100", "h200", ... or "cpu"."""
    if model.device.type != "cuda":
        return "cpu"
    words = torch.cuda.get_device_name(model.device).lower().replace("nvidia", "").split()
    return next((w for w in words if any(c.isdigit() for c in w)), words[0] if words else "gpu")


def profile_once(model, prompt: Prompt, method: str, keep_ratio: float, layer: int, rows: int = 25) -> str:
    """torch.profiler table (device time) of one pruned prefill: where the time goes when a target is missed."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if model.device.type == "cuda" else [])
    configure(model, method, keep_ratio, layer)
    try:
        with profile(activities=acts) as prof, torch.no_grad():
            model.generate(**prompt.kwargs, max_new_tokens=1, do_sample=False)
            _sync(model)
    finally:
        configure(model, None, 1.0, layer)
    key = "device_time_total" if model.device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m iwp.bench models", description=__doc__.splitlines()[0])
    p.add_argument("--model-shape", default="llava-onevision-7b", choices=SHAPES)
    p.add_argument("--input", default="video32", help="image, video32, or a comma list (one model build)")
    p.add_argument("--ratios", default=",".join(map(str, RATIOS)))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--layer", type=int, default=2, help="pruning layer K")
    p.add_argument("--new-tokens", type=int, default=16, help="decoded tokens after the first (decode tok/s)")
    p.add_argument("--time-budget", type=float, default=None, help="seconds per input before rounds stop")
    p.add_argument("--json", default=None, help="output path; {input} and {gpu} are filled in")
    p.add_argument("--profile", action="store_true", help="also profile one IWP prefill at the smallest ratio")
    p.add_argument("--keep-one", action="store_true", help="add an IWP arm at keep ratio 1.0 (nothing dropped)")
    p.add_argument("--stock-pooling", action="store_true",
                   help="OneVision video: keep transformers' pooling (default: channels-last, if bitwise equal)")
    p.add_argument("--stock-vision", action="store_true",
                   help="keep transformers' vision side in both arms (default: iwp.accelerate_vision, if bitwise equal)")
    p.add_argument("--inexact-vision", action="store_true",
                   help="also the vision parts that are NOT bitwise equal to stock (accelerate_vision(exact=False): "
                        "aligned_mlp), in both arms; recorded with their difference from stock")
    p.add_argument("--stock-arm", action="store_true",
                   help="add the unpatched model with transformers' own vision as an interleaved arm "
                        f"({STOCK_ARM!r}), next to the accelerated ones")
    p.add_argument("--small", action="store_true", help="tiny widths of the same shapes (a CPU dry run)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--report", nargs="*", default=None, help="JSON files: print their tables, make no runs")
    p.add_argument("--plot", default=None, help="with --report: write the speed-up plot (needs matplotlib)")
    return p.parse_args(argv)


def run_shape(args: argparse.Namespace, model=None) -> list[dict]:
    """Benchmark every requested input of one model shape; write each result as JSON as it grows."""
    if model is None:
        model = build_model(real_config(args.model_shape, args.small), args.device)
    results = []
    try:
        for kind in args.input.split(","):
            res = run_input(args, model, kind)
            if res is not None:
                results.append(res)
    finally:
        from ..vision_speed import stock_vision
        stock_vision(model)                              # the instance leaves as it came
    return results


def run_input(args: argparse.Namespace, model, kind: str) -> dict | None:
    """Benchmark one input kind: pooling check, interleaved rounds, optional profile; the result dict."""
    try:
        prompt = build_prompt(model, kind)
    except Exception as e:                               # one input failing leaves the others to run
        print(f"{args.model_shape} {kind}: input not built: {type(e).__name__}: {e}", flush=True)
        return None
    pooling = set_pooling(model, prompt, stock=args.stock_pooling or args.stock_vision)
    vision = set_vision_speed(model, prompt, stock=args.stock_vision, pooling=pooling,
                              exact=not getattr(args, "inexact_vision", False))
    if pooling is not None:
        pooling["fast"] = "channels_last_pooling" in vision["applied"]
    hidden = set_vision_hidden_states(model, vision)
    res = {"benchmark": "models", "model_shape": args.model_shape, "input": kind, **_env(model),
           "layer": args.layer, "repeats": args.repeats, "warmup": args.warmup, "new_tokens": args.new_tokens,
           "inputs": "tensors of the processors' output shapes, random pixel values, random text ids",
           "n_total": prompt.n_total, "n_visual": prompt.n_visual, "geometry": prompt.geometry,
           "pooling": pooling, "vision_hidden_states": hidden, "vision_speed": vision, "keep_one": args.keep_one,
           "weights_gb": torch.cuda.memory_allocated(model.device) / 2**30 if model.device.type == "cuda" else None,
           "command": "python -m iwp.bench models " + " ".join(args.argv)}
    path = args.json.replace("{input}", kind).replace("{gpu}", gpu_tag(model)) if args.json else None

    def save(runs):
        res["runs"] = runs
        res["targets"] = targets(res)
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(res, indent=1))

    print(f"{args.model_shape} {kind}: {prompt.n_visual} visual of {prompt.n_total} tokens"
          f"{pooling_note(pooling)}{vision_note(vision)}", flush=True)
    methods = [m for m in args.methods.split(",") if m]
    stock_arm = None
    if getattr(args, "stock_arm", False) and vision["applied"]:
        from .. import vision_speed
        left_out = [p for p in vision_speed.vision_parts(model, exact=False) if p not in vision["applied"]]
        stock_arm = (lambda: vision_speed.stock_vision(model),
                     lambda: vision_speed.accelerate_vision(model, skip=left_out, exact=not vision.get("inexact")))
    runs = bench(model, prompt, _floats(args.ratios), methods, args.layer, args.repeats, args.warmup,
                 args.new_tokens, args.time_budget, log=lambda s: print(s, flush=True), on_round=save,
                 keep_one=args.keep_one, stock_arm=stock_arm)
    ratio = min(_floats(args.ratios))
    if args.profile and runs and methods and ratio < 1.0:
        try:
            res["profile"] = profile_once(model, prompt, "iwp" if "iwp" in methods else methods[0], ratio, args.layer)
        except Exception as e:                           # the profile is a diagnosis, not a result
            res["profile"] = f"profile failed: {type(e).__name__}: {e}"
        print(res["profile"], flush=True)
    save(runs)
    print(markdown([res]), flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.report is not None:
        results = [json.loads(Path(p).read_text()) for p in args.report]
        print(markdown(results))
        if args.plot:
            plot(results, args.plot)
        return 0
    run_shape(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
