"""The cut: the prefill's sequence restricted to text + kept tokens, and every mask made to match.

Kept tokens keep their original positions (and RoPE), so decoding continues from the original next
position. During prefill, layer K slices hidden states, (cos, sin), position ids and the mask; later layers
get the sliced positions and mask. During decoding only the mask's key columns change: the kept prompt
positions, then the new tokens. Prompts of a batch that keep different counts are re-left-padded with
masked dummies that see only themselves.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import compat
from .state import Cut, State


def make_cut(keep: list[Tensor], length: int, step: int, short_cache_masks: bool = False,
             padded: bool = False) -> Cut:
    """Per prompt kept positions -> one [B, L'] index, re-left-padded with masked dummies."""
    widths = [k.numel() for k in keep]
    width = max(widths)
    if len(set(widths)) == 1:                          # every prompt keeps as many: no dummies
        idx, valid = keep[0][None] if len(keep) == 1 else torch.stack(keep), None
    else:
        idx = torch.stack([nn.functional.pad(k, (width - k.numel(), 0)) for k in keep])
        valid = torch.tensor([[False] * (width - w) + [True] * w for w in widths]).to(keep[0].device)
    return Cut(idx=idx, valid=valid, length=length, step=step, short_cache_masks=short_cache_masks, padded=padded)


def take(x: Tensor, idx: Tensor) -> Tensor:
    """Gather positions idx [B, L'] from the sequence dim (dim 1) of x [B or 1, L, ...]."""
    idx = idx.to(x.device)
    if idx.shape[0] == 1 and x.shape[0] == 1:
        return x.index_select(1, idx[0])
    x = x.expand(idx.shape[0], *x.shape[1:])
    return x[torch.arange(idx.shape[0], device=idx.device)[:, None], idx]


def take_ids(pid: Tensor, idx: Tensor) -> Tensor:
    """Position ids [B, L] or [n, B, L] (M-RoPE) at the kept positions."""
    if pid.ndim == 2:
        return take(pid, idx)
    if idx.shape[0] == 1 and pid.shape[1] == 1:
        return pid.index_select(2, idx[0].to(pid.device))
    return torch.stack([take(p, idx) for p in pid])


def _allowed(mask: Tensor):
    return (True, False) if mask.dtype == torch.bool else (0.0, torch.finfo(mask.dtype).min)


def prefill_mask(mask, cut: Cut, hidden: Tensor, state: State):
    """The layer's prefill mask restricted to the kept rows and columns; dummies see only themselves."""
    cut = cut.on(mask.device if isinstance(mask, Tensor) else hidden.device)
    if mask is None:
        return _fresh_mask(cut, hidden, state, None) if cut.dummies else None
    if not isinstance(mask, Tensor):
        raise TypeError(f"iwp cannot cut a {type(mask).__name__} attention mask (use sdpa, eager or flash)")
    B, idx = cut.idx.shape[0], cut.idx
    if mask.ndim == 2:                                   # flash attention: [B, L] padding mask
        m = take(mask, idx)
        return m.masked_fill(~cut.valid, 0) if cut.dummies else m
    if B == 1 and mask.shape[0] == 1:
        m = mask.index_select(2, idx[0]).index_select(3, idx[0])
    else:
        m = mask.expand(B, *mask.shape[1:])
        m = torch.stack([m[b][:, idx[b]][:, :, idx[b]] for b in range(B)])
    if cut.dummies:
        yes, no = _allowed(m)
        m = m.masked_fill(~cut.valid[:, None, None, :], no)
        eye = torch.eye(idx.shape[1], dtype=torch.bool, device=m.device)[None, None]
        dummy_row = ~cut.valid[:, None, :, None]
        m = torch.where(dummy_row, torch.where(eye, torch.as_tensor(yes, dtype=m.dtype, device=m.device),
                                               torch.as_tensor(no, dtype=m.dtype, device=m.device)), m)
    return m


def decode_mask(mask, cut: Cut, hidden: Tensor, cache, i: int, state: State):
    """A decoding step's mask with key columns = kept prompt positions, then the new tokens."""
    cut = cut.on(mask.device if isinstance(mask, Tensor) else hidden.device)
    if cut.short_cache_masks:                        # layer 0 is cut too: the model sized this mask by its
        am = state.call.get("attention_mask")        # short cache, so rebuild it from the padding mask
        if cut.padded and isinstance(am, Tensor) and am.ndim == 2:
            cut = cut.on(am.device)
            cols = _decode_columns(cut, am.shape[1])
            ok = _keys_ok(cut, cols.shape[1])
            return _fresh_mask(cut, hidden, state, cols.shape[1], ok & take(am, cols).bool())
        mask = None
    if mask is None:
        return _fresh_mask(cut, hidden, state, compat.cache_length(cache, i) + hidden.shape[1]) if cut.dummies else None
    if not isinstance(mask, Tensor):
        raise TypeError(f"iwp cannot cut a {type(mask).__name__} attention mask (use sdpa, eager or flash)")
    B = cut.idx.shape[0]
    cols = _decode_columns(cut, mask.shape[-1])
    if mask.ndim == 2:
        m = take(mask, cols)
        return m.masked_fill(~_keys_ok(cut, cols.shape[1]), 0) if cut.dummies else m
    if B == 1 and mask.shape[0] == 1:
        m = mask.index_select(3, cols[0])
    else:
        m = mask.expand(B, *mask.shape[1:])
        m = torch.stack([m[b][..., cols[b]] for b in range(B)])
    return m.masked_fill(~_keys_ok(cut, cols.shape[1])[:, None, None, :], _allowed(m)[1]) if cut.dummies else m


def _decode_columns(cut: Cut, kv: int) -> Tensor:
    """[B, kv'] key columns of a decoding mask over kv keys: the kept prompt positions, then the new ones."""
    B = cut.idx.shape[0]
    new = torch.arange(cut.length, kv, device=cut.idx.device).expand(B, kv - cut.length)
    return torch.cat([cut.idx, new], dim=1)


def _keys_ok(cut: Cut, kv: int) -> Tensor:
    """[B, kv] True on the keys that may be seen: all but the cut's dummies (the new tokens come after)."""
    B, width = cut.idx.shape
    ones = torch.ones(B, kv - width if cut.dummies else kv, dtype=torch.bool, device=cut.idx.device)
    return torch.cat([cut.valid, ones], dim=1) if cut.dummies else ones


def _fresh_mask(cut: Cut, hidden: Tensor, state: State, kv_len: int | None, ok: Tensor | None = None):
    """A causal mask over the cut's keys, where the model's own mask cannot be cut (or there was none).

    ok [B, kv] marks the keys that may be seen; by default every key but the cut's dummies.
    """
    B, width = cut.idx.shape
    q = hidden.shape[1]
    kv = width if kv_len is None else kv_len
    if ok is None:
        ok = _keys_ok(cut, kv)
    if "flash" in compat.attn_implementation(state.lm.config):
        return ok.long()
    rows = torch.arange(kv - q, kv, device=ok.device)[:, None]
    allowed = (torch.arange(kv, device=ok.device)[None, :] <= rows)[None, None] & ok[:, None, None, :]
    if kv_len is None and cut.dummies:                   # prefill: dummy rows see themselves
        eye = torch.eye(width, dtype=torch.bool, device=ok.device)[None, None]
        allowed = torch.where(~cut.valid[:, None, :, None], eye, allowed)
    zero = torch.zeros((), dtype=hidden.dtype, device=ok.device)
    return torch.where(allowed, zero, torch.finfo(hidden.dtype).min)
