"""apply / remove IWP on one model instance: forward pre-hooks that drop visual tokens before layer K.

How it works (no copy of any forward):
- get_image_features / get_video_features of the base model are wrapped on the instance to record what
  each image / video is (token count, size, grid); a pre-hook on the base model records the call's
  input_ids and 2-D attention mask.
- A pre-hook on decoder layer K, during prefill, scores the visual tokens with layer K's own q/k/v
  projections, runs the selector per image / video, and slices hidden states, (cos, sin), position ids
  and the mask to text + kept tokens (sorted, left-padded per prompt). Kept tokens keep their original
  RoPE positions, so decoding continues from the original next position.
- Pre-hooks on layers > K hand them the sliced positions and mask during prefill, and during decoding
  cut the mask's key columns to the kept prompt tokens plus the new ones.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor, nn

from . import models
from .baselines import SelectorInput
from .dual_form import information_magnitude
from .selection import Selection, TokenGroup, categorize, covering
from .selectors import DEFAULT_FIRST_CHUNK, DEFAULT_GROWTH, DEFAULT_LAM, SELECTORS, select

DEFAULT_LAYER = 2
_ATTR = "_iwp_state"
_VISION_INPUTS = ("pixel_values", "pixel_values_videos")


@dataclass
class Settings:
    keep_ratio: float
    method: str
    layer: int
    params: dict
    seed: int


@dataclass
class _Cut:
    """The prefill's cut: per prompt, which original positions survive (left-padded with dummies)."""
    idx: Tensor                   # [B, L'] original positions, dummies point at 0
    valid: Tensor                 # [B, L'] False on dummies
    length: int                   # L, the prompt length before the cut
    step: int                     # the call (prefill) that made it
    short_cache_masks: bool = False   # cut before layer 0: the model sizes decoding masks by the cut cache
    position_embeddings: tuple | None = None
    position_ids: Tensor | None = None
    memo: dict = field(default_factory=dict)   # id(mask) -> (mask, sliced) within one call

    def on(self, device) -> "_Cut":
        """This cut with its index tensors on `device` (layers may sit on several GPUs)."""
        if self.idx.device == torch.device(device):
            return self
        key = ("on", str(device))
        if key not in self.memo:
            self.memo[key] = _Cut(self.idx.to(device), self.valid.to(device), self.length, self.step,
                                  self.short_cache_masks)
        return self.memo[key]


@dataclass
class _Record:
    """Raw tensors of one prefill's selection; last_selection turns them into Selection objects."""
    settings: Settings
    groups: list                  # per prompt: list of (Group, picks, q, k, k_rope, v)
    seconds: list                 # per prompt


class _State:
    def __init__(self, model: nn.Module, family: models.Family, settings: Settings):
        self.family, self.settings = family, settings
        self.lm = family.language_model(model)
        self.handles: list = []
        self.wrapped: list[str] = []
        self.items: dict[str, list[dict]] = {}       # facts of the images/videos of the current call
        self.fresh = False                           # items recorded since the last base-model call
        self.call: dict = {}
        self.step = 0
        self.cut: _Cut | None = None
        self.record: _Record | None = None


