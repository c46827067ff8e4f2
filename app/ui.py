"""The Gradio front end: layout, the `compare` event (API endpoint) and the picture events that follow it."""
from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image

import iwp
from iwp import overlay
from iwp import DEFAULT_FIRST_CHUNK, DEFAULT_GROWTH, DEFAULT_LAM, DEFAULT_LAYER

from iwp.demo import inputs as guards
from iwp.demo import ladder
from iwp.demo.breakdown import time_breakdown
from iwp.demo.cache import Bounded
from iwp.demo.zerogpu import gpu_duration
from iwp.demo.runner import OutOfMemory, Runner
from iwp.demo.video import MAX_FRAMES

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assets" / "examples"
METHODS = ["iwp"] + [m for m in iwp.SELECTORS if m != "iwp"]
QUEUE_SIZE = 8
DEFAULT_QUESTION = "What is in the picture?"

try:                                     # ZeroGPU on Spaces; a no-op decorator everywhere else
    import spaces
    gpu = spaces.GPU
except ImportError:
    def gpu(fn=None, **_):
        return fn if fn is not None else (lambda f: f)


class ImagePath(gr.Image):
    """gr.Image that hands the upload's path straight to the guards: gradio's own preprocessing opens the
    file with PIL first, which would answer corrupt files and image bombs with an opaque error."""
    is_template = True                   # render with the built-in Image front end

    def preprocess(self, payload):
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return super().preprocess(payload)


# Inputs whose API values go unchanged to the guards, which answer every malformed value (null, a string,
# NaN, out of range, unknown choice) with a message naming the field; gradio's own checks answer some of
# them with `error: null`. is_template: rendered by the parent's front end (gradio reads the direct base).
class Slider(gr.Slider):
    is_template = True

    def preprocess(self, payload):
        return payload


class Dropdown(gr.Dropdown):
    is_template = True

    def preprocess(self, payload):
        return payload


VIDEO_TYPES = sorted(guards.VIDEO_SUFFIXES)
INTRO = """
**What this shows.** A vision-language model turns the picture into *visual tokens* (one per patch) and reads
them all before it answers. IWP (implicit weight pruning) keeps only a fraction of them, chosen at one decoder
layer by greedy MMR: tokens with a large *information magnitude* (how much they change the layer's output),
that do not duplicate tokens already kept. The model answers twice, with every token and with the kept ones.

**The four categories** (IWP): *kept for magnitude* (in the magnitude top-K), *kept for diversity* (outside
the top-K, kept because nothing kept covers it), *dropped as duplicate* (in the top-K, but a kept token already
carries it), *dropped, low magnitude*. Other methods are labelled only kept/dropped and in/out of the top-K.

**The model.** Unless the server sets `IWP_MODEL`, this is a 3.6 M-parameter *toy* model trained on synthetic
scenes of coloured, numbered shapes: it answers only questions like the examples (colours, numbers, counts).
To run a real model: `IWP_MODEL=Qwen/Qwen2.5-VL-3B-Instruct python app.py` (any Hugging Face image-text-to-text
model id or local path; a GPU is advised).
"""


def read_inputs(image, video, shown: str | None = None) -> tuple[list[Image.Image], bool, list[str], dict]:
    """Guarded inputs: (images or frames, is_video, notes for the visitor, input description). shown: the
    input tab the visitor sees (None for API calls and examples)."""
    kind = guards.choose_input(image, video, shown)
    if kind == "image":
        img, notes = guards.load_image(image)
        uploaded = img.size
        for n in notes:
            if n.startswith("Uploaded image: "):
                uploaded = tuple(int(v) for v in n.split(": ")[1].split(" pixels")[0].split(" x "))
        return [img], False, notes, {"kind": "image", "size": list(img.size), "uploaded_size": list(uploaded),
                                     "from": "Image tab" if shown else "image input"}
    clip = guards.load_video(video, MAX_FRAMES)
    frames = [Image.fromarray(f) for f in clip.frames]
    notes = clip.notes + [f"Sampled {len(frames)} of {clip.total_frames} frames "
                          f"({clip.duration:.1f} s at {clip.fps:.0f} fps)."]
    return frames, True, notes, {"kind": "video", "frames": len(frames), "frame_indices": clip.indices,
                                 "total_frames": clip.total_frames, "fps": clip.fps,
                                 "duration_s": round(clip.duration, 2), "uploaded_size": list(clip.size),
                                 "size": list(frames[0].size), "from": "Video tab" if shown else "video input"}


