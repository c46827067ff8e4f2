"""Load the embedded toy model through the same from_pretrained path a hub model uses; answer one question."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "assets" / "toy-lvlm"


def load(path: str | Path = DEFAULT_PATH, dtype: torch.dtype = torch.float32):
    """(model, processor) from a save_pretrained folder, offline; the model is in eval mode."""
    processor = AutoProcessor.from_pretrained(str(path))
    model = LlavaForConditionalGeneration.from_pretrained(str(path), dtype=dtype).eval()
    return model, processor


def prompt(processor, question: str) -> str:
    """The chat-template prompt for one image and one question."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


@torch.no_grad()
def answer(model, processor, image: Image.Image, question: str, max_new_tokens: int = 4) -> str:
    """Greedy answer of the model to one question about one image."""
    inputs = processor(text=[prompt(processor, question)], images=[image.convert("RGB")], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()
