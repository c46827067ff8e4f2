"""Processors for real model folders, with or without torchvision.

transformers builds every video processor on torchvision, and a processor that owns one (LLaVA-OneVision,
Qwen2.5-VL) cannot be loaded at all without it. Without torchvision, load_processor builds the same
processor class around the folder's image processor (its PIL twin), tokenizer and chat template, with no
video processor: images work exactly as with the full processor, and `videos=` raises VideoUnavailable.
"""
from __future__ import annotations

import logging

from ..compat import (PROCESSOR_VIDEOS_ARG, ImageOnlyProcessor, image_processor_dict, processor_class_for,
                      processor_dict, torchvision_available)

log = logging.getLogger("iwp")

VIDEO_NEEDS_TORCHVISION = ("native video needs torchvision (transformers builds every video processor on it); "
                           "this processor handles images only. Install torchvision matching your torch "
                           "(`pip install torchvision`, or the `video` extra) for video.")
_said: set[str] = set()


class VideoUnavailable(ValueError):
    """Video given to a processor that has no video processor (torchvision missing)."""


class _RefusesVideo:
    """Never drop a video silently: `videos=` (or positional) to an image-only processor raises."""

    def __call__(self, *args, **kwargs):
        n = PROCESSOR_VIDEOS_ARG
        video = kwargs["videos"] if "videos" in kwargs else (args[n] if len(args) > n else None)
        if video is not None:
            raise VideoUnavailable(f"{type(self).__name__}: {VIDEO_NEEDS_TORCHVISION}")
        return super().__call__(*args, **kwargs)


_classes: dict[type, type] = {}


def image_only(processor_class: type) -> type:
    """processor_class without a video processor: construct it with video_processor=None."""
    if processor_class not in _classes:
        bases = (_RefusesVideo, ImageOnlyProcessor, processor_class)
        _classes[processor_class] = type(f"ImageOnly{processor_class.__name__}", bases, {})
    return _classes[processor_class]


def with_video_if_possible(processor_class: type, make_video, **kwargs):
    """processor_class(**kwargs) with make_video()'s video processor where torchvision imports and works
    (transformers' check only finds the package), else its image-only twin: same behaviour for images."""
    try:
        import torchvision  # noqa: F401
        video = make_video()
    except Exception:
        return image_only(processor_class)(video_processor=None, **kwargs)
    return processor_class(video_processor=video, **kwargs)


def has_video(processor) -> bool:
    """Whether the processor can take `videos=` (it owns a video processor)."""
    return getattr(processor, "video_processor", None) is not None


def say_video_needs_torchvision(what: str = "") -> None:
    """Log, once per process and subject, that native video needs torchvision."""
    if what in _said:
        return
    _said.add(what)
    log.warning("%s%s", f"{what}: " if what else "", VIDEO_NEEDS_TORCHVISION)


def _image_processor(name: str, **hub):
    """The folder's image processor; its PIL twin when torchvision is missing (the torchvision class would
    fall back to it anyway, with a warning)."""
    import transformers
    kind = image_processor_dict(name, **hub).get("image_processor_type", "")
    kind = kind.removesuffix("Fast")
    cls = getattr(transformers, kind + "Pil", None) or getattr(transformers, kind, None)
    if cls is None:
        raise ValueError(f"{name}: unknown image processor type {kind!r}")
    return cls.from_pretrained(name, **hub)


def image_only_processor(name: str, trust_remote_code: bool = False, **hub):
    """The folder's processor class with its image processor, tokenizer and chat template, no video processor."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer
    settings = processor_dict(name, **hub)
    cls_name = (settings.get("processor_class") or image_processor_dict(name, **hub).get("processor_class")
                or processor_class_for(AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code,
                                                                   **hub).model_type))
    cls = getattr(transformers, cls_name or "", None)
    if cls is None:
        raise ValueError(f"{name}: cannot tell its processor class (found {cls_name!r})")
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, **hub)
    kwargs = {k: v for k, v in settings.items() if k not in ("processor_class", "auto_map", "image_processor",
                                                               "video_processor", "tokenizer")}
    kwargs.setdefault("chat_template", getattr(tokenizer, "chat_template", None))
    return image_only(cls)(image_processor=_image_processor(name, **hub), tokenizer=tokenizer,
                           video_processor=None, **kwargs)


def load_processor(name: str, trust_remote_code: bool = False, **hub):
    """AutoProcessor.from_pretrained(name); without torchvision, a processor whose video part needs it is
    loaded image-only (image processor, tokenizer, chat template) and a warning says, once, that native
    video needs torchvision."""
    from transformers import AutoProcessor
    if torchvision_available():
        return AutoProcessor.from_pretrained(name, trust_remote_code=trust_remote_code, **hub)
    try:
        return AutoProcessor.from_pretrained(name, trust_remote_code=trust_remote_code, **hub)
    except ImportError:                          # "...VideoProcessor requires the Torchvision library"
        pass
    processor = image_only_processor(name, trust_remote_code=trust_remote_code, **hub)
    say_video_needs_torchvision(str(name))
    return processor
