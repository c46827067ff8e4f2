"""Keep ratios without new model runs, and a ladder of ratios in one request.

Every prefix-stable selector returns its picks in an order that does not depend on the budget, so the kept
set at any ratio is a prefix of one full ordering (recorded once at keep_ratio 1.0, which scores every
token and cuts none): the slider redraws from it. The ladder answers one question at several ratios,
encoding the images once.
"""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, replace

import torch
from PIL import Image, ImageDraw

import iwp
from iwp import compat, overlay
from iwp.selection import Selection, TokenGroup, categorize

LADDER = (1.0, 1 / 3, 2 / 9, 1 / 9, 0.05)          # 100 / 33.3 / 22.2 / 11.1 / 5 %
# Selectors whose picks at a smaller budget are the first picks at a larger one (tests/test_ladder.py proves
# it against fresh runs for each). Uniform is among them here: it is a farthest-point order on the token
# grid, not a per-budget even spacing. A selector missing from this list gets no instant redraw.
PREFIX_STABLE = ("iwp", "magnitude", "fastv", "divprune", "random", "uniform")


def budget(n: int, keep_ratio: float) -> int:
    """Tokens kept of n at keep_ratio, as the hook counts them."""
    return n if keep_ratio >= 1.0 else max(1, round(keep_ratio * n))


def prefix_group(group: TokenGroup, keep_ratio: float) -> TokenGroup:
    """The group as a run at keep_ratio would have kept it: the first picks of its full order, categories
    recomputed for that budget (kept tokens cover themselves; dropped ones show no cover)."""
    b = budget(group.n, keep_ratio)
    kept = list(group.kept[:b])
    cats = categorize(torch.tensor(group.magnitude), torch.tensor(kept, dtype=torch.long))
    chosen = set(kept)
    return replace(group, kept=kept, categories=cats, budget=b,
                   cover=[t if t in chosen else -1 for t in range(group.n)],
                   cover_similarity=[1.0 if t in chosen else 0.0 for t in range(group.n)])


def prefix_selection(order: Selection, keep_ratio: float) -> Selection:
    """A full-order Selection cut to keep_ratio (every group)."""
    return replace(order, groups=[prefix_group(g, keep_ratio) for g in order.groups], keep_ratio=keep_ratio)


# The vision encoder (iwp.compat.vision_encoder) is called as a module from get_image_features /
# get_video_features. Replacing that one instance's forward (never the class) with a memo lets repeated
# prefills of one batch reuse its output; iwp.apply/remove wrap get_*_features on the instance and do not touch it.
def _same(a, b) -> bool:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return a is b
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return bool(torch.equal(a, b))


@contextlib.contextmanager
def one_vision_pass(model):
    """Within the block, the vision encoder runs once per distinct pixel tensor; the calls it answered
    from memory are counted in the yielded dict."""
    encoder = compat.vision_encoder(model)
    stats = {"encoded": 0, "reused": 0}
    if encoder is None:
        yield stats
        return
    real = encoder.forward
    memo: list = []                                          # (pixels, output) per distinct input

    def forward(*args, **kwargs):
        pixels = args[0] if args else next(iter(kwargs.values()), None)
        # the same values are the same input: models pass fresh views of one tensor (OneVision reshapes the
        # video's pixels on every call) or fresh copies (OneVision images: the crops are concatenated anew);
        # a match of memory is checked first, then of values (one comparison, far cheaper than encoding)
        hit = next((m for m in memo if _same(m[0], pixels)), None)
        if hit is None:
            stats["encoded"] += 1
            hit = (pixels, real(*args, **kwargs))
            memo.append(hit)
        else:
            stats["reused"] += 1
        out = hit[1]
        # a fresh container each time: get_image_features may reassign its fields (Qwen2.5-VL splits
        # pooler_output in place); the tensors inside are shared, and nothing writes into them
        return copy.copy(out) if isinstance(out, dict) else out
    encoder.forward = forward
    try:
        yield stats
    finally:
        del encoder.forward                                  # the class's forward shows through again


