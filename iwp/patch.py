"""apply / remove IWP on one model instance: forward pre-hooks that drop visual tokens before layer K.

How it works (no copy of any forward):
- get_image_features / get_video_features of the base model are wrapped on the instance to record what
  each image / video is (token count, size, grid); a pre-hook on the base model records the call's
  input_ids and 2-D attention mask, and starts their copy to the host, so the selection can plan on the
  host without waiting for the device.
- A pre-hook on decoder layer K, during prefill, scores the visual tokens with layer K's own q/k/v
  projections, runs the selector per image / video, and slices hidden states, (cos, sin), position ids
  and the mask to text + kept tokens (sorted, left-padded per prompt). Kept tokens keep their original
  RoPE positions, so decoding continues from the original next position. Only what the selector reads
  is computed (RoPE'd keys, the last query, features); the record computes the rest when asked.
- Pre-hooks on layers > K hand them the sliced positions and mask during prefill, and during decoding
  cut the mask's key columns to the kept prompt tokens plus the new ones.
- A new call's encoding releases the previous call's record and cut, so they never sit in memory
  through the next vision encoder.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from . import models
from .baselines import SelectorInput
from .dual_form import information_magnitude
from .selection import Selection, TokenGroup, categorize, covering
from .selectors import DEFAULT_FIRST_CHUNK, DEFAULT_GROWTH, DEFAULT_LAM, DEFAULT_QUERY, QUERIES, SELECTORS, select

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
    valid: Tensor | None          # [B, L'] False on dummies; None when there are none (known on the host)
    length: int                   # L, the prompt length before the cut
    step: int                     # the call (prefill) that made it
    short_cache_masks: bool = False   # cut before layer 0: the model sizes decoding masks by the cut cache
    padded: bool = False          # the prompt's padding mask has zeros (known on the host)
    position_embeddings: tuple | None = None
    position_ids: Tensor | None = None
    memo: dict = field(default_factory=dict)   # id(mask) -> (mask, sliced) within one call

    @property
    def dummies(self) -> bool:
        return self.valid is not None

    def on(self, device) -> "_Cut":
        """This cut with its index tensors on `device` (layers may sit on several GPUs)."""
        if self.idx.device == torch.device(device):
            return self
        key = ("on", str(device))
        if key not in self.memo:
            self.memo[key] = _Cut(self.idx.to(device), None if self.valid is None else self.valid.to(device),
                                  self.length, self.step, self.short_cache_masks, self.padded)
        return self.memo[key]


class _Clock:
    """Marks on the device's own timeline: CUDA events, so timing needs no host sync and the hook's launches
    overlap the layers before K (the host clock on CPU). Read once the work is done."""

    def __init__(self, device: torch.device):
        self.stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
        self.marks: list = []

    def mark(self) -> int:
        if self.stream is None:
            self.marks.append(time.perf_counter())
        else:
            event = torch.cuda.Event(enable_timing=True)
            event.record(self.stream)
            self.marks.append(event)
        return len(self.marks) - 1

    def seconds(self, i: int, j: int) -> float:
        a, b = self.marks[i], self.marks[j]
        if self.stream is None:
            return b - a
        b.synchronize()
        return a.elapsed_time(b) / 1e3


@dataclass
class _Record:
    """Raw tensors of one prefill's selection; last_selection turns them into Selection objects."""
    settings: Settings
    groups: list                  # per prompt: list of (Group, picks, _Input)
    clock: _Clock
    spans: list                   # per prompt: (start mark, end mark) of its own work, or None

    def seconds(self, b: int) -> float:
        """Prompt b's scoring + selection, with an equal share of the planning all prompts shared."""
        if self.spans[b] is None:
            return 0.0
        shared = self.clock.seconds(0, 1) / len(self.spans)
        return shared + self.clock.seconds(*self.spans[b])


