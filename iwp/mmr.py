"""Selection by maximal marginal relevance: greedy (reference) and progressive chunked (method.md 4).

MMR score: lam * m_i / max(m) - (1 - lam) * red_i, where red_i is 0 before the first pick and the
largest S_ij over picked j afterwards. Both functions return picked indices in pick order.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import kernels                      # constants only: Triton loads when a CUDA run needs it
from .dual_form import DualFactors, _check_qkv


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
    """lam * m / max(m) (m as is when its max is not positive), without asking the device for max(m)."""
    m = m.float()
    top = m.max()
    return lam * (m / torch.where(top > 0, top, torch.ones_like(top)))


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


MAX_CHUNK = kernels.MAX_POOL // 2     # picks per step at most (the pool holds 2c candidates)


def chunk_sizes(budget: int, first_chunk: int = 1, growth: float = 2.0) -> list[int]:
    """The schedule's chunks if every step took its largest chunk: first_chunk, times growth each step,
    summing to budget (pictures of the pick order use it; real steps may take fewer)."""
    _check_schedule(first_chunk, growth)
    sizes, size, left = [], float(first_chunk), budget
    while left > 0:
        c = min(max(1, int(size)), left, MAX_CHUNK)
        sizes.append(c)
        left -= c
        size *= growth
    return sizes


def growing_chunks(budget: int, first_chunk: int = 1, growth: float = 2.0) -> list[int]:
    """The largest chunk of each PC-MMR step until it stops growing (it then repeats): first_chunk,
    times growth each step, capped by the budget and MAX_CHUNK."""
    _check_schedule(first_chunk, growth)
    cap = max(1, min(budget, MAX_CHUNK))
    sizes, size = [], float(first_chunk)
    while True:
        sizes.append(min(max(1, int(size)), cap))
        if sizes[-1] == cap or growth == 1.0:
            return sizes
        size *= growth


def _pick_in_pool(s_pool: Tensor, cand: Tensor, rel: Tensor, red: Tensor, score: Tensor, tau: float,
                  tau_token: int, c: int, penalty: float) -> list[int]:
    """Greedy MMR inside the pool: take the best candidate (lowest token index among ties) while no
    token outside could beat it; at most c. Returns pool slots in pick order (see kernels/pc_mmr.py _pick)."""
    alive = torch.isfinite(score)
    big = torch.iinfo(cand.dtype).max
    chosen: list[int] = []
    while len(chosen) < c and bool(alive.any()):
        best = float(score.max())
        slot = int(torch.where(score == best, cand, big).argmin())
        if not (best > tau or (best == tau and int(cand[slot]) < tau_token)):
            break
        chosen.append(slot)
        alive[slot] = False
        red = torch.maximum(red, s_pool[:, slot])
        score = torch.add(rel, red, alpha=-penalty).masked_fill_(~alive, float("-inf"))
    return chosen


def _pc_mmr_torch(relevance: Tensor, factors: DualFactors, budget: int, penalty: float,
                  chunks: list[int]) -> Tensor:
    """PC-MMR in plain PyTorch (CPU, and the reference for the CUDA kernels)."""
    n, device = relevance.shape[0], relevance.device
    red = torch.full((n,), float("-inf"), device=device)    # -inf: nothing picked yet (redundancy 0)
    taken = torch.zeros(n, dtype=torch.bool, device=device)
    score = relevance.clone()
    picks: list[Tensor] = []
    count, step = 0, 0
    while count < budget:
        chunk = chunks[min(step, len(chunks) - 1)]
        step += 1
        c = 1 if count == 0 else min(chunk, budget - count)   # the first pick turns 'no redundancy' into S
        pool = min(2 * c, n - count)
        ranked = score.sort(descending=True, stable=True)   # stable: ties keep index order, as argmax
        cand = ranked.indices[:pool]
        tau, tau_token = (float(ranked.values[pool]), int(ranked.indices[pool])) if pool < n else (float("-inf"), n)
        slots = _pick_in_pool(factors.block(cand, cand), cand, relevance[cand], red[cand], ranked.values[:pool],
                              tau, tau_token, c, penalty)
        chosen = cand[slots]
        picks.append(chosen)
        taken[chosen] = True
        count += len(slots)
        red = torch.maximum(red, factors.columns(chosen).amax(dim=1))
        score = torch.add(relevance, red, alpha=-penalty).masked_fill_(taken, float("-inf"))
    return torch.cat(picks) if picks else torch.empty(0, dtype=torch.long, device=device)


def pc_mmr(m: Tensor, k: Tensor, v: Tensor, budget: int, lam: float = 0.5,
           first_chunk: int = 1, growth: float = 2.0) -> Tensor:
    """Progressive chunked MMR: each step takes up to c tokens, c growing geometrically (chunk_sizes).

    A step ranks all tokens by MMR score and takes its pool, the top 2c. Inside the pool it runs greedy
    MMR with the pool's own [2c x 2c] block of S, and stops once the pool's best could be beaten by a
    token outside: outside scores only fall as tokens are taken, so the best of them at the start of the
    step bounds them all. Every pick is therefore greedy MMR's pick, in greedy's order; chunking only
    decides how many picks share one step. Redundancy is then updated with one [N x picks] block of S;
    the [N x N] matrix is never built. On CUDA with Triton, steps run as fused kernels replayed as CUDA
    graphs (iwp/kernels/pc_mmr.py).
    """
    budget = _check_budget(m, budget)
    _check_lam(lam)
    _check_schedule(first_chunk, growth)
    _check_qkv(k, v)
    n = m.shape[0]
    if k.shape[1] != n:
        raise ValueError(f"m has {n} tokens but k/v have {k.shape[1]}")
    if budget == 0:
        return torch.empty(0, dtype=torch.long, device=m.device)
    relevance, penalty = _relevance(m, lam), 1.0 - lam
    chunks = growing_chunks(budget, first_chunk, growth)
    if m.device.type == "cuda" and n < kernels.MAX_TOKENS and kernels.cuda_pc_mmr().AVAILABLE:
        return kernels.cuda_pc_mmr().pc_mmr(relevance, k, v, budget, penalty, chunks)
    return _pc_mmr_torch(relevance, DualFactors(k, v), budget, penalty, chunks)
