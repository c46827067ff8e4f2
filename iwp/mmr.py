"""Selection by maximal marginal relevance: greedy (reference) and progressive chunked (method.md 4).

MMR score: lam * m_i / max(m) - (1 - lam) * red_i, where red_i is 0 before the first pick and the
largest S_ij over picked j afterwards. Both functions return picked indices in pick order.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import _pool_kernel
from .dual_form import DualFactors


def _check_budget(m: Tensor, budget: int) -> int:
    if m.ndim != 1:
        raise ValueError(f"magnitude must be 1-D [N], got shape {tuple(m.shape)}")
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(f"budget must be an int, got {type(budget).__name__}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    return min(budget, m.shape[0])


def _check_lam(lam: float) -> None:
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")


def _relevance(m: Tensor, lam: float) -> Tensor:
    m = m.float()
    top = m.max()
    return lam * (m / top if top > 0 else m)


def greedy_mmr(m: Tensor, S: Tensor, budget: int, lam: float = 0.5) -> Tensor:
    """Token-by-token MMR over a precomputed similarity S [N,N]; ties go to the lowest index."""
    budget = _check_budget(m, budget)
    _check_lam(lam)
    n = m.shape[0]
    if S.shape != (n, n):
        raise ValueError(f"S must be [{n}, {n}], got {tuple(S.shape)}")
    picks = torch.empty(budget, dtype=torch.long, device=m.device)
    if budget == 0:
        return picks
    relevance = _relevance(m, lam)
    S = S.float()
    red = torch.zeros(n, device=m.device)
    taken = torch.zeros(n, dtype=torch.bool, device=m.device)
    for t in range(budget):
        score = (relevance - (1 - lam) * red).masked_fill(taken, float("-inf"))
        j = score.argmax()                       # first maximum: ties go to the lowest index
        picks[t] = j
        taken[j] = True
        red = S[:, j] if t == 0 else torch.maximum(red, S[:, j])
    return picks


def _check_schedule(first_chunk: int, growth: float) -> None:
    if first_chunk < 1:
        raise ValueError(f"first_chunk must be >= 1, got {first_chunk}")
    if growth < 1.0:
        raise ValueError(f"growth must be >= 1, got {growth}")


def chunk_sizes(budget: int, first_chunk: int = 1, growth: float = 2.0) -> list[int]:
    """The largest chunks PC-MMR may take: first_chunk, times growth each step, summing to budget."""
    _check_schedule(first_chunk, growth)
    sizes, size, left = [], float(first_chunk), budget
    while left > 0:
        c = min(max(1, int(size)), left)
        sizes.append(c)
        left -= c
        size *= growth
    return sizes


def _rescore_torch(s_pool: Tensor, cand_score: Tensor, cand_rel: Tensor, base_red: Tensor, penalty: float,
                   above: Tensor, rounds: int = 3) -> Tensor:
    """Each candidate's MMR score after every candidate that could still be picked before it.

    Rivals of candidate j: those ranked above it, and (after the first round) those whose current score
    beats j's rescored value. base_red is -inf while nothing is picked (redundancy then starts at 0).
    """
    rivals = above
    not_self = ~torch.eye(len(cand_score), dtype=torch.bool, device=s_pool.device)
    for _ in range(rounds):
        red = torch.maximum(base_red, s_pool.masked_fill(~rivals, float("-inf")).amax(dim=1))
        rescored = torch.add(cand_rel, red.masked_fill_(torch.isneginf(red), 0.0), alpha=-penalty)
        rivals = above | ((cand_score[None, :] > rescored[:, None]) & not_self)
    return rescored


def _columns(factors: DualFactors, idx: Tensor, fused: bool) -> Tensor:
    """S[:, idx]: one fused kernel for small blocks, where launches dominate; cuBLAS for large ones."""
    if fused and len(factors) * idx.numel() <= _pool_kernel.SMALL_BLOCK:
        return _pool_kernel.columns(factors.k_left, factors.k_right, factors.u, idx)
    return factors.columns(idx)


def pc_mmr(m: Tensor, k: Tensor, v: Tensor, budget: int, lam: float = 0.5,
           first_chunk: int = 1, growth: float = 2.0) -> Tensor:
    """Progressive chunked MMR: each step takes up to c tokens at once, c growing geometrically.

    Candidates are the top 2c by MMR score. Each candidate is rescored with the redundancy it would have
    after every candidate that could still be picked before it (a short fixed point), and taken only if
    that still beats the best token outside the pool: greedy MMR would then pick it before any outsider.
    The best candidate is always taken, so chunks of one are exactly greedy_mmr. Redundancy is updated
    with one [N x 2c] block of S per step; the [N x N] matrix is never built. On CUDA with Triton the
    rescoring is one fused kernel (iwp/_pool_kernel.py).
    """
    budget = _check_budget(m, budget)
    _check_lam(lam)
    _check_schedule(first_chunk, growth)
    factors = DualFactors(k, v)
    n, device = m.shape[0], m.device
    if len(factors) != n:
        raise ValueError(f"m has {n} tokens but k/v have {len(factors)}")
    relevance, penalty = _relevance(m, lam), 1.0 - lam
    fused = device.type == "cuda" and _pool_kernel.AVAILABLE
    red = torch.zeros(n, device=device)       # redundancy; 0 while nothing is picked
    taken = torch.zeros(n, dtype=torch.bool, device=device)
    max_pool = min(2 * budget, n)             # chunks can outgrow the schedule when some picks wait
    above = None if fused else torch.ones(max_pool, max_pool, dtype=torch.bool, device=device).tril(-1)
    picks: list[Tensor] = []
    left, size, step = budget, float(first_chunk), 0
    while left > 0:
        c = min(max(1, int(size)), left)
        score = torch.add(relevance, red, alpha=-penalty).masked_fill_(taken, float("-inf"))
        if c == 1:
            chosen = score.argmax().reshape(1)                              # first maximum, as greedy
            s_cols = _columns(factors, chosen, fused)
        else:
            remaining = n - (budget - left)
            pool = min(2 * c, remaining)
            ranked = score.sort(descending=True, stable=True)   # stable: ties keep index order, as argmax
            cand, cand_score = ranked.indices[:pool], ranked.values[:pool]
            s_cols = _columns(factors, cand, fused)                         # [N, pool]: the step's one block
            outside = pool < remaining
            if fused:                                                       # rescoring + acceptance, one kernel
                rescored, n_ok = _pool_kernel.rescore(s_cols, cand, cand_score, relevance, red,
                                                      ranked.values[pool:pool + 1] if outside else None,
                                                      penalty, first=step == 0)
                n_accept = min(c, int(n_ok)) if outside else c              # one host sync per step
            else:
                base_red = red[cand] if step > 0 else torch.full((pool,), float("-inf"), device=device)
                rescored = _rescore_torch(s_cols[cand], cand_score, relevance[cand], base_red, penalty,
                                          above[:pool, :pool])
                n_accept = c
                if outside:
                    accept = rescored >= ranked.values[pool]                # beats every token outside
                    accept[0] = True
                    n_accept = min(c, int(accept.sum()))                    # one host sync per step
                    rescored = rescored.masked_fill_(~accept, float("-inf"))
            local = rescored.sort(descending=True, stable=True).indices[:n_accept]
            chosen, s_cols = cand[local], s_cols[:, local]
        picks.append(chosen)
        taken[chosen] = True
        left -= chosen.numel()
        block_max = s_cols.amax(dim=1)
        red = block_max if step == 0 else torch.maximum(red, block_max)
        size *= growth
        step += 1
    return torch.cat(picks) if picks else torch.empty(0, dtype=torch.long, device=device)