class _HostCopy:
    """The call's input_ids and 2-D padding mask on the host. On a GPU the copy starts when the call does
    and is long done by layer K, so the selection plans on the host without a device round trip."""

    def __init__(self, ids: Tensor, mask):
        mask = mask if isinstance(mask, Tensor) and mask.ndim == 2 and mask.shape == ids.shape else None
        self.events = []
        self.ids, self.mask = self._start(ids), None if mask is None else self._start(mask)

    def _start(self, t: Tensor) -> Tensor:
        if not t.is_cuda:
            return t
        host = t.to("cpu", non_blocking=True)            # into pinned memory, without waiting
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(t.device))
        self.events.append(event)
        return host

    def get(self) -> tuple[Tensor, Tensor | None]:
        """(input_ids, bool padding mask; None when nothing is padded), waiting for the copies (done by now)."""
        for e in self.events:
            e.synchronize()
        mask = None if self.mask is None else self.mask.bool()
        return self.ids, None if mask is None or bool(mask.all()) else mask


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

    def release(self) -> None:
        """Drop the previous call's record and cut (a new call is encoding: they are stale)."""
        self.cut = None
        self.record = None


def apply(model: nn.Module, keep_ratio: float = 0.25, method: str = "iwp", layer: int = DEFAULT_LAYER,
          lam: float = DEFAULT_LAM, first_chunk: int = DEFAULT_FIRST_CHUNK, growth: float = DEFAULT_GROWTH,
          seed: int = 0, query: str = DEFAULT_QUERY) -> nn.Module:
    """Patch this model instance in place to keep keep_ratio of each image's / video's visual tokens.

    Tokens are dropped once, during prefill, before decoder layer `layer`; text tokens are never dropped.
    Re-applying updates the settings. Needs the default DynamicCache. Returns the model.
    query (IWP only): "text" (default) scores with the queries of every text token after the last visual
    token, "last" with the last prompt token's alone (iwp.selectors.QUERIES).
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
    if query not in QUERIES:
        raise ValueError(f"query must be one of {QUERIES}, got {query!r}")
    params = {"lam": lam, "first_chunk": first_chunk, "growth": growth, "query": query} if method == "iwp" else {}
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
    """What the last prefill kept: one Selection per prompt of the batch, or None before any prefill (and
    once the next call starts encoding its images).

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
        for g, picks, inp in groups:
            with torch.no_grad():
                mag = information_magnitude(inp.q, inp.k, inp.v)      # for the picture, whatever the method
                cover, sim = covering(inp.k_rope, inp.v, picks)
            size = sizes.pop(0) if sizes else None
            size = tuple(size) if size is not None else g.info.get("image_size")
            boxes, frames, image_size = state.family.boxes(model, g.info, size, processor)
            tgs.append(TokenGroup(
                kind=g.kind, index=g.index, positions=g.positions.tolist(), kept=picks.tolist(),
                magnitude=[round(x, 8) for x in mag.tolist()], cover=cover, cover_similarity=sim,
                categories=categorize(mag, picks), boxes=[tuple(x) if x is not None else None for x in boxes],
                frames=frames, image_size=tuple(image_size) if image_size is not None else None,
                budget=picks.numel()))
        out.append(Selection(groups=tgs, layer=rec.settings.layer, method=rec.settings.method,
                             keep_ratio=rec.settings.keep_ratio, params=dict(rec.settings.params),
                             seconds=rec.seconds(b), batch_index=b))
    return out


# ---------------------------------------------------------------------------------------------- hooks

