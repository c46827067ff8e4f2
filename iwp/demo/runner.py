"""Load a model once and answer one question unpruned and pruned, timed: what the demo and the CLI run."""
from __future__ import annotations

import importlib.util
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

import iwp

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = str(ROOT / "assets" / "toy-lvlm")
TINY = "tiny"                           # IWP_MODEL=tiny: the random tiny LLaVA of the tests (no files needed)


class OutOfMemory(RuntimeError):
    """Generation ran out of (GPU or host) memory; the model is left unpatched and usable."""


def _trust_remote_code() -> bool:
    return os.environ.get("IWP_TRUST_REMOTE_CODE", "") == "1"


def spaces_model() -> str | None:
    """On a Hugging Face Space (SPACE_ID is set): the first `models:` entry of the README front matter."""
    readme = ROOT / "README.md"
    if not os.environ.get("SPACE_ID") or not readme.is_file():
        return None
    parts = readme.read_text().split("---", 2)
    if len(parts) < 3 or parts[0].strip():
        return None
    found = re.search(r"^models:\s*\n\s*-\s*(\S+)", parts[1], re.M)
    return found.group(1) if found else None


def load_model(name: str | None = None):
    """(model, processor, name) for IWP_MODEL: a hub id, a local path, or 'tiny'; eval mode, on GPU if any.
    Without IWP_MODEL: the README's model on a Space, the embedded toy model elsewhere."""
    name = name or os.environ.get("IWP_MODEL") or spaces_model() or DEFAULT_MODEL
    if name == TINY:
        model, processor = iwp.models.family("llava").tiny()
    else:
        from transformers import AutoModelForImageTextToText, AutoProcessor
        cuda = torch.cuda.is_available()
        trust = _trust_remote_code()
        processor = AutoProcessor.from_pretrained(name, trust_remote_code=trust)
        # several GPUs: shard the model over them (accelerate's big-model inference; 72B-class models)
        sharded = cuda and torch.cuda.device_count() > 1 and importlib.util.find_spec("accelerate") is not None
        model = AutoModelForImageTextToText.from_pretrained(
            name, trust_remote_code=trust, dtype=torch.bfloat16 if cuda else torch.float32,
            **({"device_map": "auto"} if sharded else {}))
        if cuda and not sharded:
            model = model.to("cuda")
        if Path(name).exists() and Path(name).resolve().is_relative_to(ROOT):
            name = str(Path(name).resolve().relative_to(ROOT))       # shown in the page: no server paths
    return model.eval(), processor, name


class _Clock(LogitsProcessor):
    """Records the time of every decoding step; the first one marks the end of the prefill."""

    def __init__(self):
        self.stamps: list[float] = []

    def __call__(self, input_ids, scores):
        if torch.cuda.is_available() and scores.is_cuda:
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())
        return scores


@dataclass
class Run:
    """One generation: the answer, its timings and the first-token logits."""
    answer: str
    prefill_s: float
    total_s: float
    visual_tokens: int
    new_tokens: int
    first_logits: torch.Tensor = field(repr=False)


@dataclass
class Comparison:
    """Unpruned and pruned runs of one request and what the pruned prefill selected."""
    unpruned: Run
    pruned: Run
    selection: iwp.Selection
    images: list[Image.Image]
    device: str = "cpu"
    prefill_noise: float = 0.0       # relative spread of two prefills of the same arm (warm-up vs timed)
    order: iwp.Selection | None = None   # the selector's full pick order (every ratio is a prefix of it)

    def metrics(self) -> dict:
        """Everything the demo reports, as plain JSON-able numbers."""
        p = torch.softmax(self.unpruned.first_logits.float(), -1)
        q = torch.softmax(self.pruned.first_logits.float(), -1)
        tv = 0.5 * (p - q).abs().sum().item()
        kl = (p * (torch.log(p.clamp_min(1e-12)) - torch.log(q.clamp_min(1e-12)))).sum().item()
        side = lambda r: {"answer": r.answer, "prefill_s": round(r.prefill_s, 4), "total_s": round(r.total_s, 4),
                          "visual_tokens": r.visual_tokens, "new_tokens": r.new_tokens}
        speedup_prefill = self.unpruned.prefill_s / max(self.pruned.prefill_s, 1e-9)
        return {
            "unpruned": side(self.unpruned), "pruned": side(self.pruned),
            "speedup_total": round(self.unpruned.total_s / max(self.pruned.total_s, 1e-9), 3),
            "speedup_prefill": round(speedup_prefill, 3),
            "device": self.device, "prefill_noise": round(self.prefill_noise, 3),
            "speedup_within_noise": abs(speedup_prefill - 1) <= self.prefill_noise,
            "answers_agree": self.unpruned.answer.strip().lower() == self.pruned.answer.strip().lower(),
            "first_token_tv": round(tv, 6), "first_token_kl": round(max(kl, 0.0), 6),
            "first_token_same": int(p.argmax()) == int(q.argmax()),
            "method": self.selection.method, "keep_ratio": self.selection.keep_ratio, "layer": self.selection.layer,
            "selection_s": round(self.selection.seconds, 4),
        }


