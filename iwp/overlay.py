"""Pictures of a Selection: category overlay, magnitude heat map, pick-order replay, cover view, video frames.

Everything is numpy + PIL at a modest resolution (max_side), so a full set of pictures costs milliseconds.
Boxes in a TokenGroup are in the pixels of the image the model was given (group.image_size).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .selection import (CATEGORIES, DROPPED_DUPLICATE, DROPPED_LOW, KEPT_DIVERSITY, KEPT_MAGNITUDE, Selection,
                        TokenGroup)

CATEGORY_COLORS: dict[str, tuple[int, int, int]] = {
    KEPT_MAGNITUDE: (34, 170, 85),      # green
    KEPT_DIVERSITY: (40, 110, 230),     # blue
    DROPPED_DUPLICATE: (245, 130, 20),  # orange
    DROPPED_LOW: (110, 110, 110),       # grey
}
MAX_SIDE = 448
MIN_SIDE = 320                                 # small inputs (toy scenes) are enlarged for display
_HEAT_STOPS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32)


def _font(size: int = 13) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:                                  # Pillow without FreeType
        return ImageFont.load_default()


def fit(image: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    """RGB copy of image scaled so that its longer side is at most max_side and at least MIN_SIDE."""
    image = image.convert("RGB")
    side = max(image.size)
    scale = max_side / side if side > max_side else min(MIN_SIDE, max_side) / side if side < MIN_SIDE else 1.0
    if scale != 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.BILINEAR)
    return image


def _pixel_boxes(group: TokenGroup, size: tuple[int, int], tokens=None) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(token, integer box in the drawn picture) for each token with a place, clipped to the picture."""
    w, h = size
    src_w, src_h = group.image_size or size
    sx, sy = w / src_w, h / src_h
    out = []
    for t in (range(group.n) if tokens is None else tokens):
        b = group.boxes[t]
        if b is None:
            continue
        x0, y0 = max(0, round(b[0] * sx)), max(0, round(b[1] * sy))
        x1, y1 = min(w, round(b[2] * sx)), min(h, round(b[3] * sy))
        if x1 > x0 and y1 > y0:
            out.append((t, (x0, y0, x1, y1)))
    return out


def _blend(image: Image.Image, group: TokenGroup, colors: np.ndarray, alpha: np.ndarray) -> Image.Image:
    """Fill each token's box with colors[t] at opacity alpha[t] over the image."""
    base = np.asarray(image, dtype=np.float32)
    paint = base.copy()
    a = np.zeros(base.shape[:2] + (1,), np.float32)
    for t, (x0, y0, x1, y1) in _pixel_boxes(group, image.size):
        paint[y0:y1, x0:x1] = colors[t]
        a[y0:y1, x0:x1] = alpha[t]
    return Image.fromarray((base * (1 - a) + paint * a).round().astype(np.uint8))


def _with_strip(image: Image.Image, entries: list[tuple[tuple[int, int, int], str]], title: str = "") -> Image.Image:
    """Append a legend strip under the picture: a coloured square and a label per entry."""
    font = _font()
    rows = ([title] if title else []) + [label for _, label in entries]
    line = 18
    canvas = Image.new("RGB", (max(image.width, 260), image.height + 6 + line * len(rows)), (255, 255, 255))
    canvas.paste(image, (0, 0))
    d = ImageDraw.Draw(canvas)
    y = image.height + 4
    if title:
        d.text((6, y), title, fill=(0, 0, 0), font=font)
        y += line
    for color, label in entries:
        d.rectangle([6, y + 2, 18, y + 14], fill=color, outline=(0, 0, 0))
        d.text((24, y), label, fill=(0, 0, 0), font=font)
        y += line
    return canvas


# What the four categories mean for a method other than IWP: the same kept/dropped x magnitude top-K
# split, without IWP's reading of it ("for diversity", "as duplicate") that only IWP's objective justifies.
PLAIN_LABELS = {KEPT_MAGNITUDE: "kept, in magnitude top-K", KEPT_DIVERSITY: "kept, outside magnitude top-K",
                DROPPED_DUPLICATE: "dropped, in magnitude top-K", DROPPED_LOW: "dropped, outside magnitude top-K"}
DROPPED_SHADE = {DROPPED_DUPLICATE: (245, 130, 20), DROPPED_LOW: (25, 25, 25)}   # what dropped patches fade to
UNSEEN = "not seen by the model (cropped or padding)"
KEPT_TINT = 0.5                # a kept patch is tinted with opacity * KEPT_TINT of its colour, and outlined
DROP_FADE = (0.35, 0.5)        # a dropped patch fades by DROP_FADE[0] + opacity * DROP_FADE[1]


def legend_colour(category: str) -> tuple[int, int, int]:
    """The colour that marks the category in category_overlay: outline (kept) or fade (dropped)."""
    return DROPPED_SHADE.get(category, CATEGORY_COLORS[category])


def category_labels(method: str) -> dict[str, str]:
    """Category -> the label that is true for the method (IWP's own names only for IWP)."""
    return {c: c for c in CATEGORIES} if method == "iwp" else dict(PLAIN_LABELS)


