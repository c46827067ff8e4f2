"""Fused GPU kernels for PC-MMR's step (Triton): the similarity block and the candidates' rescoring.

A PC-MMR step is a handful of tiny operations; launched one by one they cost far more than they compute.
On CUDA with Triton installed, iwp.mmr uses these two kernels instead; the plain PyTorch path stays for
the CPU and as the reference the kernels are checked against (python -m iwp.bench selection).
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:                                   # CPU machines: the PyTorch path is used
    triton = None

AVAILABLE = triton is not None
ROUNDS = 3                                            # the rescoring fixed point settles in 2-3 rounds
SMALL_BLOCK = 1 << 19   # N x C up to this: the fused column kernel; beyond, cuBLAS's float32 GEMM is faster


if AVAILABLE:
    @triton.jit
    def _dot_block(x_ptr, y_ptr, rows, cand, row_ok, col_ok, h, N, D,
                   BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        """[BM, BN] float32 dot products x[h, rows] . y[h, cand] of two [H, N, D] tensors."""
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k0 in range(0, D, BK):
            k = k0 + tl.arange(0, BK)
            x = tl.load(x_ptr + (h * N + rows[:, None]) * D + k[None, :],
                        mask=row_ok[:, None] & (k[None, :] < D), other=0.0)
            y = tl.load(y_ptr + (h * N + cand[None, :]) * D + k[:, None],
                        mask=col_ok[None, :] & (k[:, None] < D), other=0.0)
            acc += tl.dot(x, y, input_precision="ieee")
        return acc

    @triton.jit
    def _columns(kl_ptr, kr_ptr, u_ptr, cand_ptr, out_ptr, N, C, H, DK, DU,
                 BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        """out[i, c] = sum_h exp(min(kl_i.kr_cand[c], 0)) * (u_i . u_cand[c]), i < N, c < C."""
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        cols = tl.program_id(1) * BN + tl.arange(0, BN)
        row_ok, col_ok = rows < N, cols < C
        cand = tl.load(cand_ptr + cols, mask=col_ok, other=0)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for h in range(H):
            rbf = tl.exp(tl.minimum(_dot_block(kl_ptr, kr_ptr, rows, cand, row_ok, col_ok, h, N, DK, BM, BN, BK), 0.0))
            acc += rbf * _dot_block(u_ptr, u_ptr, rows, cand, row_ok, col_ok, h, N, DU, BM, BN, BK)
        acc = tl.minimum(tl.maximum(acc, -1.0), 1.0)
        tl.store(out_ptr + rows[:, None] * C + cols[None, :], acc, mask=row_ok[:, None] & col_ok[None, :])

    @triton.jit
    def _rescore(s_ptr, cand_ptr, score_ptr, rel_ptr, red_ptr, tau_ptr, out_ptr, count_ptr, P, penalty,
                 FIRST: tl.constexpr, HAS_OUTSIDE: tl.constexpr, BLOCK: tl.constexpr, ROUNDS: tl.constexpr):
        """Candidate j's score after every candidate that could be picked before it; -inf unless it beats
        the best token outside the pool (tau). s is the step's column block [N, P], read at rows cand."""
        j = tl.program_id(0)
        cj = tl.load(cand_ptr + j)
        rel_j = tl.load(rel_ptr + cj)
        base_j = float("-inf") if FIRST else tl.load(red_ptr + cj)
        rescored = tl.load(score_ptr + j)
        for r in range(ROUNDS):
            worst = tl.full((), float("-inf"), tl.float32)
            for start in range(0, P, BLOCK):
                i = start + tl.arange(0, BLOCK)
                inside = i < P
                s = tl.load(s_ptr + cj * P + i, mask=inside, other=float("-inf"))
                score_i = tl.load(score_ptr + i, mask=inside, other=float("-inf"))
                # rivals: ranked above j, or (after the first round) scoring above j's rescored value
                rival = (i < j) | ((score_i > rescored) & (i != j) & (r > 0))
                worst = tl.maximum(worst, tl.max(tl.where(rival & inside, s, float("-inf")), axis=0))
            red = tl.maximum(base_j, worst)
            red = tl.where(red == float("-inf"), 0.0, red)
            rescored = rel_j - penalty * red
        if HAS_OUTSIDE:
            accept = (rescored >= tl.load(tau_ptr)) | (j == 0)
            rescored = tl.where(accept, rescored, float("-inf"))
            tl.atomic_add(count_ptr, accept.to(tl.int32))
        tl.store(out_ptr + j, rescored)


def columns(k_left: torch.Tensor, k_right: torch.Tensor, u: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """S[:, cand] as one kernel; k_left/k_right [H,N,d+2], u [H,N,dv] contiguous float32."""
    H, N, DK = k_left.shape
    C = cand.numel()
    out = torch.empty(N, C, dtype=torch.float32, device=u.device)
    BM, BN, BK = 64, 32, 32
    _columns[(triton.cdiv(N, BM), triton.cdiv(C, BN))](k_left, k_right, u, cand, out, N, C, H, DK, u.shape[2],
                                                       BM=BM, BN=BN, BK=BK)
    return out


def rescore(s_cols: torch.Tensor, cand: torch.Tensor, cand_score: torch.Tensor, relevance: torch.Tensor,
            red: torch.Tensor, tau: torch.Tensor | None, penalty: float, first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(rescored [P] with -inf for rejected candidates, number accepted as a device int32)."""
    P = cand.numel()
    out = torch.empty(P, dtype=torch.float32, device=s_cols.device)
    count = torch.zeros(1, dtype=torch.int32, device=s_cols.device)
    block = min(1024, triton.next_power_of_2(max(P, 16)))
    _rescore[(P,)](s_cols, cand, cand_score, relevance, red, tau if tau is not None else cand_score, out, count,
                   P, penalty, FIRST=first, HAS_OUTSIDE=tau is not None, BLOCK=block, ROUNDS=ROUNDS)
    return out, count
