"""Marks on the device's own timeline, read once the work is done.

On CUDA these are events recorded on the current stream, so timing needs no host sync and the hook's
launches overlap the layers before it; on CPU, the host clock. The hook times the selection with it; the
demo's runner and the benchmarks use it for their stage boundaries.
"""
from __future__ import annotations

import time

import torch


class Clock:
    """Numbered marks on one device's timeline; seconds(i, j) between two of them."""

    def __init__(self, device: torch.device | str):
        device = torch.device(device)
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
