"""Peer selectors on IWP's interface: SelectorInput and a budget in, picked indices in pick order out.

Each is this project's implementation of the published idea (method.md 8), run through the same hook.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .dual_form import information_magnitude
from .mmr import Steps


@dataclass
class SelectorInput:
    """What the pruning layer knows about one image's (or one video's) N visual tokens.

    q: [Hq,T,d] pre-RoPE queries of the text after the last visual token; k, v: [Hkv,N,d] pre-RoPE keys
    and values; k_rope: [Hkv,N,d] keys after RoPE; q_last_rope: [Hq,1,d] the last prompt token's query
    after RoPE; features: [N,D] hidden states entering the layer; grid: (frames, rows, cols) of the tokens
    in raster order when they form one, else None; seed: for the random selector.
    steps: written by the selector, not read: how many picks each of its steps took (iwp.mmr.Steps), for
    selectors that take several picks a step (IWP's PC-MMR); None for those that pick one at a time or
    sort once (selectors.select resets it).
    """
    q: Tensor
    k: Tensor
    v: Tensor
    k_rope: Tensor | None = None
    q_last_rope: Tensor | None = None
    features: Tensor | None = None
    grid: tuple[int, int, int] | None = None
    seed: int = 0
    steps: Steps | None = None

    @property
    def n(self) -> int:
        return self.k.shape[1]


def _budget(inp: SelectorInput, budget: int) -> int:
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    return min(budget, inp.n)


def random(inp: SelectorInput, budget: int) -> Tensor:
    """A seeded uniformly random subset: the floor every selector must beat."""
    gen = torch.Generator().manual_seed(inp.seed)
    return torch.randperm(inp.n, generator=gen)[:_budget(inp, budget)].to(inp.k.device)


def _grid_coords(inp: SelectorInput) -> Tensor:
    """(frame, row, col) of each token, as floats; a 1-D strip when there is no grid."""
    f, r, c = inp.grid if inp.grid is not None and inp.grid[0] * inp.grid[1] * inp.grid[2] == inp.n else (1, 1, inp.n)
    idx = torch.arange(inp.n)
    # frames are spaced wider than any image, so spreading over frames comes first
    return torch.stack([idx // (r * c) * float(r + c), (idx % (r * c)) // c, idx % c], dim=1).float()


def uniform(inp: SelectorInput, budget: int) -> Tensor:
    """Tokens evenly spread over the grid (farthest-point order on token coordinates), query-agnostic."""
    return _farthest_point(_grid_coords(inp), _budget(inp, budget), metric="euclidean").to(inp.k.device)


def fastv(inp: SelectorInput, budget: int) -> Tensor:
    """FastV (Chen et al., ECCV 2024): top attention from the last prompt token, averaged over heads.

    The softmax runs over the visual keys (after RoPE); no value norm, no duplication term.
    """
    if inp.q_last_rope is None or inp.k_rope is None:
        raise ValueError("fastv needs q_last_rope and k_rope")
    attn = information_magnitude(inp.q_last_rope, inp.k_rope, torch.ones_like(inp.v[..., :1]))
    return _top(attn, _budget(inp, budget))


def magnitude(inp: SelectorInput, budget: int) -> Tensor:
    """IWP's information magnitude alone, top-K (the magnitude-only ablation of the IWP paper)."""
    return _top(information_magnitude(inp.q, inp.k, inp.v), _budget(inp, budget))


def divprune(inp: SelectorInput, budget: int) -> Tensor:
    """DivPrune (Alvar et al., CVPR 2025): greedy max-min cosine diversity of the token features."""
    if inp.features is None:
        raise ValueError("divprune needs features")
    return _farthest_point(inp.features.float(), _budget(inp, budget), metric="cosine")


def _top(score: Tensor, budget: int) -> Tensor:
    """Indices of the highest scores, best first, ties to the lowest index."""
    return score.sort(descending=True, stable=True).indices[:budget]


def _farthest_point(x: Tensor, budget: int, metric: str) -> Tensor:
    """Greedy max-min selection, starting from the point farthest from the mean."""
    n = x.shape[0]
    picks = torch.empty(budget, dtype=torch.long, device=x.device)
    if budget == 0:
        return picks
    if metric == "cosine":                      # unit rows once: each step is then one matrix-vector product
        x = torch.nn.functional.normalize(x, dim=-1)

    def dist(point: Tensor) -> Tensor:
        if metric == "cosine":
            return 1 - x @ point
        return (x - point[None, :]).norm(dim=-1)

    centre = x.mean(0)
    # current stays a 1-element device tensor: indexing with a 0-d one would sync with the host every pick
    current = dist(torch.nn.functional.normalize(centre, dim=0) if metric == "cosine" else centre).argmax().reshape(1)
    nearest = torch.full((n,), float("inf"), device=x.device)
    for t in range(budget):
        picks[t:t + 1] = current
        nearest = torch.minimum(nearest, dist(x.index_select(0, current)[0]))
        nearest.index_fill_(0, current, -1.0)        # never picked again
        current = nearest.argmax().reshape(1)
    return picks
