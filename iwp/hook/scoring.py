"""Scoring at layer K: the selector's inputs (layer K's own q, k, v of the visual tokens), one selector
run per image / video, and the positions each prompt keeps.

Planning happens on the host (a copy of input_ids made when the call started), so finding the images never
waits for the device. Only what the selector reads is computed: RoPE'd keys, the last query and the
features are made on first use (LazyInput); the record computes the rest when a Selection is asked for.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .. import compat
from ..baselines import SelectorInput
from ..clock import Clock
from ..selectors import select
from .state import Prefill, Record


class Rows:
    """Sequence positions known on the host (ascending); taken from device tensors as a view when they
    are contiguous, else through one index tensor sent to the device once."""

    def __init__(self, host: Tensor, device):
        self.host, self.device, self._index = host, device, None
        n = host.numel()
        self.start = int(host[0]) if n else 0
        self.contiguous = n > 0 and int(host[-1]) - self.start + 1 == n
        self.stop = self.start + n

    def index(self) -> Tensor:
        if self._index is None:
            self._index = self.host.to(self.device, non_blocking=True)
        return self._index

    def take(self, x: Tensor, dim: int = 0) -> Tensor:
        if self.contiguous:
            return x.narrow(dim, self.start, self.stop - self.start)
        return x.index_select(dim, self.index())


class LazyInput(SelectorInput):
    """A SelectorInput whose optional fields (k_rope, q_last_rope, features) are made when first read, so
    each selector pays only for what it uses."""

    def __init__(self, q: Tensor, k: Tensor, v: Tensor, grid, seed: int, makers: dict[str, Callable]):
        self.q, self.k, self.v, self.grid, self.seed = q, k, v, grid, seed
        self._makers, self._made = makers, {}

    def _get(self, name: str):
        if name not in self._made:
            make = self._makers.get(name)
            self._made[name] = make() if make is not None else None
        return self._made[name]

    def keep_only(self, *names: str) -> None:
        """Forget the other fields and their makers (they may hold the layer's hidden states)."""
        self._makers = {n: f for n, f in self._makers.items() if n in names}
        self._made = {n: x for n, x in self._made.items() if n in names}

    k_rope = property(lambda self: self._get("k_rope"))
    q_last_rope = property(lambda self: self._get("q_last_rope"))
    features = property(lambda self: self._get("features"))


class Once:
    """A value computed on first use (shared by the groups of one prompt)."""

    def __init__(self, make: Callable):
        self._make, self._value = make, None

    def __call__(self):
        if self._make is not None:
            self._value, self._make = self._make(), None
        return self._value


def select_tokens(ctx: Prefill, layer: nn.Module, hidden: Tensor,
                  position_embeddings: tuple[Tensor, Tensor]) -> tuple[list[Tensor] | None, Record]:
    """Run the selector on every image / video: (per prompt the sorted positions to keep, or None when
    nothing is cut; the record)."""
    ids, host = ctx.call.get("input_ids"), ctx.call.get("host")
    B = hidden.shape[0]
    empty = Record(settings=ctx.settings, groups=[[] for _ in range(B)], clock=Clock(hidden.device),
                   spans=[None] * B, step=ctx.step)
    if ids is None or host is None or tuple(ids.shape) != tuple(hidden.shape[:2]):
        if ctx.items:                                  # features were merged, but nothing says where
            raise ValueError("iwp finds visual tokens by their placeholder ids: call the model with input_ids "
                             "(not inputs_embeds alone) when it has images or videos")
        return None, empty
    attn = layer.self_attn
    # Work where layer K's weights are: with device_map="auto" this hook runs before accelerate moves
    # the layer's inputs, and input_ids live on the first device.
    dev = attn.q_proj.weight.device
    if dev.type == "meta":
        raise RuntimeError(f"iwp scores visual tokens with decoder layer {ctx.settings.layer}'s own weights, "
                           "but they are offloaded (on the meta device); keep that layer on a GPU or choose "
                           "another layer with iwp.apply(..., layer=K)")
    clock = Clock(dev)
    clock.mark()                                         # reached once the layers before K are done
    ids, am = host.get()
    groups = ctx.family.groups(ids, ctx.items)
    if not any(groups):                                  # a text-only prompt: an empty record, no cut
        return None, empty
    hidden = hidden.to(dev)
    cos, sin = (x.to(dev) for x in position_embeddings)
    L = ids.shape[1]
    ramp = Once(lambda: torch.arange(L, device=dev))
    clock.mark()
    keeps, rec_groups, spans = [], [], []
    for b in range(B):
        if not groups[b]:
            keeps.append(ramp())
            rec_groups.append([])
            spans.append(None)
            continue
        start = len(clock.marks) - 1
        keep, recs = _select_prompt(ctx, layer, hidden[b], _row(cos, b), _row(sin, b), groups[b],
                                    None if am is None else am[b], ramp)
        spans.append((start, clock.mark()))
        keeps.append(keep)
        rec_groups.append(recs)
    record = Record(settings=ctx.settings, groups=rec_groups, clock=clock, spans=spans, step=ctx.step)
    return (None if ctx.settings.keep_ratio >= 1.0 else keeps), record


def _select_prompt(ctx: Prefill, layer: nn.Module, hidden: Tensor, cos: Tensor, sin: Tensor, gs: list,
                   am: Tensor | None, ramp: Once) -> tuple[Tensor | None, list]:
    """One prompt [L, D]: score its visual tokens, run the selector per group; (kept positions or None
    at keep_ratio 1.0, record entries)."""
    attn, s, dev = layer.self_attn, ctx.settings, hidden.device
    L = hidden.shape[0]
    vis, qrows = _prompt_rows(gs, am, L, dev)
    x = layer.input_layernorm(hidden)
    q = _heads(attn, "q", qrows.take(x))                       # [Hq, T, d] pre-RoPE
    xv = vis.take(x)
    k, v = _heads(attn, "k", xv), _heads(attn, "v", xv)
    rope = compat.rope_function(attn)
    k_rope = Once(lambda: _rotated(rope, k, vis.take(cos), vis.take(sin)))
    q_last_rope = Once(lambda: _rotated(rope, _heads(attn, "q", x[L - 1:]), cos[L - 1:], sin[L - 1:]))
    picks, recs, start = [], [], 0
    for g in gs:
        n = g.positions.numel()
        sl = slice(start, start + n)
        start += n
        rows = Rows(g.positions, dev)
        inp = LazyInput(q, k[:, sl], v[:, sl], ctx.family.grid(g.info), s.seed,
                     {"k_rope": lambda sl=sl: k_rope()[:, sl], "q_last_rope": q_last_rope,
                      "features": lambda rows=rows: rows.take(hidden)})
        budget = max(1, round(s.keep_ratio * n)) if s.keep_ratio < 1.0 else n
        p = select(s.method, inp, budget, **s.params).detach()
        inp.keep_only("k_rope")                                # the record needs k_rope, never the hidden states
        picks.append((rows, p))
        recs.append((g, p, inp))
    if s.keep_ratio >= 1.0:
        return None, recs
    return _kept_positions(picks, vis, L, ramp), recs


def _prompt_rows(gs: list, am: Tensor | None, L: int, device) -> tuple[Rows, Rows]:
    """(visual tokens, query rows) of one prompt, planned on the host. The query rows are the text after
    the last visual token (the question), or the last token when there is none."""
    vis = torch.cat([g.positions for g in gs])
    after = torch.arange(L) > int(vis.max())
    if am is not None:
        after &= am
    rows = after.nonzero().squeeze(1)
    return Rows(vis, device), Rows(rows if rows.numel() else torch.tensor([L - 1]), device)


def _kept_positions(picks: list[tuple[Rows, Tensor]], vis: Rows, L: int, ramp: Once) -> Tensor:
    """Sorted prompt positions to keep: every non-visual one and each group's picks."""
    if all(rows.contiguous for rows, _ in picks):              # groups are runs in prompt order: no global sort
        parts, prev = [], 0
        for rows, p in picks:
            if rows.start > prev:
                parts.append(ramp()[prev:rows.start])
            parts.append(p.sort().values + rows.start)
            prev = rows.stop
        if prev < L:
            parts.append(ramp()[prev:])
        return torch.cat(parts)
    is_vis = torch.zeros(L, dtype=torch.bool)
    is_vis[vis.host] = True
    text = Rows((~is_vis).nonzero().squeeze(1), vis.device)
    return torch.cat([text.index(), *(rows.index()[p] for rows, p in picks)]).sort().values


def _heads(attn: nn.Module, which: str, x: Tensor) -> Tensor:
    """x [n, D] through q/k/v_proj (and q_norm/k_norm where the model has them) -> [heads, n, head_dim]."""
    d = attn.head_dim
    y = getattr(attn, f"{which}_proj")(x).view(x.shape[0], -1, d)
    norm = getattr(attn, f"{which}_norm", None)
    if norm is not None:
        y = norm(y)
    return y.transpose(0, 1)


def _rotated(rope, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [H, n, d] after RoPE at rows cos, sin [n, d], by the model's own function."""
    # its second operand is an empty batch: the function runs for x alone (no work, no kernel for it)
    return rope(x[None], x[None][:0], cos[None], sin[None])[0][0]


def _row(x: Tensor, b: int) -> Tensor:
    """Row b of a [B or 1, L, ...] tensor."""
    return x[b] if x.shape[0] > 1 else x[0]
