"""GPU: the ratio ladder's time at real model sizes (random bf16 weights built from the published configs,
no download; inputs of the real processors' shapes from iwp.bench.real_size). For each model and input: the
five-rung ladder under one vision-encoder pass (what the demo's Ratio ladder runs), next to the same five
generations run separately (the vision encoder each time). Writes JSON to $OUT/ladder-gpu.json.

    python scripts/ladder_gpu.py                      # H200: qwen2.5-vl-7b image + llava-onevision-7b video32
    python scripts/ladder_gpu.py --small --device cpu # CPU dry run at tiny widths
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import iwp  # noqa: E402
from iwp.bench import real_size  # noqa: E402
from iwp.demo import ladder  # noqa: E402
from iwp.demo.processing import ModelInput  # noqa: E402
from iwp.demo.runner import Runner  # noqa: E402

CASES = (("qwen2.5-vl-7b", "image"), ("llava-onevision-7b", "video32"))
if os.environ.get("LADDER_CASES"):            # e.g. LADDER_CASES=llava-onevision-7b:video32
    CASES = tuple(tuple(c.split(":")) for c in os.environ["LADDER_CASES"].split(","))


class _Ids:
    """Stands in for a tokenizer: the answer is the generated ids (random weights answer nonsense anyway)."""
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids.tolist())


class TensorRunner(Runner):
    """The demo's Runner on a prepared prompt of tensors instead of a processor's output."""
    prompt_kwargs: dict = {}

    def inputs(self, images, question, video=False, video_meta=None):
        return ModelInput(batch=self.prompt_kwargs, kind="video" if video else "image")


def _sync(model):
    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()


def separate(runner, method: str) -> float:
    """The five rungs as five plain generations (vision encoder each time), seconds."""
    start = time.perf_counter()
    for r in ladder.LADDER:
        if r >= 1.0:
            iwp.remove(runner.model)
        else:
            iwp.apply(runner.model, keep_ratio=r, method=method)
        runner.generate(runner.prompt_kwargs)
        iwp.remove(runner.model)
    _sync(runner.model)
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="tiny widths (CPU dry run)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--method", default="iwp")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "ladder-gpu.json"))
    args = ap.parse_args(argv)
    results = []
    for shape, kind in CASES:
        model = real_size.build_model(real_size.real_config(shape, small=args.small), args.device,
                                      torch.float32 if args.device == "cpu" else torch.bfloat16)
        prompt = real_size.build_prompt(model, kind)
        runner = TensorRunner(model, _Ids(), shape, max_new_tokens=args.new_tokens)
        runner.prompt_kwargs = prompt.kwargs
        frame = [Image.new("RGB", (8, 8))]                # sizes only name the boxes; none are drawn here
        ladder.run_ladder(runner, frame, "", args.method)  # warm-up
        runs, apart, records = [], [], []
        for _ in range(args.repeats):
            rungs, info = ladder.run_ladder(runner, frame, "", args.method)
            _sync(model)
            runs.append(info["seconds"])
            records.append(info["selections_s"])
            apart.append(separate(runner, args.method))
        row = {"model_shape": shape, "input": kind, "visual_tokens": prompt.n_visual, "method": args.method,
               "new_tokens": args.new_tokens, "ladder_s": round(statistics.median(runs), 4),
               "separate_s": round(statistics.median(apart), 4), "selections_s": round(statistics.median(records), 4),
               "vision_encoded": info["encoded"],
               "vision_reused": info["reused"], "rungs": [r.row() for r in rungs], "runs_s": runs,
               "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
               "torch": torch.__version__, "small": args.small}
        print(json.dumps({k: v for k, v in row.items() if k != "rungs"}), flush=True)
        results.append(row)
        del model, runner
        if args.device == "cuda":
            torch.cuda.empty_cache()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
