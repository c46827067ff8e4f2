"""Load a model once and answer one question unpruned and pruned, timed: what the demo and the CLI run."""
from __future__ import annotations

import importlib.util
import inspect
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

import iwp
from iwp.models.processors import load_processor

from .processing import ModelInput, build_inputs, video_mode
from .stages import StageClock

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
        from transformers import AutoModelForImageTextToText
        cuda = torch.cuda.is_available()
        trust = _trust_remote_code()
        processor = load_processor(name, trust_remote_code=trust)     # image-only without torchvision
        # several GPUs: shard the model over them (accelerate's big-model inference; 72B-class models)
        sharded = cuda and torch.cuda.device_count() > 1 and importlib.util.find_spec("accelerate") is not None
        model = AutoModelForImageTextToText.from_pretrained(
            name, trust_remote_code=trust, dtype=torch.bfloat16 if cuda else torch.float32,
            **({"device_map": "auto"} if sharded else {}))
        if cuda and not sharded:
            model = model.to("cuda")
        if Path(name).exists() and Path(name).resolve().is_relative_to(ROOT):
            name = str(Path(name).resolve().relative_to(ROOT))       # shown in the page: no server paths
    if os.environ.get("IWP_STOCK_VISION") != "1":     # exact vision speed-ups, both arms (IWP_STOCK_VISION=1: off)
        iwp.accelerate_vision(model)
    return model.eval(), processor, name


class _StepStamps(LogitsProcessor):
    """Wall-clock stamps of every decoding step (the first ends the prefill), for the timings a visitor sees;
    it also marks the first token on the stage clock (iwp.clock marks, no host sync there)."""

    def __init__(self, stages: StageClock | None = None):
        self.stamps: list[float] = []
        self.stages = stages

    def __call__(self, input_ids, scores):
        if self.stages is not None:
            self.stages.mark("first_token")          # on the device's timeline, before the sync below
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
    stages: dict[str, float] | None = None    # seconds per stage (stages.STAGES), same generate() call
    warm_prefill_s: float = 0.0               # the prefill of the untimed warm-up run just before


@dataclass
class Comparison:
    """Unpruned and pruned runs of one request and what the pruned prefill selected."""
    unpruned: Run
    pruned: Run
    selection: iwp.Selection
    images: list[Image.Image]
    video_mode: str | None = None             # processing.NATIVE / FRAMES for a video, None for an image
    notes: list[str] = field(default_factory=list)
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
                          "visual_tokens": r.visual_tokens, "new_tokens": r.new_tokens,
                          "stages_s": {k: round(v, 5) for k, v in r.stages.items()} if r.stages else None}
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
            "video_input": self.video_mode,
        }


