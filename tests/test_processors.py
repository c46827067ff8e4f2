"""Loading the real LLaVA-OneVision / Qwen2.5-VL processor folders with and without torchvision."""
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iwp.models import processors
from iwp.models.processors import VideoUnavailable, load_processor

FIXTURES = Path(__file__).parent / "fixtures" / "real-processors"
FOLDERS = {"onevision": FIXTURES / "llava-onevision-qwen2-0.5b-ov-hf", "qwen": FIXTURES / "qwen2.5-vl-3b-instruct"}
no_torchvision = pytest.mark.skipif(processors.torchvision_available(), reason="torchvision is installed here")
with_torchvision = pytest.mark.skipif(not processors.torchvision_available(),
                                      reason="torchvision is not installed (native video needs it)")


def _prompt(proc, kind: str) -> str:
    return proc.apply_chat_template([{"role": "user", "content": [{"type": kind}, {"type": "text", "text": "hi"}]}],
                                    add_generation_prompt=True)


@no_torchvision
@pytest.mark.parametrize("family", sorted(FOLDERS))
def test_image_only_without_torchvision(family, caplog, monkeypatch):
    monkeypatch.setattr(processors, "_said", set())
    with caplog.at_level(logging.WARNING, logger="iwp"):
        proc = load_processor(str(FOLDERS[family]))
        load_processor(str(FOLDERS[family]))
    said = [r for r in caplog.records if "torchvision" in r.getMessage()]
    assert len(said) == 1 and "native video needs torchvision" in said[0].getMessage()
    assert proc.video_processor is None and not processors.has_video(proc)
    assert type(proc).__name__.startswith("ImageOnly")
    prompt = _prompt(proc, "image")
    token = "<image>" if family == "onevision" else "<|image_pad|>"
    assert prompt.count(token) == 1 and prompt.startswith("<|im_start|>")
    batch = proc(text=prompt, images=[Image.new("RGB", (64, 48))], return_tensors="pt")
    n = int((batch["input_ids"] == proc.image_token_id).sum())
    assert n > 1 and "pixel_values" in batch                    # placeholder expanded to the image's tokens
    with pytest.raises(VideoUnavailable, match="torchvision"):
        proc(text=_prompt(proc, "video"), videos=[np.zeros((4, 32, 32, 3), np.uint8)])
    with pytest.raises(VideoUnavailable):
        proc(None, _prompt(proc, "video"), [np.zeros((4, 32, 32, 3), np.uint8)])          # positional videos


@no_torchvision
def test_onevision_settings_come_from_the_folder():
    proc = load_processor(str(FOLDERS["onevision"]))
    assert proc.num_image_tokens == 729 and proc.vision_feature_select_strategy == "full"
    assert proc.image_processor.size == {"height": 384, "width": 384}


def test_with_torchvision_the_full_processor_is_loaded(monkeypatch):
    """With torchvision, AutoProcessor's own processor is returned, and its failures are not hidden."""
    from transformers import AutoProcessor
    monkeypatch.setattr(processors, "torchvision_available", lambda: True)
    calls = []
    monkeypatch.setattr(AutoProcessor, "from_pretrained", lambda name, **kw: calls.append(name) or "full")
    assert load_processor(str(FOLDERS["qwen"])) == "full" and calls == [str(FOLDERS["qwen"])]


@no_torchvision
def test_claimed_torchvision_does_not_fall_back_silently(monkeypatch):
    monkeypatch.setattr(processors, "torchvision_available", lambda: True)
    with pytest.raises(ImportError, match="(?i)torchvision"):
        load_processor(str(FOLDERS["onevision"]))


@with_torchvision
@pytest.mark.parametrize("family", sorted(FOLDERS))
def test_full_processor_with_torchvision(family):
    proc = load_processor(str(FOLDERS[family]))
    assert processors.has_video(proc)
    batch = proc(text=_prompt(proc, "video"), videos=[np.zeros((4, 56, 56, 3), np.uint8)], return_tensors="pt")
    assert "pixel_values_videos" in batch
