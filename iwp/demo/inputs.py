"""Input validation for the demo: every refusal is an InputError with a message meant for the visitor."""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .cache import Bounded
from .video import Clip, VideoError, sample_frames

MAX_QUESTION_CHARS = 1000
MAX_UPLOAD = "50mb"                      # passed to launch(max_file_size=...)
MAX_SOURCE_PIXELS = 50_000_000           # refused above this (read from the header, before decoding)
MAX_PIXELS = 1024 * 1024                 # larger images are downscaled to this many pixels
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
IMAGE_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".avi", ".mov", ".mkv", ".m4v"}


class InputError(ValueError):
    """An input the demo refuses; str(e) is shown to the visitor as is."""


def check_question(question: str | None) -> str:
    """The stripped question; refuses empty and over-long ones."""
    q = (question or "").strip()
    if not q:
        raise InputError("Please type a question.")
    if len(q) > MAX_QUESTION_CHARS:
        raise InputError(f"The question is {len(q):,} characters long; the limit is {MAX_QUESTION_CHARS:,}.")
    return q


def _number(field: str, value, lo: float, hi: float, integer: bool = False, low_open: bool = False):
    """value as a finite number in [lo, hi] (or (lo, hi] when low_open); the message names the field."""
    span = f"{'(' if low_open else '['}{lo:g}, {hi:g}]"
    what = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{field} must be {what} in {span}; got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value):
        raise InputError(f"{field} must be {what} in {span}; got {value}.")
    if integer and value != int(value):
        raise InputError(f"{field} must be an integer in {span}; got {value}.")
    if not (lo < value <= hi if low_open else lo <= value <= hi):
        raise InputError(f"{field} must be in {span}; got {value:g}.")
    return int(value) if integer else float(value)


def check_settings(keep_ratio, method: str, methods: list[str]) -> tuple[float, str]:
    """keep_ratio in (0, 1] and a known method name (the API does not go through the slider's bounds)."""
    r = _number("keep_ratio", keep_ratio, 0, 1, low_open=True)
    if not isinstance(method, str) or method not in methods:
        raise InputError(f"method: unknown method {method!r}; choose one of {', '.join(methods)}.")
    return r, method


def check_advanced(layer, lam, first_chunk, growth, n_layers: int) -> dict:
    """The advanced settings that were given (None: the default), each checked and named when wrong."""
    out = {}
    if layer is not None:
        out["layer"] = _number("layer", layer, 0, n_layers - 1, integer=True)
    if lam is not None:
        out["lam"] = _number("lam", lam, 0, 1)
    if first_chunk is not None:
        out["first_chunk"] = _number("first_chunk", first_chunk, 1, 1_000_000, integer=True)
    if growth is not None:
        out["growth"] = _number("growth", growth, 1, 64)
    return out


def _check_file(path: str, suffixes: set[str], kind: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"The {kind} file could not be found on the server; please upload it again.")
    if p.suffix.lower() not in suffixes:
        raise InputError(f"Unsupported {kind} format {p.suffix or '(no extension)'!r}; "
                         f"use one of {', '.join(sorted(suffixes))}.")
    if os.path.getsize(p) == 0:
        raise InputError(f"The {kind} file is empty (0 bytes).")
    return p


def downscale(image: Image.Image, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image scaled down (aspect kept) to at most max_pixels pixels."""
    w, h = image.size
    if w * h <= max_pixels:
        return image
    s = math.sqrt(max_pixels / (w * h))
    return image.resize((max(1, int(w * s)), max(1, int(h * s))), Image.BICUBIC)


def load_image(source: str | Image.Image) -> tuple[Image.Image, list[str]]:
    """An RGB image within the pixel cap, and notes for the visitor; refuses corrupt files, non-images,
    unsupported formats and decompression bombs (size read from the header before any decoding)."""
    notes: list[str] = []
    if isinstance(source, Image.Image):
        image = source
        uploaded = image.size
    else:
        p = _check_file(source, IMAGE_SUFFIXES, "image")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(p)                  # lazy: reads the header only
        except Image.DecompressionBombError:
            raise InputError(f"The image is far too large to decode (limit {MAX_SOURCE_PIXELS:,} pixels).")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise InputError(f"{p.name} is not a readable image (corrupt, or not really a "
                             f"{p.suffix.lstrip('.').upper()} file).")
        if image.format not in IMAGE_FORMATS:
            raise InputError(f"Unsupported image format {image.format}; use PNG, JPEG, WebP, BMP or GIF.")
        w, h = uploaded = image.size
        if w * h > MAX_SOURCE_PIXELS:
            raise InputError(f"The image is {w} x {h} = {w * h:,} pixels; the limit is {MAX_SOURCE_PIXELS:,}.")
        if w * h > MAX_PIXELS and image.format == "JPEG":
            image.draft("RGB", (w // 2, h // 2))       # decode JPEGs at reduced size when they are huge
        try:
            image.load()
        except Exception:
            raise InputError(f"{p.name} is corrupt or truncated and cannot be decoded.")
    w, h = image.size
    if w < 2 or h < 2:
        raise InputError(f"The image is only {w} x {h} pixels.")
    image = image.convert("RGB")
    small = downscale(image)
    if small.size != uploaded:
        notes.append(f"Uploaded image: {uploaded[0]} x {uploaded[1]} pixels; downscaled to {small.width} x "
                     f"{small.height} (the {MAX_PIXELS / 1e6:.0f} MP cap) before the model's processor.")
    return small, notes


_CLIPS = Bounded(8)                              # sampled videos by file identity: one decode per upload


def load_video(path: str, max_frames: int) -> Clip:
    """Sampled frames of an uploaded video (decoded once per file and kept, see _CLIPS); refuses
    unsupported formats and videos without a decodable frame."""
    p = _check_file(path, VIDEO_SUFFIXES, "video")
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, max_frames)
    clip = _CLIPS.get(key)
    if clip is None:
        try:
            clip = sample_frames(str(p), max_frames=max_frames)
        except VideoError as e:
            raise InputError(f"Cannot use {p.name}: {e}.")
        _CLIPS.put(key, clip)
    return clip


TABS = {"image": "Image", "video": "Video"}


def choose_input(image, video, shown: str | None = None) -> str:
    """'image' or 'video'. shown: the input tab the visitor sees; it decides, and an empty one is refused
    (never the hidden tab's input). Without a tab (API calls, examples) exactly one input must be given."""
    given = {"image": image is not None, "video": bool(video)}
    if shown in given:
        if not given[shown]:
            other = "video" if shown == "image" else "image"
            hint = f" (the {TABS[other]} tab holds {'a video' if other == 'video' else 'an image'}: " \
                   f"switch to it to use that)" if given[other] else ""
            raise InputError(f"The {TABS[shown]} tab is shown but holds no {shown}; please upload one{hint}.")
        return shown
    if given["image"] and given["video"]:
        raise InputError("Both an image and a video were given; send only one of them.")
    if not any(given.values()):
        raise InputError("Please upload an image or a video (or pick an example).")
    return "image" if given["image"] else "video"