def _video_meta(described: dict) -> dict | None:
    """The sampled frames' metadata in the form video processors take (None when the fps is unknown)."""
    if not described.get("fps"):
        return None
    return {"total_num_frames": described["total_frames"], "fps": described["fps"],
            "frames_indices": described["frame_indices"]}


def _main_view(selection: iwp.Selection, images: list[Image.Image]) -> tuple[Image.Image, iwp.TokenGroup]:
    """The picture and token group the single-image views show: the image, or the first video frame."""
    g0, tokens = overlay.frame_groups(selection, 1)[0]
    group = overlay.subgroup(g0, tokens) if g0.kind == "video" else g0
    return images[0], group


@dataclass
class Shown:
    """What one comparison drew from, kept on the server (RUNS) so that picture events never decode the
    input or parse the Selection again."""
    images: list[Image.Image]
    selection: iwp.Selection
    is_video: bool
    order: iwp.Selection | None = None         # the full pick order (None: not recorded)

    def main(self) -> tuple[Image.Image, iwp.TokenGroup]:
        return _main_view(self.selection, self.images)

    def at(self, keep_ratio: float, opacity: float = 0.5) -> tuple[Image.Image, str, dict] | None:
        """The overlay, legend text and counts at another keep ratio, from the recorded order (no model
        run); None when the order is missing or the method is not prefix-stable."""
        if self.order is None or self.selection.method not in ladder.PREFIX_STABLE:
            return None
        cut = ladder.prefix_selection(self.order, keep_ratio)
        view = Shown(self.images, cut, self.is_video)
        picture, group = view.main()
        title = f"at keep ratio {keep_ratio:.2f}: {view.title()} (from the pick order, no model run)"
        img = overlay.category_overlay(picture, group, opacity=opacity, method=cut.method, title=title)
        counts = {"keep_ratio": keep_ratio, "kept": cut.n_kept, "visual": cut.n_visual,
                  "frame_kept": len(group.kept), "frame_visual": group.n,
                  "categories": {c: group.categories.count(c) for c in overlay.CATEGORIES}}
        note = (f"Redrawn from the recorded pick order at keep ratio {keep_ratio:.2f}, no model run; the answers "
                f"above are for keep ratio {self.selection.keep_ratio:.2f}. ")
        return img, note + _legend(view), counts

    def title(self) -> str:
        """The overlay's headline: per frame and in total for a video, so the counts agree."""
        _, group = self.main()
        if not self.is_video:
            return f"kept {len(group.kept)} of {group.n} visual tokens"
        sel = self.selection
        return (f"frame 1 of {len(self.images)}: kept {len(group.kept)} of {group.n} · all frames: kept "
                f"{sel.n_kept} of {sel.n_visual} visual tokens")

    def overlay(self, opacity: float = 0.5) -> Image.Image:
        picture, group = self.main()
        return overlay.category_overlay(picture, group, opacity=opacity, method=self.selection.method,
                                        title=self.title())


RUNS = Bounded(16)                       # run id -> Shown


def _shown(run_id: str | None) -> Shown | None:
    return RUNS.get(run_id) if run_id else None