def unseen_mask(group: TokenGroup, size: tuple[int, int]) -> np.ndarray | None:
    """[H, W] bool: the pixels of the drawn picture that no visual token covers (what a centre crop cut
    off, or padding); None when the tokens carry no boxes."""
    boxes = _pixel_boxes(group, size)
    if not boxes:
        return None
    seen = np.zeros((size[1], size[0]), bool)
    for _, (x0, y0, x1, y1) in boxes:
        seen[y0:y1, x0:x1] = True
    return ~seen


def _hatch(out: np.ndarray, mask: np.ndarray) -> None:
    """Darken the masked pixels with diagonal stripes, in place."""
    yy, xx = np.nonzero(mask)
    stripe = ((xx + yy) // 5) % 2 == 0
    out[yy, xx] = out[yy, xx] * np.where(stripe, 0.25, 0.6)[:, None]


def category_overlay(image: Image.Image, group: TokenGroup, legend: bool = True, max_side: int = MAX_SIDE,
                     opacity: float = 0.5, method: str = "iwp", title: str | None = None) -> Image.Image:
    """Kept patches outlined in their category colour (lightly tinted), dropped ones faded (dark: low
    magnitude; orange: in the magnitude top-K), the area the model never sees hatched; a legend below.
    Readable on photos: the kept content stays visible; opacity (0..1) sets how strong the fills are."""
    pic = fit(image, max_side)
    opacity = float(min(max(opacity, 0.0), 1.0))
    base = np.asarray(pic, dtype=np.float32)
    out = base.copy()
    kept = set(group.kept)
    boxes = _pixel_boxes(group, pic.size)
    for t, (x0, y0, x1, y1) in boxes:
        c = group.categories[t]
        if t in kept:
            a, colour = opacity * KEPT_TINT, CATEGORY_COLORS[c]
        else:
            a, colour = DROP_FADE[0] + opacity * DROP_FADE[1], DROPPED_SHADE[c]
        out[y0:y1, x0:x1] = base[y0:y1, x0:x1] * (1 - a) + np.array(colour, np.float32) * a
    unseen = unseen_mask(group, pic.size)
    if unseen is not None and unseen.any():
        _hatch(out, unseen)
    drawn = Image.fromarray(out.round().astype(np.uint8))
    d = ImageDraw.Draw(drawn)
    for t, (x0, y0, x1, y1) in boxes:
        if t in kept:
            width = 2 if min(x1 - x0, y1 - y0) >= 8 else 1
            d.rectangle([x0, y0, x1 - 1, y1 - 1], outline=CATEGORY_COLORS[group.categories[t]], width=width)
    if not legend:
        return drawn
    labels = category_labels(method)
    counts = {c: group.categories.count(c) for c in CATEGORIES}
    entries = [(legend_colour(c), f"{labels[c]}: {counts[c]}") for c in CATEGORIES]
    if unseen is not None and unseen.any():
        entries.append(((60, 60, 60), UNSEEN))
    return _with_strip(drawn, entries, title=title or f"kept {len(group.kept)} of {group.n} visual tokens")


def heat_colors(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to an inferno-like colour ramp, [N, 3] float."""
    x = np.clip(values, 0, 1) * (len(_HEAT_STOPS) - 1)
    i = np.minimum(x.astype(int), len(_HEAT_STOPS) - 2)
    f = (x - i)[:, None]
    return _HEAT_STOPS[i] * (1 - f) + _HEAT_STOPS[i + 1] * f


def heatmap(image: Image.Image, group: TokenGroup, max_side: int = MAX_SIDE, alpha: float = 0.65) -> Image.Image:
    """Information magnitude per patch as a heat map (dark = low, bright = high), min-max normalised."""
    pic = fit(image, max_side)
    m = np.asarray(group.magnitude, np.float64).reshape(-1)
    lo, hi = (float(m.min()), float(m.max())) if m.size else (0.0, 1.0)
    norm = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    out = _blend(pic, group, heat_colors(norm).astype(np.float32), np.full(group.n, alpha, np.float32))
    ramp = [(tuple(int(c) for c in heat_colors(np.array([v]))[0]), f"{lo + v * (hi - lo):.3g}") for v in (0, .5, 1)]
    return _with_strip(out, ramp, title="information magnitude (low to high)")


def pick_steps(group: TokenGroup) -> list[int]:
    """How many picks each step of the selector took: the steps the run recorded (IWP's PC-MMR), else one
    pick a step."""
    return list(group.steps) if group.steps else [1] * len(group.kept)


def replay_frame(image: Image.Image, group: TokenGroup, step: int, steps: list[int] | None = None,
                 max_side: int = MAX_SIDE) -> Image.Image:
    """The selection after its first `step` picks: picked patches in category colours, the picks of the
    newest selector step (steps: picks per step, pick_steps) outlined, the rest dimmed."""
    pic = fit(image, max_side)
    step = max(0, min(step, len(group.kept)))
    picked = group.kept[:step]
    colors = np.zeros((group.n, 3), np.float32)
    alpha = np.full(group.n, 0.6, np.float32)                       # not yet picked: darkened
    for t in picked:
        colors[t] = CATEGORY_COLORS[group.categories[t]]
        alpha[t] = 0.45
    out = _blend(pic, group, colors, alpha)
    newest, title = picked, f"pick {step} of {len(group.kept)}"
    if steps:
        ends = np.cumsum(steps)
        c = int(np.searchsorted(ends, step)) if step else 0
        start = int(ends[c - 1]) if c else 0
        if step:
            newest = group.kept[start:step]
            title += f" (step {c + 1} of {len(steps)}: picks {start + 1}-{step})"
    d = ImageDraw.Draw(out)
    for _, box in _pixel_boxes(group, out.size, newest if step else []):
        d.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=(255, 255, 255), width=2)
    return _with_strip(out, [(CATEGORY_COLORS[c], c) for c in (KEPT_MAGNITUDE, KEPT_DIVERSITY)], title=title)


def cover_view(image: Image.Image, group: TokenGroup, token: int, max_side: int = MAX_SIDE) -> tuple[Image.Image, str]:
    """Highlight one token (red) and the kept token that covers it best (green); returns picture and text."""
    if not 0 <= token < group.n:
        raise ValueError(f"token {token} out of range 0..{group.n - 1}")
    pic = fit(image, max_side)
    cover = group.cover[token]
    dim = np.zeros((group.n, 3), np.float32)
    out = _blend(pic, group, dim, np.full(group.n, 0.35, np.float32))
    d = ImageDraw.Draw(out)
    boxes = dict(_pixel_boxes(group, out.size, [token] + ([cover] if cover >= 0 else [])))
    centre = {t: ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for t, b in boxes.items()}
    if cover in boxes and cover != token:
        d.line([centre[token], centre[cover]], fill=(255, 255, 0), width=2)
        d.rectangle([boxes[cover][0], boxes[cover][1], boxes[cover][2] - 1, boxes[cover][3] - 1],
                    outline=(0, 230, 0), width=3)
    if token in boxes:
        d.rectangle([boxes[token][0], boxes[token][1], boxes[token][2] - 1, boxes[token][3] - 1],
                    outline=(230, 0, 0), width=3)
    cat = group.categories[token]
    if cover == token:
        text = f"token {token} is kept ({cat}); it covers itself."
    elif cover < 0:
        text = f"token {token} was dropped ({cat}); nothing was kept to cover it."
    else:
        text = (f"token {token} was dropped ({cat}); kept token {cover} covers it best "
                f"(similarity S = {group.cover_similarity[token]:.3f}).")
    return out, text


def token_at(group: TokenGroup, x: float, y: float) -> int | None:
    """The token whose box (original pixels) contains the point, or None."""
    for t, b in enumerate(group.boxes):
        if b is not None and b[0] <= x < b[2] and b[1] <= y < b[3]:
            return t
    return None


def frame_groups(selection: Selection, n_frames: int) -> list[tuple[TokenGroup, list[int]]]:
    """For each video frame, (group, its tokens): video groups split by token frame, or one image group each."""
    out: list[tuple[TokenGroup, list[int]]] = []
    video = [g for g in selection.groups if g.kind == "video" and g.frames is not None]
    if video:
        g = video[0]
        # a token stands for its frame and the frames after it up to the next token frame (Qwen merges
        # two frames per temporal patch: tokens carry frames 0, 2, 4, ...), so every sampled frame is drawn
        starts = sorted({f for f in g.frames if f is not None})
        for f in range(n_frames):
            own = max((s for s in starts if s <= f), default=None)
            out.append((g, [t for t in range(g.n) if g.frames[t] is not None and g.frames[t] == own]))
    else:
        for g in selection.groups[:n_frames]:
            out.append((g, list(range(g.n))))
    return out


def subgroup(group: TokenGroup, tokens: list[int]) -> TokenGroup:
    """The tokens of one frame as a group of their own (kept order preserved; no steps: a run's steps
    span every frame)."""
    where = {t: i for i, t in enumerate(tokens)}
    return TokenGroup(kind=group.kind, index=group.index, positions=[group.positions[t] for t in tokens],
                      kept=[where[t] for t in group.kept if t in where],
                      magnitude=[group.magnitude[t] for t in tokens],
                      cover=[where.get(group.cover[t], -1) for t in tokens],
                      cover_similarity=[group.cover_similarity[t] for t in tokens],
                      categories=[group.categories[t] for t in tokens], boxes=[group.boxes[t] for t in tokens],
                      image_size=group.image_size, budget=group.budget)


def video_overlays(frames: list[Image.Image], selection: Selection, max_side: int = 256) -> list[Image.Image]:
    """The category overlay of every sampled frame (no legend; the image view carries it)."""
    return [category_overlay(frame, subgroup(g, toks), legend=False, max_side=max_side)
            for frame, (g, toks) in zip(frames, frame_groups(selection, len(frames)))]
