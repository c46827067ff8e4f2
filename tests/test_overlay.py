"""Pictures of a Selection, built from hand-made Selection objects (no model needed)."""
import json
import time

import numpy as np
import pytest
from PIL import Image

from iwp import overlay
from iwp.selection import (CATEGORIES, DROPPED_DUPLICATE, DROPPED_LOW, KEPT_DIVERSITY, KEPT_MAGNITUDE, Selection,
                           TokenGroup)

W, H, SIDE = 400, 240, 4          # a 4 x 4 grid of 100 x 60 px patches (drawn at 1:1)


def make_group(kept=(5, 0, 10, 15), frames=None, n=SIDE * SIDE, w=W, h=H) -> TokenGroup:
    boxes = [((t % SIDE) * w / SIDE, (t // SIDE % SIDE) * h / SIDE, (t % SIDE + 1) * w / SIDE,
              (t // SIDE % SIDE + 1) * h / SIDE) for t in range(n)]
    magnitude = [float(t % 7) for t in range(n)]
    cats = [KEPT_MAGNITUDE, KEPT_DIVERSITY, DROPPED_DUPLICATE, DROPPED_LOW]
    categories = [cats[0] if t == kept[0] else cats[1] if t in kept else cats[2] if t % 2 else cats[3]
                  for t in range(n)]
    cover = [t if t in kept else kept[t % len(kept)] for t in range(n)]
    return TokenGroup(kind="video" if frames else "image", index=0, positions=list(range(3, 3 + n)), kept=list(kept),
                      magnitude=magnitude, cover=cover, cover_similarity=[1.0 if t in kept else 0.5 for t in range(n)],
                      categories=categories, boxes=boxes, frames=frames, image_size=(w, h), budget=len(kept))


def make_image(w=W, h=H) -> Image.Image:
    return Image.fromarray(np.full((h, w, 3), 200, np.uint8))


def pixel(img, x, y):
    return np.asarray(img)[y, x].astype(int)


def test_kept_patches_tinted_and_outlined_dropped_ones_faded_and_legend_lists_all_four():
    g = make_group()
    for opacity in (0.5, 0.0, 1.0):
        out = overlay.category_overlay(make_image(), g, opacity=opacity)
        assert out.width >= W and out.height > H                 # legend strip below the picture
        for t in (5, 0, 1, 2):                                   # one token of each category
            x0, y0, x1, y1 = (int(v) for v in g.boxes[t])
            c = g.categories[t]
            if t in g.kept:                                      # the photo shows through a light tint
                a, colour = opacity * overlay.KEPT_TINT, overlay.CATEGORY_COLORS[c]
                assert np.abs(pixel(out, x0 + 1, y0 + 1) - colour).max() <= 1      # the outline
            else:
                a, colour = overlay.DROP_FADE[0] + opacity * overlay.DROP_FADE[1], overlay.DROPPED_SHADE[c]
            expect = a * np.array(colour) + (1 - a) * 200
            assert np.abs(pixel(out, (x0 + x1) // 2, (y0 + y1) // 2) - expect).max() <= 1, (t, opacity)
    legend = np.asarray(out)[H:]
    for c in CATEGORIES:                                         # every category's colour is in the legend
        assert (np.abs(legend.astype(int) - overlay.legend_colour(c)).sum(-1) == 0).any(), c
    assert len({overlay.legend_colour(c) for c in CATEGORIES}) == 4


def test_labels_are_iwps_only_for_iwp():
    assert overlay.category_labels("iwp")[KEPT_DIVERSITY] == KEPT_DIVERSITY
    for method in ("random", "uniform", "fastv", "divprune", "magnitude"):
        labels = overlay.category_labels(method)
        assert not any("diversity" in v or "duplicate" in v for v in labels.values())
        assert labels[KEPT_DIVERSITY] == "kept, outside magnitude top-K"


def test_area_no_token_covers_is_hatched_and_named():
    g = make_group(w=W, h=H)
    g.image_size = (W + 100, H)                                  # a 100 px strip on the right: no token there
    out = overlay.category_overlay(make_image(W + 100, H), g)
    k = overlay.MAX_SIDE / (W + 100)                             # drawn at MAX_SIDE wide
    strip = np.asarray(out)[:int(H * k), int((W + 5) * k):int((W + 95) * k)].astype(int)
    assert strip.max() < 200 and len(np.unique(strip)) > 1      # darkened, striped
    full = overlay.category_overlay(make_image(), make_group())
    legend_lines = lambda img, h: img.height - h
    assert overlay.unseen_mask(make_group(), (W, H)).sum() == 0
    assert legend_lines(out, round(H * k)) > legend_lines(full, H)          # one more legend line


def test_none_boxes_and_out_of_picture_boxes_are_skipped():
    g = make_group()
    g.boxes[3] = None
    g.boxes[4] = (-50.0, -50.0, -10.0, -10.0)
    out = overlay.category_overlay(make_image(), g, legend=False)
    assert out.size == (W, H)


def test_large_images_are_drawn_at_modest_resolution_quickly():
    big = make_image(2000, 1200)
    g = make_group(w=2000, h=1200)
    start = time.perf_counter()
    out = overlay.category_overlay(big, g, legend=False)
    heat = overlay.heatmap(big, g)
    assert max(out.size) == overlay.MAX_SIDE and heat.width == overlay.MAX_SIDE
    assert time.perf_counter() - start < 0.5


def test_heatmap_is_bright_where_magnitude_is_high():
    g = make_group()
    out = overlay.heatmap(make_image(), g)
    lo_t, hi_t = g.magnitude.index(min(g.magnitude)), g.magnitude.index(max(g.magnitude))
    centre = lambda t: ((int(g.boxes[t][0]) + int(g.boxes[t][2])) // 2, (int(g.boxes[t][1]) + int(g.boxes[t][3])) // 2)
    assert pixel(out, *centre(hi_t)).sum() > pixel(out, *centre(lo_t)).sum() + 150


def test_replay_shows_exactly_the_first_picks():
    g = make_group(kept=(5, 0, 10, 15))
    chunks = [1, 3]
    dark = overlay.replay_frame(make_image(), g, 0, chunks)
    one = overlay.replay_frame(make_image(), g, 1, chunks)
    full = overlay.replay_frame(make_image(), g, 4, chunks)
    centre = lambda t: ((int(g.boxes[t][0]) + int(g.boxes[t][2])) // 2, (int(g.boxes[t][1]) + int(g.boxes[t][3])) // 2)
    assert (pixel(one, *centre(5)) != pixel(dark, *centre(5))).any()      # first pick lit at step 1
    assert (pixel(one, *centre(10)) == pixel(dark, *centre(10))).all()    # third pick not yet
    assert (pixel(full, *centre(10)) != pixel(dark, *centre(10))).any()
    assert (pixel(full, *centre(1)) == pixel(dark, *centre(1))).all()     # never picked: stays dimmed


def test_replay_draws_the_recorded_steps():
    g = make_group(kept=tuple(range(7)))
    assert overlay.pick_steps(g) == [1] * 7                     # no recorded steps: one pick a step
    g.steps = [1, 4, 2]                                         # as PC-MMR recorded them, not a schedule
    assert overlay.pick_steps(g) == [1, 4, 2]
    outlined = lambda img, t: tuple(pixel(img, int(g.boxes[t][0]) + 1, int(g.boxes[t][1]) + 1)) == (255, 255, 255)
    frame = overlay.replay_frame(make_image(), g, 3, overlay.pick_steps(g))
    assert [outlined(frame, t) for t in range(7)] == [False, True, True, False, False, False, False]
    frame = overlay.replay_frame(make_image(), g, 6, overlay.pick_steps(g))
    assert [outlined(frame, t) for t in range(7)] == [False] * 5 + [True, False]
    one_a_step = overlay.replay_frame(make_image(), g, 3, [1] * 7)
    assert [outlined(one_a_step, t) for t in range(7)] == [False, False, True, False, False, False, False]


def test_steps_travel_through_json():
    g = make_group()
    g.steps = [1, 3]
    sel = Selection(groups=[g, make_group()], layer=2, method="iwp", keep_ratio=0.25)
    back = Selection.from_dict(json.loads(sel.to_json()))
    assert [x.steps for x in back.groups] == [[1, 3], None]
    old = json.loads(sel.to_json())
    for x in old["groups"]:
        del x["steps"]                                          # a Selection saved before steps were recorded
    assert [x.steps for x in Selection.from_dict(old).groups] == [None, None]


def test_cover_view_and_token_at():
    g = make_group()
    t = overlay.token_at(g, 120, 80)                # column 1, row 1 -> token 5
    assert t == 5
    assert overlay.token_at(g, 999, 999) is None
    img, text = overlay.cover_view(make_image(), g, 2)
    assert f"kept token {g.cover[2]} covers it" in text
    x0, y0 = int(g.boxes[2][0]), int(g.boxes[2][1])
    assert tuple(pixel(img, x0 + 1, y0 + 1)) == (230, 0, 0)       # red outline on the dropped patch
    cx0, cy0 = int(g.boxes[g.cover[2]][0]), int(g.boxes[g.cover[2]][1])
    assert tuple(pixel(img, cx0 + 1, cy0 + 1)) == (0, 230, 0)     # green outline on its cover
    _, text = overlay.cover_view(make_image(), g, 5)
    assert "covers itself" in text
    with pytest.raises(ValueError):
        overlay.cover_view(make_image(), g, 99)


def test_video_frames_each_get_their_own_tokens():
    n_frames, per = 3, SIDE * SIDE
    g = make_group(kept=(0, per + 1, 2 * per + 2), frames=[t // per for t in range(n_frames * per)], n=n_frames * per)
    sel = Selection(groups=[g], layer=2, method="iwp", keep_ratio=0.1)
    frames = [make_image() for _ in range(n_frames)]
    outs = overlay.video_overlays(frames, sel, max_side=W)
    assert len(outs) == n_frames
    centre = lambda t: ((int(g.boxes[t][0]) + int(g.boxes[t][2])) // 2, (int(g.boxes[t][1]) + int(g.boxes[t][3])) // 2)
    kept_colour = lambda img, t: pixel(img, *centre(t % per))
    # frame 1 keeps its token 1 (kept for diversity: blue), frame 0 does not
    assert kept_colour(outs[1], per + 1)[2] > kept_colour(outs[1], per + 1)[0] + 30
    assert not (kept_colour(outs[0], 1)[2] > kept_colour(outs[0], 1)[0] + 30)
    images = [make_image() for _ in range(2)]
    sel2 = Selection(groups=[make_group(), make_group(kept=(1, 2, 3, 4))], layer=2, method="iwp", keep_ratio=0.25)
    assert len(overlay.video_overlays(images, sel2)) == 2


def test_small_images_are_enlarged_for_display():
    g = make_group(w=100, h=60)
    out = overlay.category_overlay(make_image(100, 60), g, legend=False)
    assert max(out.size) == overlay.MIN_SIDE