def make_compare(runner: Runner):
    """The `compare` handler bound to one runner (one model instance)."""

    @gpu(duration=gpu_duration)          # seconds from the input (ZeroGPU; a no-op elsewhere)
    def compare(image, video, question, keep_ratio, method, layer=None, lam=None, first_chunk=None, growth=None,
                shown=None, progress=gr.Progress()):
        """Answer unpruned and pruned; returns (unpruned answer, pruned answer, category overlay,
        metrics JSON, Selection JSON). shown: the visible input tab (a session state, not an API value)."""
        start = time.perf_counter()
        try:
            progress(0.05, desc="reading input")
            q = guards.check_question(question)
            keep_ratio, method = guards.check_settings(keep_ratio, method, METHODS)
            settings = guards.check_advanced(layer, lam, first_chunk, growth, runner.num_layers)
            images, is_video, notes, described = read_inputs(image, video, shown)
            for note in notes:
                if "downscaled" in note:
                    gr.Warning(note)
                else:
                    gr.Info(note)
            result = runner.compare(images, q, keep_ratio=keep_ratio, method=method, **settings,
                                    video=is_video, progress=progress,
                                    video_meta=_video_meta(described) if is_video else None)
        except guards.InputError as e:
            raise gr.Error(str(e), title="Input refused")
        except OutOfMemory as e:
            raise gr.Error(str(e), title="Out of memory")
        except gr.Error:
            raise
        except Exception as e:                 # anything else: logged, answered, and the server goes on
            log.exception("compare failed")
            raise gr.Error(f"The model could not answer ({type(e).__name__}: {e}).", title="Generation failed")
        for note in result.notes:              # e.g. native video needs torchvision: frames went in as images
            gr.Warning(note)
        notes = notes + result.notes
        progress(0.9, desc="drawing")
        run_id = uuid.uuid4().hex
        shown_run = Shown(images, result.selection, is_video, result.order)
        RUNS.put(run_id, shown_run)
        described["visual_tokens"] = result.selection.n_visual
        metrics = {**result.metrics(), "input": described, "notes": notes, "model": runner.name,
                   "run_id": run_id, "handler_s": round(time.perf_counter() - start, 4)}
        return (result.unpruned.answer, result.pruned.answer, shown_run.overlay(), metrics,
                result.selection.to_dict())

    return compare


def _stats(side: dict) -> str:
    return (f"prefill **{side['prefill_s'] * 1000:.0f} ms** · total **{side['total_s'] * 1000:.0f} ms** · "
            f"visual tokens **{side['visual_tokens']}**")


def _summary(m: dict) -> str:
    """Token reduction, speed-up with its caveats next to it, agreement, and what the model was given."""
    agree = "the answers **agree**" if m["answers_agree"] else "the answers **differ**"
    u, p = m["unpruned"]["visual_tokens"], m["pruned"]["visual_tokens"]
    caveats = []
    if m.get("speedup_within_noise"):
        caveats.append(f"within timing noise, ±{m.get('prefill_noise', 0) * 100:.0f}%")
    if m.get("device") == "cpu":
        caveats.append("CPU timing: indicative only, pruning pays off on a GPU with many tokens")
    speed = (f"**Speed-up** ×{m['speedup_total']:.2f} total, ×{m['speedup_prefill']:.2f} prefill"
             + (f" ({'; '.join(caveats)})" if caveats else ""))
    lines = [f"**Visual tokens** {u} → {p} (−{100 * (1 - p / max(u, 1)):.0f}%) · {speed}",
             f"{agree} · first-token distributions: total variation **{m['first_token_tv']:.4f}**, "
             f"KL **{m['first_token_kl']:.4f}** · selection took {m['selection_s'] * 1000:.1f} ms"
             + (f" · video input: **{m['video_input']}**" if m.get("video_input") else "")]
    inp = m.get("input") or {}
    if inp:
        w, h = inp.get("uploaded_size") or inp.get("size") or (0, 0)
        gw, gh = inp.get("size") or (w, h)
        what = (f"{inp['frames']} frames of a {w} × {h} video" if inp.get("kind") == "video"
                else f"a {w} × {h} image")
        lines.append(f"Input ({inp.get('from', inp.get('kind'))}): {what}; given to the model at {gw} × {gh}"
                     f"{' per frame' if inp.get('kind') == 'video' else ''}, read as "
                     f"{inp.get('visual_tokens', u)} visual tokens.")
    return "  \n".join(lines)


def _cover_choices(selection: iwp.Selection, video: bool) -> list[tuple[str, str]]:
    """Dropdown entries for every dropped token: label and 'group/token' value."""
    out = []
    for gi, g in enumerate(selection.groups):
        kept = set(g.kept)
        for t in range(g.n):
            if t not in kept and g.boxes[t] is not None:
                where = f"frame {g.frames[t]} · " if g.frames else (f"frame {gi} · " if video else "")
                out.append((f"{where}token {t} ({g.categories[t]})", f"{gi}/{t}"))
    return out


