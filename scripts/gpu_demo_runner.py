"""The demo's own Runner on a GPU: real configs and processors, random bf16 weights, nothing downloaded.

Models: LLaVA-OneVision-0.5B and -7B, Qwen2.5-VL-3B and -7B (configs from tests/fixtures/real-processors and
iwp.bench.configs; processors from the fixture folders, so torchvision must be installed for native video).
Inputs: a 1920x1080 image and a 32-frame video (frames at the size the demo's OpenCV sampling gives a
1920x1080 clip). Arms: unpruned, IWP at 22.2% and 11.1%, interleaved in a shuffled order per round, medians
after one warm-up round. Per arm: visual tokens, vision / layers before K / selection / layers after K /
prefill / decode / total ms (the demo's own stage clock, iwp/demo/stages.py), the hook's selection ms, peak GB.

    python scripts/gpu_demo_runner.py --out $OUT/demo-runner-h200.json          # about 3-4 min on one H200
    python scripts/gpu_demo_runner.py --small --out /tmp/demo-runner-cpu.json   # CPU dry run, tiny shapes
    python scripts/gpu_demo_runner.py --report assets/benchmarks/demo-runner-h200.json   # markdown table
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import iwp  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "real-processors"
OV, QWEN = FIXTURES / "llava-onevision-qwen2-0.5b-ov-hf", FIXTURES / "qwen2.5-vl-3b-instruct"
MODELS = ("llava-onevision-0.5b", "qwen2.5-vl-3b", "llava-onevision-7b", "qwen2.5-vl-7b")
ARMS = (None, 0.222, 0.111)                  # None: unpruned
STAGE_KEYS = ("vision", "before_k", "selection", "after_k", "decode")


def model_and_folder(name: str, small: bool):
    """(config, processor folder): the 7B processors are the small models' (same SigLIP / Qwen2 tokenizer)."""
    from iwp.bench import configs
    if name == "llava-onevision-0.5b":
        return configs.folder_config(OV, small), OV
    if name == "qwen2.5-vl-3b":
        return configs.folder_config(QWEN, small), QWEN
    if name == "llava-onevision-7b":
        return configs.onevision_config(small), OV
    if name == "qwen2.5-vl-7b":
        return configs.qwen_config(small), QWEN
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def scene(w: int, h: int, seed: int) -> Image.Image:
    """A smooth picture with a few blocks and some noise (random weights: only the size matters)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 127 // max(w + h, 1))], -1)
    for _ in range(6):
        x0, y0 = rng.integers(0, max(w - w // 6, 1)), rng.integers(0, max(h - h // 6, 1))
        img[y0:y0 + h // 6, x0:x0 + w // 6] = rng.integers(0, 255, 3)
    img = img + rng.integers(-8, 8, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def video_frames(n: int, w: int, h: int) -> tuple[list[Image.Image], dict]:
    """n frames of a 10 s, 30 fps clip of w x h, scaled as iwp.demo.video.sample_frames scales them, and the
    metadata the demo hands the processor."""
    from iwp.demo.video import MAX_FRAME_PIXELS
    if w * h > MAX_FRAME_PIXELS:
        s = math.sqrt(MAX_FRAME_PIXELS / (w * h))
        w, h = max(1, int(w * s)), max(1, int(h * s))
    total = 300
    indices = [int(i) for i in np.linspace(0, total - 1, n).round()]
    return [scene(w, h, seed=i) for i in range(n)], {"total_num_frames": total, "fps": 30.0, "frames_indices": indices}


def measure(runner, given, rounds: int, warmup: int, seed: int = 0) -> list[dict]:
    """Every arm once per round in a shuffled order; one row per arm with medians of the measured rounds."""
    rng = random.Random(seed)
    samples: dict = {arm: [] for arm in ARMS}
    cuda = runner.device.type == "cuda"
    for r in range(warmup + rounds):
        order = list(ARMS)
        rng.shuffle(order)
        for arm in order:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(runner.device)
            run, sel = runner.run(given, keep_ratio=arm)
            if r < warmup:
                continue
            s = run.stages or {}
            samples[arm].append({
                **{f"{k}_ms": s.get(k, float("nan")) * 1e3 for k in STAGE_KEYS},
                "prefill_ms": run.prefill_s * 1e3, "total_ms": run.total_s * 1e3,
                "selection_hook_ms": sel.seconds * 1e3 if sel is not None else 0.0,
                "visual_tokens": run.visual_tokens, "new_tokens": run.new_tokens,
                "peak_gb": torch.cuda.max_memory_allocated(runner.device) / 2**30 if cuda else None,
                "layer": sel.layer if sel is not None else None})
    rows = []
    for arm in ARMS:
        got = samples[arm]
        med = {k: (statistics.median(x[k] for x in got) if got[0][k] is not None else None) for k in got[0]}
        med = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in med.items()}
        rows.append({"arm": "unpruned" if arm is None else f"iwp {arm:.1%}", "keep_ratio": arm, **med,
                     "n": len(got)})
    base = rows[0]
    for row in rows:
        row["prefill_x"] = round(base["prefill_ms"] / row["prefill_ms"], 3)
        row["total_x"] = round(base["total_ms"] / row["total_ms"], 3)
    return rows


def bench_model(name: str, args, device: str) -> dict:
    from iwp.bench.real_size import build_model
    from iwp.demo.processing import NATIVE
    from iwp.demo.runner import Runner
    from iwp.models.processors import load_processor
    t0 = time.perf_counter()
    config, folder = model_and_folder(name, args.small)
    model = build_model(config, device, torch.bfloat16 if device == "cuda" else torch.float32)
    vision = None if args.stock_vision else iwp.accelerate_vision(model)   # as Runner.load does for the demo
    processor = load_processor(str(folder))
    runner = Runner(model, processor, name, max_new_tokens=args.new_tokens)
    runner.warmup()
    built = time.perf_counter() - t0
    w, h = (320, 180) if args.small else (1920, 1080)
    frames, meta = video_frames(args.frames, w, h)
    out = {"model": name, "processor": str(folder.relative_to(ROOT)), "build_s": round(built, 1),
           "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3), "inputs": {},
           "accelerate_vision": vision}
    for kind in args.inputs:
        images = [scene(w, h, seed=99)] if kind == "image" else frames
        given = runner.inputs(images, "Describe what you see in detail.", video=kind == "video",
                              video_meta=meta if kind == "video" else None)
        rows = measure(runner, given, args.rounds, args.warmup)
        info = {"size": list(images[0].size), "frames": len(images) if kind == "video" else None,
                "video_mode": given.video_mode, "notes": given.notes,
                "tokens": int(given.batch["input_ids"].shape[1]), "rows": rows}
        if kind == "video" and given.video_mode == NATIVE and config.model_type == "llava_onevision":
            info["tokens_per_frame"] = (rows[0]["visual_tokens"] - 1) / len(frames)   # one newline at the end
        out["inputs"][kind] = info
        print(json.dumps({"model": name, "input": kind, **{k: v for k, v in info.items() if k != "rows"}}),
              flush=True)
        for row in rows:
            print("   ", json.dumps(row), flush=True)
    del runner, model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def report(paths: list[str]) -> str:
    """A markdown table of one or more JSON results."""
    lines = ["| model | input | arm | visual tokens | vision ms | before K ms | selection ms | after K ms | "
             "prefill ms | decode ms | total ms | prefill x | total x | peak GB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        data = json.loads(Path(path).read_text())
        for m in data["models"]:
            for kind, info in m.get("inputs", {}).items():
                what = f"{kind} {info['size'][0]}x{info['size'][1]}" + (f", {info['frames']} frames" if info["frames"] else "")
                for r in info["rows"]:
                    f = lambda k, fmt="{:.1f}": "-" if r.get(k) is None else fmt.format(r[k])
                    lines.append(f"| {m['model']} | {what} | {r['arm']} | {r['visual_tokens']} | {f('vision_ms')} | "
                                 f"{f('before_k_ms')} | {f('selection_ms')} | {f('after_k_ms')} | {f('prefill_ms')} | "
                                 f"{f('decode_ms')} | {f('total_ms')} | {f('prefill_x', '{:.2f}')} | "
                                 f"{f('total_x', '{:.2f}')} | {f('peak_gb', '{:.2f}')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="JSON file to write")
    ap.add_argument("--stock-vision", action="store_true", help="without iwp.accelerate_vision (the demo applies it)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--inputs", default="image,video")
    ap.add_argument("--frames", type=int, default=None, help="video frames (32; 4 with --small)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--budget-s", type=float, default=330, help="skip the models left once this much time is spent")
    ap.add_argument("--small", action="store_true", help="tiny widths and inputs (CPU dry run)")
    ap.add_argument("--report", nargs="+", help="print the markdown table of these JSON files and exit")
    args = ap.parse_args(argv)
    if args.report:
        print(report(args.report))
        return 0
    args.inputs = args.inputs.split(",")
    args.frames = args.frames or (4 if args.small else 32)
    import transformers
    from iwp.models.processors import torchvision_available
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    result = {"env": {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
                      "torch": torch.__version__, "transformers": transformers.__version__,
                      "torchvision": torchvision_available(), "python": platform.python_version(),
                      "dtype": "bfloat16" if device == "cuda" else "float32", "attn_implementation": "sdpa"},
              "settings": {"rounds": args.rounds, "warmup": args.warmup, "new_tokens": args.new_tokens,
                           "frames": args.frames, "small": args.small, "method": "iwp"},
              "models": [], "skipped": []}
    for name in args.models.split(","):
        if time.perf_counter() - start > args.budget_s:
            result["skipped"].append(name)
            continue
        try:
            result["models"].append(bench_model(name, args, device))
        except torch.cuda.OutOfMemoryError as e:
            result["models"].append({"model": name, "error": f"out of memory: {e}"})
            gc.collect()
            torch.cuda.empty_cache()
        if args.out:                          # after every model, so a timeout keeps what was measured
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({**result, "wall_s": round(time.perf_counter() - start, 1)},
                                                 indent=1))
    print(f"done in {time.perf_counter() - start:.0f} s; skipped: {result['skipped'] or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
