"""The CUDA kernels of PC-MMR (iwp/kernels/pc_mmr.py): same picks and steps as the PyTorch path.

On CPU they run in Triton's interpreter and are compiled for an H100 (sm_90) without running, which
catches what the interpreter lets through; on a GPU machine they also run for real, graphs included.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

from iwp import mmr
from iwp.kernels import pc_mmr as _pool_kernel  # noqa: E402
from iwp.bench.selection import structured_tokens  # noqa: E402
from iwp.dual_form import DualFactors, information_duplication, information_magnitude  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# (n, budget, first_chunk, growth, duplicated): small cases covering ties, no outside tokens, chunks of one
CASES = [(64, 16, 1, 3.0, False), (120, 14, 1, 2.0, False), (30, 12, 2, 3.0, True), (20, 20, 1, 3.0, False),
         (24, 6, 1, 1.0, False), (60, 20, 4, 1.5, True)]


def inputs(n, duplicated, device="cpu", kv_heads=2, d=32, dtype=torch.bfloat16):
    q, k, v = structured_tokens(n // 2 if duplicated else n, q_heads=2 * kv_heads, kv_heads=kv_heads, d=d,
                                device=device, dtype=dtype)
    if duplicated:                                               # every token twice: exact ties
        k, v = k.repeat(1, 2, 1), v.repeat(1, 2, 1)
    return q, k, v


def same_picks(a, b, n, duplicated):
    """Equal pick sequences; with duplicated tokens, a copy may stand for its twin (BLAS rounds the two
    rows of an exact copy differently, so the PyTorch path's exact ties are not exact)."""
    if duplicated:
        a, b = a % (n // 2), b % (n // 2)
    return torch.equal(a, b)


def check_token_tables(k, v):
    """The kernels' per-token tables hold what DualFactors holds."""
    run = _pool_kernel._Run(1, [1], 0.5, k.contiguous(), v.contiguous(), rel=torch.zeros(k.shape[1]))
    run.prepare()
    factors = DualFactors(k, v)
    torch.testing.assert_close(run.half, -factors.k_left[..., -2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(run.scale[..., None] * v.float(), factors.u, rtol=1e-5, atol=1e-6)


def both_paths(q, k, v, budget, first_chunk, growth):
    """The PyTorch path's run and the kernels' three runs (eager, then graphs), each as (picks, steps)."""
    m = information_magnitude(q, k, v)
    factors, rel = DualFactors(k, v), mmr._relevance(m, 0.5)
    chunks = mmr.step_caps(budget, first_chunk, growth)
    reference = mmr._pc_mmr_torch(rel, factors, budget, 0.5, chunks)
    fused = [_pool_kernel.pc_mmr(rel, k, v, budget, 0.5, chunks) for _ in range(3)]
    return ((reference[0], reference[1].tolist()),
            [(picks, mmr.Steps(counts, budget).tolist()) for picks, counts in fused])


def check_steps(steps, budget, first_chunk, growth, reference=None, fixed=None):
    """Steps sum to the budget, the first takes one pick, none exceeds its cap; with a reference (the
    PyTorch path's steps): the same steps as far as the kernels' fixed steps go (fixed of them), then
    _finish's, one pick each."""
    caps = mmr.step_caps(budget, first_chunk, growth)
    assert sum(steps) == budget and steps[0] == 1, steps
    assert all(s <= caps[min(i, len(caps) - 1)] for i, s in enumerate(steps)), (steps, caps)
    if reference is not None:
        assert steps[:fixed] == reference[:fixed], (steps, reference)
        assert all(s == 1 for s in steps[fixed:]), steps


INTERPRETED = textwrap.dedent("""
    import torch
    from iwp.kernels import pc_mmr as _pool_kernel
    from iwp.mmr import step_caps
    from tests.test_pool_kernel import CASES, both_paths, check_steps, check_token_tables, inputs, same_picks
    _pool_kernel.USE_GRAPHS = False
    _pool_kernel.SORT_CHUNK = _pool_kernel.TOP = 64   # the interpreter's tl.sort is slow; real sizes: compile test
    _pool_kernel.TUNING = dict(_pool_kernel.TUNING, extra_steps=3)   # fewer idle steps to interpret
    for n, budget, first, growth, dup in CASES:
        q, k, v = inputs(n, dup, dtype=torch.float32)   # the interpreter's bf16 tl.dot is wrong (Triton 3.6)
        check_token_tables(k, v)
        (reference, ref_steps), fused = both_paths(q, k, v, budget, first, growth)
        assert same_picks(fused[0][0], reference, n, dup), (n, budget, first, growth, fused[0][0].tolist(), reference.tolist())
        fixed = len(step_caps(budget, first, growth)) + _pool_kernel.TUNING["extra_steps"]
        check_steps(fused[0][1], budget, first, growth, ref_steps, fixed)
    _pool_kernel.TUNING = dict(_pool_kernel.TUNING, extra_steps=0)   # the steps stop short: _finish completes
    for n, budget, first, growth, dup in CASES[:2]:
        (reference, ref_steps), fused = both_paths(*inputs(n, dup, dtype=torch.float32), budget, first, growth)
        assert same_picks(fused[0][0], reference, n, dup), ("finish", n, fused[0][0].tolist(), reference.tolist())
        fixed = len(step_caps(budget, first, growth)) + _pool_kernel.TUNING["extra_steps"]
        assert len(ref_steps) > fixed, "the case must leave picks to _finish"
        check_steps(fused[0][1], budget, first, growth, ref_steps, fixed)
    print("ok")
""")


def test_kernels_in_the_interpreter_pick_as_the_pytorch_path():
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=path)
    out = subprocess.run([sys.executable, "-c", INTERPRETED], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_kernels_compile_for_hopper():
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    f, i, bf = "*fp32", "i32", "*bf16"
    shapes = {"H": 4, "DK": 128, "DV": 128, "BM": 32, "BN": 32, "BK": _pool_kernel.TUNING["bk"]}
    tables = dict(k_ptr=bf, v_ptr=bf, mean_ptr=f, half_ptr=f, scale_ptr=f)
    kernels = [
        (_pool_kernel._token_tables, dict(tables, N=i, inv_sqrt_d="fp32"),
         {"H": 4, "DK": 128, "DV": 128, "BM": 32, "BDK": 128, "BDV": 128}),
        (_pool_kernel._top_chunks, dict(score_ptr=f, state_ptr="*i32", keys_ptr="*i64", N=i, budget=i),
         {"CHUNK": _pool_kernel.SORT_CHUNK}),
        (_pool_kernel._top_merge, dict(keys_ptr="*i64", state_ptr="*i32", top_ptr=f, order_ptr="*i64", budget=i,
                                       chunks=i), {"CHUNK": _pool_kernel.SORT_CHUNK, "T": _pool_kernel.TOP,
                                                   "BLOCK": 4 * _pool_kernel.TOP}),
        (_pool_kernel._pool_block, dict(tables, order_ptr="*i64", state_ptr="*i32", out_ptr=f, N=i, inv_sqrt_d="fp32",
                                        budget=i, chunk=i, pool_cap=i), shapes),
        (_pool_kernel._pick, dict(pool_ptr=f, top_ptr=f, order_ptr="*i64", rel_ptr=f, red_ptr=f, taken_ptr="*i8",
                                  picks_ptr="*i64", state_ptr="*i32", counts_ptr="*i32", N=i, budget=i, chunk=i, pool_cap=i,
                                  penalty="fp32"), {"BLOCK": 256}),
        (_pool_kernel._update, dict(tables, picks_ptr="*i64", state_ptr="*i32", rel_ptr=f, red_ptr=f, taken_ptr="*i8",
                                    score_ptr=f, N=i, inv_sqrt_d="fp32", penalty="fp32"), dict(shapes, BM=64, BN=64)),
        (_pool_kernel._finish, dict(tables, rel_ptr=f, red_ptr=f, taken_ptr="*i8", score_ptr=f, picks_ptr="*i64",
                                    state_ptr="*i32", N=i, budget=i, inv_sqrt_d="fp32", penalty="fp32"),
         {"H": 4, "DK": 128, "DV": 128, "BLOCK": 1024, "BM": 64, "BK": _pool_kernel.TUNING["bk"]}),
    ]
    for fn, signature, constants in kernels:
        signature.update({name: "constexpr" for name in constants})
        try:
            triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constants),
                           target=GPUTarget("cuda", 90, 32))
        except FileNotFoundError as e:                           # no ptxas in this Triton install
            pytest.skip(f"cannot compile for sm_90 here: {e}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("n", [576, 2880])
def test_on_the_gpu_graph_replays_pick_exactly_as_greedy(n):
    q, k, v = structured_tokens(n, device="cuda")
    budget = round(0.111 * n)
    (reference, _), fused = both_paths(q, k, v, budget, 1, 3.0)
    greedy = mmr.greedy_mmr(information_magnitude(q, k, v), information_duplication(k, v), budget)
    assert all(torch.equal(f, fused[0][0]) and s == fused[0][1] for f, s in fused)   # eager, captured, replayed
    assert set(fused[0][0].tolist()) == set(greedy.tolist())
    assert (fused[0][0] == reference).float().mean() >= 0.95     # float order of near-ties may differ
    check_steps(fused[0][1], budget, 1, 3.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", CASES)
def test_on_the_gpu_small_cases_pick_as_the_pytorch_path(case):
    n, budget, first, growth, dup = case
    (reference, ref_steps), fused = both_paths(*inputs(n, dup, device="cuda"), budget, first, growth)
    assert all(torch.equal(f, fused[0][0]) and s == fused[0][1] for f, s in fused)
    assert same_picks(fused[0][0], reference, n, dup)
    # exact twins tie to rounding on the GPU, and a tie at the pool's edge may end a step one pick apart
    check_steps(fused[0][1], budget, first, growth, None if dup else ref_steps, len(ref_steps))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_the_gpu_recording_steps_adds_no_host_sync():
    q, k, v = structured_tokens(2880, device="cuda")
    m = information_magnitude(q, k, v)
    mmr.pc_mmr_steps(m, k, v, 320, 0.5, 64, 2.0)                 # compiles and captures the graph
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")                      # any host sync now raises
    try:
        picks, steps = mmr.pc_mmr_steps(m, k, v, 320, 0.5, 64, 2.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert steps.counts.is_cuda and sum(steps.tolist()) == 320 and steps.tolist()[0] == 1
