"""Command line: python -m iwp (--image PATH | --video PATH) --question TEXT --keep 0.25 [--model ID] [--out overlay.png]

Answers the question unpruned and pruned, prints both answers with their timings, writes the overlay
(for a video: every sampled frame's overlay side by side).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

from .selectors import SELECTORS


IMAGE_OUT = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def _out_path(out: str) -> Path:
    """Where the overlay goes: its folder is created; no extension means PNG; an unknown one is refused
    before the model runs."""
    from .demo.inputs import InputError
    path = Path(out)
    if not path.suffix:
        path = path.with_suffix(".png")
    if path.suffix.lower() not in IMAGE_OUT:
        raise InputError(f"--out {out!r}: unsupported picture format {path.suffix!r}; use one of "
                         f"{', '.join(sorted(IMAGE_OUT))} (or no extension for PNG).")
    if path.exists() and path.is_dir():
        raise InputError(f"--out {out!r} is a folder; give a file name such as {path / 'overlay.png'}.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out {out!r}: cannot create the folder {path.parent} ({e.strerror}).")
    return path


def main(argv: list[str] | None = None) -> int:
    """Run one comparison from the command line; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m iwp", description=__doc__.splitlines()[2])
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="image file (PNG, JPEG, WebP, BMP, GIF)")
    source.add_argument("--video", help="video file (MP4, WebM, AVI, MOV, MKV); frames sampled with OpenCV")
    ap.add_argument("--frames", type=int, default=None, help="frames to sample from a video (default: the demo's)")
    ap.add_argument("--question", required=True)
    ap.add_argument("--keep", type=float, default=0.25, help="keep ratio in (0, 1]")
    ap.add_argument("--method", default="iwp", choices=sorted(SELECTORS))
    ap.add_argument("--layer", type=int, default=None, help="decoder layer K to prune before")
    ap.add_argument("--model", default=None, help="hub id or local path (default: IWP_MODEL, else assets/toy-lvlm)")
    ap.add_argument("--out", default="overlay.png", help="where to write the category overlay")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    ap.add_argument("--ladder", action="store_true",
                    help="answer at keep ratios 100/33.3/22.2/11.1/5%% instead (one vision-encoder pass); "
                         "--out then gets the prefill/agreement plot")
    args = ap.parse_args(argv)

    # The demo's input checks and runner, so that the CLI and the demo answer identically.
    from . import overlay
    from .demo import inputs as guards
    from .demo.runner import OutOfMemory, Runner
    from .demo.video import MAX_FRAMES
    meta = None
    try:
        question = guards.check_question(args.question)
        keep, method = guards.check_settings(args.keep, args.method, list(SELECTORS))
        if args.image:
            image, notes = guards.load_image(args.image)
            images = [image]
        else:
            clip = guards.load_video(args.video, args.frames or MAX_FRAMES)
            images, notes = [Image.fromarray(f) for f in clip.frames], list(clip.notes)
            notes.append(f"sampled {len(images)} of {clip.total_frames} frames ({clip.duration:.1f} s at "
                         f"{clip.fps:.0f} fps)")
            # the sampled window's length, so the processor spaces the frames in time as they were sampled
            meta = ({"total_num_frames": clip.indices[-1] + 1, "fps": clip.fps, "frames_indices": clip.indices}
                    if clip.fps else None)
        out = _out_path(args.out)
    except guards.InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    runner = Runner.load(args.model, max_new_tokens=args.max_new_tokens)
    runner.warmup()                         # so that the unpruned run does not pay the one-off costs
    if args.ladder:
        if not args.image:
            print("error: --ladder takes an --image", file=sys.stderr)
            return 2
        return _ladder(runner, images[0], question, method, args, out)
    try:
        result = runner.compare(images, question, keep_ratio=keep, method=method, layer=args.layer,
                                video=bool(args.video), video_meta=meta)
    except OutOfMemory as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    m = result.metrics()
    what = (f"image {args.image} ({images[0].width}x{images[0].height})" if args.image else
            f"video {args.video} ({len(images)} frames of {images[0].width}x{images[0].height}, {m['video_input']})")
    print(f"model {runner.name} · {what} · method {m['method']}, keep {m['keep_ratio']}, layer {m['layer']}")
    for side in ("unpruned", "pruned"):
        s = m[side]
        print(f"{side + ':':9} {s['answer']!r:24} prefill {s['prefill_s'] * 1000:7.1f} ms   "
              f"total {s['total_s'] * 1000:7.1f} ms   visual tokens {s['visual_tokens']}")
    print(f"speed-up x{m['speedup_total']:.2f} total, x{m['speedup_prefill']:.2f} prefill; answers "
          f"{'agree' if m['answers_agree'] else 'differ'}; first-token total variation {m['first_token_tv']:.4f}, "
          f"KL {m['first_token_kl']:.4f}")
    if args.image:
        overlay.category_overlay(images[0], result.selection.groups[0], method=method).save(out)
    else:
        _side_by_side(overlay.video_overlays(images, result.selection)).save(out)
    print(f"overlay written to {out}")
    if args.json:
        print(json.dumps(m))
    return 0


def _side_by_side(pictures: list) -> "Image.Image":
    out = Image.new("RGB", (sum(p.width for p in pictures), max(p.height for p in pictures)), "white")
    x = 0
    for p in pictures:
        out.paste(p, (x, 0))
        x += p.width
    return out


def _ladder(runner, image, question: str, method: str, args, out: Path) -> int:
    """--ladder: one question at the ladder's keep ratios, printed as a table; the plot goes to --out."""
    from .demo import ladder
    from .demo.runner import OutOfMemory
    settings = {} if args.layer is None else {"layer": args.layer}
    try:
        rungs, info = ladder.run_ladder(runner, [image], question, method, settings)
    except OutOfMemory as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(f"model {runner.name} · image {args.image} · method {method} · ladder in {info['seconds']:.2f} s "
          f"(vision encoder ran {info['encoded']}x for {info['encoded'] + info['reused']} prefills)")
    print(f"{'keep':>7} {'tokens':>13} {'prefill ms':>11} {'total ms':>9}  answer (same as 100%?)")
    for r in rungs:
        print(f"{r.keep_ratio * 100:6.1f}% {r.kept_tokens:>6} of {r.visual_tokens:<4} {r.prefill_s * 1000:11.1f} "
              f"{r.total_s * 1000:9.1f}  {r.answer!r} ({'same' if r.agrees else 'differs'})")
    ladder.plot(rungs).save(out)
    print(f"plot written to {out}")
    if args.json:
        print(json.dumps({"rungs": [r.row() for r in rungs], **info}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