def _out_dir() -> Path:
    """Where Selection downloads are written (one temporary folder per process)."""
    global _OUT
    if _OUT is None:
        _OUT = Path(tempfile.mkdtemp(prefix="iwp-demo-"))
    return _OUT


_OUT: Path | None = None
N_VIEWS = 16


def _legend(run: "Shown") -> str:
    """The overlay's legend as text (what each colour means for this method, with counts)."""
    _, group = run.main()
    labels = overlay.category_labels(run.selection.method)
    parts = [f"{labels[c]}: **{group.categories.count(c)}**" for c in overlay.CATEGORIES]
    note = "" if run.selection.method == "iwp" else (f" · `{run.selection.method}` does not use IWP's categories; "
                                                     "its picks are labelled against the magnitude top-K")
    return f"{run.title()} · " + " · ".join(parts) + note


def _run_for(image, video, shown, metrics: dict, selection_json: dict) -> tuple[str, Shown] | None:
    """The run the metrics belong to: from RUNS, or (a cached example after a restart, an evicted run)
    rebuilt once from the Selection JSON and the inputs, then kept."""
    run_id = metrics.get("run_id") or uuid.uuid4().hex
    run = _shown(run_id)
    if run is None:
        try:
            images, is_video = read_inputs(image, video, None if image is None or not video else shown)[:2]
        except guards.InputError:              # the input changed since the run; keep what is shown
            return None
        run = Shown(images, iwp.Selection.from_dict(selection_json), is_video)
        RUNS.put(run_id, run)
    return run_id, run


def views(image, video, shown, metrics: dict, selection_json: dict, opacity: float = 0.5):
    """Everything drawn after a comparison: stats, summary, overlay, heat map, before/after, replay, cover
    picker, video frames, the JSON download, the first dropped patch's cover, and the run key."""
    if not selection_json or not metrics:
        return [gr.skip()] * N_VIEWS
    found = _run_for(image, video, shown, metrics, selection_json)
    if found is None:
        return [gr.skip()] * N_VIEWS
    run_id, run = found
    sel = run.selection
    picture, group = run.main()
    path = _out_dir() / f"selection-{run_id}.json"
    path.write_text(json.dumps(selection_json, indent=1))
    chunks = None if group.kind == "video" else overlay.pick_steps(group)
    steps = len(group.kept)
    gallery = ([(im, f"frame {i + 1}: kept {len(overlay.subgroup(g, toks).kept)} of {len(toks)}")
                for i, (im, (g, toks)) in enumerate(zip(overlay.video_overlays(run.images, sel),
                                                        overlay.frame_groups(sel, len(run.images))))]
               if run.is_video else [])
    choices = _cover_choices(sel, run.is_video)
    first = choices[0][1] if choices else None
    return (_stats(metrics["unpruned"]), _stats(metrics["pruned"]), _summary(metrics),
            run.overlay(opacity),
            overlay.heatmap(picture, group),
            (overlay.fit(picture), overlay.category_overlay(picture, group, legend=False, opacity=opacity,
                                                           method=sel.method)),
            gr.Slider(minimum=0, maximum=max(steps, 1), value=steps, step=1),
            overlay.replay_frame(picture, group, steps, chunks),
            gr.Dropdown(choices=choices, value=first), gr.Gallery(value=gallery), str(path),
            *cover(run_id, first), run_id, _legend(run), time_breakdown(metrics))


def redraw(run_id: str | None, opacity: float, keep_ratio: float | None = None):
    """The category overlay again at another opacity (no model run, no decoding); at the slider's keep
    ratio when it differs from the run's."""
    run = _shown(run_id)
    if run is None:
        return gr.skip()
    if keep_ratio is not None and abs(float(keep_ratio) - run.selection.keep_ratio) > 1e-9:
        found = run.at(float(keep_ratio), opacity)
        if found is not None:
            return _fast_png(found[0], f"redraw-{run_id}")
    return _fast_png(run.overlay(opacity), f"redraw-{run_id}")


def _fast_png(image: Image.Image, name: str) -> str:
    """A lossless PNG written with light compression (photos compress slowly at gradio's default level,
    about 100 ms on a CPU): what the instant redraws return. One file per run and kind, overwritten (gradio
    copies it into its own cache when it sends it)."""
    path = _out_dir() / f"{name}.png"
    image.save(path, compress_level=1)
    return str(path)