def _recording(fn, state: _State, model: nn.Module, kind: str):
    """Wrap get_{kind}_features so every call records what each image / video is."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        state.release()                              # before the encoder allocates: the peak stays unpruned
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
    """Base-model pre-hook: remember input_ids and the padding mask (on a prefill, start their host copy);
    check the cache kind."""
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
    mask = kwargs.get("attention_mask")
    prefill = cache is None or cache.get_seq_length() == 0
    state.call = {"input_ids": input_ids, "attention_mask": mask,
                  "host": _HostCopy(input_ids, mask) if prefill and isinstance(input_ids, Tensor) else None}


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
        state.release()
        with torch.no_grad():
            keep = _select(state, module, hidden, kwargs)
        if keep is None:
            return None                                # nothing to cut (keep_ratio 1.0 scores but never slices)
        state.cut = _make_cut(keep, state.call["input_ids"].shape[1], state.step, short_cache_masks=K == 0,
                              padded=state.call["host"].get()[1] is not None)
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

class _Rows:
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


class _Input(SelectorInput):
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


class _Once:
    """A value computed on first use (shared by the groups of one prompt)."""

    def __init__(self, make: Callable):
        self._make, self._value = make, None

    def __call__(self):
        if self._make is not None:
            self._value, self._make = self._make(), None
        return self._value


def _select(state: _State, layer: nn.Module, hidden: Tensor, kwargs: dict) -> list[Tensor] | None:
    """Run the selector on every image / video; returns per prompt the sorted positions to keep."""
    ids, host = state.call.get("input_ids"), state.call.get("host")
    if ids is None or host is None or tuple(ids.shape) != tuple(hidden.shape[:2]):
        return None                                    # no token ids to find the images (inputs_embeds only)
    attn = layer.self_attn
    # Work where layer K's weights are: with device_map="auto" this hook runs before accelerate moves
    # the layer's inputs, and input_ids live on the first device.
    dev = attn.q_proj.weight.device
    if dev.type == "meta":
        raise RuntimeError(f"iwp scores visual tokens with decoder layer {state.settings.layer}'s own weights, "
                           "but they are offloaded (on the meta device); keep that layer on a GPU or choose "
                           "another layer with iwp.apply(..., layer=K)")
    clock = _Clock(dev)
    clock.mark()                                         # reached once the layers before K are done
    ids, am = host.get()
    groups = state.family.groups(ids, state.items)
    if not any(groups):
        return None
    hidden = hidden.to(dev)
    cos, sin = (x.to(dev) for x in kwargs["position_embeddings"])
    B, L = ids.shape
    ramp = _Once(lambda: torch.arange(L, device=dev))
    clock.mark()
    keeps, rec_groups, spans = [], [], []
    for b in range(B):
        if not groups[b]:
            keeps.append(ramp())
            rec_groups.append([])
            spans.append(None)
            continue
        start = len(clock.marks) - 1
        keep, recs = _select_prompt(state, layer, hidden[b], _row(cos, b), _row(sin, b), groups[b],
                                    None if am is None else am[b], ramp)
        spans.append((start, clock.mark()))
        keeps.append(keep)
        rec_groups.append(recs)
    state.record = _Record(settings=state.settings, groups=rec_groups, clock=clock, spans=spans)
    return None if state.settings.keep_ratio >= 1.0 else keeps


def _select_prompt(state: _State, layer: nn.Module, hidden: Tensor, cos: Tensor, sin: Tensor, gs: list,
                   am: Tensor | None, ramp: _Once) -> tuple[Tensor | None, list]:
    """One prompt [L, D]: score its visual tokens, run the selector per group; (kept positions or None
    at keep_ratio 1.0, record entries)."""
    attn, s, dev = layer.self_attn, state.settings, hidden.device
    L = hidden.shape[0]
    vis, qrows = _prompt_rows(gs, am, L, dev)
    x = layer.input_layernorm(hidden)
    q = _heads(attn, "q", qrows.take(x))                       # [Hq, T, d] pre-RoPE
    xv = vis.take(x)
    k, v = _heads(attn, "k", xv), _heads(attn, "v", xv)
    rope = _rope_fn(attn)
    k_rope = _Once(lambda: _rotated(rope, k, vis.take(cos), vis.take(sin)))
    q_last_rope = _Once(lambda: _rotated(rope, _heads(attn, "q", x[L - 1:]), cos[L - 1:], sin[L - 1:]))
    picks, recs, start = [], [], 0
    for g in gs:
        n = g.positions.numel()
        sl = slice(start, start + n)
        start += n
        rows = _Rows(g.positions, dev)
        inp = _Input(q, k[:, sl], v[:, sl], state.family.grid(g.info), s.seed,
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


def _prompt_rows(gs: list, am: Tensor | None, L: int, device) -> tuple[_Rows, _Rows]:
    """(visual tokens, query rows) of one prompt, planned on the host. The query rows are the text after
    the last visual token (the question), or the last token when there is none."""
    vis = torch.cat([g.positions for g in gs])
    after = torch.arange(L) > int(vis.max())
    if am is not None:
        after &= am
    rows = after.nonzero().squeeze(1)
    return _Rows(vis, device), _Rows(rows if rows.numel() else torch.tensor([L - 1]), device)


def _kept_positions(picks: list[tuple[_Rows, Tensor]], vis: _Rows, L: int, ramp: _Once) -> Tensor:
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
    text = _Rows((~is_vis).nonzero().squeeze(1), vis.device)
    return torch.cat([text.index(), *(rows.index()[p] for rows, p in picks)]).sort().values


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


def _rotated(rope, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [H, n, d] after RoPE at rows cos, sin [n, d], by the model's own function."""
    # its second operand is an empty batch: the function runs for x alone (no work, no kernel for it)
    return rope(x[None], x[None][:0], cos[None], sin[None])[0][0]