def apply(model: nn.Module, keep_ratio: float = 0.25, method: str = "iwp", layer: int = DEFAULT_LAYER,
          lam: float = DEFAULT_LAM, first_chunk: int = DEFAULT_FIRST_CHUNK, growth: float = DEFAULT_GROWTH,
          seed: int = 0) -> nn.Module:
    """Patch this model instance in place to keep keep_ratio of each image's / video's visual tokens.

    Tokens are dropped once, during prefill, before decoder layer `layer`; text tokens are never dropped.
    Re-applying updates the settings. Needs the default DynamicCache. Returns the model.
    """
    family = models.for_model(model)
    n_layers = len(family.language_model(model).layers)
    if not 0.0 < float(keep_ratio) <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    if method not in SELECTORS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(SELECTORS)}")
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ValueError(f"layer must be an int in [0, {n_layers - 1}] (the model has {n_layers} decoder layers), "
                         f"got {layer!r}")
    params = {"lam": lam, "first_chunk": first_chunk, "growth": growth} if method == "iwp" else {}
    settings = Settings(float(keep_ratio), method, layer, params, seed)
    state = getattr(model, _ATTR, None)
    if state is not None:                            # idempotent: new settings, same hooks
        state.settings = settings
        return model
    state = _State(model, family.bind(model), settings)
    base = model.model
    for kind in ("image", "video"):
        name = f"get_{kind}_features"
        if hasattr(base, name):
            setattr(base, name, _recording(getattr(base, name), state, model, kind))
            state.wrapped.append(name)
    state.handles.append(base.register_forward_pre_hook(functools.partial(_on_call, state), with_kwargs=True))
    for i, layer_module in enumerate(state.lm.layers):
        state.handles.append(layer_module.register_forward_pre_hook(
            functools.partial(_on_layer, state, i), with_kwargs=True))
    setattr(model, _ATTR, state)
    return model


def remove(model: nn.Module) -> nn.Module:
    """Undo apply: remove every hook, wrapper and state, restoring the exact original behaviour."""
    state = getattr(model, _ATTR, None)
    if state is None:
        return model
    for h in state.handles:
        h.remove()
    for name in state.wrapped:
        delattr(model.model, name)                   # the class method shows through again
    delattr(model, _ATTR)
    return model


def is_patched(model: nn.Module) -> bool:
    return getattr(model, _ATTR, None) is not None


@contextlib.contextmanager
def pruning(model: nn.Module, **settings) -> Iterator[nn.Module]:
    """Scoped apply: `with iwp.pruning(model, keep_ratio=0.25): model.generate(...)`; restores after."""
    state = getattr(model, _ATTR, None)
    before = state.settings if state is not None else None
    apply(model, **settings)
    try:
        yield model
    finally:
        if before is None:
            remove(model)
        else:
            getattr(model, _ATTR).settings = before


def last_selection(model: nn.Module, image_sizes: list[tuple[int, int]] | None = None,
                   processor=None) -> list[Selection] | None:
    """What the last prefill kept: one Selection per prompt of the batch, or None before any prefill.

    image_sizes: optional (width, height) of each original image / video frame, in prompt order (all
    groups of prompt 0, then prompt 1, ...), so boxes come in original pixels; families that receive the
    sizes themselves (OneVision images) do not need it. Without it boxes are in the model's view pixels.
    processor: optional, tells LLaVA boxes whether the processor cropped, padded or squashed.
    Cover, categories and boxes are computed here, not during the prefill.
    """
    state = getattr(model, _ATTR, None)
    if state is None or state.record is None:
        return None
    rec, out, sizes = state.record, [], list(image_sizes or [])
    for b, groups in enumerate(rec.groups):
        tgs = []
        for g, picks, q, k, k_rope, v in groups:
            mag = information_magnitude(q, k, v)           # for the picture, whatever the method
            size = sizes.pop(0) if sizes else None
            size = tuple(size) if size is not None else g.info.get("image_size")
            boxes, frames, image_size = state.family.boxes(model, g.info, size, processor)
            cover, sim = covering(k_rope, v, picks)
            tgs.append(TokenGroup(
                kind=g.kind, index=g.index, positions=g.positions.tolist(), kept=picks.tolist(),
                magnitude=[round(x, 8) for x in mag.tolist()], cover=cover, cover_similarity=sim,
                categories=categorize(mag, picks), boxes=[tuple(x) if x is not None else None for x in boxes],
                frames=frames, image_size=tuple(image_size) if image_size is not None else None,
                budget=picks.numel()))
        out.append(Selection(groups=tgs, layer=rec.settings.layer, method=rec.settings.method,
                             keep_ratio=rec.settings.keep_ratio, params=dict(rec.settings.params),
                             seconds=rec.seconds[b], batch_index=b))
    return out