class Runner:
    """Owns the one model instance; every call runs under the demo's single-GPU queue, so patching the
    instance in place for the pruned run is safe."""

    def __init__(self, model, processor, name: str = "", max_new_tokens: int | None = None):
        self.model, self.processor, self.name = model, processor, name
        self.max_new_tokens = max_new_tokens or int(os.environ.get("IWP_MAX_NEW_TOKENS", "16"))
        self._lock = threading.Lock()        # one generation at a time, whichever event (or example) calls
        self.device = next(model.parameters()).device
        self.video_mode, why = video_mode(model, processor)    # how a video reaches this model
        self.native_video = why is None

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
                self.generate(self.inputs([Image.new("RGB", (64, 64), (128, 128, 128))], "warm up").batch)
        finally:
            self.max_new_tokens = keep

    @property
    def num_layers(self) -> int:
        cfg = getattr(self.model.config, "text_config", self.model.config)
        return int(cfg.num_hidden_layers)

    def inputs(self, images: list[Image.Image], question: str, video: bool = False,
               video_meta: dict | None = None) -> ModelInput:
        """Model inputs for the question about the images, or the sampled frames of one video (native video
        where the model and processor take it; video_meta: total_num_frames, fps, frames_indices)."""
        return build_inputs(self.model, self.processor, images, question, video=video, video_meta=video_meta,
                            device=self.device)

    @torch.inference_mode()
    def generate(self, batch, stages: StageClock | None = None) -> tuple[str, float, float, int, torch.Tensor]:
        """Greedy generation: (answer, prefill seconds, total seconds, new tokens, first-token logits).
        stages: a StageClock (entered) that gets the start, first-token and end marks."""
        clock = _StepStamps(stages)
        start = time.perf_counter()
        if stages is not None:
            stages.mark("start")
        out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
                                  logits_processor=LogitsProcessorList([clock]), output_logits=True,
                                  return_dict_in_generate=True)
        if stages is not None:
            stages.mark("end")
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

    def _stage_clock(self) -> StageClock:
        return StageClock(iwp.models.for_model(self.model).language_model(self.model).layers, self.device)

    def run(self, given: ModelInput, keep_ratio: float | None = None, method: str = "iwp",
            **settings) -> tuple[Run, iwp.Selection | None]:
        """One timed generation: unpruned (keep_ratio None) or pruned with the given selector settings, and
        the pruned run's Selection. The model is left unpatched. Called under the lock (compare)."""
        iwp.remove(self.model)
        if keep_ratio is not None:
            iwp.apply(self.model, keep_ratio=keep_ratio, method=method, **settings)
        try:
            warm = self._warm(given.batch)               # both arms timed equally warm
            with self._stage_clock() as clock:
                answer, prefill, total, new, logits = self.generate(given.batch, clock)
            selection = (iwp.last_selection(self.model, image_sizes=given.sizes, processor=self.processor)[0]
                         if keep_ratio is not None else None)
        finally:
            iwp.remove(self.model)
        layer = selection.layer if selection is not None else settings.get("layer", self.default_layer)
        visual = selection.n_kept if selection is not None else self.visual_tokens(given)
        return Run(answer, prefill, total, visual, new, logits, clock.seconds(layer), warm), selection

    @property
    def default_layer(self) -> int:
        """The layer K iwp.apply prunes before when none is given (for the unpruned run's stage split)."""
        return inspect.signature(iwp.apply).parameters["layer"].default

    def visual_tokens(self, given: ModelInput) -> int:
        """Placeholder tokens of the images / video in the batch."""
        ids = [getattr(self.model.config, f"{k}_token_id", None) for k in ("image", "video")]
        return sum(int((given.batch["input_ids"] == i).sum()) for i in ids if i is not None)

    def _compare(self, images, question, keep_ratio, method, layer, lam, first_chunk, growth, video, video_meta,
                 progress):
        given = self.inputs(images, question, video=video, video_meta=video_meta)
        settings = {k: v for k, v in dict(layer=layer, lam=lam, first_chunk=first_chunk, growth=growth).items()
                    if v is not None}
        try:
            progress(0.2, desc="unpruned generation")
            unpruned, _ = self.run(given, **settings)
            progress(0.55, desc="pruned generation")
            pruned, selection = self.run(given, keep_ratio=keep_ratio, method=method, **settings)
            order = self._order(given.batch, method, settings, given.sizes)
        except (torch.cuda.OutOfMemoryError, MemoryError) as e:
            given.batch = None                       # free the inputs before emptying the cache
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise OutOfMemory("Out of memory while generating; try a smaller image, fewer video frames or a "
                              "lower keep ratio.") from e
        if unpruned.stages and pruned.stages and selection.layer != settings.get("layer", self.default_layer):
            unpruned.stages = None                   # split at another layer than the pruned run's: not comparable
        noise = max(abs(x.warm_prefill_s - x.prefill_s) / max(x.prefill_s, 1e-9) for x in (unpruned, pruned))
        return Comparison(unpruned, pruned, selection, images, given.video_mode, given.notes, self.device.type,
                          noise, order)

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