def _row(x: Tensor, b: int) -> Tensor:
    """Row b of a [B or 1, L, ...] tensor."""
    return x[b] if x.shape[0] > 1 else x[0]


# ------------------------------------------------------------------------------------------- slicing

def _make_cut(keep: list[Tensor], length: int, step: int, short_cache_masks: bool = False,
              padded: bool = False) -> _Cut:
    """Per prompt kept positions -> one [B, L'] index, re-left-padded with masked dummies."""
    widths = [k.numel() for k in keep]
    width = max(widths)
    if len(set(widths)) == 1:                          # every prompt keeps as many: no dummies
        idx, valid = keep[0][None] if len(keep) == 1 else torch.stack(keep), None
    else:
        idx = torch.stack([nn.functional.pad(k, (width - k.numel(), 0)) for k in keep])
        valid = torch.tensor([[False] * (width - w) + [True] * w for w in widths]).to(keep[0].device)
    return _Cut(idx=idx, valid=valid, length=length, step=step, short_cache_masks=short_cache_masks, padded=padded)


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """Gather positions idx [B, L'] from the sequence dim (dim 1) of x [B or 1, L, ...]."""
    idx = idx.to(x.device)
    if idx.shape[0] == 1 and x.shape[0] == 1:
        return x.index_select(1, idx[0])
    x = x.expand(idx.shape[0], *x.shape[1:])
    return x[torch.arange(idx.shape[0], device=idx.device)[:, None], idx]


def _take_ids(pid: Tensor, idx: Tensor) -> Tensor:
    """Position ids [B, L] or [n, B, L] (M-RoPE) at the kept positions."""
    if pid.ndim == 2:
        return _take(pid, idx)
    if idx.shape[0] == 1 and pid.shape[1] == 1:
        return pid.index_select(2, idx[0].to(pid.device))
    return torch.stack([_take(p, idx) for p in pid])


def _allowed(mask: Tensor):
    return (True, False) if mask.dtype == torch.bool else (0.0, torch.finfo(mask.dtype).min)


def _cut_prefill_mask(mask, cut: _Cut, hidden: Tensor, state: _State):
    """The layer's prefill mask restricted to the kept rows and columns; dummies see only themselves."""
    cut = cut.on(mask.device if isinstance(mask, Tensor) else hidden.device)
    if mask is None:
        return _fresh_mask(cut, hidden, state, None) if cut.dummies else None
    if not isinstance(mask, Tensor):
        raise TypeError(f"iwp cannot cut a {type(mask).__name__} attention mask (use sdpa, eager or flash)")
    B, idx = cut.idx.shape[0], cut.idx
    if mask.ndim == 2:                                   # flash attention: [B, L] padding mask
        m = _take(mask, idx)
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


