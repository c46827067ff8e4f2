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


def chunk_sizes(budget: int, first_chunk: int = 1, growth: float = 2.0) -> list[int]:
    """The PC-MMR schedule: chunk sizes starting at first_chunk, times growth each step, summing to budget."""
    if first_chunk < 1:
        raise ValueError(f"first_chunk must be >= 1, got {first_chunk}")
    if growth < 1.0:
        raise ValueError(f"growth must be >= 1, got {growth}")
    sizes, size, left = [], float(first_chunk), budget
    while left > 0:
        c = min(max(1, int(size)), left)
        sizes.append(c)
        left -= c
        size *= growth
    return sizes


def pc_mmr(m: Tensor, k: Tensor, v: Tensor, budget: int, lam: float = 0.5,
           first_chunk: int = 1, growth: float = 2.0) -> Tensor:
    """Progressive chunked MMR: each step adds a chunk of c tokens, c growing geometrically.

    The chunk is the best c of the top-2c MMR candidates, each rescored against the candidates ranked
    above it (so a near-copy of a stronger candidate falls out). Redundancy is updated with one [N x c]
    block of S per step; the [N x N] matrix is never built. The schedule is fixed up front, so the loop
    never waits on the device. With chunks of one it is exactly greedy_mmr.
    """
    budget = _check_budget(m, budget)
    _check_lam(lam)
    factors = DualFactors(k, v)
    n = m.shape[0]
    if len(factors) != n:
        raise ValueError(f"m has {n} tokens but k/v have {len(factors)}")
    if budget == 0:
        return torch.empty(0, dtype=torch.long, device=m.device)
    relevance = _relevance(m, lam)
    red = torch.zeros(n, device=m.device)     # redundancy; 0 while nothing is picked
    taken = torch.zeros(n, dtype=torch.bool, device=m.device)
    picks = []
    for step, c in enumerate(chunk_sizes(budget, first_chunk, growth)):
        score = (relevance - (1 - lam) * red).masked_fill(taken, float("-inf"))
        n_cand = min(2 * c, n - sum(p.numel() for p in picks))
        # stable descending sort: equal scores keep index order, as greedy's argmax does
        cand = score.sort(descending=True, stable=True).indices[:n_cand]
        if c > 1:
            ranked_above = torch.ones(n_cand, n_cand, dtype=torch.bool, device=m.device).tril(-1)
            s_above = factors.block(cand, cand).masked_fill(~ranked_above, float("-inf")).max(dim=1).values
            cand_red = red[cand] if step > 0 else torch.full_like(s_above, float("-inf"))
            new_red = torch.maximum(cand_red, s_above)
            new_red = new_red.masked_fill(torch.isinf(new_red), 0.0)       # first pick of all: red = 0
            rescored = relevance[cand] - (1 - lam) * new_red
            cand = cand[rescored.sort(descending=True, stable=True).indices[:c]]
        else:
            cand = cand[:1]
        picks.append(cand)
        taken[cand] = True
        block_max = factors.block(None, cand).max(dim=1).values
        red = block_max if step == 0 else torch.maximum(red, block_max)
    return torch.cat(picks)
