"""Selection by maximal marginal relevance: greedy (reference) and progressive chunked (method.md 4).

MMR score: lam * m_i / max(m) - (1 - lam) * red_i, where red_i is 0 before the first pick and the
largest S_ij over picked j afterwards. Both functions return picked indices in pick order;
pc_mmr_steps also says how many picks each PC-MMR step took.
"""
from __future__ import annotations

from dataclasses import dataclass

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


def step_caps(budget: int, first_chunk: int = 1, growth: float = 2.0) -> list[int]:
    """Each PC-MMR step's cap (the most picks it may take) until the caps stop growing (the last one then
    repeats): 1 for the first step, then first_chunk, times growth each step, capped by budget and MAX_CHUNK."""
    _check_schedule(first_chunk, growth)
    cap = max(1, min(budget, MAX_CHUNK))
    sizes, size = [1], float(first_chunk)
    while True:
        sizes.append(min(max(1, int(size)), cap))
        if sizes[-1] == cap or growth == 1.0:
            return sizes
        size *= growth


@dataclass(frozen=True)
class Steps:
    """How many picks each PC-MMR step took, kept where the run left it (on the GPU for the kernels) so
    that recording it costs no host sync; tolist() reads it."""
    counts: Tensor              # [steps] int, 0 for steps that found the budget filled
    total: int                  # picks in all; picks the counts miss (the kernels' finisher) took one step each

    def tolist(self) -> list[int]:
        steps = [c for c in self.counts.tolist() if c > 0]
        return steps + [1] * (self.total - sum(steps))


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
                  chunks: list[int]) -> tuple[Tensor, Steps]:
    """PC-MMR in plain PyTorch (CPU, and the reference for the CUDA kernels): picks and steps."""
    n, device = relevance.shape[0], relevance.device
    red = torch.full((n,), float("-inf"), device=device)    # -inf: nothing picked yet (redundancy 0)
    taken = torch.zeros(n, dtype=torch.bool, device=device)
    score = relevance.clone()
    picks: list[Tensor] = []
    steps: list[int] = []
    count = 0
    while count < budget:
        c = min(chunks[min(len(steps), len(chunks) - 1)], budget - count)
        pool = min(2 * c, n - count)
        ranked = score.sort(descending=True, stable=True)   # stable: ties keep index order, as argmax
        cand = ranked.indices[:pool]
        tau, tau_token = (float(ranked.values[pool]), int(ranked.indices[pool])) if pool < n else (float("-inf"), n)
        slots = _pick_in_pool(factors.block(cand, cand), cand, relevance[cand], red[cand], ranked.values[:pool],
                              tau, tau_token, c, penalty)
        chosen = cand[slots]
        picks.append(chosen)
        steps.append(len(slots))
        taken[chosen] = True
        count += len(slots)
        red = torch.maximum(red, factors.columns(chosen).amax(dim=1))
        score = torch.add(relevance, red, alpha=-penalty).masked_fill_(taken, float("-inf"))
    out = torch.cat(picks) if picks else torch.empty(0, dtype=torch.long, device=device)
    return out, Steps(torch.tensor(steps, dtype=torch.int32), budget)


def pc_mmr(m: Tensor, k: Tensor, v: Tensor, budget: int, lam: float = 0.5,
           first_chunk: int = 1, growth: float = 2.0) -> Tensor:
    """Progressive chunked MMR: greedy MMR's picks, in greedy's order, taken several per step.

    Step caps (step_caps): the first step takes exactly one pick (before it nothing is picked and
    redundancy is 0; after it, it is a max of S, which may be negative, so scores could rise: no bound
    holds across that first pick). The next step takes at most first_chunk picks, each later step growth
    times more, up to MAX_CHUNK. A step with cap c ranks all tokens by MMR score and takes its pool, the
    top 2c. Inside the pool it runs greedy MMR with the pool's own [2c x 2c] block of S, and stops once the
    pool's best could be beaten by a token outside: outside scores only fall as tokens are taken, so the
    best of them at the start of the step bounds them all. So a step may take fewer picks than its cap
    (pc_mmr_steps says how many each took); chunking only decides how many picks share one step.
    Redundancy is then updated with one [N x picks] block of S; the [N x N] matrix is never built. On
    CUDA with Triton, steps run as fused kernels replayed as CUDA graphs (iwp/kernels/pc_mmr.py).
    Returns the picked indices in pick order.
    """
    return pc_mmr_steps(m, k, v, budget, lam, first_chunk, growth)[0]


def pc_mmr_steps(m: Tensor, k: Tensor, v: Tensor, budget: int, lam: float = 0.5,
                 first_chunk: int = 1, growth: float = 2.0) -> tuple[Tensor, Steps]:
    """pc_mmr's picks and how many picks each of its steps took (Steps: read with .tolist(), which
    waits for the GPU; recording them adds no host sync)."""
    budget = _check_budget(m, budget)
    _check_lam(lam)
    _check_schedule(first_chunk, growth)
    _check_qkv(k, v)
    n = m.shape[0]
    if k.shape[1] != n:
        raise ValueError(f"m has {n} tokens but k/v have {k.shape[1]}")
    if budget == 0:
        return torch.empty(0, dtype=torch.long, device=m.device), Steps(torch.empty(0, dtype=torch.int32), 0)
    relevance, penalty = _relevance(m, lam), 1.0 - lam
    chunks = step_caps(budget, first_chunk, growth)
    if m.device.type == "cuda" and n < kernels.MAX_TOKENS and kernels.cuda_pc_mmr().AVAILABLE:
        picks, counts = kernels.cuda_pc_mmr().pc_mmr(relevance, k, v, budget, penalty, chunks)
        return picks, Steps(counts, budget)
    return _pc_mmr_torch(relevance, DualFactors(k, v), budget, penalty, chunks)