# ---------------------------------------------------------------------------------------------- hooks

def _recording(fn, state: _State, model: nn.Module, kind: str):
    """Wrap get_{kind}_features so every call records what each image / video is."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        output = fn(*args, **kwargs)
        try:
            call = sig.bind_partial(*args, **kwargs).arguments
        except TypeError:
            call = dict(kwargs)
        state.items[kind] = state.family.describe(model, kind, call, output)
        state.fresh = True
        return output
    return wrapper


def _on_call(state: _State, module, args, kwargs):
    """Base-model pre-hook: remember input_ids and the padding mask; check the cache kind."""
    cache = kwargs.get("past_key_values")
    if cache is not None:
        _check_cache(cache)
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    if any(kwargs.get(k) is not None for k in _VISION_INPUTS):
        state.items = {}                             # this forward encodes: the wrapper will record
    elif kwargs.get("mm_encoder_outputs"):           # pre-encoded (generate in transformers >= 5.18)
        enc = kwargs["mm_encoder_outputs"]
        counts = {k: models.feature_counts(o) for k, o in enc.items() if o is not None}
        if not state.fresh or any([i["count"] for i in state.items.get(k, [])] != c for k, c in counts.items()):
            state.items = {k: [{"count": n} for n in c] for k, c in counts.items()}
    else:
        state.items = {}
    state.fresh = False
    state.step += 1
    state.call = {"input_ids": input_ids, "attention_mask": kwargs.get("attention_mask")}


def _check_cache(cache) -> None:
    from transformers.cache_utils import DynamicCache, DynamicLayer
    layers = getattr(cache, "layers", [])
    if not isinstance(cache, DynamicCache) or any(type(x) is not DynamicLayer for x in layers):
        raise ValueError(f"iwp needs the default DynamicCache (full-attention layers); got "
                         f"{type(cache).__name__}. Static, sliding-window and quantized caches keep a fixed "
                         "layout per layer, so layers after the cut cannot hold fewer tokens.")


def _on_layer(state: _State, i: int, module, args, kwargs):
    """Decoder-layer pre-hook: cut at layer K during prefill; adapt positions and masks after it."""
    K = state.settings.layer
    if i < K:
        return None
    hidden = args[0] if args else kwargs["hidden_states"]
    cache = kwargs.get("past_key_values")
    if i == K and (cache is None or cache.get_seq_length(i) == 0):
        state.cut = None
        state.record = None
        with torch.no_grad():
            keep = _select(state, module, hidden, kwargs)
        if keep is None or state.settings.keep_ratio >= 1.0:
            return None                                # keep_ratio 1.0 scores but never slices
        state.cut = _make_cut(keep, state.call["input_ids"].shape[1], state.step, short_cache_masks=K == 0)
    cut = state.cut
    if cut is None:
        return None
    kwargs = dict(kwargs)
    if cut.step == state.step:                         # prefill: everything is over the prompt's positions
        if i == K:
            hidden = _take(hidden, cut.idx)
            cos, sin = kwargs["position_embeddings"]
            cut.position_embeddings = (_take(cos, cut.idx), _take(sin, cut.idx))
            pid = kwargs.get("position_ids")
            cut.position_ids = _take_ids(pid, cut.idx) if pid is not None else None
            args = (hidden, *args[1:]) if args else args
            if not args:
                kwargs["hidden_states"] = hidden
        kwargs["position_embeddings"] = cut.position_embeddings
        if "position_ids" in kwargs:
            kwargs["position_ids"] = cut.position_ids
        kwargs["attention_mask"] = _memo(cut, state.step, kwargs.get("attention_mask"),
                                         lambda m: _cut_prefill_mask(m, cut, hidden, state))
    else:                                              # decoding: only the key columns change
        kwargs["attention_mask"] = _memo(cut, state.step, kwargs.get("attention_mask"),
                                         lambda m: _cut_decode_mask(m, cut, hidden, cache, i, state))
    return args, kwargs


def _memo(cut: _Cut, step: int, mask, fn):
    """Slice each distinct mask once per call (all full-attention layers share one mask object)."""
    key = (step, id(mask))
    hit = cut.memo.get(key)
    if hit is None or hit[0] is not mask:
        if cut.memo and next(iter(cut.memo))[0] != step:
            cut.memo.clear()
        hit = cut.memo[key] = (mask, fn(mask))
    return hit[1]


# ------------------------------------------------------------------------------------------ selection

def _select(state: _State, layer: nn.Module, hidden: Tensor, kwargs: dict) -> list[Tensor] | None:
    """Run the selector on every image / video; returns per prompt the sorted positions to keep."""
    ids = state.call.get("input_ids")
    if ids is None or ids.shape[1] != hidden.shape[1] or ids.shape[0] != hidden.shape[0]:
        return None                                    # no token ids to find the images (inputs_embeds only)
    attn = layer.self_attn
    # Work where layer K's weights are: with device_map="auto" this hook runs before accelerate moves
    # the layer's inputs, and input_ids live on the first device.
    dev = attn.q_proj.weight.device
    if dev.type == "meta":
        raise RuntimeError(f"iwp scores visual tokens with decoder layer {state.settings.layer}'s own weights, "
                           "but they are offloaded (on the meta device); keep that layer on a GPU or choose "
                           "another layer with iwp.apply(..., layer=K)")
    hidden, ids = hidden.to(dev), ids.to(dev)
    groups = state.family.groups(ids, state.items)
    if not any(groups):
        return None
    s = state.settings
    rope = _rope_fn(attn)
    cos, sin = (x.to(dev) for x in kwargs["position_embeddings"])
    B, L = ids.shape
    am = state.call.get("attention_mask")
    am = am.to(dev) if isinstance(am, Tensor) else am
    am = am.bool() if isinstance(am, Tensor) and am.ndim == 2 and am.shape == ids.shape else None
    keeps, rec_groups, seconds = [], [], []
    if hidden.is_cuda:
        torch.cuda.synchronize(hidden.device)            # the clock starts when the layers before K are done
    for b in range(B):
        t0 = time.perf_counter()
        gs = groups[b]
        is_vis = torch.zeros(L, dtype=torch.bool, device=ids.device)
        if not gs:
            keeps.append(torch.arange(L, device=ids.device))
            rec_groups.append([])
            seconds.append(0.0)
            continue
        vis = torch.cat([g.positions for g in gs])
        is_vis[vis] = True
        after = torch.arange(L, device=ids.device) > vis.max()
        if am is not None:
            after &= am[b]
        qpos = after.nonzero().squeeze(1)
        if qpos.numel() == 0:
            qpos = torch.tensor([L - 1], device=ids.device)
        last = torch.tensor([L - 1], device=ids.device)
        x = layer.input_layernorm(hidden[b])
        q = _heads(attn, "q", x[qpos])                       # [Hq, T, d] pre-RoPE
        q_last = _heads(attn, "q", x[last])
        k, v = _heads(attn, "k", x[vis]), _heads(attn, "v", x[vis])
        cb, sb = _row(cos, b), _row(sin, b)
        k_rope = rope(k[None], k[None], cb[vis][None], sb[vis][None])[0][0]
        q_last_rope = rope(q_last[None], q_last[None], cb[last][None], sb[last][None])[0][0]
        kept_pos, recs, start = [], [], 0
        for g in gs:
            n = g.positions.numel()
            sl = slice(start, start + n)
            start += n
            inp = SelectorInput(q=q, k=k[:, sl], v=v[:, sl], k_rope=k_rope[:, sl], q_last_rope=q_last_rope,
                                features=hidden[b, g.positions], grid=state.family.grid(g.info), seed=s.seed)
            budget = max(1, round(s.keep_ratio * n)) if s.keep_ratio < 1.0 else n
            picks = select(s.method, inp, budget, **s.params)
            kept_pos.append(g.positions[picks])
            recs.append((g, picks.detach(), q.detach(), k[:, sl].detach(), k_rope[:, sl].detach(), v[:, sl].detach()))
        keep = torch.cat([(~is_vis).nonzero().squeeze(1), *kept_pos]).sort().values
        if keep.is_cuda:
            torch.cuda.synchronize(keep.device)              # honest timing of scoring + selection
        seconds.append(time.perf_counter() - t0)
        keeps.append(keep)
        rec_groups.append(recs)
    state.record = _Record(settings=s, groups=rec_groups, seconds=seconds)
    return keeps


def _heads(attn: nn.Module, which: str, x: Tensor) -> Tensor:
    """x [n, D] through q/k/v_proj (and q_norm/k_norm where the model has them) -> [heads, n, head_dim]."""
    d = attn.head_dim
    y = getattr(attn, f"{which}_proj")(x).view(x.shape[0], -1, d)
    norm = getattr(attn, f"{which}_norm", None)
    if norm is not None:
        y = norm(y)
    return y.transpose(0, 1)


def _rope_fn(attn: nn.Module):
    """The modeling module's own apply_rotary_pos_emb(q, k, cos, sin) (rotate-half form)."""
    fn = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb", None)
    if fn is None:
        raise TypeError(f"no apply_rotary_pos_emb next to {type(attn).__name__}")
    return fn


