"""Real-size check on a GPU: LLaVA-OneVision-7B and Qwen2.5-VL-7B shapes, random bf16 weights, 6000+ visual
tokens. Shows that apply/generate work, that keep_ratio=1.0 and remove give token-identical greedy output,
and that pruned generation runs at keep_ratio 0.111.

    PYTHONUNBUFFERED=1 python -m iwp.bench.smoke --out results.json      (GPU; --small runs tiny shapes on CPU)
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import time

import torch
import transformers

import iwp

from .configs import onevision_config, qwen_config

NEW_TOKENS = 8


def prompt_ids(n_visual: int, token_id: int, start: int | None, end: int | None, gen: torch.Generator):
    """Random text ids around n_visual placeholders: 12 tokens before, 24 after (the question)."""
    before = torch.randint(1000, 20000, (12,), generator=gen).tolist() + ([start] if start else [])
    after = ([end] if end else []) + torch.randint(1000, 20000, (24,), generator=gen).tolist()
    return torch.tensor([before + [token_id] * n_visual + after])


def cases(small: bool):
    """(name, config fn, inputs fn) for each check; inputs are built by hand, no hub, no processor."""
    def ov_video(cfg, dev, gen):
        frames = 32 if not small else 4
        ids = prompt_ids(frames * 196 + 1, cfg.video_token_id, None, None, gen)
        pv = torch.randn(1, frames, 3, 384, 384, generator=gen)
        return dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=pv)

    def ov_image(cfg, dev, gen):
        from iwp.geometry import anyres_boxes
        from transformers.image_processing_utils import select_best_resolution
        H, W = 1536, 2304                                 # a 2:3 photo: 6x4 crops + base view
        n = len(anyres_boxes(H, W, cfg.image_grid_pinpoints, 384, 14, 9))
        bh, bw = select_best_resolution((H, W), cfg.image_grid_pinpoints)
        crops = (bh // 384) * (bw // 384) + 1
        ids = prompt_ids(n, cfg.image_token_id, None, None, gen)
        return dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                    pixel_values=torch.randn(1, crops, 3, 384, 384, generator=gen), image_sizes=torch.tensor([[H, W]]))

    def qwen_inputs(kind):
        def build(cfg, dev, gen):
            t, h, w = ((16, 40, 40) if kind == "video" else (1, 156, 156)) if not small else (2, 8, 8)
            n = t * h * w // 4
            tid = cfg.video_token_id if kind == "video" else cfg.image_token_id
            ids = prompt_ids(n, tid, cfg.vision_start_token_id, cfg.vision_end_token_id, gen)
            out = dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                       mm_token_type_ids=(ids == tid).long() * (2 if kind == "video" else 1))
            pix = torch.randn(t * h * w, 3 * 2 * 14 * 14, generator=gen)
            if kind == "video":
                out.update(pixel_values_videos=pix, video_grid_thw=torch.tensor([[t, h, w]]),
                           second_per_grid_ts=torch.tensor([1.0]))
            else:
                out.update(pixel_values=pix, image_grid_thw=torch.tensor([[t, h, w]]))
            return out
        return build

    return [("llava-onevision-7b", onevision_config, [("video", ov_video), ("image", ov_image)]),
            ("qwen2.5-vl-7b", qwen_config, [("image", qwen_inputs("image")), ("video", qwen_inputs("video"))])]


def timed_generate(model, inputs):
    sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    sync()
    return out, time.perf_counter() - t0


def reset_peak():
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def check_case(model, inputs, n_visual: int) -> dict:
    """Unpatched vs keep 1.0 vs remove (token-identical?) and a pruned run at 0.111."""
    timed_generate(model, inputs)                                     # warm-up (kernels, allocator)
    reset_peak()
    base, t_base = timed_generate(model, inputs)
    peak_base = peak()
    iwp.apply(model, keep_ratio=1.0)
    keep_all, _ = timed_generate(model, inputs)
    iwp.apply(model, keep_ratio=0.111, method="iwp")
    reset_peak()
    pruned, t_pruned = timed_generate(model, inputs)
    peak_pruned = peak()
    sel = iwp.last_selection(model)[0]
    iwp.apply(model, keep_ratio=0.111, method="fastv")
    fastv, _ = timed_generate(model, inputs)
    iwp.remove(model)
    after, _ = timed_generate(model, inputs)
    L = inputs["input_ids"].shape[1]
    return {
        "prompt_tokens": L, "visual_tokens": n_visual,
        "keep_1_token_identical": bool(torch.equal(base, keep_all)),
        "remove_token_identical": bool(torch.equal(base, after)),
        "base_new_tokens": base[0, L:].tolist(), "keep_1_new_tokens": keep_all[0, L:].tolist(),
        "pruned_keep_ratio": 0.111, "pruned_visual_kept": sel.n_kept, "pruned_groups": len(sel.groups),
        "pruned_new_tokens": pruned[0, L:].tolist(), "pruned_generated": int(pruned.shape[1] - L),
        "pruned_same_as_base": bool(torch.equal(base, pruned)),
        "fastv_generated": int(fastv.shape[1] - L),
        "selection_seconds": round(sel.seconds, 4),
        "generate_seconds_unpruned_one_run": round(t_base, 3),
        "generate_seconds_pruned_one_run": round(t_pruned, 3),
        "peak_gib_unpruned": peak_base, "peak_gib_pruned": peak_pruned,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="realsize-check.json")
    ap.add_argument("--small", action="store_true", help="tiny shapes, for a CPU dry run")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    report = {"device": torch.cuda.get_device_name() if dev == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "transformers": transformers.__version__, "dtype": "bfloat16",
              "attn_implementation": "sdpa", "layer": iwp.DEFAULT_LAYER, "new_tokens": NEW_TOKENS,
              "weights": "random (config-built, no download)", "models": {}}
    gen = torch.Generator().manual_seed(0)
    for name, config_fn, checks in cases(args.small):
        cfg = config_fn(args.small)
        t0 = time.perf_counter()
        torch.manual_seed(0)
        torch.set_default_dtype(torch.bfloat16)
        with torch.device(dev):
            cls = (transformers.LlavaOnevisionForConditionalGeneration if "onevision" in name
                   else transformers.Qwen2_5_VLForConditionalGeneration)
            model = cls(cfg).eval()
        torch.set_default_dtype(torch.float32)
        model.set_attn_implementation("sdpa")
        entry = {"params_billion": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
                 "build_seconds": round(time.perf_counter() - t0, 1), "checks": {}}
        print(name, entry, flush=True)
        for kind, build in checks:
            try:
                inputs = build(cfg, dev, gen)
                tid = cfg.video_token_id if kind == "video" else cfg.image_token_id
                n_visual = int((inputs["input_ids"] == tid).sum())
                inputs = {k: (v.to(dev, torch.bfloat16) if v.is_floating_point() and "pixel" in k else v.to(dev))
                          for k, v in inputs.items()}
                res = check_case(model, inputs, n_visual)
            except Exception as e:                                      # record, go on to the next check
                iwp.remove(model)
                res = {"error": f"{type(e).__name__}: {e}"[:500]}
            entry["checks"][kind] = res
            print(name, kind, res, flush=True)
        report["models"][name] = entry
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report)[:3000])


if __name__ == "__main__":
    main()