class Runner:
    """Owns the one model instance; every call runs under the demo's single-GPU queue, so patching the
    instance in place for the pruned run is safe."""

    def __init__(self, model, processor, name: str = "", max_new_tokens: int | None = None):
        self.model, self.processor, self.name = model, processor, name
        self.max_new_tokens = max_new_tokens or int(os.environ.get("IWP_MAX_NEW_TOKENS", "16"))
        self._lock = threading.Lock()        # one generation at a time, whichever event (or example) calls
        self.device = next(model.parameters()).device
        self.native_video = (getattr(processor, "video_processor", None) is not None
                             and hasattr(getattr(model, "model", model), "get_video_features"))

    @classmethod
    def load(cls, name: str | None = None, **kwargs) -> "Runner":
        model, processor, name = load_model(name)
        return cls(model, processor, name, **kwargs)

    def warmup(self) -> None:
        """One short unpruned generation, so that the first request (and its timings) does not pay the
        one-off start-up costs."""
        keep = self.max_new_tokens
        self.max_new_tokens = 2
        try:
            with self._lock:
                iwp.remove(self.model)
                self.generate(self.inputs([Image.new("RGB", (64, 64), (128, 128, 128))], "warm up"))
        finally:
            self.max_new_tokens = keep

    @property
    def num_layers(self) -> int:
        cfg = getattr(self.model.config, "text_config", self.model.config)
        return int(cfg.num_hidden_layers)

    def inputs(self, images: list[Image.Image], question: str, video: bool = False, video_meta: dict | None = None):
        """Processor inputs for the question about the images (or the frames of one video; video_meta:
        total_num_frames, fps, frames_indices, which Qwen needs for its temporal positions)."""
        native = video and self.native_video
        kind = "video" if native else "image"
        content = [{"type": kind}] * (1 if native else len(images)) + [{"type": "text", "text": question}]
        proc = self.processor
        if getattr(proc, "chat_template", None):
            prompt = proc.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        else:
            token = getattr(proc, "video_token" if native else "image_token", "<image>")
            prompt = token * (1 if native else len(images)) + question
        if native:
            frames = np.stack([np.asarray(im) for im in images])
            meta = {"video_metadata": [video_meta], "do_sample_frames": False} if video_meta else {}
            batch = proc(text=prompt, videos=[frames], return_tensors="pt", **meta)
        else:
            batch = proc(text=prompt, images=images, return_tensors="pt")
        return batch.to(self.device)

    @torch.inference_mode()
    def generate(self, batch) -> tuple[str, float, float, int, torch.Tensor]:
        """Greedy generation: (answer, prefill seconds, total seconds, new tokens, first-token logits)."""
        clock = _Clock()
        start = time.perf_counter()
        out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
                                  logits_processor=LogitsProcessorList([clock]), output_logits=True,
                                  return_dict_in_generate=True)
        total = time.perf_counter() - start
        new = out.sequences[0, batch["input_ids"].shape[1]:]
        answer = self.processor.decode(new, skip_special_tokens=True).strip()
        prefill = (clock.stamps[0] - start) if clock.stamps else total
        return answer, prefill, total, int(new.numel()), out.logits[0][0].detach().float().cpu()

    def compare(self, images: list[Image.Image], question: str, keep_ratio: float = 0.25, method: str = "iwp",
                layer: int | None = None, lam: float | None = None, first_chunk: int | None = None,
                growth: float | None = None, video: bool = False, video_meta: dict | None = None,
                progress=None) -> Comparison:
        """Answer the question unpruned, then pruned with the given settings; raises OutOfMemory on OOM."""
        progress = progress or (lambda *a, **k: None)
        with self._lock:
            return self._compare(images, question, keep_ratio, method, layer, lam, first_chunk, growth, video,
                                 video_meta, progress)

    def _compare(self, images, question, keep_ratio, method, layer, lam, first_chunk, growth, video, video_meta,
                 progress):
        batch = self.inputs(images, question, video=video, video_meta=video_meta)
        settings = {k: v for k, v in dict(layer=layer, lam=lam, first_chunk=first_chunk, growth=growth).items()
                    if v is not None}
        try:
            progress(0.2, desc="unpruned generation")
            iwp.remove(self.model)
            w0 = self._warm(batch)
            a0, p0, t0, n0, l0 = self.generate(batch)
            progress(0.55, desc="pruned generation")
            iwp.apply(self.model, keep_ratio=keep_ratio, method=method, **settings)
            try:
                w1 = self._warm(batch)
                a1, p1, t1, n1, l1 = self.generate(batch)
                native = video and self.native_video
                sizes = [images[0].size] if native else [im.size for im in images]   # one group per video
                selection = iwp.last_selection(self.model, image_sizes=sizes, processor=self.processor)[0]
            finally:
                iwp.remove(self.model)
            order = self._order(batch, method, settings, sizes)
        except (torch.cuda.OutOfMemoryError, MemoryError) as e:
            del batch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise OutOfMemory("Out of memory while generating; try a smaller image, fewer video frames or a "
                              "lower keep ratio.") from e
        unpruned = Run(a0, p0, t0, selection.n_visual, n0, l0)
        pruned = Run(a1, p1, t1, selection.n_kept, n1, l1)
        noise = max(abs(w0 - p0) / max(p0, 1e-9), abs(w1 - p1) / max(p1, 1e-9))
        return Comparison(unpruned, pruned, selection, images, self.device.type, noise, order)

    def _order(self, batch, method: str, settings: dict, sizes) -> iwp.Selection:
        """The selector's full pick order, from one untimed prefill at keep_ratio 1.0 (scores every token,
        cuts none): what the keep-ratio slider redraws from without running the model."""
        iwp.apply(self.model, keep_ratio=1.0, method=method, **settings)
        try:
            self._warm(batch)
            return iwp.last_selection(self.model, image_sizes=sizes, processor=self.processor)[0]
        finally:
            iwp.remove(self.model)

    def _warm(self, batch) -> float:
        """One prefill-only run of the arm about to be timed, so that both arms are timed equally warm;
        returns its prefill time (its spread from the timed one estimates the timing noise)."""
        keep = self.max_new_tokens
        self.max_new_tokens = 1
        try:
            return self.generate(batch)[1]
        finally:
            self.max_new_tokens = keep