def _row(x: Tensor, b: int) -> Tensor:
    """Row b of a [B or 1, L, ...] tensor."""
    return x[b] if x.shape[0] > 1 else x[0]


# ------------------------------------------------------------------------------------------- slicing

def _make_cut(keep: list[Tensor], length: int, step: int, short_cache_masks: bool = False) -> _Cut:
    """Per prompt kept positions -> one [B, L'] index, re-left-padded with masked dummies."""
    width = max(k.numel() for k in keep)
    device = keep[0].device
    idx = torch.zeros(len(keep), width, dtype=torch.long, device=device)
    valid = torch.zeros(len(keep), width, dtype=torch.bool, device=device)
    for b, k in enumerate(keep):
        idx[b, width - k.numel():] = k
        valid[b, width - k.numel():] = True
    return _Cut(idx=idx, valid=valid, length=length, step=step, short_cache_masks=short_cache_masks)


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """Gather positions idx [B, L'] from the sequence dim (dim 1) of x [B or 1, L, ...]."""
    idx = idx.to(x.device)
    x = x.expand(idx.shape[0], *x.shape[1:])
    return x[torch.arange(idx.shape[0], device=idx.device)[:, None], idx]


def _take_ids(pid: Tensor, idx: Tensor) -> Tensor:
    """Position ids [B, L] or [n, B, L] (M-RoPE) at the kept positions."""
    if pid.ndim == 2:
        return _take(pid, idx)
    return torch.stack([_take(p, idx) for p in pid])


