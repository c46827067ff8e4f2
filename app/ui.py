"""The Gradio front end: layout, the `compare` event (API endpoint) and the picture events that follow it."""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import gradio as gr
from PIL import Image

import iwp
from iwp import overlay
from iwp import DEFAULT_LAYER
from iwp import DEFAULT_FIRST_CHUNK, DEFAULT_GROWTH, DEFAULT_LAM

from iwp.demo import inputs as guards
from iwp.demo.breakdown import time_breakdown
from iwp.demo.zerogpu import gpu_duration
from iwp.demo.runner import OutOfMemory, Runner

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assets" / "examples"
METHODS = ["iwp"] + [m for m in iwp.SELECTORS if m != "iwp"]
QUEUE_SIZE = 8
MAX_FRAMES = 8
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


def read_inputs(image, video) -> tuple[list[Image.Image], bool, list[str], dict]:
    """Guarded inputs: (images or frames, is_video, notes for the visitor, input description)."""
    kind = guards.choose_input(image, video)
    if kind == "image":
        img, notes = guards.load_image(image)
        return [img], False, notes, {"kind": "image", "size": list(img.size)}
    clip = guards.load_video(video, MAX_FRAMES)
    frames = [Image.fromarray(f) for f in clip.frames]
    notes = clip.notes + [f"Sampled {len(frames)} of {clip.total_frames} frames "
                          f"({clip.duration:.1f} s at {clip.fps:.0f} fps)."]
    return frames, True, notes, {"kind": "video", "frames": len(frames), "frame_indices": clip.indices,
                                 "total_frames": clip.total_frames, "fps": clip.fps,
                                 "duration_s": round(clip.duration, 2)}


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


