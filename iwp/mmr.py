"""Selection by maximal marginal relevance: greedy (reference) and progressive chunked (method.md 4).

MMR score: lam * m_i / max(m) - (1 - lam) * red_i, where red_i is 0 before the first pick and the
largest S_ij over picked j afterwards. Both functions return picked indices in pick order.
"""
from __future__ import annotations

import torch
from torch import Tensor

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


def pc_mmr(m: Tensor, k: Tensor, v: Tensor, budget: int, lam: float = 0.5,
           first_chunk: int = 1, growth: float = 2.0) -> Tensor:
    """Progressive chunked MMR: each step takes up to c tokens at once, c growing geometrically.

    Candidates are the top 2c by MMR score. Each candidate j is rescored with the redundancy it would have
    after every candidate that could still be picked before it (ranked above it, or scoring above j's
    rescored value: a short fixed-point iteration), and taken only if that still beats the best token
    outside the pool: greedy MMR would then pick it before any outsider. The best candidate is always
    taken, so chunks of one are exactly greedy_mmr. Redundancy is updated with one [N x 2c] block of S
    per step; the [N x N] matrix is never built.
    """
    budget = _check_budget(m, budget)
    _check_lam(lam)
    _check_schedule(first_chunk, growth)
    factors = DualFactors(k, v)
    n, device = m.shape[0], m.device
    if len(factors) != n:
        raise ValueError(f"m has {n} tokens but k/v have {len(factors)}")
    relevance = _relevance(m, lam)
    red = torch.zeros(n, device=device)       # redundancy; 0 while nothing is picked
    taken = torch.zeros(n, dtype=torch.bool, device=device)
    max_pool = min(2 * budget, n)             # chunks can outgrow the schedule when some picks wait
    above = torch.ones(max_pool, max_pool, dtype=torch.bool, device=device).tril(-1)
    itself = torch.eye(max_pool, dtype=torch.bool, device=device)
    picks: list[Tensor] = []
    left, size, step = budget, float(first_chunk), 0
    while left > 0:
        c = min(max(1, int(size)), left)
        score = torch.add(relevance, red, alpha=-(1 - lam)).masked_fill_(taken, float("-inf"))
        if c == 1:
            chosen = score.argmax().reshape(1)                              # first maximum, as greedy
            s_cols = factors.columns(chosen)
        else:
            remaining = n - (budget - left)
            ranked = score.sort(descending=True, stable=True)   # stable: ties keep index order, as argmax
            pool = min(2 * c, remaining)
            cand, cand_score = ranked.indices[:pool], ranked.values[:pool]
            s_cols = factors.columns(cand)                                  # [N, pool]: the step's one block
            s_pool = s_cols[cand]
            base_red = red[cand] if step > 0 else torch.zeros(pool, device=device)
            first = step == 0
            rivals = above[:pool, :pool]
            for _ in range(3):                                              # converges in 2-3 rounds
                s_rivals = s_pool.masked_fill(~rivals, float("-inf")).amax(dim=1)
                new_red = torch.maximum(base_red, s_rivals)
                if first:                                                   # nothing picked yet: red 0
                    new_red = torch.where(rivals.any(dim=1), s_rivals, base_red)
                rescored = torch.add(relevance[cand], new_red, alpha=-(1 - lam))
                rivals = above[:pool, :pool] | ((cand_score[None, :] > rescored[:, None]) & ~itself[:pool, :pool])
            if pool < remaining:
                accept = rescored >= ranked.values[pool]                    # beats every token outside
                accept[0] = True
                n_accept = min(c, int(accept.sum()))                        # one host sync per step
                rescored = rescored.masked_fill_(~accept, float("-inf"))
            else:
                n_accept = c
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