@dataclass
class Rung:
    """One ratio of the ladder."""
    keep_ratio: float
    answer: str
    prefill_s: float
    total_s: float
    visual_tokens: int
    kept_tokens: int
    agrees: bool
    selection: Selection | None = None

    def row(self) -> dict:
        return {"keep_ratio": round(self.keep_ratio, 4), "answer": self.answer,
                "prefill_s": round(self.prefill_s, 4), "total_s": round(self.total_s, 4),
                "visual_tokens": self.visual_tokens, "kept_tokens": self.kept_tokens, "agrees": self.agrees}


def run_ladder(runner, images: list[Image.Image], question: str, method: str = "iwp", settings: dict | None = None,
               ratios=LADDER, video: bool = False, video_meta: dict | None = None) -> tuple[list[Rung], dict]:
    """Answer at each ratio (one prefill warm-up first, all under one vision-encoder pass); returns the
    rungs and {seconds, selections_s (building the Selections for the pictures), encoded, reused}."""
    settings = settings or {}
    start = time.perf_counter()
    with runner._lock, one_vision_pass(runner.model) as stats:
        given = runner.inputs(images, question, video=video, video_meta=video_meta)
        batch, sizes = given.batch, given.sizes
        raw, recording = [], 0.0
        try:
            iwp.remove(runner.model)
            runner._warm(batch)                               # encodes the images; warms both code paths
            for r in ratios:
                if r >= 1.0:
                    iwp.remove(runner.model)
                else:
                    iwp.apply(runner.model, keep_ratio=r, method=method, **settings)
                answer, prefill, total, _, _ = runner.generate(batch)
                t0 = time.perf_counter()
                sel = (iwp.last_selection(runner.model, image_sizes=sizes, processor=runner.processor)[0]
                       if r < 1.0 else None)
                recording += time.perf_counter() - t0
                raw.append((r, answer, prefill, total, sel))
        finally:
            iwp.remove(runner.model)
    n_visual = next((s.n_visual for *_, s in raw if s is not None), 0)
    full = next((a for r, a, *_ in raw if r >= 1.0), raw[0][1])
    rungs = [Rung(r, a, p, t, n_visual, s.n_kept if s is not None else n_visual,
                  a.strip().lower() == full.strip().lower(), s) for r, a, p, t, s in raw]
    return rungs, {"seconds": round(time.perf_counter() - start, 4), "selections_s": round(recording, 4), **stats}


def plot(rungs: list[Rung], width: int = 420, height: int = 240) -> Image.Image:
    """Prefill time against keep ratio; each rung's dot green where its answer agrees with the full one."""
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    font = overlay._font(12)
    left, right, top, bottom = 56, width - 30, 20, height - 46
    d.rectangle([left, top, right, bottom], outline=(160, 160, 160))
    ms = [r.prefill_s * 1000 for r in rungs]
    hi = max(ms) * 1.15 if ms and max(ms) > 0 else 1.0
    x = lambda ratio: left + (right - left) * ratio
    y = lambda v: bottom - (bottom - top) * v / hi
    for frac in (0, 0.5, 1):
        d.text((6, y(hi * frac) - 7), f"{hi * frac:.0f} ms", fill=(80, 80, 80), font=font)
    pts = sorted((x(r.keep_ratio), y(v), r.agrees) for r, v in zip(rungs, ms))
    d.line([(px, py) for px, py, _ in pts], fill=(40, 110, 230), width=2)
    for px, py, ok in pts:
        c = (34, 170, 85) if ok else (220, 50, 40)
        d.ellipse([px - 5, py - 5, px + 5, py + 5], fill=c, outline=(0, 0, 0))
    for r in rungs:
        d.text((x(r.keep_ratio) - 12, bottom + 4), f"{r.keep_ratio * 100:.0f}%", fill=(0, 0, 0), font=font)
    d.text((left, height - 22), "prefill vs keep ratio · green: same answer as 100%, red: differs",
           fill=(0, 0, 0), font=font)
    return img
