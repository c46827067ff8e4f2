"""The `iwp` model for lmms-eval: any supported family, pruned through iwp.apply, or unpruned as the baseline.

    lmms-eval --model iwp --model_args pretrained=Qwen/Qwen2.5-VL-7B-Instruct,method=iwp,keep_ratio=0.111 ...

model_args: pretrained (hub id or folder; "toy" = the embedded toy model), method (a selector name, or "none" for
the unpruned baseline), keep_ratio (1.0 = unpruned too), layer (K; default the library's), lam, first_chunk,
growth, dtype, attn_implementation, min_pixels / max_pixels (pin Qwen's input resolution), max_frames (video),
batch_size. Requests run in the order lmms-eval gives them, batch_size at a time (left padding), and batch i is
pruned with seed i, exactly as `python -m iwp.evaluate` does, so both report the same accuracy.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

import iwp
from ...toy.load import DEFAULT_PATH as TOY_PATH

UNPRUNED = ("none", "unpruned", "baseline")


def _dtype(name: str, cuda: bool) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if cuda else torch.float32
    return getattr(torch, name)


class IWP(lmms):
    """lmms-eval model: a Hugging Face VLM with IWP (or a peer selector) pruning its visual tokens."""

    is_simple = True

    def __init__(self, pretrained: str = "toy", method: str = "iwp", keep_ratio: float = 1.0, layer: int | None = None,
                 lam: float | None = None, first_chunk: int | None = None, growth: float | None = None,
                 device: str | None = None, dtype: str = "auto", attn_implementation: str | None = None,
                 min_pixels: int | None = None, max_pixels: int | None = None, max_frames: int = 32,
                 batch_size: int | str | None = 1, max_new_tokens: int = 32, loaded: tuple | None = None,
                 **unused) -> None:
        """loaded=(model, processor): use these instead of loading `pretrained` (Python API, tests)."""
        super().__init__()
        unused.pop("max_batch_size", None)                  # lmms-eval passes it to every model
        if unused:
            raise ValueError(f"unknown model_args for iwp: {sorted(unused)}")
        self.method = str(method).lower()
        self.keep_ratio = float(keep_ratio)
        if self.method not in UNPRUNED and self.method not in iwp.SELECTORS:
            raise ValueError(f"method must be one of {sorted(iwp.SELECTORS)} or 'none', not {method!r}")
        self.settings = {k: v for k, v in (("layer", layer), ("lam", lam), ("first_chunk", first_chunk),
                                           ("growth", growth)) if v is not None}
        cuda = torch.cuda.is_available()
        self._device = torch.device(device or ("cuda" if cuda else "cpu"))
        if loaded is None:
            from transformers import AutoModelForImageTextToText, AutoProcessor
            path = str(TOY_PATH) if pretrained == "toy" else str(pretrained)
            resolution = {k: int(v) for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels))
                          if v is not None}
            processor = AutoProcessor.from_pretrained(path, **resolution)
            extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
            model = AutoModelForImageTextToText.from_pretrained(
                path, dtype=_dtype(dtype, self._device.type == "cuda"), **extra)
            loaded = (model, processor)
        self.model, self.processor = loaded[0].to(self._device).eval(), loaded[1]
        self.processor.tokenizer.padding_side = "left"     # batched generation appends after the prompt
        self.batch_size = max(1, int(batch_size)) if str(batch_size).isdigit() else 1
        self.max_frames = int(max_frames)
        self.max_new_tokens = int(max_new_tokens)
        self.native_video = getattr(self.processor, "video_processor", None) is not None

    @property
    def pruned(self) -> bool:
        return self.method not in UNPRUNED and self.keep_ratio < 1.0

    def _prune(self, seed: int) -> None:
        """Patch for one batch (a fresh seed per batch, as python -m iwp.evaluate does), or run unpatched."""
        if self.pruned:
            iwp.apply(self.model, keep_ratio=self.keep_ratio, method=self.method, seed=seed, **self.settings)
        else:
            iwp.remove(self.model)

    def _media(self, visuals) -> tuple[list[Image.Image], list, list[dict]]:
        """(images, videos, video metadata) of one request; a video is a file path lmms-eval hands over."""
        images, videos, metas = [], [], []
        for v in visuals if isinstance(visuals, (list, tuple)) else [visuals]:
            if isinstance(v, Image.Image):
                images.append(v.convert("RGB"))
            elif isinstance(v, (str, Path)):
                from ...demo.video import sample_frames
                clip = sample_frames(str(v), max_frames=self.max_frames, max_seconds=math.inf)
                if self.native_video:
                    import numpy as np
                    videos.append(np.stack(clip.frames))
                    metas.append({"total_num_frames": clip.total_frames, "fps": clip.fps or 1.0,
                                  "frames_indices": clip.indices})
                else:                                        # LLaVA-1.5: the frames as images
                    images.extend(Image.fromarray(f) for f in clip.frames)
            elif v is not None:
                raise TypeError(f"iwp: unsupported visual input {type(v).__name__}")
        return images, videos, metas

    def _inputs(self, contexts: list[str], media: list[tuple]) -> dict:
        """Processor batch: one chat-template prompt per request, its images / video before the text."""
        texts, images, videos, metas = [], [], [], []
        for context, (ims, vids, ms) in zip(contexts, media):
            content = [{"type": "image"}] * len(ims) + [{"type": "video"}] * len(vids)
            content.append({"type": "text", "text": context})
            texts.append(self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                            add_generation_prompt=True))
            images += ims
            videos += vids
            metas += ms
        kwargs = {"images": images} if images else {}
        if videos:
            kwargs.update(videos=videos, video_metadata=metas, do_sample_frames=False)
        return self.processor(text=texts, padding=True, return_tensors="pt", **kwargs).to(self._device)

    def _requests(self, requests: list[Instance]):
        """Per request: (context, extra argument, visuals) with the document looked up in the task's split."""
        for r in requests:
            context, extra, doc_to_visual, doc_id, task, split = r.args
            yield context, extra, doc_to_visual(self.task_dict[task][split][doc_id])

    @torch.no_grad()
    def generate_until(self, requests: list[Instance]) -> list[str]:
        out = []
        reqs = list(self._requests(requests))
        for index, start in enumerate(range(0, len(reqs), self.batch_size)):
            chunk = reqs[start:start + self.batch_size]
            gen = dict(chunk[0][1])               # one task per call: the same generation kwargs throughout
            until = gen.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            inputs = self._inputs([c for c, _, _ in chunk], [self._media(v) for _, _, v in chunk])
            self._prune(index)
            ids = self.model.generate(**inputs, max_new_tokens=int(gen.get("max_new_tokens", self.max_new_tokens)),
                                      do_sample=False)
            texts = self.processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            for text in texts:
                for stop in until:
                    text = text.split(stop)[0] if stop else text
                out.append(text)
        iwp.remove(self.model)
        return out

    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """Log-probability of each continuation after its context (one request at a time, pruned with seed 0).

        Pruning drops visual tokens only, so the continuation's logits are the last ones the model returns.
        """
        out = []
        tok = self.processor.tokenizer
        for context, continuation, visuals in self._requests(requests):
            inputs = self._inputs([context], [self._media(visuals)])
            cont = tok(continuation, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self._device)
            ids = torch.cat([inputs["input_ids"], cont], dim=1)
            mask = torch.cat([inputs["attention_mask"], torch.ones_like(cont)], dim=1)
            self._prune(0)
            logits = self.model(**{**inputs, "input_ids": ids, "attention_mask": mask}).logits
            n = cont.shape[1]
            logp = torch.log_softmax(logits[0, -n - 1:-1].float(), dim=-1)
            out.append((float(logp.gather(1, cont[0, :, None]).sum()), bool((logp.argmax(-1) == cont[0]).all())))
        iwp.remove(self.model)
        return out

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("iwp: multi-round generation is not supported; use generate_until tasks")
