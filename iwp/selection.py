"""What one prefill kept and why: the Selection record behind iwp.last_selection and the pictures."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from .dual_form import DualFactors

KEPT_MAGNITUDE = "kept for magnitude"
KEPT_DIVERSITY = "kept for diversity"
DROPPED_DUPLICATE = "dropped as duplicate"
DROPPED_LOW = "dropped, low magnitude"
CATEGORIES = (KEPT_MAGNITUDE, KEPT_DIVERSITY, DROPPED_DUPLICATE, DROPPED_LOW)


def categorize(magnitude: Tensor, kept: Tensor) -> list[str]:
    """The four categories of DESIGN.md: kept/dropped crossed with in/out of the magnitude top-K."""
    n, budget = magnitude.shape[0], kept.numel()
    top = torch.zeros(n, dtype=torch.bool)
    top[magnitude.float().cpu().sort(descending=True, stable=True).indices[:budget]] = True
    is_kept = torch.zeros(n, dtype=torch.bool)
    is_kept[kept.cpu()] = True
    names = {(True, True): KEPT_MAGNITUDE, (True, False): KEPT_DIVERSITY,
             (False, True): DROPPED_DUPLICATE, (False, False): DROPPED_LOW}
    return [names[(bool(a), bool(b))] for a, b in zip(is_kept, top)]


def covering(k: Tensor, v: Tensor, kept: Tensor) -> tuple[list[int], list[float]]:
    """For each token, the kept token with the highest S_ij and that S (itself and 1.0 when kept)."""
    n = k.shape[1]
    if kept.numel() == 0:
        return [-1] * n, [0.0] * n
    s = DualFactors(k, v).block(None, kept)                # [N, K]
    best, idx = s.max(dim=1)
    cover = kept[idx].cpu()
    best = best.cpu()
    cover[kept.cpu()] = kept.cpu()
    best[kept.cpu()] = 1.0
    return cover.tolist(), [round(x, 6) for x in best.tolist()]


@dataclass
class TokenGroup:
    """One image or one video of the prompt: its visual tokens and what the selector did with them.

    positions: sequence positions of the group's visual tokens (prompt order). kept: indices into
    positions, in pick order. cover/cover_similarity: per token, the kept token that covers it best
    (kept tokens cover themselves). boxes: per token (x0, y0, x1, y1) in original pixels, None for tokens
    without a place (newline tokens). frames: per token the frame index (video), else None. steps: how
    many picks each step of the selector took, in pick order (sums to len(kept)); None for selectors that
    pick one token a step or sort once.
    """
    kind: str                                   # "image" or "video"
    index: int                                  # which image / video of the prompt
    positions: list[int]
    kept: list[int]
    magnitude: list[float]
    cover: list[int]
    cover_similarity: list[float]
    categories: list[str]
    boxes: list[tuple[float, float, float, float] | None]
    frames: list[int] | None = None
    image_size: tuple[int, int] | None = None   # (width, height) of the original image / frame
    budget: int = 0
    steps: list[int] | None = None

    @property
    def n(self) -> int:
        return len(self.positions)


@dataclass
class Selection:
    """The last prefill's selection for one prompt of the batch: one TokenGroup per image or video."""
    groups: list[TokenGroup]
    layer: int
    method: str
    keep_ratio: float
    params: dict = field(default_factory=dict)
    seconds: float = 0.0                        # scoring + selection time inside the prefill
    batch_index: int = 0

    @property
    def n_visual(self) -> int:
        return sum(g.n for g in self.groups)

    @property
    def n_kept(self) -> int:
        return sum(len(g.kept) for g in self.groups)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict) -> "Selection":
        groups = [TokenGroup(**{**g, "boxes": [tuple(b) if b is not None else None for b in g["boxes"]],
                                "image_size": tuple(g["image_size"]) if g.get("image_size") else None})
                  for g in data["groups"]]
        return cls(**{**data, "groups": groups})