def _cut_decode_mask(mask, cut: _Cut, hidden: Tensor, cache, i: int, state: _State):
    """A decoding step's mask with key columns = kept prompt positions, then the new tokens."""
    cut = cut.on(mask.device if isinstance(mask, Tensor) else hidden.device)
    if cut.short_cache_masks:                        # layer 0 is cut too: the model sized this mask by its
        am = state.call.get("attention_mask")        # short cache, so rebuild it from the padding mask
        if cut.padded and isinstance(am, Tensor) and am.ndim == 2:
            cut = cut.on(am.device)
            cols = _decode_columns(cut, am.shape[1])
            ok = _keys_ok(cut, cols.shape[1])
            return _fresh_mask(cut, hidden, state, cols.shape[1], ok & _take(am, cols).bool())
        mask = None
    if mask is None:
        return _fresh_mask(cut, hidden, state, cache.get_seq_length(i) + hidden.shape[1]) if cut.dummies else None
    if not isinstance(mask, Tensor):
        raise TypeError(f"iwp cannot cut a {type(mask).__name__} attention mask (use sdpa, eager or flash)")
    B = cut.idx.shape[0]
    cols = _decode_columns(cut, mask.shape[-1])
    if mask.ndim == 2:
        m = _take(mask, cols)
        return m.masked_fill(~_keys_ok(cut, cols.shape[1]), 0) if cut.dummies else m
    if B == 1 and mask.shape[0] == 1:
        m = mask.index_select(3, cols[0])
    else:
        m = mask.expand(B, *mask.shape[1:])
        m = torch.stack([m[b][..., cols[b]] for b in range(B)])
    return m.masked_fill(~_keys_ok(cut, cols.shape[1])[:, None, None, :], _allowed(m)[1]) if cut.dummies else m


def _decode_columns(cut: _Cut, kv: int) -> Tensor:
    """[B, kv'] key columns of a decoding mask over kv keys: the kept prompt positions, then the new ones."""
    B = cut.idx.shape[0]
    new = torch.arange(cut.length, kv, device=cut.idx.device).expand(B, kv - cut.length)
    return torch.cat([cut.idx, new], dim=1)


def _keys_ok(cut: _Cut, kv: int) -> Tensor:
    """[B, kv] True on the keys that may be seen: all but the cut's dummies (the new tokens come after)."""
    B, width = cut.idx.shape
    ones = torch.ones(B, kv - width if cut.dummies else kv, dtype=torch.bool, device=cut.idx.device)
    return torch.cat([cut.valid, ones], dim=1) if cut.dummies else ones


def _fresh_mask(cut: _Cut, hidden: Tensor, state: _State, kv_len: int | None, ok: Tensor | None = None):
    """A causal mask over the cut's keys, where the model's own mask cannot be cut (or there was none).

    ok [B, kv] marks the keys that may be seen; by default every key but the cut's dummies.
    """
    B, width = cut.idx.shape
    q = hidden.shape[1]
    kv = width if kv_len is None else kv_len
    if ok is None:
        ok = _keys_ok(cut, kv)
    if "flash" in str(state.lm.config._attn_implementation):
        return ok.long()
    rows = torch.arange(kv - q, kv, device=ok.device)[:, None]
    allowed = (torch.arange(kv, device=ok.device)[None, :] <= rows)[None, None] & ok[:, None, None, :]
    if kv_len is None and cut.dummies:                   # prefill: dummy rows see themselves
        eye = torch.eye(width, dtype=torch.bool, device=ok.device)[None, None]
        allowed = torch.where(~cut.valid[:, None, :, None], eye, allowed)
    zero = torch.zeros((), dtype=hidden.dtype, device=ok.device)
    return torch.where(allowed, zero, torch.finfo(hidden.dtype).min)
