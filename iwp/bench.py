"""python -m iwp.bench: speed benchmarks.

  selection  scoring + PC-MMR against token-by-token greedy MMR, Qwen2-7B-shaped heads (this file)
  models     prefill / decode / memory of real-size models, unpruned vs pruned (iwp/bench_models.py)
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from . import _pool_kernel
from .dual_form import DualFactors, information_duplication, information_magnitude
from .mmr import greedy_mmr, pc_mmr
from .selectors import DEFAULT_FIRST_CHUNK, DEFAULT_GROWTH, DEFAULT_LAM

# (frames, tokens per frame): one LLaVA-1.5 image, a 5-crop anyres image, a 32-frame OneVision video,
# a 100-frame video
SHAPES = {576: (1, 576), 2880: (5, 576), 6272: (32, 196), 20000: (100, 200)}


def structured_tokens(n: int, q_heads: int = 28, kv_heads: int = 4, d: int = 128, text: int = 32,
                      seed: int = 0, device: str = "cpu", dtype=torch.bfloat16):
    """Video-like q/k/v: each frame is four flat background regions plus ~6% distinct object tokens, and
    frames repeat with noise (a static camera). Random Gaussian keys would make every S_ij ~ 0 and MMR
    trivially equal to a magnitude sort; this keeps the near-copies that make selection hard."""
    frames, per_frame = SHAPES.get(n, (1, n))
    g = torch.Generator(device="cpu").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    region = torch.arange(per_frame) * 4 // per_frame                     # four background regions
    k_frame = 2.0 * randn(kv_heads, 4, d)[:, region] + 0.3 * randn(kv_heads, per_frame, d)
    v_frame = randn(kv_heads, 4, d)[:, region] + 0.1 * randn(kv_heads, per_frame, d)
    objects = torch.randperm(per_frame, generator=g)[: max(1, per_frame * 6 // 100)]
    k_frame[:, objects] = 2.0 * randn(kv_heads, objects.numel(), d)
    v_frame[:, objects] = 1.5 * randn(kv_heads, objects.numel(), d)
    offset = 3.0 * randn(kv_heads, 1, d)                                    # keys share a large offset
    k = (k_frame.repeat(1, frames, 1) + 0.3 * randn(kv_heads, n, d) + offset)[:, :n]
    v = (v_frame.repeat(1, frames, 1) + 0.1 * randn(kv_heads, n, d))[:, :n]
    q = randn(q_heads, text, d) * 0.5
    return [x.to(device=device, dtype=dtype) for x in (q, k, v)]


def _timed(fn, device: str, repeats: int, warmup: int) -> tuple[float, object]:
    """Median wall time in ms over repeats after warm-up, synchronising the device around each run."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), out


def _count_steps(run) -> int:
    """PC-MMR steps of one run: each step computes exactly one column block of S (fused or not)."""
    calls = 0

    def counting(fn):
        def wrapped(*args):
            nonlocal calls
            calls += 1
            return fn(*args)
        return wrapped

    plain, fused = DualFactors.columns, _pool_kernel.columns
    DualFactors.columns, _pool_kernel.columns = counting(plain), counting(fused)
    try:
        run()
    finally:
        DualFactors.columns, _pool_kernel.columns = plain, fused
    return calls