def slide(run_id: str | None, keep_ratio, opacity: float = 0.5):
    """The keep-ratio slider moved after a Compare: overlay and legend at the new ratio from the recorded
    pick order, at once (no model run)."""
    run = _shown(run_id)
    if run is None:
        return gr.skip(), gr.skip()
    try:
        r, _ = guards.check_settings(keep_ratio, run.selection.method, METHODS)
    except guards.InputError:
        return gr.skip(), gr.skip()
    found = run.at(r, opacity)
    if found is None:
        return gr.skip(), (f"`{run.selection.method}` is not prefix-stable: its picks at another ratio are not a "
                           "prefix of these; press Compare to see them.")
    return _fast_png(found[0], f"slide-{run_id}"), found[1]


def overlay_at(run_id: str, keep_ratio: float, opacity: float = 0.5) -> tuple[str, dict]:
    """API: the overlay (PNG path) and the counts of a finished compare (its metrics' run_id) at another
    keep ratio, from the recorded pick order, without running the model."""
    run = _shown(run_id)
    if run is None:
        raise gr.Error("run_id: unknown or expired run; call /compare again and pass its metrics' run_id.")
    try:
        r, _ = guards.check_settings(keep_ratio, run.selection.method, METHODS)
        o = guards._number("opacity", opacity, 0, 1)
    except guards.InputError as e:
        raise gr.Error(str(e), title="Input refused")
    found = run.at(r, o)
    if found is None:
        raise gr.Error(f"{run.selection.method} is not prefix-stable; call /compare at keep_ratio {r}.")
    path = _out_dir() / f"overlay-{run_id}-{r:.4f}.png"
    found[0].save(path)
    return str(path), found[2]


def make_ladder(runner: Runner):
    """The `ladder` handler: one question at keep ratios 100 / 33.3 / 22.2 / 11.1 / 5 %, one request."""

    @gpu(duration=180)
    def run_ladder(image, video, question, method, layer=None, lam=None, first_chunk=None, growth=None,
                   shown=None):
        """Returns (thumbnails with captions, table as Markdown, plot, rows as JSON)."""
        try:
            q = guards.check_question(question)
            _, method = guards.check_settings(0.5, method, METHODS)
            settings = guards.check_advanced(layer, lam, first_chunk, growth, runner.num_layers)
            images, is_video, _, described = read_inputs(image, video, shown)
            rungs, info = ladder.run_ladder(runner, images, q, method, settings, video=is_video,
                                            video_meta=_video_meta(described) if is_video else None)
        except guards.InputError as e:
            raise gr.Error(str(e), title="Input refused")
        except OutOfMemory as e:
            raise gr.Error(str(e), title="Out of memory")
        except Exception as e:
            log.exception("ladder failed")
            raise gr.Error(f"The model could not answer ({type(e).__name__}: {e}).", title="Generation failed")
        thumbs = []
        for r in rungs:
            if r.selection is None:
                thumb = overlay.fit(images[0], 220)
            else:
                picture, group = _main_view(r.selection, images)
                thumb = overlay.category_overlay(picture, group, legend=False, max_side=220, method=method)
            thumbs.append((thumb, f"{r.keep_ratio * 100:.1f}% · {r.kept_tokens} tokens · "
                                  f"{r.prefill_s * 1000:.0f} ms · {r.answer!r}"))
        rows = [r.row() for r in rungs]
        table = ("| keep | visual tokens | prefill | answer | same as 100% |\n|---|---|---|---|---|\n" +
                 "\n".join(f"| {r.keep_ratio * 100:.1f}% | {r.kept_tokens} of {r.visual_tokens} | "
                           f"{r.prefill_s * 1000:.0f} ms | {r.answer} | {'yes' if r.agrees else '**no**'} |"
                           for r in rungs) +
                 f"\n\n{len(rungs)} answers in {info['seconds']:.2f} s; the vision encoder ran "
                 f"{info['encoded']} time(s) for {info['encoded'] + info['reused']} prefills, so the prefill "
                 f"times are the language model's." + (" CPU timing: indicative only." if runner.device.type == "cpu"
                                                       else ""))
        return thumbs, table, ladder.plot(rungs), {"rungs": rows, **info, "method": method}

    return run_ladder


