"""What every model family tells the pruning hook: placeholder tokens, per-image facts, grids, boxes."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .. import compat
from ..geometry import Box


@dataclass
class Group:
    """One image or video of one prompt as the hook sees it: its placeholder positions and facts."""
    kind: str                     # "image" or "video"
    index: int                    # which image / video of its prompt
    batch: int                    # which prompt of the batch
    positions: Tensor             # LongTensor of sequence positions, ascending
    info: dict = field(default_factory=dict)


def feature_counts(output) -> list[int]:
    """Tokens per image/video from what get_image_features / get_video_features returned."""
    pooled = compat.pooled(output)
    if isinstance(pooled, Tensor):
        return [pooled.shape[1]] * pooled.shape[0] if pooled.ndim == 3 else [pooled.shape[0]]
    return [p.shape[0] for p in pooled]


class Family:
    """Base adapter; each family module subclasses it. Keys of `info` beyond "count" are the family's own."""
    name = ""
    classes: tuple[str, ...] = ()

    def language_model(self, model: nn.Module) -> nn.Module:
        """The decoder stack whose .layers the hook patches."""
        return compat.language_model(model)

    def token_ids(self, config) -> dict[str, int | None]:
        """Placeholder token id per kind ("image", "video"); kinds the model lacks map to None."""
        return {"image": getattr(config, "image_token_id", None), "video": getattr(config, "video_token_id", None)}

    def describe(self, model: nn.Module, kind: str, call: dict, output) -> list[dict]:
        """Facts about each image/video of one get_{kind}_features call (args by name, and its output)."""
        return [{"count": n} for n in feature_counts(output)]

    def grid(self, info: dict) -> tuple[int, int, int] | None:
        """(frames, rows, cols) of the tokens in raster order, when they form one grid."""
        return None

    def boxes(self, model: nn.Module, info: dict, size: tuple[int, int] | None = None,
              processor=None) -> tuple[list[Box | None], list[int] | None, tuple[int, int] | None]:
        """Per token box (original pixels when size=(W, H) is known, else model-view pixels), frames, size."""
        return [None] * info["count"], None, size

    def groups(self, input_ids: Tensor, items: dict[str, list[dict]]) -> list[list[Group]]:
        """Split each kind's placeholders (row-major, the order features are scattered in) per item.

        The hook passes its host copy of input_ids, so the positions are host tensors and finding the
        groups never waits for the device."""
        out: list[list[Group]] = [[] for _ in range(input_ids.shape[0])]
        for kind, token_id in self.token_ids_cached.items():
            where = (input_ids == token_id).nonzero()          # [n, 2] (batch, position), row-major
            if where.shape[0] == 0:
                continue
            infos = items.get(kind) or []
            if sum(i["count"] for i in infos) != where.shape[0]:
                infos = _runs(where)                            # no usable facts: one group per run
            start = 0
            for info in infos:
                chunk = where[start:start + info["count"]]
                start += info["count"]
                b = int(chunk[0, 0])
                if not bool((chunk[:, 0] == b).all()):
                    raise RuntimeError(f"one {kind}'s placeholder tokens span two prompts of the batch")
                n_before = sum(g.kind == kind for g in out[b])
                out[b].append(Group(kind, n_before, b, chunk[:, 1], info))
        for g in out:
            g.sort(key=lambda x: int(x.positions[0]))
        return out

    def patch_instance(self, model: nn.Module, current_cut) -> list[tuple[object, str]]:
        """Family-specific instance patches the cut needs (current_cut() -> the prefill's Cut or None);
        returns the (object, attribute) pairs that remove() deletes. Most families need none."""
        return []

    def bind(self, model: nn.Module) -> "Family":
        """Cache the model's placeholder ids (they never change for an instance)."""
        self.token_ids_cached = {k: v for k, v in self.token_ids(model.config).items() if v is not None}
        return self


def _runs(where: Tensor) -> list[dict]:
    """Contiguous runs of placeholders, each taken as one image (fallback without encoder facts)."""
    b, p = where[:, 0], where[:, 1]
    cut = torch.ones_like(p, dtype=torch.bool)
    cut[1:] = (b[1:] != b[:-1]) | (p[1:] != p[:-1] + 1)
    starts = cut.nonzero().squeeze(1).tolist() + [p.numel()]
    return [{"count": starts[i + 1] - starts[i]} for i in range(len(starts) - 1)]
