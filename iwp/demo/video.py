"""Uniform frame sampling with OpenCV that never holds more than the frames it keeps.

Two paths, both bounded in memory (at most 2 * max_frames downscaled frames) and in work (decode time and
decoded pixels are capped):
- the container knows its frame count: seek to each chosen frame;
- it does not (raw MPEG-4/H.264 streams, some .m4v/.mov files), or seeking fails: one streaming pass over
  the first max_seconds that keeps every stride-th frame, doubling the stride whenever the buffer fills,
  so the kept frames stay evenly spread over what was read.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

MAX_FRAMES = 8
MAX_SECONDS = 60.0
MAX_FRAME_PIXELS = 640 * 640          # kept frames are downscaled to this many pixels
MAX_SOURCE_PIXELS = 8192 * 4352       # frames larger than 8K are refused (size read before decoding)
MAX_DECODE_SECONDS = 15.0             # stop decoding after this long and use what was read
MAX_DECODED_PIXELS = 3_000_000_000    # ... or after decoding this many pixels (about 360 4K frames)
_MAX_SEQUENTIAL = 3000                # frames streamed when neither the frame count nor the fps is known
_MAX_COUNT = 10_000_000               # frame counts above this (or negative) are container guesses


class VideoError(ValueError):
    """The file cannot be used as a video (unreadable, unsupported codec, no decodable frame)."""


@dataclass
class Clip:
    """Sampled RGB frames (uint8 [H, W, 3]) and what we know about the source."""
    frames: list[np.ndarray]
    indices: list[int]
    fps: float
    total_frames: int
    duration: float
    notes: list[str] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)         # the source frame size (width, height)
    frames_read: int = 0                   # frames decoded to sample these


def _downscale(frame: np.ndarray, max_pixels: int) -> np.ndarray:
    import cv2
    h, w = frame.shape[:2]
    if h * w <= max_pixels:
        return frame
    s = math.sqrt(max_pixels / (h * w))
    return cv2.resize(frame, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)


class _Budget:
    """Decode time and decoded pixels left; `spent` says which cap ran out (None while neither has)."""

    def __init__(self, seconds: float, pixels: int, frame_pixels: int):
        self.deadline = time.monotonic() + seconds
        self.pixels_left = pixels
        self.frame_pixels = max(1, frame_pixels)
        self.spent: str | None = None

    def take(self) -> bool:
        """Account for one more decoded frame; False once a cap is reached."""
        if time.monotonic() > self.deadline:
            self.spent = "time"
        elif self.pixels_left < self.frame_pixels:
            self.spent = "pixels"
        else:
            self.pixels_left -= self.frame_pixels
        return self.spent is None


def _rgb(cap, bgr, max_pixels):
    import cv2
    return _downscale(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_pixels)


def _seek(cap, window: int, max_frames: int, max_pixels: int, budget: _Budget):
    """Seek to max_frames frames spread over [0, window); None when a seek or read fails."""
    import cv2
    frames, indices = [], []
    for i in np.linspace(0, window - 1, num=min(max_frames, window)).round().astype(int):
        if not budget.take():
            break
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(i))
        ok, bgr = cap.read()
        if not ok or bgr is None:
            return None
        frames.append(_rgb(cap, bgr, max_pixels))
        indices.append(int(i))
    return frames, indices, window


def _stream(cap, limit: int, max_frames: int, max_pixels: int, budget: _Budget):
    """One pass over at most `limit` frames keeping every stride-th one (at most 2 * max_frames held),
    then max_frames of those spread evenly. Returns (frames, indices, frames read)."""
    held: list[tuple[int, np.ndarray]] = []
    stride, i = 1, 0
    while i < limit and budget.take():
        if not cap.grab():                  # decodes the frame without converting it
            break
        if i % stride == 0:
            ok, bgr = cap.retrieve()
            if ok and bgr is not None:
                held.append((i, _rgb(cap, bgr, max_pixels)))
            if len(held) >= 2 * max_frames:
                held = [h for h in held if h[0] % (2 * stride) == 0]
                stride *= 2
        i += 1
    if not held:
        return [], [], i
    at = np.array([h[0] for h in held])
    pick: list[int] = []
    for target in np.linspace(0, i - 1, num=min(max_frames, len(held))):     # the held frame nearest each
        free = [p for p in np.argsort(np.abs(at - target), kind="stable") if p not in pick]
        pick.append(int(free[0]))
    pick.sort()
    return [held[p][1] for p in pick], [held[p][0] for p in pick], i


def sample_frames(path: str, max_frames: int = MAX_FRAMES, max_seconds: float = MAX_SECONDS,
                  max_pixels: int = MAX_FRAME_PIXELS, max_decode_seconds: float = MAX_DECODE_SECONDS,
                  max_decoded_pixels: int = MAX_DECODED_PIXELS) -> Clip:
    """Up to max_frames frames spread evenly over the first max_seconds of the video (longer videos are
    sampled from that window, not refused). Raises VideoError when nothing can be decoded."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError("could not open the video: unsupported container or codec")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if w * h > MAX_SOURCE_PIXELS:
            raise VideoError(f"its frames are {w} x {h} pixels; the limit is 8K ({MAX_SOURCE_PIXELS:,} pixels)")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        fps = fps if 0 < fps < 1000 else 0.0
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0
        total = int(count) if 0 < count < _MAX_COUNT else 0          # 0: unknown
        notes: list[str] = []
        budget = _Budget(max_decode_seconds, max_decoded_pixels, w * h)
        window = total
        if fps and total and total / fps > max_seconds:
            window = max(1, int(max_seconds * fps))
            notes.append(f"video is {total / fps:.0f} s long; frames sampled from the first {max_seconds:.0f} s")
        got = _seek(cap, window, max_frames, max_pixels, budget) if window > 0 else None
        if got is None:                       # unknown or wrong frame count: one streaming pass instead
            cap.release()
            cap = cv2.VideoCapture(str(path))
            limit = min(int(max_seconds * fps), _MAX_SEQUENTIAL * 10) if fps else _MAX_SEQUENTIAL
            frames, indices, read = _stream(cap, limit, max_frames, max_pixels, budget)
            if read >= limit and not total:
                notes.append(f"the video's length is unknown; frames sampled from its first {read} frames")
            total = total or read
        else:
            frames, indices, read = got
        if budget.spent:
            what = "decoding took too long" if budget.spent == "time" else "the frames are large"
            notes.append(f"{what}: frames sampled from the first {max(indices, default=0) + 1} frames only")
        if not frames:
            if budget.spent:
                raise VideoError("the video could not be decoded within the time limit")
            raise VideoError("the video has no decodable frames (empty, corrupt or unsupported codec)")
        duration = total / fps if fps else 0.0
        return Clip(frames, indices, fps, total, duration, notes, size=(w, h), frames_read=read)
    finally:
        cap.release()
