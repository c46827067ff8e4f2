"""python -m iwp.bench selection: scoring + PC-MMR against token-by-token greedy MMR, Qwen2-7B-shaped heads,
on video-like tokens (structured_tokens)."""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from ..kernels import pc_mmr as cuda_kernels
from ..dual_form import information_duplication, information_magnitude
from ..mmr import greedy_mmr, pc_mmr, pc_mmr_steps
from ..selectors import DEFAULT_FIRST_CHUNK, DEFAULT_GROWTH, DEFAULT_LAM

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


def _first_calls(fn, device: str, calls: int = 2) -> list[float]:
    """Wall ms of the first calls on a new input shape (kernel compilation, then graph capture)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    for _ in range(calls):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(round((time.perf_counter() - start) * 1e3, 1))
    return times


def _tuning(spec: str) -> dict:
    """"bk=32,pick_warps=4" -> {"bk": 32, "pick_warps": 4} (keys of cuda_kernels.TUNING)."""
    out = {}
    for pair in filter(None, spec.split(",")):
        key, value = pair.split("=")
        if key not in cuda_kernels.TUNING:
            raise ValueError(f"unknown tuning key {key!r}; choose from {sorted(cuda_kernels.TUNING)}")
        out[key] = int(value)
    return out


def bench_tunings(run_pc, greedy_picks, device: str, specs: list[str], repeats: int, warmup: int) -> list[dict]:
    """The fused path under other launch shapes: time, and agreement with greedy MMR."""
    saved = dict(cuda_kernels.TUNING)
    out = []
    try:
        for spec in specs:
            cuda_kernels.TUNING = dict(saved, **_tuning(spec))
            _first_calls(run_pc, device)
            ms, picks = _timed(run_pc, device, repeats, warmup)
            out.append({"tuning": spec, "pc_mmr_ms": round(ms, 3),
                        "same_order_as_greedy": round((picks == greedy_picks).float().mean().item(), 4)})
            print(f"    tuning {spec:40s} {ms:7.3f} ms   same order as greedy {out[-1]['same_order_as_greedy']:.1%}",
                  flush=True)
    finally:
        cuda_kernels.TUNING = saved
    return out


def bench_selection(sizes, device: str, ratio: float, repeats: int, greedy_repeats: int, warmup: int,
                    lam: float, first_chunk: int, growth: float, tunings: list[str] = (),
                    tuning_sizes: tuple[int, ...] = (6272,)) -> list[dict]:
    rows = []
    fused = device.startswith("cuda") and cuda_kernels.AVAILABLE
    for n in sizes:
        q, k, v = structured_tokens(n, device=device)
        budget = max(1, round(ratio * n))

        def run_pc():
            return pc_mmr(information_magnitude(q, k, v), k, v, budget, lam, first_chunk, growth)

        def steps_pc() -> list[int]:
            return pc_mmr_steps(information_magnitude(q, k, v), k, v, budget, lam, first_chunk, growth)[1].tolist()

        def run_greedy():
            return greedy_mmr(information_magnitude(q, k, v), information_duplication(k, v), budget, lam)

        first_ms = _first_calls(run_pc, device) if fused else None
        pc_ms, pc_picks = _timed(run_pc, device, repeats, warmup)
        step_sizes = steps_pc()                    # picks per step, as the run took them
        steps = len(step_sizes)
        row = {"n": n, "budget": budget, "pc_mmr_ms": round(pc_ms, 3)}
        if fused:                                   # the same algorithm without graphs, and in plain PyTorch
            cuda_kernels.USE_GRAPHS = False
            try:
                eager_ms, eager_picks = _timed(run_pc, device, repeats, warmup)
            finally:
                cuda_kernels.USE_GRAPHS = True
            cuda_kernels.AVAILABLE = False
            try:
                torch_ms, torch_picks = _timed(run_pc, device, greedy_repeats, 1)
                torch_steps = steps_pc()
            finally:
                cuda_kernels.AVAILABLE = True
            row.update(first_calls_ms=first_ms, pc_mmr_no_graphs_ms=round(eager_ms, 3),
                       pc_mmr_pytorch_ms=round(torch_ms, 3),
                       graphs_equal_no_graphs=bool(torch.equal(pc_picks, eager_picks)),
                       fused_picks_equal_pytorch=bool(torch.equal(pc_picks, torch_picks)),
                       fused_same_order_as_pytorch=round((pc_picks == torch_picks).float().mean().item(), 4),
                       fused_steps_equal_pytorch=step_sizes == torch_steps)
        greedy_ms, greedy_picks = _timed(run_greedy, device, greedy_repeats, 1)
        score_ms, _ = _timed(lambda: information_magnitude(q, k, v), device, repeats, warmup)
        shared = len(set(pc_picks.tolist()) & set(greedy_picks.tolist())) / budget
        same_order = (pc_picks == greedy_picks).float().mean().item()
        row.update(greedy_mmr_ms=round(greedy_ms, 3), scoring_only_ms=round(score_ms, 3),
                   speedup=round(greedy_ms / pc_ms, 2), shared_with_greedy=round(shared, 4),
                   same_order_as_greedy=round(same_order, 4), pc_mmr_steps=steps,
                   pc_mmr_step_sizes=step_sizes, fused_kernel=fused)
        rows.append(row)
        if fused and tunings and n in tuning_sizes:
            row["tunings"] = bench_tunings(run_pc, greedy_picks, device, tunings, repeats, warmup)
        print(f"N={n:6d} K={budget:5d}  scoring+PC-MMR {pc_ms:8.2f} ms   scoring+greedy {greedy_ms:9.2f} ms"
              f"   x{greedy_ms / pc_ms:6.1f}   shared picks {shared:.1%} (same order {same_order:.1%})   steps {steps}"
              + (f"   (no graphs {row['pc_mmr_no_graphs_ms']:.2f} ms, PyTorch path {torch_ms:.2f} ms, "
                 f"same picks: {row['fused_picks_equal_pytorch']}, first calls {first_ms} ms)" if fused else ""),
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


def main(argv: list[str]) -> int:
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
    p.add_argument("--tune", nargs="*", default=[], help="launch shapes to compare at N=6272, e.g. bk=32 "
                   "bk=128,pick_warps=4 (keys of iwp.kernels.pc_mmr.TUNING)")
    p.add_argument("--json", type=Path, help="where to write results (default assets/benchmarks/selection-<gpu>.json)")
    a = p.parse_args(argv)
    rows = bench_selection(a.sizes, a.device, a.ratio, a.repeats, a.greedy_repeats, a.warmup, a.lam,
                           a.first_chunk, a.growth, a.tune)
    result = {
        "benchmark": "selection", "device": torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__, "dtype": "bfloat16", "q_heads": 28, "kv_heads": 4, "head_dim": 128, "text_queries": 32,
        "keep_ratio": a.ratio, "lam": a.lam, "first_chunk": a.first_chunk, "growth": a.growth,
        "kernels": "Triton, CUDA graphs; key dot products tf32x3, value dot products bf16 (iwp/kernels/pc_mmr.py)",
        "tuning": cuda_kernels.TUNING,
        "command": "python -m iwp.bench selection " + " ".join(argv),
        "inputs": "structured_tokens(): video-like frames with flat regions, objects and a shared key offset",
        "timing": f"median of {a.repeats} (PC-MMR) / {a.greedy_repeats} (greedy) runs after warm-up, synchronised",
        "results": rows,
    }
    path = a.json or Path(__file__).resolve().parents[2] / "assets" / "benchmarks" / f"selection-{_gpu_slug(a.device)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0
