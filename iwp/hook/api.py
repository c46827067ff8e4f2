"""iwp.apply / remove / pruning / last_selection, and the hooks that wire the pruning into one model.

How it works (no copy of any forward):
- get_image_features / get_video_features of the base model are wrapped on the instance to record what
  each image / video is (token count, size, grid); a pre-hook on the base model records the call's
  input_ids and 2-D attention mask, starts their copy to the host, and decides prefill or decoding.
- A pre-hook on decoder layer K, during prefill, scores the visual tokens with layer K's own q/k/v
  projections and runs the selector per image / video (scoring.py), then slices the sequence (cut.py).
- Pre-hooks on layers > K hand them the sliced positions and mask during prefill, and during decoding
  cut the mask's key columns to the kept prompt tokens plus the new ones.
- A post-hook on the base model raises if a prefill with visual tokens passed layer K unscored.
- A new call's encoding releases the previous call's record and cut, so they never sit in memory
  through the next vision encoder.
Every name taken from transformers' internals comes from iwp.compat.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import math
from typing import Iterator

import torch
from torch import Tensor, nn

from .. import compat, models
from ..dual_form import information_magnitude
from ..selection import Selection, TokenGroup, categorize, covering
from ..selectors import DEFAULT_FIRST_CHUNK, DEFAULT_GROWTH, DEFAULT_LAM, DEFAULT_QUERY, QUERIES, SELECTORS
from .cut import decode_mask, make_cut, prefill_mask, take, take_ids
from .scoring import select_tokens
from .state import ATTR, DEFAULT_LAYER, Cut, HostCopy, Record, Settings, State


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
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or math.isnan(keep_ratio):
        raise ValueError(f"keep_ratio must be a number in (0, 1], got {keep_ratio!r}")
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
    state = getattr(model, ATTR, None)
    if state is not None:                            # idempotent: new settings, same hooks
        if layer != state.settings.layer:            # the hook moves to the new layer K
            _unhook_layers(state, list(state.layer_handles))
            _hook_layers(state, [layer])
        state.settings = settings
        return model
    state = State(model, family.bind(model), settings)
    base = compat.base_model(model)
    compat.cache_name(base.forward)                  # fail here, not silently later, if names moved
    compat.check_layer(state.lm.layers[0])
    for kind, name in compat.FEATURE_GETTERS.items():
        if hasattr(base, name):
            setattr(base, name, _recording(getattr(base, name), state, model, kind))
            state.wrapped.append(name)
    state.handles.append(base.register_forward_pre_hook(functools.partial(_on_call, state), with_kwargs=True))
    state.handles.append(base.register_forward_hook(functools.partial(_after_call, state), with_kwargs=True))
    state.patched = state.family.patch_instance(model, lambda: _prefill_cut(state))
    _hook_layers(state, [layer])                     # layers after K are hooked while a cut needs them
    setattr(model, ATTR, state)
    return model


def remove(model: nn.Module) -> nn.Module:
    """Undo apply: remove every hook, wrapper and state, restoring the exact original behaviour."""
    state = getattr(model, ATTR, None)
    if state is None:
        return model
    for h in state.handles:
        h.remove()
    _unhook_layers(state, list(state.layer_handles))
    for name in state.wrapped:
        delattr(compat.base_model(model), name)      # the class method shows through again
    for obj, name in state.patched:
        delattr(obj, name)
    delattr(model, ATTR)
    return model


def is_patched(model: nn.Module) -> bool:
    return getattr(model, ATTR, None) is not None


@contextlib.contextmanager
def pruning(model: nn.Module, **settings) -> Iterator[nn.Module]:
    """Scoped apply: `with iwp.pruning(model, keep_ratio=0.25): model.generate(...)`; restores after."""
    state = getattr(model, ATTR, None)
    before = state.settings if state is not None else None
    apply(model, **settings)
    try:
        yield model
    finally:
        if before is None:
            remove(model)
        else:
            getattr(model, ATTR).settings = before


def last_selection(model: nn.Module, image_sizes: list[tuple[int, int]] | None = None,
                   processor=None) -> list[Selection] | None:
    """What the last prefill kept: one Selection per prompt of the batch (no groups for a text-only
    prompt), or None before the first prefill.

    image_sizes: optional (width, height) of each original image / video frame, in prompt order (all
    groups of prompt 0, then prompt 1, ...), so boxes come in original pixels; families that receive the
    sizes themselves (OneVision images) do not need it. Without it boxes are in the model's view pixels.
    processor: optional, tells LLaVA boxes whether the processor cropped, padded or squashed.
    Cover, categories and boxes are computed here, not during the prefill.
    """
    state = getattr(model, ATTR, None)
    if state is None or state.record is None:
        return None
    rec, out, sizes = state.record.resolved(), [], list(image_sizes or [])
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
                budget=picks.numel(), steps=inp.steps.tolist() if inp.steps is not None else None))
        out.append(Selection(groups=tgs, layer=rec.settings.layer, method=rec.settings.method,
                             keep_ratio=rec.settings.keep_ratio, params=dict(rec.settings.params),
                             seconds=rec.seconds(b), batch_index=b))
    return out


# ---------------------------------------------------------------------------------------------- hooks

def _recording(fn, state: State, model: nn.Module, kind: str):
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


def _on_call(state: State, module, args, kwargs):
    """Base-model pre-hook: remember input_ids and the padding mask (on a prefill, start their host copy);
    decide prefill or decoding; check the cache kind."""
    cache = compat.cache(kwargs)
    if cache is not None:
        compat.check_cache(cache)
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    enc = kwargs.get(compat.MM_ENCODER_OUTPUTS)
    if any(kwargs.get(k) is not None for k in compat.VISION_INPUTS):
        state.items = {}                             # this forward encodes: the wrapper will record
    elif enc:                                        # pre-encoded by generate (transformers >= 5.18)
        counts = {k: models.feature_counts(o) for k, o in enc.items() if o is not None}
        if not state.fresh or any([i["count"] for i in state.items.get(k, [])] != c for k, c in counts.items()):
            state.items = {k: [{"count": n} for n in c] for k, c in counts.items()}
    else:
        state.items = {}
    state.fresh = False
    state.step += 1
    mask = kwargs.get("attention_mask")
    prefill = cache is None or compat.cache_length(cache) == 0
    if prefill and state.settings.keep_ratio < 1.0:   # the layers after K take the cut's positions and mask
        _hook_layers(state, range(state.settings.layer + 1, len(state.lm.layers)))
    state.call = {"input_ids": input_ids, "attention_mask": mask, "prefill": prefill,
                  "host": HostCopy(input_ids, mask) if prefill and isinstance(input_ids, Tensor) else None}


def _after_call(state: State, module, args, kwargs, output):
    """Base-model post-hook: a prefill with visual tokens that layer K did not score is an error, never a
    silently unpruned answer (say, transformers called the layers in a way the hooks did not see)."""
    if not state.call.get("prefill") or (state.record is not None and state.record.step == state.step):
        return None
    host = state.call.get("host")
    visual = bool(state.items) if host is None else \
        any(bool((host.get()[0] == t).any()) for t in state.family.token_ids_cached.values())
    if visual:
        raise compat.unsupported(f"layer {state.settings.layer} never ran iwp's selection during this prefill "
                                 "with visual tokens (the decoder-layer hooks were bypassed)")
    return None


def _on_layer(state: State, i: int, module, args, kwargs):
    """Decoder-layer pre-hook: cut at layer K during prefill; adapt positions and masks after it."""
    K = state.settings.layer                           # hooked on layer K and, while a cut needs them, after it
    prefill = state.call.get("prefill", True)
    if not prefill:
        after = range(K + 1, len(state.lm.layers))
        if state.cut is None or _nothing_to_cut(state.cut, kwargs.get("attention_mask")):
            if i == K:                                 # decoding needs nothing: later layers run hook-free
                _unhook_layers(state, after)
            return None
        if i == K:                                     # this step's mask must be cut in every later layer
            _hook_layers(state, after)
    hidden = compat.hidden_states(args, kwargs)
    if i == K and prefill:
        state.release()
        ctx, pos = state.prefill(), kwargs["position_embeddings"]
        if state.settings.keep_ratio >= 1.0:           # nothing is cut: score only if a Selection is asked for
            state.record = Record(state.settings, step=state.step,
                                  make=lambda: _no_grad(select_tokens, ctx, module, hidden, pos)[1])
            return None
        with torch.no_grad():
            keep, state.record = select_tokens(ctx, module, hidden, pos)
        if keep is None:
            return None                                # a text-only prefill: nothing to cut
        state.cut = make_cut(keep, state.call["input_ids"].shape[1], state.step, short_cache_masks=K == 0,
                             padded=state.call["host"].get()[1] is not None)
    cut = state.cut
    if cut is None:
        return None
    kwargs = dict(kwargs)
    if cut.step == state.step:                         # prefill: everything is over the prompt's positions
        if i == K:
            hidden = take(hidden, cut.idx)
            cos, sin = kwargs["position_embeddings"]
            cut.position_embeddings = (take(cos, cut.idx), take(sin, cut.idx))
            pid = kwargs.get("position_ids")
            cut.position_ids = take_ids(pid, cut.idx) if pid is not None else None
            args, kwargs = compat.with_hidden_states(args, kwargs, hidden)
        kwargs["position_embeddings"] = cut.position_embeddings
        if "position_ids" in kwargs:
            kwargs["position_ids"] = cut.position_ids
        kwargs["attention_mask"] = _memo(cut, state.step, kwargs.get("attention_mask"),
                                         lambda m: prefill_mask(m, cut, hidden, state))
    else:                                              # decoding: only the key columns change
        cache = compat.cache(kwargs)
        kwargs["attention_mask"] = _memo(cut, state.step, kwargs.get("attention_mask"),
                                         lambda m: decode_mask(m, cut, hidden, cache, i, state))
    return args, kwargs


def _hook_layers(state: State, layers) -> None:
    """Give these decoder layers the pre-hook (those that have it keep it). It runs before any other
    pre-hook of the layer, whenever that one was registered, so others see the cut's positions and mask."""
    for i in layers:
        if i not in state.layer_handles:
            state.layer_handles[i] = state.lm.layers[i].register_forward_pre_hook(
                functools.partial(_on_layer, state, i), with_kwargs=True, prepend=True)


def _unhook_layers(state: State, layers) -> None:
    for i in layers:
        handle = state.layer_handles.pop(i, None)
        if handle is not None:
            handle.remove()


def _prefill_cut(state: State) -> Cut | None:
    """The cut of the prefill running now, if any."""
    cut = state.cut
    return cut if cut is not None and cut.step == state.step else None


def _nothing_to_cut(cut: Cut, mask) -> bool:
    """A decoding step whose mask needs no cut: no mask at all (sdpa / flash without padding), no dummies
    to hide, and the model sized nothing by the short cache."""
    return mask is None and not cut.dummies and not cut.short_cache_masks


def _no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


def _memo(cut: Cut, step: int, mask, fn):
    """Slice each distinct mask once per call (all full-attention layers share one mask object)."""
    key = (step, id(mask))
    hit = cut.memo.get(key)
    if hit is None or hit[0] is not mask:
        if cut.memo and next(iter(cut.memo))[0] != step:
            cut.memo.clear()
        hit = cut.memo[key] = (mask, fn(mask))
    return hit[1]
