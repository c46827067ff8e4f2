"""Token boxes tile the image (or the model's view of it) at the processors' real token counts."""
from types import SimpleNamespace

import pytest
import torch
from conftest import image

import iwp
from iwp.geometry import anyres_boxes, grid_boxes, square_view_boxes

SIZES = [(40, 60), (60, 40), (30, 30), (90, 30), (20, 200)]      # (H, W)


def assert_tiles(boxes, x0, y0, x1, y1):
    """Boxes cover the rectangle exactly: inside it, areas add up, no two overlap."""
    b = torch.tensor(boxes, dtype=torch.float64)
    assert (b[:, 0] >= x0 - 1e-6).all() and (b[:, 1] >= y0 - 1e-6).all()
    assert (b[:, 2] <= x1 + 1e-6).all() and (b[:, 3] <= y1 + 1e-6).all()
    area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    assert (area > 0).all()
    assert area.sum().item() == pytest.approx((x1 - x0) * (y1 - y0), rel=1e-9)
    iw = (torch.minimum(b[:, None, 2], b[None, :, 2]) - torch.maximum(b[:, None, 0], b[None, :, 0])).clamp_min(0)
    ih = (torch.minimum(b[:, None, 3], b[None, :, 3]) - torch.maximum(b[:, None, 1], b[None, :, 1])).clamp_min(0)
    overlap = (iw * ih).fill_diagonal_(0)
    assert overlap.max().item() < 1e-9


def test_grid_and_views():
    assert_tiles(grid_boxes(3, 5, 10, 20, 60, 50), 10, 20, 60, 50)
    assert square_view_boxes(60, 40, 28, "crop") == (10, 0, 50, 40)
    assert square_view_boxes(60, 40, 28, "pad") == (0, -10, 60, 50)
    assert square_view_boxes(60, 40, 28, "squash") == (0, 0, 60, 40)


@pytest.mark.parametrize("h,w", SIZES)
def test_llava_boxes_tile_the_crop(tiny, h, w):
    model, proc = tiny("llava")
    inputs = proc(images=image(h, w), text="USER: <image>\nw1 ASSISTANT:", return_tensors="pt")
    n = int((inputs.input_ids == model.config.image_token_id).sum())
    fam = iwp.models.for_model(model)
    info = fam.describe(model, "image", {}, [torch.zeros(n, 1)])[0]
    boxes, frames, size = fam.boxes(model, info, (w, h), proc)
    assert len(boxes) == n == 16 and frames is None and size == (w, h)
    assert_tiles(boxes, *square_view_boxes(w, h, 28, "crop"))
    padded, _, _ = fam.boxes(model, info, (w, h), SimpleNamespace(do_pad=True))   # processor with do_pad
    assert_tiles(padded, *square_view_boxes(w, h, 28, "pad"))


@pytest.mark.parametrize("h,w", SIZES + [(300, 500), (50, 80)])
def test_onevision_anyres_boxes_match_the_model_and_tile_the_image(tiny, h, w):
    model, proc = tiny("llava_onevision")
    inputs = proc(images=image(h, w), text="USER: <image>\nw1 ASSISTANT:", return_tensors="pt")
    n = int((inputs.input_ids == model.config.image_token_id).sum())
    cfg = model.config
    boxes = anyres_boxes(h, w, cfg.image_grid_pinpoints, 28, 7, max_num_patches=4)
    assert len(boxes) == n
    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=inputs.pixel_values, image_sizes=inputs.image_sizes,
                                               return_dict=True).pooler_output[0]
    is_newline = (feats == model.model.image_newline).all(-1)
    assert is_newline.tolist() == [b is None for b in boxes]         # newlines exactly where the model puts them
    base, hires = boxes[:16], [b for b in boxes[16:] if b is not None]
    assert_tiles(base, 0, 0, w, h)
    assert_tiles(hires, 0, 0, w, h)


def test_onevision_video_boxes_tile_every_frame(tiny):
    model, _ = tiny("llava_onevision")
    fam = iwp.models.for_model(model)
    out = torch.zeros(1, 3 * 4 + 1, 8)                                 # what get_video_features returns
    info = fam.describe(model, "video", {"pixel_values_videos": torch.zeros(1, 3, 3, 28, 28)}, out)[0]
    boxes, frames, size = fam.boxes(model, info, (64, 48))
    assert boxes[-1] is None and frames[-1] is None and size == (64, 48)
    for f in range(3):
        assert_tiles([b for b, fr in zip(boxes, frames) if fr == f], 0, 0, 64, 48)


@pytest.mark.parametrize("h,w", SIZES + [(70, 120), (200, 90)])
def test_qwen_boxes_tile_the_image(tiny, h, w):
    model, proc = tiny("qwen2_5_vl")
    prompt = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>w1<|im_end|>\n"
    inputs = proc(images=image(h, w), text=prompt, return_tensors="pt")
    n = int((inputs.input_ids == model.config.image_token_id).sum())
    fam = iwp.models.for_model(model)
    info = fam.describe(model, "image", {"image_grid_thw": inputs.image_grid_thw}, [torch.zeros(n, 1)])[0]
    boxes, frames, size = fam.boxes(model, info, (w, h))
    assert len(boxes) == n and frames is None
    assert_tiles(boxes, 0, 0, w, h)
    view, _, vsize = fam.boxes(model, info)                             # no size: resized-image pixels
    t, gh, gw = inputs.image_grid_thw[0].tolist()
    assert vsize == (gw * 14, gh * 14)
    assert_tiles(view, 0, 0, gw * 14, gh * 14)


def test_qwen_video_boxes_tile_every_temporal_slice(tiny):
    model, _ = tiny("qwen2_5_vl")
    fam = iwp.models.for_model(model)
    info = fam.describe(model, "video", {"video_grid_thw": torch.tensor([[3, 4, 6]])}, [torch.zeros(18, 1)])[0]
    assert fam.grid(info) == (3, 2, 3)
    boxes, frames, _ = fam.boxes(model, info, (90, 60))
    assert sorted(set(frames)) == [0, 2, 4]                          # first sampled frame of each slice
    for f in (0, 2, 4):
        assert_tiles([b for b, fr in zip(boxes, frames) if fr == f], 0, 0, 90, 60)
