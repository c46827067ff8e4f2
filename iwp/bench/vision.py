"""The vision encoder alone, stock vs iwp.accelerate_vision: bitwise check and median times.

Qwen2.5-VL's real vision tower (the 7B's and the 3B's are the same ViT; 7B merger) with random bf16 weights
on the device, a tiny text model beside it (not run). Inputs are the patch grids the processor produces: a
32-frame 1280x720-ish video (grid 16x48x60) and a 1280x720 image (grid 1x52x92), each alone and both in one
call. Per input: torch.equal of the visual tokens and the last hidden states, stock and accelerated timed
interleaved (CUDA events, medians), and a profiler table of one accelerated pass (where the rest goes).
--inexact-vision adds a third arm, accelerate_vision(model, exact=False) (the exact parts plus "aligned_mlp",
NOT bitwise): its time and its difference from stock (max |diff|, relative), and the profile is of that arm.

    python -m iwp.bench vision --json out.json
    python -m iwp.bench vision --inexact-vision --input video32,image --json out.json
    python -m iwp.bench vision --small --repeats 1        (CPU dry run: 2 blocks, small grids)
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

INPUTS = {"video32": [(16, 48, 60)], "image": [(1, 52, 92)], "image+video32": [(1, 52, 92), (16, 48, 60)]}
SMALL_INPUTS = {"video4": [(2, 12, 20)], "image": [(1, 14, 22)], "image+video4": [(1, 14, 22), (2, 12, 20)]}


def build(device: str, dtype: torch.dtype, small: bool = False, attn: str = "sdpa"):
    """Qwen2.5-VL with the published 7B vision config (small: 2 of its 32 blocks, one windowed, one full)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from .configs import _qwen_parts
    vision, _, _ = _qwen_parts(small=False)
    if small:
        vision.update(depth=2, fullatt_block_indexes=[1])
    text = dict(vocab_size=64, hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=128,
                num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                        "mrope_section": [2, 3, 3]})
    cfg = Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=60, video_token_id=61,
                           vision_start_token_id=62, vision_end_token_id=63)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=dtype, attn_implementation=attn)
    return model.eval()


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(model, run) -> tuple[float, object]:
    dev = model.device
    _sync(dev)
    if dev.type == "cuda":
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        out = run()
        b.record()
        b.synchronize()
        return a.elapsed_time(b), out
    t = time.perf_counter()
    out = run()
    return (time.perf_counter() - t) * 1e3, out


