"""Generated test videos, including the awkward kinds uploads bring: raw MPEG-4 streams with no frame
count (.m4v), MJPEG in QuickTime (.mov), 4K."""
import struct
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def write_video(path, n, fps=10.0, size=(64, 48), fourcc="mp4v", noise=False):
    """n frames; frame i has grey level 8 i (mod 256), plus a noise band when `noise` (bigger files)."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert w.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    rng = np.random.default_rng(0)
    band = rng.integers(0, 255, (size[1] // 4, size[0], 3), np.uint8) if noise else None
    for i in range(n):
        frame = np.full((size[1], size[0], 3), i * 8 % 256, np.uint8)
        if noise:
            frame[-band.shape[0]:] = np.roll(band, i * 7, axis=1)
        w.write(frame)
    w.release()
    return str(path)


def raw_m4v(path, n, fps=25.0, size=(64, 48), noise=False):
    """A raw MPEG-4 Part 2 elementary stream (what some cameras and converters save as .m4v): no container,
    so no frame count (OpenCV reports garbage) and seeking lands on the wrong frames. Made by writing an
    .mp4 and keeping only its decoder config plus the payload of its mdat box."""
    path = Path(path)
    mp4 = path.with_suffix(".tmp.mp4")
    write_video(mp4, n, fps, size, noise=noise)
    data = mp4.read_bytes()
    mp4.unlink()
    at = data.find(b"mdat")
    payload = data[at + 4: at - 4 + struct.unpack(">I", data[at - 4:at])[0]]
    esds = data.find(b"esds")
    start = data.find(b"\x00\x00\x01\xb0", esds)              # visual object sequence start code
    header = data[start: start + data[start - 1]]           # the DecoderSpecificInfo (its length precedes it)
    path.write_bytes(header + payload)
    return str(path)