def make_compare(runner: Runner):
    """The `compare` handler bound to one runner (one model instance)."""

    @gpu(duration=gpu_duration)          # seconds from the input (ZeroGPU; a no-op elsewhere)
    def compare(image, video, question, keep_ratio, method, layer=None, lam=None, first_chunk=None, growth=None,
                progress=gr.Progress()):
        """Answer unpruned and pruned; returns (unpruned answer, pruned answer, category overlay,
        metrics JSON, Selection JSON)."""
        start = time.perf_counter()
        try:
            progress(0.05, desc="reading input")
            q = guards.check_question(question)
            keep_ratio, method = guards.check_settings(keep_ratio, method, METHODS)
            images, is_video, notes, described = read_inputs(image, video)
            for note in notes:
                if "downscaled" in note:
                    gr.Warning(note)
                else:
                    gr.Info(note)
            result = runner.compare(images, q, keep_ratio=keep_ratio, method=method,
                                    layer=None if layer is None else int(layer), lam=lam,
                                    first_chunk=None if first_chunk is None else int(first_chunk),
                                    growth=growth, video=is_video, progress=progress,
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
        picture, group = _main_view(result.selection, images)
        over = overlay.category_overlay(picture, group)
        metrics = {**result.metrics(), "input": described, "notes": notes, "model": runner.name,
                   "handler_s": round(time.perf_counter() - start, 4)}
        return result.unpruned.answer, result.pruned.answer, over, metrics, result.selection.to_dict()

    return compare


def _stats(side: dict) -> str:
    return (f"prefill **{side['prefill_s'] * 1000:.0f} ms** · total **{side['total_s'] * 1000:.0f} ms** · "
            f"visual tokens **{side['visual_tokens']}**")


def _summary(m: dict) -> str:
    agree = "the answers **agree**" if m["answers_agree"] else "the answers **differ**"
    return (f"**Speed-up** ×{m['speedup_total']:.2f} total, ×{m['speedup_prefill']:.2f} prefill · {agree} · "
            f"first-token distributions: total variation **{m['first_token_tv']:.4f}**, "
            f"KL **{m['first_token_kl']:.4f}** · selection took {m['selection_s'] * 1000:.1f} ms"
            + (f" · video input: **{m['video_input']}**" if m.get("video_input") else ""))


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
N_VIEWS = 13


def views(image, video, metrics: dict, selection_json: dict):
    """Everything drawn after a comparison: stats, summary, heat map, before/after, replay, cover picker,
    video frames, the JSON download, and the first dropped patch's cover."""
    if not selection_json or not metrics:
        return [gr.skip()] * N_VIEWS
    sel = iwp.Selection.from_dict(selection_json)
    try:
        images = read_inputs(image, video)[0]
    except guards.InputError:                  # the input changed since the run; keep what is shown
        return [gr.skip()] * N_VIEWS
    picture, group = _main_view(sel, images)
    is_video = metrics.get("input", {}).get("kind") == "video"
    path = _out_dir() / f"selection-{abs(hash(json.dumps(metrics, sort_keys=True))) % 10**10}.json"
    path.write_text(json.dumps(selection_json, indent=1))
    chunks = None if group.kind == "video" else overlay.pick_steps(group)
    steps = len(group.kept)
    gallery = ([(im, f"frame {i}") for i, im in enumerate(overlay.video_overlays(images, sel))]
               if is_video else [])
    choices = _cover_choices(sel, is_video)
    first = choices[0][1] if choices else None
    return (_stats(metrics["unpruned"]), _stats(metrics["pruned"]), _summary(metrics),
            overlay.heatmap(picture, group),
            (overlay.fit(picture), overlay.category_overlay(picture, group, legend=False)),
            gr.Slider(minimum=0, maximum=max(steps, 1), value=steps, step=1),
            overlay.replay_frame(picture, group, steps, chunks),
            gr.Dropdown(choices=choices, value=first), gr.Gallery(value=gallery), str(path),
            *cover(image, video, selection_json, first), time_breakdown(metrics))


def replay(image, video, selection_json: dict, step: int):
    """The selection after its first `step` picks."""
    if not selection_json:
        return gr.skip()
    sel = iwp.Selection.from_dict(selection_json)
    picture, group = _main_view(sel, read_inputs(image, video)[0])
    chunks = None if group.kind == "video" else overlay.pick_steps(group)
    return overlay.replay_frame(picture, group, int(step), chunks)


def cover(image, video, selection_json: dict, choice: str | None):
    """The chosen dropped patch ('group/token') and the kept patch that covers it: (picture, text)."""
    if not selection_json or not choice:
        return None, "Choose a dropped patch (or click one on the category overlay)."
    sel = iwp.Selection.from_dict(selection_json)
    gi, t = (int(x) for x in str(choice).split("/"))
    images = read_inputs(image, video)[0]
    g = sel.groups[gi]
    if g.kind == "video" and g.frames:
        f = g.frames[t]
        tokens = [i for i in range(g.n) if g.frames[i] == f]
        return overlay.cover_view(images[f], overlay.subgroup(g, tokens), tokens.index(t))
    return overlay.cover_view(images[min(gi, len(images) - 1)], g, t)


def clicked(image, video, selection_json: dict, evt: gr.SelectData):
    """A click on the category overlay: the patch under the pointer and the kept patch covering it."""
    if not selection_json or evt.index is None:
        return gr.skip(), gr.skip(), gr.skip()
    sel = iwp.Selection.from_dict(selection_json)
    picture, group = _main_view(sel, read_inputs(image, video)[0])
    drawn = overlay.fit(picture)                # the overlay is drawn at this size (legend below it)
    x, y = evt.index[0] * picture.width / drawn.width, evt.index[1] * picture.height / drawn.height
    t = overlay.token_at(group, x, y)
    if t is None:
        return gr.skip(), gr.skip(), "No visual patch there."
    img, text = overlay.cover_view(picture, group, t)
    if sel.groups[0].kind == "video":
        return gr.skip(), img, text
    return gr.Dropdown(value=f"0/{t}"), img, text


def video_info(video) -> str:
    """What the uploaded video is and how many frames will be sampled."""
    if not video:
        return ""
    try:
        clip = guards.load_video(video, MAX_FRAMES)
    except guards.InputError as e:
        return f"⚠️ {e}"
    return (f"{clip.total_frames} frames, {clip.duration:.1f} s: {len(clip.frames)} frames will be sampled. "
            + " ".join(clip.notes))


def build_demo(runner: Runner) -> gr.Blocks:
    """The whole demo around one loaded runner."""
    compare = make_compare(runner)
    n_layers = runner.num_layers
    default_layer = min(DEFAULT_LAYER, n_layers - 1)
    examples = example_rows()

    with gr.Blocks(title="IWP: visual-token pruning as implicit weight pruning") as demo:
        gr.Markdown("# IWP: which visual tokens does a vision-language model need?\n"
                    "Ask a question about an image or a video. The model answers twice: with every visual token, "
                    f"and with only a fraction kept by the chosen selector. Model: `{runner.name}`.")
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tabs():
                    with gr.Tab("Image"):
                        image = ImagePath(type="filepath", label="Image", elem_id="input-image")
                    with gr.Tab("Video"):
                        video = gr.Video(label="Video", elem_id="input-video")
                        frames_info = gr.Markdown(elem_id="frames-info")
                question = gr.Textbox(label="Question", value=examples[0][2] if examples else DEFAULT_QUESTION, lines=2,
                                      elem_id="question")
                keep = gr.Slider(0.05, 1.0, value=0.25, step=0.05, label="Keep ratio", elem_id="keep-ratio")
                method = gr.Dropdown(METHODS, value="iwp", label="Method", elem_id="method")
                with gr.Accordion("Advanced", open=False):
                    layer = gr.Slider(0, n_layers - 1, value=default_layer, step=1, label="Layer K (prune before it)")
                    lam = gr.Slider(0.0, 1.0, value=DEFAULT_LAM, step=0.05, label="λ (magnitude vs. duplication)")
                    first_chunk = gr.Slider(1, 128, value=DEFAULT_FIRST_CHUNK, step=1, label="PC-MMR first chunk")
                    growth = gr.Slider(1.0, 4.0, value=DEFAULT_GROWTH, step=0.25, label="PC-MMR chunk growth")
                run = gr.Button("Compare", variant="primary", elem_id="run")
            with gr.Column(scale=2):
                with gr.Row():
                    with gr.Column():
                        ans_u = gr.Textbox(label="Unpruned answer", elem_id="answer-unpruned", interactive=False)
                        stats_u = gr.Markdown(elem_id="stats-unpruned")
                    with gr.Column():
                        ans_p = gr.Textbox(label="Pruned answer", elem_id="answer-pruned", interactive=False)
                        stats_p = gr.Markdown(elem_id="stats-pruned")
                summary = gr.Markdown(elem_id="summary")
                with gr.Tabs():
                    with gr.Tab("Categories"):
                        over = gr.Image(label="Kept and dropped patches (click a patch: what covers it)",
                                        type="pil", interactive=False, elem_id="overlay")
                    with gr.Tab("Magnitude"):
                        heat = gr.Image(label="Information magnitude", type="pil", interactive=False)
                    with gr.Tab("Before / after"):
                        before_after = gr.ImageSlider(label="Original | categories", type="pil", slider_position=50)
                    with gr.Tab("Pick by pick"):
                        step = gr.Slider(0, 1, value=0, step=1, label="Picks shown (PC-MMR chunk by chunk)")
                        replay_img = gr.Image(label="Selection replay", type="pil", interactive=False)
                    with gr.Tab("Dropped → cover"):
                        token = gr.Dropdown([], label="Dropped patch", allow_custom_value=False)
                        cover_img = gr.Image(label="Dropped patch (red) and the kept patch covering it (green)",
                                             type="pil", interactive=False)
                        cover_text = gr.Markdown(elem_id="cover-text")
                    with gr.Tab("Video frames"):
                        gallery = gr.Gallery(label="Sampled frames with their categories", columns=4, elem_id="frames")
                    with gr.Tab("Time breakdown"):
                        timing = gr.Image(label="Where the time goes, unpruned and pruned", type="pil",
                                          interactive=False, elem_id="time-breakdown")
                with gr.Accordion("Metrics and Selection (JSON)", open=False):
                    metrics = gr.JSON(label="Metrics")
                    sel_json = gr.JSON(label="Selection")
                    download = gr.File(label="Download the Selection (JSON)")

        outputs = [ans_u, ans_p, over, metrics, sel_json]
        run.click(compare, [image, video, question, keep, method, layer, lam, first_chunk, growth], outputs,
                  api_name="compare", concurrency_limit=1, concurrency_id="gpu")
        sel_json.change(views, [image, video, metrics, sel_json],
                        [stats_u, stats_p, summary, heat, before_after, step, replay_img, token, gallery, download,
                         cover_img, cover_text, timing], api_visibility="private")
        step.release(replay, [image, video, sel_json, step], replay_img, api_visibility="private")
        token.input(cover, [image, video, sel_json, token], [cover_img, cover_text], api_visibility="private")
        over.select(clicked, [image, video, sel_json], [token, cover_img, cover_text], api_visibility="private")
        video.change(video_info, video, frames_info, api_visibility="private")

        if examples:
            gr.Examples(examples, [image, video, question, keep, method], outputs, fn=compare,
                        cache_examples=True, cache_mode="lazy", label="Examples", elem_id="examples")
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2)
    return demo


def example_rows() -> list[list]:
    """Rows [image, video, question, keep, method] from assets/examples/examples.json (file, kind, question);
    of two encodings of one video the browser-playable .webm is shown."""
    index = EXAMPLES / "examples.json"
    if not index.is_file():
        return []
    entries = [e for e in json.loads(index.read_text()) if (EXAMPLES / e["file"]).is_file()]
    webm = {Path(e["file"]).stem for e in entries if e["file"].endswith(".webm")}
    rows = []
    for e in entries:
        path, stem = str(EXAMPLES / e["file"]), Path(e["file"]).stem
        if e["kind"] == "video" and stem in webm and not e["file"].endswith(".webm"):
            continue
        rows.append([path, None, e["question"], 0.25, "iwp"] if e["kind"] == "image"
                    else [None, path, e["question"], 0.25, "iwp"])
    return rows
