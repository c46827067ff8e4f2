"""Token -> image-box maths shared by the model families: boxes are (x0, y0, x1, y1) in original pixels."""
from __future__ import annotations

import math

from .compat import select_best_resolution

Box = tuple[float, float, float, float]


def grid_boxes(rows: int, cols: int, x0: float, y0: float, x1: float, y1: float) -> list[Box]:
    """The rectangle (x0, y0, x1, y1) cut into rows x cols cells, in raster order."""
    w, h = (x1 - x0) / cols, (y1 - y0) / rows
    return [(x0 + c * w, y0 + r * h, x0 + (c + 1) * w, y0 + (r + 1) * h) for r in range(rows) for c in range(cols)]


def square_view_boxes(width: int, height: int, side: int, mode: str) -> tuple[float, float, float, float]:
    """The part of the original image a square model view of `side` pixels shows, as (x0, y0, x1, y1).

    mode "crop": shortest edge resized to side, centre crop (LLaVA-1.5 default); "pad": padded to a square
    first (LLaVA do_pad, OneVision multi-image); "squash": the whole image resized to the square.
    """
    if mode == "squash":
        return 0.0, 0.0, float(width), float(height)
    if mode == "crop":
        s = min(width, height)
        return (width - s) / 2, (height - s) / 2, (width + s) / 2, (height + s) / 2
    if mode == "pad":
        s = max(width, height)
        return (width - s) / 2, (height - s) / 2, (width + s) / 2, (height + s) / 2
    raise ValueError(f"unknown view mode {mode!r}; use 'crop', 'pad' or 'squash'")


def anyres_boxes(height: int, width: int, pinpoints: list[list[int]], crop: int, patch: int,
                 max_num_patches: int | None = None) -> list[Box | None]:
    """Boxes of one LLaVA-NeXT/OneVision anyres image in sequence order; None marks a newline token.

    Base view (whole image squashed, n x n, no newline), then the unpadded high-res grid row by row,
    each row followed by a newline; OneVision anyres_max_N shrinks that grid when it is too large.
    """
    n = crop // patch
    boxes: list[Box | None] = list(grid_boxes(n, n, 0, 0, width, height))
    best_h, best_w = select_best_resolution((height, width), pinpoints)
    rows, cols = (best_h // crop) * n, (best_w // crop) * n
    if width / height > cols / rows:      # unpad_image: equal bands removed top and bottom
        pad = (rows - int(round(height * (cols / width), 7))) // 2
        rows -= 2 * pad
    else:                                 # ... or left and right
        pad = (cols - int(round(width * (rows / height), 7))) // 2
        cols -= 2 * pad
    if max_num_patches is not None:
        ratio = math.sqrt(rows * cols / (max_num_patches * n * n))
        if ratio > 1.1:                   # bilinear downscale of the feature grid
            rows, cols = int(rows // ratio), int(cols // ratio)
    for r, row in enumerate(_chunks(grid_boxes(rows, cols, 0, 0, width, height), cols)):
        boxes += row + [None]
    return boxes


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]