def check_input(model, grids: list[tuple[int, int, int]], repeats: int, profile_rows: int = 0,
                exact: bool = True) -> dict:
    """Bitwise check and interleaved median times of the vision tower on one grid list; exact=False adds the
    arm "inexact" (accelerate_vision(model, exact=False)) with its difference from stock instead of a bitwise
    check."""
    import iwp
    vc = model.config.vision_config
    n = sum(t * h * w for t, h, w in grids)
    x = torch.randn(n, 3 * vc.temporal_patch_size * vc.patch_size ** 2,
                    generator=torch.Generator().manual_seed(n)).to(model.device, model.dtype)
    thw = torch.tensor(grids, device=model.device)
    visual = model.model.visual
    run = lambda: visual(x, grid_thw=thw)                                   # noqa: E731
    res = {"grids": [list(g) for g in grids], "patches": n, "tokens": n // vc.spatial_merge_size ** 2}
    arms = {"stock": iwp.stock_vision, "accelerated": iwp.accelerate_vision}
    if not exact:
        arms["inexact"] = lambda m: iwp.accelerate_vision(m, exact=False)
    times = {arm: [] for arm in arms}
    with torch.no_grad():
        iwp.stock_vision(model)
        ref = run()
        res["report"] = iwp.accelerate_vision(model)
        fast = run()
        res["bitwise_equal"] = bool(torch.equal(ref.pooler_output, fast.pooler_output)
                                    and torch.equal(ref.last_hidden_state, fast.last_hidden_state))
        res["max_abs_diff"] = float((ref.pooler_output.float() - fast.pooler_output.float()).abs().max())
        del fast
        if not exact:
            report = iwp.accelerate_vision(model, exact=False)
            loose = run()
            res["inexact"] = {"report": report, "parts": report["inexact"],
                              "pooler_output": difference(ref.pooler_output, loose.pooler_output),
                              "last_hidden_state": difference(ref.last_hidden_state, loose.last_hidden_state)}
            del loose
        del ref
        for _ in range(repeats):                                            # interleaved: no drift favours one
            for arm, set_arm in arms.items():
                set_arm(model)
                times[arm].append(_timed(model, run)[0])
        if profile_rows:
            res["profile"], res["kernels"] = _profile(model, run, profile_rows,
                                                      arms["accelerated" if exact else "inexact"])
            res["profiled_arm"] = "accelerated" if exact else "inexact"
    iwp.stock_vision(model)
    res["ms"] = {arm: statistics.median(v) for arm, v in times.items()}
    res["samples_ms"] = times
    res["speedup"] = res["ms"]["stock"] / res["ms"]["accelerated"]
    if not exact:
        res["inexact"]["speedup"] = res["ms"]["stock"] / res["ms"]["inexact"]
        res["inexact"]["speedup_over_exact"] = res["ms"]["accelerated"] / res["ms"]["inexact"]
    return res


def difference(ref: torch.Tensor, out: torch.Tensor) -> dict:
    """How far `out` is from `ref` (in float32): max |diff|, that over max |ref|, and the relative L2 norm."""
    ref, out = ref.float(), out.float()
    diff = (out - ref).abs()
    scale, norm = float(ref.abs().max()), float(ref.norm())
    return {"bitwise_equal": bool(torch.equal(ref, out)), "max_abs_diff": float(diff.max()),
            "max_rel_diff": float(diff.max()) / scale if scale else None,
            "rel_l2_diff": float(diff.norm()) / norm if norm else None, "ref_max_abs": scale}


def _profile(model, run, rows: int, set_arm=None) -> tuple[str, list[dict]]:
    """torch.profiler table of one pass of an arm (default: accelerated), sorted by device time (CPU time on
    CPU), names up to 100 characters; and the `rows` device kernels with the most self time, full names (so that
    e.g. cuBLAS's Hopper nvjet GEMMs can be told from Ampere cutlass_80 ones; [] on CPU)."""
    import iwp
    from torch.profiler import ProfilerActivity, profile
    cuda = model.device.type == "cuda"
    (set_arm or iwp.accelerate_vision)(model)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        run()
        _sync(model.device)
    events = prof.key_averages()
    table = events.table(sort_by="device_time_total" if cuda else "cpu_time_total", row_limit=rows,
                         max_name_column_width=100)
    kernels = sorted((e for e in events if getattr(e.device_type, "name", "") == "CUDA"),
                     key=lambda e: -e.self_device_time_total)[:rows]
    return table, [{"name": e.key, "self_device_ms": e.self_device_time_total / 1e3, "calls": e.count}
                   for e in kernels]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m iwp.bench vision", description=__doc__.splitlines()[0])
    p.add_argument("--input", default=None, help="comma list of " + ", ".join(INPUTS) + " (default: all)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="untimed passes of each arm first")
    p.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"))
    p.add_argument("--profile", type=int, default=25, help="profiler rows of one accelerated pass (0: none)")
    p.add_argument("--inexact-vision", action="store_true",
                   help="add the arm accelerate_vision(exact=False) (+ aligned_mlp, NOT bitwise): time and "
                        "difference from stock; the profile is of that arm")
    p.add_argument("--small", action="store_true", help="2 blocks and small grids (a CPU dry run)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import transformers
    args = parse_args(sys.argv[1:] if argv is None else argv)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model = build(args.device, dtype, args.small, args.attn)
    table = SMALL_INPUTS if args.small else INPUTS
    names = args.input.split(",") if args.input else list(table)
    dev = model.device
    out = {"benchmark": "vision", "model": "Qwen2.5-VL-7B vision tower" + (" (2 blocks)" if args.small else ""),
           "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "transformers": transformers.__version__, "dtype": str(dtype),
           "attn_implementation": args.attn, "repeats": args.repeats, "warmup": args.warmup,
           "inexact_vision": args.inexact_vision,
           "command": "python -m iwp.bench vision " + " ".join(sys.argv[1:] if argv is None else argv), "inputs": {}}
    ok = True
    for name in names:
        try:
            for _ in range(args.warmup):
                check_input(model, table[name], repeats=1, exact=not args.inexact_vision)
            res = check_input(model, table[name], args.repeats, args.profile, exact=not args.inexact_vision)
        except Exception as e:                            # one input failing (OOM) leaves the others to run
            res = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        out["inputs"][name] = res
        ok = ok and res.get("bitwise_equal", False)
        if "error" in res:
            print(f"{name}: {res['error']}", flush=True)
        else:
            print(f"{name} {res['grids']}: bitwise equal {res['bitwise_equal']} (max |diff| {res['max_abs_diff']}), "
                  f"stock {res['ms']['stock']:.1f} ms, accelerated {res['ms']['accelerated']:.1f} ms, "
                  f"{res['speedup']:.2f}x; {res['report']}", flush=True)
            if "inexact" in res:
                d = res["inexact"]["pooler_output"]
                print(f"  + {', '.join(res['inexact']['parts']) or 'nothing'} (NOT bitwise): "
                      f"{res['ms']['inexact']:.1f} ms, {res['inexact']['speedup']:.2f}x over stock, "
                      f"{res['inexact']['speedup_over_exact']:.2f}x over exact; vs stock max |diff| "
                      f"{d['max_abs_diff']:.3g} ({d['max_rel_diff']:.3g} of max |x|), relative L2 "
                      f"{d['rel_l2_diff']:.3g}; {res['inexact']['report']['skipped'] or ''}", flush=True)
            if res.get("profile"):
                print(res["profile"], flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
