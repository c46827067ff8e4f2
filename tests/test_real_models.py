"""The real LLaVA-OneVision-0.5B and Qwen2.5-VL-3B processors (tests/fixtures/real-processors) with models built
from their config.json, narrowed and shortened (random weights): chat template, anyres / dynamic-resolution
images, native video where torchvision exists, token counts, boxes, parity at keep 1.0, the demo runner."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import iwp
from iwp.bench.configs import folder_config
from iwp.demo import processing
from iwp.demo.runner import Runner
from iwp.models.processors import load_processor, torchvision_available

FIXTURES = Path(__file__).parent / "fixtures" / "real-processors"
FOLDERS = {"onevision": FIXTURES / "llava-onevision-qwen2-0.5b-ov-hf", "qwen": FIXTURES / "qwen2.5-vl-3b-instruct"}
needs_torchvision = pytest.mark.skipif(not torchvision_available(),
                                       reason="torchvision is not installed: no video processor (native video)")
META = {"total_num_frames": 40, "fps": 10.0, "frames_indices": [0, 13, 26, 39]}


@pytest.fixture(scope="module", params=sorted(FOLDERS))
def real(request):
    from transformers import AutoModelForImageTextToText
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(folder_config(FOLDERS[request.param], small=True)).eval()
    return request.param, model, load_processor(str(FOLDERS[request.param]))


def _image(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _frames(n=4, w=112, h=112):
    return [_image(w, h, seed=i) for i in range(n)]


def _visual(batch, processor, kind="image") -> int:
    return int((batch["input_ids"] == getattr(processor, f"{kind}_token_id")).sum())


def test_chat_template(real):
    family, model, proc = real
    given = processing.build_inputs(model, proc, [_image(64, 64)], "What is here?")
    text = proc.decode(given.batch["input_ids"][0])
    if family == "onevision":
        assert text.startswith("<|im_start|>user\n<image>") and text.endswith("What is here?<|im_end|>\n"
                                                                              "<|im_start|>assistant\n")
    else:
        assert "<|im_start|>user\n<|vision_start|><|image_pad|>" in text
        assert text.endswith("<|vision_end|>What is here?<|im_end|>\n<|im_start|>assistant\n")


def test_image_token_counts(real):
    """OneVision anyres: base view (27 x 27) + the unpadded high-res grid with a newline per row. Qwen dynamic
    resolution: one token per 28 x 28 pixels of a size that is already a multiple of 28."""
    family, model, proc = real
    if family == "onevision":
        sizes = {(384, 384): 729 + 27 * 28, (768, 384): 729 + 27 * (2 * 27 + 1)}   # 1 crop; 2 crops side by side
    else:
        sizes = {(280, 196): 10 * 7, (560, 392): 20 * 14}
    for (w, h), expected in sizes.items():
        batch = processing.build_inputs(model, proc, [_image(w, h)], "hi").batch
        assert _visual(batch, proc) == expected, (w, h)


def test_boxes_inside_the_image_and_parity_at_keep_1(real):
    """Selections' boxes lie in the original image; keep 1.0 generates exactly the unpatched tokens."""
    family, model, proc = real
    image = _image(300, 200)
    batch = processing.build_inputs(model, proc, [image], "Describe it.").batch
    greedy = dict(max_new_tokens=4, do_sample=False)
    with torch.inference_mode():
        plain = model.generate(**batch, **greedy)
        with iwp.pruning(model, keep_ratio=1.0):
            same = model.generate(**batch, **greedy)
        with iwp.pruning(model, keep_ratio=0.25):
            model.generate(**batch, **greedy)
            sel = iwp.last_selection(model, image_sizes=[image.size], processor=proc)[0]
    assert torch.equal(plain, same)
    n = _visual(batch, proc)
    assert sel.n_visual == n and sel.n_kept == round(0.25 * n)
    boxes = [b for b in sel.groups[0].boxes if b is not None]
    assert len(boxes) > 0.9 * n
    assert all(0 <= x0 < x1 <= 300 + 1e-6 and 0 <= y0 < y1 <= 200 + 1e-6 for x0, y0, x1, y1 in boxes)


def test_runner_video_without_torchvision_falls_back_to_frames(real, monkeypatch):
    """No video processor: a clear note, the frames go in as images, and the result says so."""
    family, model, proc = real
    if torchvision_available():
        monkeypatch.setattr(proc, "video_processor", None)       # the image-only path, honestly: no video part
    runner = Runner(model, proc, family, max_new_tokens=2)
    frames = _frames(2, 64, 64)
    result = runner.compare(frames, "What happens?", keep_ratio=0.5, video=True, video_meta=META)
    assert result.video_mode == processing.FRAMES == result.metrics()["video_input"]
    assert any("torchvision" in note for note in result.notes)
    assert [g.kind for g in result.selection.groups] == ["image"] * 2
    stages = result.metrics()["pruned"]["stages_s"]
    assert set(stages) == {"vision", "before_k", "selection", "after_k", "decode"}
    assert sum(stages.values()) <= result.pruned.total_s * 1.05 + 1e-3


@needs_torchvision
def test_native_video_tokens_boxes_and_overlays(real):
    """One video group: OneVision 196 tokens per frame (+1 newline), Qwen t x h x w merged cells; boxes per
    frame inside the frame; one overlay per sampled frame; Qwen's temporal spacing from the frames' times."""
    family, model, proc = real
    frames = _frames(4)
    runner = Runner(model, proc, family, max_new_tokens=2)
    given = runner.inputs(frames, "What happens?", video=True, video_meta=META)
    assert given.video_mode == processing.NATIVE and not given.notes
    n = _visual(given.batch, proc, "video")
    if family == "onevision":
        assert n == 4 * 196 + 1
    else:
        t, h, w = given.batch["video_grid_thw"][0].tolist()
        assert t == 2 and n == t * h * w // 4
        # 4 frames spread over 40 frames at 10 fps: one frame a second, two frames per temporal patch
        assert given.batch["second_per_grid_ts"].tolist() == pytest.approx([2.0])
    result = runner.compare(frames, "What happens?", keep_ratio=0.25, video=True, video_meta=META)
    (group,) = result.selection.groups
    assert group.kind == "video" and group.n == n and result.video_mode == processing.NATIVE
    framed = [f for f in group.frames if f is not None]
    assert set(framed) == ({0, 1, 2, 3} if family == "onevision" else {0, 2})
    assert all(0 <= b[0] < b[2] <= 112 and 0 <= b[1] < b[3] <= 112 for b in group.boxes if b is not None)
    from iwp import overlay
    assert len(overlay.video_overlays(frames, result.selection)) == 4
    assert all(len(toks) > 0 for _, toks in overlay.frame_groups(result.selection, 4))


@needs_torchvision
def test_native_video_parity_at_keep_1(real):
    family, model, proc = real
    batch = processing.build_inputs(model, proc, _frames(4), "What happens?", video=True, video_meta=META).batch
    with torch.inference_mode():
        plain = model.generate(**batch, max_new_tokens=3, do_sample=False)
        with iwp.pruning(model, keep_ratio=1.0):
            same = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert torch.equal(plain, same)
