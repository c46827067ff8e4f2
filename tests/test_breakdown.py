"""The time breakdown picture and the runner's stage clock behind it."""
import numpy as np
from PIL import Image

import iwp
from iwp.demo.breakdown import BAR, COLORS, LEFT, RIGHT, WIDTH, time_breakdown
from iwp.demo.runner import Runner
from iwp.demo.stages import STAGES


def _side(seconds, tokens):
    return {"stages_s": dict(zip(STAGES, seconds)), "visual_tokens": tokens, "prefill_s": sum(seconds[:4])}


def _bar_widths(img, row_y):
    px = np.asarray(img)[row_y]
    return {s: int((px == np.array(COLORS[s])).all(-1).sum()) for s in STAGES}


def test_bars_share_one_time_scale():
    m = {"unpruned": _side([0.1, 0.2, 0.0, 0.5, 0.2], 1000), "pruned": _side([0.1, 0.2, 0.02, 0.1, 0.08], 111),
         "layer": 2}
    img = time_breakdown(m)
    assert img.width == WIDTH
    scale = (WIDTH - LEFT - RIGHT) / 1.0                 # the longer run (1.0 s) fills the width
    top, bottom = _bar_widths(img, 34 + BAR - 2), _bar_widths(img, 34 + BAR + 30 + BAR - 2)
    for stage, secs in zip(STAGES, [0.1, 0.2, 0.0, 0.5, 0.2]):
        assert abs(top[stage] - secs * scale) <= 2, stage
    assert abs(bottom["after_k"] - 0.1 * scale) <= 2 and abs(bottom["vision"] - top["vision"]) <= 2
    assert time_breakdown({"unpruned": m["unpruned"], "pruned": {"stages_s": None}}) is None


def test_runner_stages_add_up_to_the_run():
    model, proc = iwp.models.family("llava").tiny()
    runner = Runner(model, proc, "tiny", max_new_tokens=3)
    m = runner.compare([Image.new("RGB", (40, 30), (200, 30, 30))], "what is it?", keep_ratio=0.25).metrics()
    for side in ("unpruned", "pruned"):
        stages = m[side]["stages_s"]
        assert list(stages) == list(STAGES) and all(v >= 0 for v in stages.values())
        assert sum(stages.values()) <= m[side]["total_s"] * 1.05 + 1e-3
        assert sum(list(stages.values())[:4]) <= m[side]["prefill_s"] * 1.05 + 1e-3
    assert m["pruned"]["stages_s"]["selection"] >= m["selection_s"] * 0.9   # the cut includes the hook's own clock
    assert time_breakdown(m) is not None
