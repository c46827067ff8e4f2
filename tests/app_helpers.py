"""Shared by the app, browser and latency tests: which model to serve, example files, a launched demo."""
import os
import socket
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assets" / "examples"
TOY = ROOT / "assets" / "toy-lvlm"


def model_under_test() -> str:
    """IWP_TEST_MODEL if set, else the embedded toy model when present, else the random tiny LLaVA."""
    return os.environ.get("IWP_TEST_MODEL") or (str(TOY) if (TOY / "config.json").is_file() else "tiny")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def example(suffixes: tuple[str, ...], tmp: Path) -> str:
    """The first example from assets/examples with one of the suffixes, else a generated one in tmp."""
    if EXAMPLES.is_dir():
        for p in sorted(EXAMPLES.iterdir()):
            if p.suffix.lower() in suffixes:
                return str(p)
    if ".png" in suffixes:
        p = tmp / "scene.png"
        rng = np.random.default_rng(0)
        img = np.full((224, 224, 3), 240, np.uint8)
        for _ in range(5):
            x, y = rng.integers(0, 180, 2)
            img[y:y + 40, x:x + 40] = rng.integers(0, 255, 3)
        Image.fromarray(img).save(p)
        return str(p)
    p = tmp / "clip.mp4"
    w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 96))
    for i in range(20):
        frame = np.full((96, 96, 3), 230, np.uint8)
        frame[30:60, 3 * i:3 * i + 30] = (0, 0, 255)
        w.write(frame)
    w.release()
    return str(p)


def launch(max_new_tokens: int = 4, max_file_size: str | None = None):
    """The demo on a free local port: (demo, url, runner)."""
    from iwp.demo.inputs import MAX_UPLOAD
    from iwp.demo.runner import Runner
    from app.ui import build_demo
    runner = Runner.load(model_under_test(), max_new_tokens=max_new_tokens)
    runner.warmup()
    demo = build_demo(runner)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                max_file_size=max_file_size or MAX_UPLOAD)
    return demo, f"http://127.0.0.1:{port}/", runner


def png_header(path, width, height):
    """A PNG whose header claims width x height (a decompression bomb as far as the header goes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return str(path)
