"""Where the time of one generate() goes: vision encoder, layers before K, selection, layers after K, decoding.

Marks on the device's own timeline (CUDA events, no host sync, so the pruned prefill is not slowed by the
measurement; the host clock on CPU), read once generate() is done. Layer K is chosen after the run (the
Selection says which layer cut), so every decoder layer is marked on entry, before and after the hooks
already on it (IWP's cut runs in a pre-hook of layer K).
"""
from __future__ import annotations

import torch

from ..clock import Clock

STAGES = ("vision", "before_k", "selection", "after_k", "decode")
LABELS = {"vision": "vision encoder + merge", "before_k": "layers before K", "selection": "selection at K",
          "after_k": "layers from K", "decode": "decoding"}


class StageClock:
    """Context manager around one generate(): mark("start"), mark("first_token"), mark("end") from the caller,
    layer entries from hooks (first call of each layer only: the prefill)."""

    def __init__(self, layers, device: torch.device):
        self.layers = list(layers)
        self.clock = Clock(device)               # the library's clock: CUDA events, or the host clock
        self.marks: dict[str, int] = {}          # name -> the clock's mark
        self._handles = []

    def mark(self, name: str) -> None:
        if name in self.marks:
            return
        self.marks[name] = self.clock.mark()
        if name == "first_token":
            self._remove()                   # the prefill is over: no layer hooks while decoding

    def __enter__(self) -> "StageClock":
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_pre_hook(
                lambda m, a, i=i: self.mark(f"in{i}"), prepend=True))
            self._handles.append(layer.register_forward_pre_hook(lambda m, a, i=i: self.mark(f"cut{i}")))
        return self

    def __exit__(self, *exc) -> None:
        self._remove()

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _between(self, a: str, b: str) -> float:
        return self.clock.seconds(self.marks[a], self.marks[b])

    def seconds(self, layer: int) -> dict[str, float] | None:
        """Seconds per stage with the cut before decoder layer `layer`; None when a mark is missing (or the
        events lie on different devices, e.g. a model split over GPUs)."""
        k = min(max(int(layer), 0), len(self.layers) - 1)
        order = ["start", "in0", f"in{k}", f"cut{k}", "first_token", "end"]
        if any(m not in self.marks for m in order):
            return None
        try:
            spans = [max(self._between(a, b), 0.0) for a, b in zip(order, order[1:])]
        except RuntimeError:
            return None
        return dict(zip(STAGES, spans))