def _allowed(mask: Tensor):
    return (True, False) if mask.dtype == torch.bool else (0.0, torch.finfo(mask.dtype).min)


def _cut_prefill_mask(mask, cut: _Cut, hidden: Tensor, state: _State):
    """The layer's prefill mask restricted to the kept rows and columns; dummies see only themselves."""
    cut = cut.on(mask.device if isinstance(mask, Tensor) else hidden.device)
    dummies = not bool(cut.valid.all())
    if mask is None:
        return _fresh_mask(cut, hidden, state, None) if dummies else None
    if not isinstance(mask, Tensor):
        raise TypeError(f"iwp cannot cut a {type(mask).__name__} attention mask (use sdpa, eager or flash)")
    B, idx = cut.idx.shape[0], cut.idx
    if mask.ndim == 2:                                   # flash attention: [B, L] padding mask
        return _take(mask, idx).masked_fill(~cut.valid, 0)
    m = mask.expand(B, *mask.shape[1:])
    m = torch.stack([m[b][:, idx[b]][:, :, idx[b]] for b in range(B)])
    if dummies:
        yes, no = _allowed(m)
        m = m.masked_fill(~cut.valid[:, None, None, :], no)
        eye = torch.eye(idx.shape[1], dtype=torch.bool, device=m.device)[None, None]
        dummy_row = ~cut.valid[:, None, :, None]
        m = torch.where(dummy_row, torch.where(eye, torch.as_tensor(yes, dtype=m.dtype, device=m.device),
                                               torch.as_tensor(no, dtype=m.dtype, device=m.device)), m)
    return m


