"""Command line: python -m iwp (--image PATH | --video PATH) --question TEXT --keep 0.25 [--model ID] [--out overlay.png]

Answers the question unpruned and pruned, prints both answers with their timings, writes the overlay
(for a video: every sampled frame's overlay side by side).
"""
from __future__ import annotations

import argparse
import json
import sys

from PIL import Image

from .selectors import SELECTORS


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
    except guards.InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    runner = Runner.load(args.model, max_new_tokens=args.max_new_tokens)
    runner.warmup()                         # so that the unpruned run does not pay the one-off costs
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
        overlay.category_overlay(images[0], result.selection.groups[0]).save(args.out)
    else:
        _side_by_side(overlay.video_overlays(images, result.selection)).save(args.out)
    print(f"overlay written to {args.out}")
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


if __name__ == "__main__":
    sys.exit(main())
