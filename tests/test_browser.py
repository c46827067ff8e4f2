"""A real browser: headless Chromium, driven by playwright-core (tests/browser/demo.js), uses the demo."""
import json
import os
import shutil
import statistics
import subprocess
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np
import pytest
from PIL import Image

from app.ui import example_rows
from tests.app_helpers import ROOT, launch
from tests.videos import raw_m4v

CHROMIUM = "/usr/bin/chromium"
SCRIPT = ROOT / "tests" / "browser" / "demo.js"

pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and shutil.which("node")),
                                reason="needs /usr/bin/chromium and node (.ci/run installs both)")


def photo(path, w=1600, h=1200):
    """A photo-like JPEG: smooth gradients, texture and a few objects (not a flat toy scene)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(1)
    img = np.stack([120 + 80 * np.sin(x / 170), 110 + 60 * np.cos(y / 130), 90 + 50 * np.sin((x + y) / 300)], -1)
    img += rng.normal(0, 12, img.shape)
    for cx, cy, r, c in ((500, 400, 160, (220, 60, 50)), (1100, 800, 220, (40, 90, 200))):
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = c
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=88)
    return str(path)


def test_browser_visitor_flow(tmp_path):
    demo, url, runner = launch()
    shot, ladder_shot = tmp_path / "demo.png", tmp_path / "ladder.png"
    video = raw_m4v(tmp_path / "clip.m4v", 60, size=(160, 120))        # no browser plays a raw MPEG-4 stream
    runs, real = [], runner.generate

    def generate(*a, **k):                                              # every model run, timed
        runs.append(time.time() * 1000)
        return real(*a, **k)
    runner.generate = generate
    try:
        proc = subprocess.run(["node", str(SCRIPT), url, photo(tmp_path / "photo.jpg"), video, str(shot),
                               str(ladder_shot)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        runner.generate = real
        demo.close()
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout + proc.stderr
    found = json.loads(lines[-1])
    assert proc.returncode == 0 and found["ok"], (found.get("step"), found.get("error") or proc.stderr)
    # the photo, with fastv: labels true for fastv, a readable overlay, the opacity control redraws it
    assert float(found["keep"]) == 0.5 and found["overlay_width"] > 0
    assert "outside magnitude top-K" in found["legend"] and "diversity" not in found["legend"]
    assert "Visual tokens" in found["summary"] and "CPU" in found["summary"] and "1600 × 1200" in found["summary"]
    assert found["opacity_redraw"], found
    assert "token" in found["cover_text"]
    # the keep-ratio slider after a Compare: redrawn at once from the pick order, without a model run
    assert not [t for t in runs if found["slider_start"] <= t <= found["slider_end"]], "the model ran"
    assert "no model run" in found["slider_legend"] and found["slider_answer"]
    median = statistics.median(found["slider_ms"])
    print(f"\nslider redraw: median {median:.0f} ms over {len(found['slider_ms'])} moves {found['slider_ms']}")
    assert median < 200, found["slider_ms"]
    # the ratio ladder
    assert found["ladder_thumbs"] == 5 and "same as 100%" in found["ladder_table"]
    # the tab rule: the visible Video tab's video was used, then the Image tab's image; no player error
    assert found["preview_frames"] >= 1 and "frames will be given to the model" in found["frames_info"]
    assert "Video tab" in found["video_summary"] and "all frames: kept" in found["video_legend"]
    assert "Image tab" in found["image_summary"]
    assert not any("playable" in t.lower() for t in found["toasts_after_video"]), found["toasts_after_video"]
    # errors: the failed run left no stale answers; the next run removed the error
    assert found["error_answer"] == "" and "Speed-up" not in found["error_summary"]
    assert not any("type a question" in t for t in found["toasts_after_fix"]), found["toasts_after_fix"]
    if any(r[1] for r in example_rows()):                          # a video example: its frames were shown
        assert found["example_frames"] >= 1 and found["example_pruned"] and found["example_tab"] == "true", found
    assert Image.open(shot).size[0] >= 1000
    print(f"\nscreenshot: {shot}")
    if os.environ.get("IWP_UPDATE_SCREENSHOT") == "1":          # refresh the README picture on demand
        out = ROOT / "assets" / "screenshots" / "demo.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        img = Image.open(shot).convert("RGB")
        img.thumbnail((1000, 2400))
        img.quantize(128).save(out, optimize=True)
        Image.open(ladder_shot).convert("RGB").quantize(128).save(out.with_name("ladder.png"), optimize=True)
        print(f"README screenshots: {out}, {out.with_name('ladder.png')}")
