"""One fused GPU kernel for PC-MMR's candidate rescoring (the hot inner step), with Triton.

Each candidate's rescoring depends only on its own row of the pool's similarity block, so one Triton
program per row replaces about two dozen small PyTorch launches per step. Used on CUDA when Triton
is installed; iwp.mmr keeps the plain PyTorch path (CPU, and the reference the kernel is checked against).
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:                                   # CPU machines: the PyTorch path is used
    triton = None

AVAILABLE = triton is not None
ROUNDS = 3                                            # the fixed point settles in 2-3 rounds


if AVAILABLE:
    @triton.jit
    def _rescore_rows(s_ptr, stride, score_ptr, rel_ptr, base_ptr, out_ptr, P, penalty,
                      BLOCK: tl.constexpr, ROUNDS: tl.constexpr):
        j = tl.program_id(0)
        rel_j = tl.load(rel_ptr + j)
        base_j = tl.load(base_ptr + j)                # -inf while nothing is picked
        rescored = tl.load(score_ptr + j)             # start: no rivals at all
        for r in range(ROUNDS):
            worst = tl.full((), float("-inf"), tl.float32)
            for start in range(0, P, BLOCK):
                i = start + tl.arange(0, BLOCK)
                inside = i < P
                s = tl.load(s_ptr + j * stride + i, mask=inside, other=float("-inf"))
                score_i = tl.load(score_ptr + i, mask=inside, other=float("-inf"))
                # rivals: ranked above j, or (after the first round) scoring above j's rescored value
                rival = (i < j) | ((score_i > rescored) & (i != j) & (r > 0))
                worst = tl.maximum(worst, tl.max(tl.where(rival & inside, s, float("-inf")), axis=0))
            red = tl.maximum(base_j, worst)
            red = tl.where(red == float("-inf"), 0.0, red)
            rescored = rel_j - penalty * red
        tl.store(out_ptr + j, rescored)


def rescore(s_pool: torch.Tensor, cand_score: torch.Tensor, cand_rel: torch.Tensor, base_red: torch.Tensor,
            penalty: float) -> torch.Tensor:
    """Fused rescoring of a pool (see iwp.mmr.pc_mmr); all inputs float32 on one CUDA device."""
    P = s_pool.shape[0]
    out = torch.empty(P, dtype=torch.float32, device=s_pool.device)
    s_pool = s_pool.contiguous()
    block = min(1024, triton.next_power_of_2(max(P, 16)))
    _rescore_rows[(P,)](s_pool, s_pool.stride(0), cand_score.contiguous(), cand_rel.contiguous(),
                        base_red.contiguous(), out, P, penalty, BLOCK=block, ROUNDS=ROUNDS)
    return out