def replay(run_id: str | None, step: int):
    """The selection after its first `step` picks."""
    run = _shown(run_id)
    if run is None:
        return gr.skip()
    picture, group = run.main()
    chunks = None if group.kind == "video" else overlay.pick_steps(group)
    return overlay.replay_frame(picture, group, int(step), chunks)


def cover(run_id: str | None, choice: str | None):
    """The chosen dropped patch ('group/token') and the kept patch that covers it: (picture, text)."""
    run = _shown(run_id)
    if run is None or not choice:
        return None, "Choose a dropped patch (or click one on the category overlay)."
    sel, images = run.selection, run.images
    gi, t = (int(x) for x in str(choice).split("/"))
    g = sel.groups[gi]
    if g.kind == "video" and g.frames:
        f = g.frames[t]
        tokens = [i for i in range(g.n) if g.frames[i] == f]
        return overlay.cover_view(images[f], overlay.subgroup(g, tokens), tokens.index(t))
    return overlay.cover_view(images[min(gi, len(images) - 1)], g, t)


def clicked(run_id: str | None, evt: gr.SelectData):
    """A click on the category overlay: the patch under the pointer and the kept patch covering it."""
    run = _shown(run_id)
    if run is None or evt.index is None:
        return gr.skip(), gr.skip(), gr.skip()
    picture, group = run.main()
    drawn = overlay.fit(picture)                # the overlay is drawn at this size (legend below it)
    x, y = evt.index[0] * picture.width / drawn.width, evt.index[1] * picture.height / drawn.height
    t = overlay.token_at(group, x, y)
    if t is None:
        return gr.skip(), gr.skip(), "No visual patch there (this area is not seen by the model)."
    img, text = overlay.cover_view(picture, group, t)
    if run.selection.groups[0].kind == "video":
        return gr.skip(), img, text
    return gr.update(value=f"0/{t}"), img, text      # the choices stay those views() set


def video_info(video):
    """What the uploaded video is and the frames that will be sampled (decoded once: the guards keep the
    clip for the comparison). The frames are shown instead of a player, which cannot play every codec."""
    if not video:
        return "", gr.Gallery(value=[])
    try:
        clip = guards.load_video(video, MAX_FRAMES)
    except guards.InputError as e:
        return f"⚠️ {e}", gr.Gallery(value=[])
    w, h = clip.size
    text = (f"{w} × {h}, {clip.total_frames} frames, {clip.duration:.1f} s: these {len(clip.frames)} "
            f"frames will be given to the model. " + " ".join(clip.notes))
    return text, gr.Gallery(value=[(Image.fromarray(f), f"frame {i}") for f, i in zip(clip.frames, clip.indices)])


def _picked(kind: str):
    """On an upload (or an example filling an input), show its tab and make it the input used."""
    def handler(value):
        if value is None or value == "":
            return gr.skip(), gr.skip()
        return gr.Tabs(selected=kind), kind
    return handler


CLOSE_TOASTS = "() => { document.querySelectorAll('.toast-close').forEach((b) => b.click()); }"


def _cleared():
    """Empty results: shown the moment a new comparison starts, so nothing stale stays on screen."""
    return ("", "", None, None, None, "", "", "", None, None, None, gr.Dropdown(choices=[], value=None),
            gr.Gallery(value=[]), None, None, "", None, "", None)


