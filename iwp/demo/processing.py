"""Model inputs from images or a video's sampled frames: native video where the model and its processor take
video (LLaVA-OneVision, Qwen2.5-VL), frames as separate images otherwise, labelled so the visitor knows."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from iwp.models.processors import has_video

NATIVE = "native video"
FRAMES = "frames as images"
NO_TORCHVISION = ("Native video needs torchvision, which is not installed here: the {n} sampled frames went to "
                  "the model as {n} separate images.")


@dataclass
class ModelInput:
    """A processor batch and how the input reached the model."""
    batch: object                          # transformers BatchFeature, on the model's device
    kind: str                              # "image" or "video"
    video_mode: str | None = None          # NATIVE or FRAMES for a video, None for an image
    sizes: list[tuple[int, int]] = field(default_factory=list)   # (W, H) per token group, for last_selection
    notes: list[str] = field(default_factory=list)


def model_takes_video(model) -> bool:
    """Whether the model has a video path of its own (get_video_features)."""
    return hasattr(getattr(model, "model", model), "get_video_features")


def video_mode(model, processor) -> tuple[str, str | None]:
    """(mode, why) for a video on this model and processor; why is None when video goes in natively."""
    if not model_takes_video(model):
        return FRAMES, "this model takes images only"
    if not has_video(processor):
        return FRAMES, "torchvision"
    return NATIVE, None


def _prompt(processor, question: str, kind: str, count: int) -> str:
    content = [{"type": kind}] * count + [{"type": "text", "text": question}]
    if getattr(processor, "chat_template", None):
        return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    token = getattr(processor, f"{kind}_token", "<image>")
    return token * count + question


def build_inputs(model, processor, images: list[Image.Image], question: str, video: bool = False,
                 video_meta: dict | None = None, device=None) -> ModelInput:
    """The batch for one question about one image, several images, or the sampled frames of one video.

    A native video is ONE video of all frames (the processor's own sizing and token count; Qwen gets the
    frames' timestamps from video_meta: total_num_frames, fps, frames_indices). Without a video path the
    frames go in as images, and ModelInput says so."""
    mode, why = video_mode(model, processor) if video else (None, None)
    notes = []
    if mode == NATIVE:
        frames = np.stack([np.asarray(im.convert("RGB")) for im in images])
        meta = {"video_metadata": [video_meta], "do_sample_frames": False} if video_meta else {}
        batch = processor(text=_prompt(processor, question, "video", 1), videos=[frames], return_tensors="pt",
                          **meta)
        sizes = [images[0].size]                     # one group: the video, boxes per frame
    else:
        if why == "torchvision":
            notes.append(NO_TORCHVISION.format(n=len(images)))
        batch = processor(text=_prompt(processor, question, "image", len(images)), images=images,
                          return_tensors="pt")
        sizes = [im.size for im in images]
    if device is not None:
        batch = batch.to(device)
    return ModelInput(batch, "video" if video else "image", mode, sizes, notes)
