"""Input validation for the demo: every refusal is an InputError with a message meant for the visitor."""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

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


def check_settings(keep_ratio, method: str, methods: list[str]) -> tuple[float, str]:
    """keep_ratio in (0, 1] and a known method name (the API does not go through the slider's bounds)."""
    try:
        r = float(keep_ratio)
    except (TypeError, ValueError):
        raise InputError(f"keep_ratio must be a number, got {keep_ratio!r}.")
    if not 0 < r <= 1:
        raise InputError(f"keep_ratio must be in (0, 1], got {r}.")
    if method not in methods:
        raise InputError(f"Unknown method {method!r}; choose one of {', '.join(methods)}.")
    return r, method


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
        w, h = image.size
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
    if small.size != image.size:
        notes.append(f"Image of {w} x {h} pixels downscaled to {small.width} x {small.height}.")
    return small, notes


def load_video(path: str, max_frames: int) -> Clip:
    """Sampled frames of an uploaded video; refuses unsupported formats and videos without a decodable frame."""
    p = _check_file(path, VIDEO_SUFFIXES, "video")
    try:
        return sample_frames(str(p), max_frames=max_frames)
    except VideoError as e:
        raise InputError(f"Cannot use {p.name}: {e}.")


def choose_input(image, video) -> str:
    """'image' or 'video': exactly one must be given (an image wins when both are, with a note elsewhere)."""
    if image is None and not video:
        raise InputError("Please upload an image or a video (or pick an example).")
    return "image" if image is not None else "video"
