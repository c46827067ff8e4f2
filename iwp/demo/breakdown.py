"""The time breakdown picture: for the unpruned and the pruned run, one bar each on a common time scale,
split into vision encoder / layers before K / selection / layers from K / decoding (the runner's stage
clock, the same generate() calls as the metrics). It shows what pruning inside the language model can
shorten (layers from K, decoding's attention) and what it cannot (the vision encoder, layers before K)."""
from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from .stages import LABELS, STAGES

COLORS = {"vision": (122, 92, 190), "before_k": (70, 130, 200), "selection": (230, 60, 60),
          "after_k": (60, 170, 110), "decode": (240, 170, 40)}
WIDTH, BAR, LEFT, RIGHT = 720, 34, 96, 24


def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:                                  # Pillow without FreeType
        return ImageFont.load_default()


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def time_breakdown(metrics: dict, width: int = WIDTH) -> Image.Image | None:
    """The picture for one comparison's metrics (Comparison.metrics()); None when a run has no stage times."""
    sides = [(name, metrics.get(name) or {}) for name in ("unpruned", "pruned")]
    if any(not side.get("stages_s") for _, side in sides):
        return None
    total = max(sum(side["stages_s"].values()) for _, side in sides) or 1e-9
    scale = (width - LEFT - RIGHT) / total
    font, small = _font(13), _font(11)
    legend_rows = 2
    height = 34 + len(sides) * (BAR + 30) + legend_rows * 20 + 30
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    layer = metrics.get("layer")
    d.text((8, 8), f"Where the time goes (K = {layer}: pruning happens before decoder layer K)", fill=(0, 0, 0),
           font=font)
    y = 34
    for name, side in sides:
        stages = side["stages_s"]
        d.text((8, y + 4), name, fill=(0, 0, 0), font=font)
        d.text((8, y + 19), f"{side.get('visual_tokens', '?')} visual", fill=(90, 90, 90), font=small)
        x = LEFT
        for stage in STAGES:
            w = stages.get(stage, 0.0) * scale
            if w > 0:
                d.rectangle([x, y, x + max(w, 1), y + BAR], fill=COLORS[stage])
                label = _ms(stages[stage])
                if w > d.textlength(label, font=small) + 6:          # label inside when it fits
                    d.text((x + 3, y + BAR // 2 - 6), label, fill=(255, 255, 255), font=small)
            x += w
        d.text((LEFT, y + BAR + 3), f"total {_ms(sum(stages.values()))} · prefill {_ms(side.get('prefill_s', 0))}",
               fill=(60, 60, 60), font=small)
        y += BAR + 30
    x = 8
    for i, stage in enumerate(STAGES):
        if i == 3:                                     # second legend row
            x, y = 8, y + 20
        d.rectangle([x, y + 3, x + 12, y + 15], fill=COLORS[stage], outline=(0, 0, 0))
        d.text((x + 18, y + 2), LABELS[stage], fill=(0, 0, 0), font=font)
        x += 30 + int(d.textlength(LABELS[stage], font=font)) + 12
    d.text((8, y + 26), "Pruning shortens the layers from K and decoding; the vision encoder and the layers "
           "before K cost the same in both runs.", fill=(90, 90, 90), font=small)
    return img