def build_demo(runner: Runner) -> gr.Blocks:
    """The whole demo around one loaded runner."""
    compare = make_compare(runner)
    n_layers = runner.num_layers
    default_layer = min(DEFAULT_LAYER, n_layers - 1)
    examples, labels = example_rows(), example_labels()

    with gr.Blocks(title="IWP: visual-token pruning as implicit weight pruning") as demo:
        gr.Markdown("# IWP: which visual tokens does a vision-language model need?\n"
                    "Ask a question about an image or a video. The model answers twice: with every visual token, "
                    f"and with only a fraction kept by the chosen selector. Model: `{runner.name}`.")
        with gr.Accordion("What am I looking at?", open=False, elem_id="intro"):
            gr.Markdown(INTRO)
        shown = gr.State(None)                 # the input tab the visitor sees: it decides which input is used
        run_key = gr.State(None)               # the id of the run the pictures show (RUNS)
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tabs(selected="image", elem_id="input-tabs") as input_tabs:
                    with gr.Tab("Image", id="image", elem_id="tab-image") as tab_image:
                        image = ImagePath(type="filepath", label="Image", elem_id="input-image")
                    with gr.Tab("Video", id="video", elem_id="tab-video") as tab_video:
                        video = gr.File(label=f"Video ({', '.join(VIDEO_TYPES)})", file_types=VIDEO_TYPES,
                                        type="filepath", elem_id="input-video")
                        frames_info = gr.Markdown(elem_id="frames-info")
                        preview = gr.Gallery(label="The frames the model will see", columns=4, height=220,
                                             elem_id="video-preview", interactive=False)
                question = gr.Textbox(label="Question", value=examples[0][2] if examples else DEFAULT_QUESTION, lines=2,
                                      elem_id="question")
                keep = Slider(0.05, 1.0, value=0.25, step=0.05, label="Keep ratio", elem_id="keep-ratio")
                method = Dropdown(METHODS, value="iwp", label="Method", elem_id="method")
                with gr.Accordion("Advanced", open=False):
                    layer = Slider(0, n_layers - 1, value=default_layer, step=1, label="Layer K (prune before it)")
                    lam = Slider(0.0, 1.0, value=DEFAULT_LAM, step=0.05, label="λ (magnitude vs. duplication)")
                    first_chunk = Slider(1, 128, value=DEFAULT_FIRST_CHUNK, step=1, label="PC-MMR first chunk")
                    growth = Slider(1.0, 4.0, value=DEFAULT_GROWTH, step=0.25, label="PC-MMR chunk growth")
                run = gr.Button("Compare", variant="primary", elem_id="run")
                run_ladder = gr.Button("Ratio ladder: 100 / 33 / 22 / 11 / 5 %", elem_id="ladder-run")
            with gr.Column(scale=2):
                with gr.Row():
                    with gr.Column():
                        ans_u = gr.Textbox(label="Unpruned answer", elem_id="answer-unpruned", interactive=False)
                        stats_u = gr.Markdown(elem_id="stats-unpruned")
                    with gr.Column():
                        ans_p = gr.Textbox(label="Pruned answer", elem_id="answer-pruned", interactive=False)
                        stats_p = gr.Markdown(elem_id="stats-pruned")
                summary = gr.Markdown(elem_id="summary")
                with gr.Tabs(elem_id="result-tabs") as result_tabs:
                    with gr.Tab("Categories", id="categories"):
                        opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity",
                                            elem_id="opacity")
                        over = gr.Image(label="Kept (outlined) and dropped (faded) patches; click a patch: what "
                                        "covers it", type="pil", format="png", interactive=False, elem_id="overlay")
                        legend = gr.Markdown(elem_id="legend")
                    with gr.Tab("Magnitude"):
                        heat = gr.Image(label="Information magnitude", type="pil", format="png", interactive=False)
                    with gr.Tab("Before / after"):
                        before_after = gr.ImageSlider(label="Original | categories", type="pil", format="png",
                                                      slider_position=50)
                    with gr.Tab("Pick by pick"):
                        step = gr.Slider(0, 1, value=0, step=1, label="Picks shown (PC-MMR chunk by chunk)")
                        replay_img = gr.Image(label="Selection replay", type="pil", format="png", interactive=False)
                    with gr.Tab("Dropped → cover"):
                        token = gr.Dropdown([], label="Dropped patch", allow_custom_value=False)
                        cover_img = gr.Image(label="Dropped patch (red) and the kept patch covering it (green)",
                                             type="pil", format="png", interactive=False)
                        cover_text = gr.Markdown(elem_id="cover-text")
                    with gr.Tab("Video frames"):
                        gallery = gr.Gallery(label="Sampled frames with their categories", columns=4, elem_id="frames")
                    with gr.Tab("Time breakdown"):
                        timing = gr.Image(label="Where the time goes, unpruned and pruned", type="pil",
                                          interactive=False, elem_id="time-breakdown")
                    with gr.Tab("Ratio ladder", id="ladder", elem_id="tab-ladder"):
                        ladder_gallery = gr.Gallery(label="One question at five keep ratios (one request)", columns=5,
                                                    height=260, elem_id="ladder-gallery", format="png")
                        ladder_table = gr.Markdown(elem_id="ladder-table")
                        ladder_plot = gr.Image(label="Prefill time and agreement vs keep ratio", type="pil",
                                               format="png", interactive=False, elem_id="ladder-plot")
                with gr.Accordion("Metrics and Selection (JSON)", open=False):
                    metrics = gr.JSON(label="Metrics")
                    sel_json = gr.JSON(label="Selection")
                    ladder_json = gr.JSON(label="Ladder")
                    download = gr.File(label="Download the Selection (JSON)")

        outputs = [ans_u, ans_p, over, metrics, sel_json]
        pictures = [stats_u, stats_p, summary, over, heat, before_after, step, replay_img, token, gallery, download,
                    cover_img, cover_text, run_key, legend, timing]
        run.click(_cleared, None, [ans_u, ans_p, over, metrics, sel_json, stats_u, stats_p, summary, heat,
                                   before_after, replay_img, token, gallery, download, cover_img, cover_text,
                                   run_key, legend, timing],
                  js=CLOSE_TOASTS, queue=False, show_progress="hidden", api_visibility="private").then(
            compare, [image, video, question, keep, method, layer, lam, first_chunk, growth, shown], outputs,
            api_name="compare", concurrency_limit=1, concurrency_id="gpu")
        sel_json.change(views, [image, video, shown, metrics, sel_json, opacity], pictures,
                        api_visibility="private")
        opacity.release(redraw, [run_key, opacity, keep], over, api_visibility="private")
        keep.release(slide, [run_key, keep, opacity], [over, legend], queue=False, show_progress="hidden",
                     api_visibility="private")
        gr.api(overlay_at, api_name="overlay_at")
        result_tabs_ladder = [ladder_gallery, ladder_table, ladder_plot, ladder_json]
        run_ladder.click(lambda: gr.Tabs(selected="ladder"), None, result_tabs, queue=False,
                         api_visibility="private").then(
            make_ladder(runner), [image, video, question, method, layer, lam, first_chunk, growth, shown],
            result_tabs_ladder, api_name="ladder", concurrency_limit=1, concurrency_id="gpu")
        step.release(replay, [run_key, step], replay_img, api_visibility="private")
        token.input(cover, [run_key, token], [cover_img, cover_text], api_visibility="private")
        over.select(clicked, run_key, [token, cover_img, cover_text], api_visibility="private")
        tab_image.select(lambda: "image", None, shown, api_visibility="private")
        tab_video.select(lambda: "video", None, shown, api_visibility="private")
        image.change(_picked("image"), image, [input_tabs, shown], api_visibility="private")
        video.change(_picked("video"), video, [input_tabs, shown], api_visibility="private")
        video.change(video_info, video, [frames_info, preview], api_visibility="private")

        if examples:
            gr.Examples(examples, [image, video, question, keep, method], outputs, fn=compare,
                        cache_examples=True, cache_mode="lazy", label="Examples", elem_id="examples",
                        example_labels=labels)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2)
    return demo


def _entries() -> list[dict]:
    """assets/examples/examples.json (file, kind, question, answer[, note]); of two encodings of one video
    only the .webm."""
    index = EXAMPLES / "examples.json"
    if not index.is_file():
        return []
    entries = [e for e in json.loads(index.read_text()) if (EXAMPLES / e["file"]).is_file()]
    webm = {Path(e["file"]).stem for e in entries if e["file"].endswith(".webm")}
    return [e for e in entries
            if not (e["kind"] == "video" and Path(e["file"]).stem in webm and not e["file"].endswith(".webm"))]


def example_rows() -> list[list]:
    """Rows [image, video, question, keep, method] of the shipped examples."""
    return [[str(EXAMPLES / e["file"]), None, e["question"], 0.25, "iwp"] if e["kind"] == "image"
            else [None, str(EXAMPLES / e["file"]), e["question"], 0.25, "iwp"] for e in _entries()]


def example_labels() -> list[str]:
    """One label per example: the question, the true answer, and the example's caveat if it has one."""
    return [f"{e['kind']}: {e['question']} (truth: {e['answer']})" + (f" ⚠ {e['note']}" if e.get("note") else "")
            for e in _entries()]
