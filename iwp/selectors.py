"""IWP's own selector and the registry of every selector the hook can run by name."""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from . import baselines
from .baselines import SelectorInput
from .dual_form import information_magnitude
from .mmr import pc_mmr_steps

DEFAULT_LAM = 0.5
# The schedule changes only the speed (picks are greedy MMR's). Step caps 1, 64, then 127: fastest on an H100.
DEFAULT_FIRST_CHUNK = 64
DEFAULT_GROWTH = 2.0
# Which query tokens Eq. 10's magnitude averages over (the paper does not fix it): "text", every prompt token
# after the last visual token (the question and the template's tail), or "last", the last prompt token only.
QUERIES = ("text", "last")
DEFAULT_QUERY = "text"


def iwp(inp: SelectorInput, budget: int, lam: float = DEFAULT_LAM, first_chunk: int = DEFAULT_FIRST_CHUNK,
        growth: float = DEFAULT_GROWTH, query: str = DEFAULT_QUERY) -> Tensor:
    """IWP: information magnitude (pre-RoPE) traded against duplication (post-RoPE keys) by PC-MMR; sets
    inp.steps to PC-MMR's steps.

    query: "text" (default) averages the magnitude over the queries of every text token after the last
    visual token; "last" uses the last prompt token's (pre-RoPE) query alone."""
    if query not in QUERIES:
        raise ValueError(f"query must be one of {QUERIES}, got {query!r}")
    m = information_magnitude(inp.q if query == "text" else inp.q[:, -1:], inp.k, inp.v)
    k_dup = inp.k_rope if inp.k_rope is not None else inp.k
    picks, inp.steps = pc_mmr_steps(m, k_dup, inp.v, budget, lam=lam, first_chunk=first_chunk, growth=growth)
    return picks


SELECTORS: dict[str, Callable[..., Tensor]] = {
    "iwp": iwp,
    "fastv": baselines.fastv,
    "divprune": baselines.divprune,
    "magnitude": baselines.magnitude,
    "uniform": baselines.uniform,
    "random": baselines.random,
}
IWP_PARAMS = ("lam", "first_chunk", "growth", "query")


def select(method: str, inp: SelectorInput, budget: int, **params) -> Tensor:
    """Run the named selector: picks in pick order. IWP takes lam/first_chunk/growth/query, the peers take no
    parameters. inp.steps then holds the selector's steps (picks per step), None for one pick a step."""
    if method not in SELECTORS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(SELECTORS)}")
    if method != "iwp":
        params = {}
    inp.steps = None                                  # a reused input must not show an earlier run's steps
    return SELECTORS[method](inp, budget, **params)