def bench_selection(sizes, device: str, ratio: float, repeats: int, greedy_repeats: int, warmup: int,
                    lam: float, first_chunk: int, growth: float) -> list[dict]:
    rows = []
    for n in sizes:
        q, k, v = structured_tokens(n, device=device)
        budget = max(1, round(ratio * n))

        def run_pc():
            return pc_mmr(information_magnitude(q, k, v), k, v, budget, lam, first_chunk, growth)

        def run_greedy():
            return greedy_mmr(information_magnitude(q, k, v), information_duplication(k, v), budget, lam)

        pc_ms, pc_picks = _timed(run_pc, device, repeats, warmup)
        steps = _count_steps(run_pc)
        fused = device.startswith("cuda") and _pool_kernel.AVAILABLE
        if fused:                                   # the same run on the plain PyTorch path, for reference
            factors = DualFactors(k, v)
            some = torch.randperm(n, device=device)[:256]
            kernel_err = (_pool_kernel.columns(factors.k_left, factors.k_right, factors.u, some)
                          - factors.columns(some)).abs().max().item()
            _pool_kernel.AVAILABLE = False
            try:
                torch_ms, torch_picks = _timed(run_pc, device, repeats, warmup)
            finally:
                _pool_kernel.AVAILABLE = True
        greedy_ms, greedy_picks = _timed(run_greedy, device, greedy_repeats, 1)
        score_ms, _ = _timed(lambda: information_magnitude(q, k, v), device, repeats, warmup)
        shared = len(set(pc_picks.tolist()) & set(greedy_picks.tolist())) / budget
        rows.append({"n": n, "budget": budget, "pc_mmr_ms": round(pc_ms, 3), "greedy_mmr_ms": round(greedy_ms, 3),
                     "scoring_only_ms": round(score_ms, 3), "speedup": round(greedy_ms / pc_ms, 2),
                     "shared_with_greedy": round(shared, 4), "pc_mmr_steps": steps, "fused_kernel": fused})
        if fused:
            rows[-1].update(pc_mmr_pytorch_ms=round(torch_ms, 3), columns_kernel_max_abs_err=kernel_err,
                            fused_picks_equal_pytorch=bool(torch.equal(pc_picks, torch_picks)),
                            fused_shared_with_pytorch=round(len(set(pc_picks.tolist()) & set(torch_picks.tolist())) / budget, 4))
        print(f"N={n:6d} K={budget:5d}  scoring+PC-MMR {pc_ms:8.2f} ms   scoring+greedy {greedy_ms:9.2f} ms"
              f"   x{greedy_ms / pc_ms:6.1f}   shared picks {shared:.1%}   steps {steps}"
              + (f"   (PyTorch path {torch_ms:.2f} ms, same picks: {torch.equal(pc_picks, torch_picks)})" if fused else ""),
              flush=True)
        del q, k, v
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def _gpu_slug(device: str) -> str:
    if not device.startswith("cuda"):
        return "cpu"
    name = torch.cuda.get_device_name(device).lower()
    for slug in ("h200", "h100", "a100", "l40s", "l4", "a10g", "t4"):
        if slug in name:
            return slug
    return name.replace(" ", "-")


def selection_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m iwp.bench selection",
                                description="Scoring + PC-MMR vs token-by-token greedy MMR, Qwen2-7B-shaped heads.")
    p.add_argument("--sizes", type=int, nargs="+", default=[576, 2880, 6272, 20000])
    p.add_argument("--ratio", type=float, default=0.111)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--greedy-repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--lam", type=float, default=DEFAULT_LAM)
    p.add_argument("--first-chunk", type=int, default=DEFAULT_FIRST_CHUNK)
    p.add_argument("--growth", type=float, default=DEFAULT_GROWTH)
    p.add_argument("--json", type=Path, help="where to write results (default assets/benchmarks/selection-<gpu>.json)")
    a = p.parse_args(argv)
    rows = bench_selection(a.sizes, a.device, a.ratio, a.repeats, a.greedy_repeats, a.warmup, a.lam,
                           a.first_chunk, a.growth)
    result = {
        "benchmark": "selection", "device": torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__, "dtype": "bfloat16", "q_heads": 28, "kv_heads": 4, "head_dim": 128, "text_queries": 32,
        "keep_ratio": a.ratio, "lam": a.lam, "first_chunk": a.first_chunk, "growth": a.growth,
        "inputs": "structured_tokens(): video-like frames with flat regions, objects and a shared key offset",
        "timing": f"median of {a.repeats} (PC-MMR) / {a.greedy_repeats} (greedy) runs after warm-up, synchronised",
        "results": rows,
    }
    path = a.json or Path(__file__).resolve().parent.parent / "assets" / "benchmarks" / f"selection-{_gpu_slug(a.device)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("selection", "models"):
        print(__doc__.strip())
        return 2
    if argv[0] == "selection":
        return selection_main(argv[1:])
    from . import bench_models
    return bench_models.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
