"""Model families IWP can patch, one module each; for_model picks the adapter by class."""
from __future__ import annotations

from torch import nn

from .base import Family, Group, feature_counts
from .llava import Llava
from .llava_onevision import LlavaOnevision
from .processors import VideoUnavailable, load_processor
from .qwen2_5_vl import Qwen2_5_VL
from .qwen3_vl import Qwen3_VL

FAMILIES: list[Family] = [Llava(), LlavaOnevision(), Qwen2_5_VL(), Qwen3_VL()]


def supported_classes() -> list[str]:
    return [c for f in FAMILIES for c in f.classes]


def for_model(model: nn.Module) -> Family:
    """A fresh adapter for this model's family; a clear ValueError for an unsupported class."""
    names = {c.__name__ for c in type(model).__mro__}
    for family in FAMILIES:
        if names & set(family.classes):
            return type(family)()
    raise ValueError(f"iwp does not support {type(model).__name__}; supported classes: "
                     f"{', '.join(supported_classes())}")


def family(name: str) -> Family:
    """The adapter by short name ("llava", "llava_onevision", "qwen2_5_vl", "qwen3_vl"), e.g. for family(name).tiny()."""
    for f in FAMILIES:
        if f.name == name:
            return type(f)()
    raise ValueError(f"unknown family {name!r}; choose one of {[f.name for f in FAMILIES]}")


__all__ = ["Family", "Group", "FAMILIES", "for_model", "family", "supported_classes", "feature_counts",
           "load_processor", "VideoUnavailable"]
