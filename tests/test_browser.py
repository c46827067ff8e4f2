"""A real browser: headless Chromium, driven by playwright-core (tests/browser/demo.js), uses the demo."""
import json
import os
import shutil
import subprocess

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
from PIL import Image

from app.ui import example_rows
from tests.app_helpers import ROOT, example, launch

CHROMIUM = "/usr/bin/chromium"
SCRIPT = ROOT / "tests" / "browser" / "demo.js"

pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and shutil.which("node")),
                                reason="needs /usr/bin/chromium and node (.ci/run installs both)")


def test_browser_uploads_moves_slider_runs_and_sees_both_answers(tmp_path):
    demo, url, _ = launch()
    shot = tmp_path / "demo.png"
    try:
        proc = subprocess.run(["node", str(SCRIPT), url, example((".png", ".jpg"), tmp_path), str(shot)],
                              cwd=ROOT, capture_output=True, text=True, timeout=150)
    finally:
        demo.close()
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout + proc.stderr
    found = json.loads(lines[-1])
    assert proc.returncode == 0 and found["ok"], found.get("error") or proc.stderr
    assert float(found["keep"]) == 0.5
    assert found["unpruned"] and found["pruned"] and found["overlay_width"] > 0
    assert "Speed-up" in found["summary"] and "visual tokens" in found["stats_pruned"]
    assert "token" in found["cover_text"]
    assert Image.open(shot).size[0] >= 1000
    if any(r[1] for r in example_rows()):                          # a video example: its frames were shown
        assert found["example_frames"] >= 1 and found["example_pruned"], found
    print(f"\nscreenshot: {shot}")
    if os.environ.get("IWP_UPDATE_SCREENSHOT") == "1":          # refresh the README picture on demand
        out = ROOT / "assets" / "screenshots" / "demo.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        img = Image.open(shot).convert("RGB")
        img.thumbnail((1000, 2400))
        img.quantize(128).save(out, optimize=True)
        print(f"README screenshot: {out}")
