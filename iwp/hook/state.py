"""The state one patched model's hooks share: settings, the current call, the prefill's cut and record."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from .. import models
from ..clock import Clock

DEFAULT_LAYER = 2                 # K: tokens are dropped before decoder layer K
ATTR = "_iwp_state"               # the attribute apply() sets on the model instance


@dataclass
class Settings:
    """What iwp.apply was asked for."""
    keep_ratio: float
    method: str
    layer: int
    params: dict
    seed: int


@dataclass
class Cut:
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

    def on(self, device) -> "Cut":
        """This cut with its index tensors on `device` (layers may sit on several GPUs)."""
        if self.idx.device == torch.device(device):
            return self
        key = ("on", str(device))
        if key not in self.memo:
            self.memo[key] = Cut(self.idx.to(device), None if self.valid is None else self.valid.to(device),
                                  self.length, self.step, self.short_cache_masks, self.padded)
        return self.memo[key]


@dataclass
class Prefill:
    """What the selection reads of one prefill, fixed when layer K is reached (a deferred selection runs
    after later calls have changed the state)."""
    family: models.Family
    settings: Settings
    call: dict
    items: dict
    step: int


@dataclass
class Record:
    """Raw tensors of one prefill's selection; last_selection turns them into Selection objects.
    A deferred record (keep_ratio 1.0: nothing is cut) runs its selection the first time it is read."""
    settings: Settings
    groups: list | None = None    # per prompt: list of (Group, picks, LazyInput)
    clock: Clock | None = None
    spans: list | None = None     # per prompt: (start mark, end mark) of its own work, or None
    step: int = 0                 # the call (prefill) that made it
    make: Callable[[], "Record"] | None = None

    def resolved(self) -> "Record":
        if self.make is not None:
            done, self.make = self.make(), None
            self.groups, self.clock, self.spans = done.groups, done.clock, done.spans
        return self

    def seconds(self, b: int) -> float:
        """Prompt b's scoring + selection, with an equal share of the planning all prompts shared."""
        if self.spans[b] is None:
            return 0.0
        shared = self.clock.seconds(0, 1) / len(self.spans)
        return shared + self.clock.seconds(*self.spans[b])


class HostCopy:
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


class State:
    """Everything the hooks of one patched model share; it lives on the model as model._iwp_state.

    settings     what apply() was asked for (re-applying swaps it)
    family       the model family's adapter (placeholder ids, per-image facts, boxes)
    lm           the decoder stack
    handles      the base model's hook handles; layer_handles: the decoder layers' pre-hooks, on layer K
                 always and on the layers after it while a cut needs them (prefill, masks to cut); wrapped: names of the feature getters wrapped on the base model;
                 patched: (object, attribute) the family patched on the instance (Qwen3-VL's DeepStack)
    items        facts of the images / videos encoded for the current call, by kind
    fresh        items were recorded since the last base-model call (generate pre-encodes in 5.18+)
    call         the current base-model call: input_ids, attention_mask, host copy, prefill
    step         counts base-model calls; a cut and a record remember the step that made them
    cut          the last prefill's cut (what later layers and decoding steps slice by)
    record       the last prefill's selection, raw (last_selection builds Selections from it)
    """

    def __init__(self, model: nn.Module, family: models.Family, settings: Settings):
        self.family, self.settings = family, settings
        self.lm = family.language_model(model)
        self.handles: list = []
        self.layer_handles: dict[int, object] = {}   # decoder layer index -> its pre-hook's handle
        self.wrapped: list[str] = []
        self.patched: list[tuple[object, str]] = []
        self.items: dict[str, list[dict]] = {}
        self.fresh = False
        self.call: dict = {}
        self.step = 0
        self.cut: Cut | None = None
        self.record: Record | None = None

    def prefill(self) -> Prefill:
        return Prefill(self.family, self.settings, dict(self.call), dict(self.items), self.step)

    def release(self) -> None:
        """Drop the previous call's cut and the record's tensors (a new call is encoding: they are stale,
        and must not sit in memory through the next vision encoder)."""
        self.cut = None
        self.record = None