def _cut_decode_mask(mask, cut: _Cut, hidden: Tensor, cache, i: int, state: _State):
    """A decoding step's mask with key columns = kept prompt positions, then the new tokens."""
    cut = cut.on(mask.device if isinstance(mask, Tensor) else hidden.device)
    dummies = not bool(cut.valid.all())
    if cut.short_cache_masks:                        # layer 0 is cut too: the model sized this mask by its
        am = state.call.get("attention_mask")        # short cache, so rebuild it from the padding mask
        if isinstance(am, Tensor) and am.ndim == 2 and not bool(am.all()):
            cut = cut.on(am.device)
            cols = torch.cat([cut.idx, torch.arange(cut.length, am.shape[1], device=am.device)
                              .expand(am.shape[0], -1)], dim=1)
            ok = torch.cat([cut.valid, torch.ones_like(am[:, cut.length:], dtype=torch.bool)], dim=1)
            return _fresh_mask(cut, hidden, state, cols.shape[1], ok & _take(am, cols).bool())
        mask = None
    if mask is None:
        return _fresh_mask(cut, hidden, state, cache.get_seq_length(i) + hidden.shape[1]) if dummies else None
    if not isinstance(mask, Tensor):
        raise TypeError(f"iwp cannot cut a {type(mask).__name__} attention mask (use sdpa, eager or flash)")
    B, width = cut.idx.shape
    new = mask.shape[-1] - cut.length
    cols = torch.cat([cut.idx, torch.arange(cut.length, mask.shape[-1], device=cut.idx.device)
                      .expand(B, new)], dim=1)
    ok = torch.cat([cut.valid, torch.ones(B, new, dtype=torch.bool, device=cut.idx.device)], dim=1)
    if mask.ndim == 2:
        return _take(mask, cols).masked_fill(~ok, 0)
    m = mask.expand(B, *mask.shape[1:])
    m = torch.stack([m[b][..., cols[b]] for b in range(B)])
    return m.masked_fill(~ok[:, None, None, :], _allowed(m)[1]) if dummies else m


def _fresh_mask(cut: _Cut, hidden: Tensor, state: _State, kv_len: int | None, ok: Tensor | None = None):
    """A causal mask over the cut's keys, where the model's own mask cannot be cut (or there was none).

    ok [B, kv] marks the keys that may be seen; by default every key but the cut's dummies.
    """
    B, width = cut.idx.shape
    q = hidden.shape[1]
    kv = width if kv_len is None else kv_len
    if ok is None:
        ok = torch.cat([cut.valid, torch.ones(B, kv - width, dtype=torch.bool, device=cut.idx.device)], dim=1)
    if "flash" in str(state.lm.config._attn_implementation):
        return ok.long()
    rows = torch.arange(kv - q, kv, device=ok.device)[:, None]
    allowed = (torch.arange(kv, device=ok.device)[None, :] <= rows)[None, None] & ok[:, None, None, :]
    if kv_len is None:                                   # prefill: dummy rows see themselves
        eye = torch.eye(width, dtype=torch.bool, device=ok.device)[None, None]
        allowed = torch.where(~cut.valid[:, None, :, None], eye, allowed)
    zero = torch.zeros((), dtype=hidden.dtype, device=ok.device)
    return torch.where(allowed, zero, torch.finfo(hidden.dtype).min)
