"""fused_rotary on the GPU (scripts/gpu_rotary.sh runs it): writes a JSON to argv[1].

1. kernel vs transformers' apply_rotary_pos_emb_vision on real shapes (Qwen2.5-VL heads 16 x 80 and Qwen3-VL's
   16 x 72; S = 46080, a 32-frame video's patches, and 4784, a 1280x720 image's), q and k sliced from qkv as the
   attention does: bitwise (as integers), plus how many elements an FMA-contracted version would change (shows the
   check would see a contraction), and the median time of each;
2. Qwen2.5-VL-7B's vision tower (random bf16), 32-frame video: accelerate_vision with and without fused_rotary,
   bitwise equal to each other and to stock, kernel calls counted, median times interleaved.
Without CUDA (a dry run: TRITON_INTERPRET=1 python scripts/gpu_rotary.py out.json) small shapes on the CPU.
"""
import json
import statistics
import sys

import torch

import iwp
from iwp.bench import vision as bench_vision
from iwp.bench.real_size import time_ms
from iwp.kernels import cuda_rotary
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision as stock

rotary = cuda_rotary()
DEV = "cuda" if torch.cuda.is_available() else "cpu"
SIZES = (46080, 4784, 4783) if DEV == "cuda" else (37, 23)
BITS = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}


def median_ms(fn, n=20):
    """Median of n timed calls after a warm-up (iwp.bench's timer: CUDA events, the host clock on CPU)."""
    return time_ms(fn, n, DEV)


def inputs(s, heads, d, dtype, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed + s)
    q, k, _ = torch.randn(s, 3, heads, d, device=DEV, generator=g).to(dtype).permute(1, 0, 2, 3).unbind(0)
    angles = torch.rand(s, d // 2, device=DEV, generator=g) * 64
    emb = torch.cat([angles, angles], dim=-1)
    return q, k, emb.cos(), emb.sin()


def fma_version(q, cos, sin):
    """q * cos + rotate_half(q) * sin with the last product and the sum rounded once (what FMA contraction does)."""
    x = q.double()
    a = (q.float() * cos[:, None]).double()
    b = torch.cat((-x[..., x.shape[-1] // 2:], x[..., : x.shape[-1] // 2]), -1) * sin[:, None].double()
    return (a + b).float().to(q.dtype)


res = {"device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu (Triton interpreter)",
       "torch": torch.__version__, "kernel": [], "tower": {}}
import triton  # noqa: E402
import transformers  # noqa: E402
res.update(triton=triton.__version__, transformers=transformers.__version__)
ok = True
with torch.inference_mode():
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for s in SIZES:
            for d in (80, 72):
                q, k, cos, sin = inputs(s, 16, d, dtype)
                assert rotary.supports(q, k, cos, sin) is None
                ref, got = stock(q, k, cos, sin), rotary.apply_rotary(q, k, cos, sin)
                same = [bool(torch.equal(a.view(BITS[dtype]), b.view(BITS[dtype]))) for a, b in zip(ref, got)]
                diff = [int((a.view(BITS[dtype]) != b.view(BITS[dtype])).sum()) for a, b in zip(ref, got)]
                fma_diff = int((fma_version(q, cos, sin).view(BITS[dtype]) != ref[0].view(BITS[dtype])).sum())
                row = {"dtype": str(dtype), "S": s, "heads": 16, "head_dim": d, "bitwise_equal": all(same),
                       "differing_elements": diff, "fma_version_differing_elements_q": fma_diff}
                if dtype == torch.bfloat16 and s % 2 == 0:
                    row["stock_ms"] = median_ms(lambda: stock(q, k, cos, sin))
                    row["kernel_ms"] = median_ms(lambda: rotary.apply_rotary(q, k, cos, sin))
                ok = ok and all(same)
                res["kernel"].append(row)
                print(row, flush=True)
    del q, k, cos, sin, ref, got
    if DEV == "cuda":
        torch.cuda.empty_cache()
    else:
        rotary.ROWS = 1024

    model = bench_vision.build(DEV, torch.bfloat16, small=DEV == "cpu")
    vc = model.config.vision_config
    grids = bench_vision.INPUTS["video32"] if DEV == "cuda" else bench_vision.SMALL_INPUTS["video4"]
    n = sum(t * h * w for t, h, w in grids)
    x = torch.randn(n, 3 * vc.temporal_patch_size * vc.patch_size ** 2,
                    generator=torch.Generator().manual_seed(n)).to(DEV, torch.bfloat16)
    thw = torch.tensor(grids, device=DEV)
    run = lambda: model.model.visual(x, grid_thw=thw)                       # noqa: E731
    calls = []
    kernel = rotary.apply_rotary
    rotary.apply_rotary = lambda *a: calls.append(1) or kernel(*a)
    ref = run()
    arms = {"batched_only": lambda: iwp.accelerate_vision(model, skip=("fused_rotary",)),
            "batched+fused_rotary": lambda: iwp.accelerate_vision(model)}
    outs, reports = {}, {}
    for arm, set_arm in arms.items():
        reports[arm] = set_arm()
        calls.clear()
        o = run()
        outs[arm] = (bool(torch.equal(o.pooler_output, ref.pooler_output)
                          and torch.equal(o.last_hidden_state, ref.last_hidden_state)), len(calls))
        del o
    times = {arm: [] for arm in arms}
    for _ in range(5 if DEV == "cuda" else 1):
        for arm, set_arm in arms.items():
            set_arm()
            times[arm].append(median_ms(run, n=1))
    iwp.stock_vision(model)
    res["tower"] = {"model": "Qwen2.5-VL-7B vision tower (random bf16)", "grids": grids, "patches": n,
                    "reports": reports, "bitwise_equal_to_stock": {a: v[0] for a, v in outs.items()},
                    "kernel_calls": {a: v[1] for a, v in outs.items()},
                    "ms": {a: statistics.median(v) for a, v in times.items()}, "samples_ms": times}
    ms = res["tower"]["ms"]
    res["tower"]["speedup_from_fused_rotary"] = ms["batched_only"] / ms["batched+fused_rotary"]
    ok = ok and all(v[0] for v in outs.values()) and outs["batched+fused_rotary"][1] == vc.depth
    print(json.dumps(res["tower"], indent=1), flush=True)
res["ok"] = ok
with open(sys.argv[1], "w") as f:
    json.dump(res, f, indent=1)
print("ok" if ok else "NOT OK")
sys.exit(0 if ok else 1)
