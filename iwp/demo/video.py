"""Uniform frame sampling with OpenCV, with caps on frames, duration and pixels per frame."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MAX_FRAMES = 8
MAX_SECONDS = 60.0
MAX_FRAME_PIXELS = 640 * 640
_MAX_SEQUENTIAL = 3000        # frames read one by one when the container does not know its length


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


def _downscale(frame: np.ndarray, max_pixels: int) -> np.ndarray:
    import cv2
    h, w = frame.shape[:2]
    if h * w <= max_pixels:
        return frame
    s = math.sqrt(max_pixels / (h * w))
    return cv2.resize(frame, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)


def sample_frames(path: str, max_frames: int = MAX_FRAMES, max_seconds: float = MAX_SECONDS,
                  max_pixels: int = MAX_FRAME_PIXELS) -> Clip:
    """Up to max_frames frames spread evenly over the first max_seconds of the video (longer videos are
    sampled from that window, not refused). Raises VideoError when nothing can be decoded."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError("could not open the video: unsupported container or codec")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        fps = fps if 0 < fps < 1000 else 0.0
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        notes: list[str] = []
        window = total
        if fps and total and total / fps > max_seconds:
            window = max(1, int(max_seconds * fps))
            notes.append(f"video is {total / fps:.0f} s long; frames sampled from the first {max_seconds:.0f} s")
        frames, indices = [], []
        if window > 0:
            for i in np.linspace(0, window - 1, num=min(max_frames, window)).round().astype(int):
                cap.set(cv2.CAP_PROP_POS_FRAMES, int(i))
                ok, bgr = cap.read()
                if ok and bgr is not None:
                    frames.append(_downscale(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_pixels))
                    indices.append(int(i))
        if not frames:                        # unknown or wrong frame count: read sequentially instead
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            limit = int(max_seconds * fps) if fps else _MAX_SEQUENTIAL
            seq = []
            while len(seq) < min(limit, _MAX_SEQUENTIAL):
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                seq.append(bgr)
            if seq:
                pick = np.linspace(0, len(seq) - 1, num=min(max_frames, len(seq))).round().astype(int)
                frames = [_downscale(cv2.cvtColor(seq[i], cv2.COLOR_BGR2RGB), max_pixels) for i in pick]
                indices = [int(i) for i in pick]
                total = max(total, len(seq))
        if not frames:
            raise VideoError("the video has no decodable frames (empty, corrupt or unsupported codec)")
        duration = total / fps if fps else 0.0
        return Clip(frames, indices, fps, total, duration, notes)
    finally:
        cap.release()
