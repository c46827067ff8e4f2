"""python -m iwp.evaluate: exact-match accuracy of the toy model vs keep ratio vs selector, on CPU.

Every selector runs through the same hook (iwp.apply: tokens dropped before decoder layer K, kept tokens keep
their positions) on a split of generated scenes that training never saw. `--sweep` instead chooses IWP's
defaults (layer K, lam, chunk schedule) on the validation split.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from . import distributed
from .. import hook
from ..hook import DEFAULT_LAYER
from ..toy import scenes
from ..toy.load import DEFAULT_PATH, load, prompt

METHODS = ("iwp", "fastv", "divprune", "magnitude", "uniform", "random")
# The toy decoder has 4 layers; the validation sweep (assets/benchmarks/toy-sweep.json) puts every method at
# its best when pruning before layer 3. lam stays the library default: at layer 3 lam 0.3-1.0 are within one
# question of 300 of each other, so the sweep cannot choose it on this model.
TOY_LAYER = 3
RATIOS = (1.0, 0.333, 0.222, 0.111, 0.05)


def prepare(processor, split: str, n: int, batch_size: int = 50,
            world: distributed.World = distributed.World(), seed: int | None = None) -> list[dict]:
    """The split's first n questions as processor batches (left-padded), with answers and kinds; `seed`
    draws a fresh split instead of the named one.

    Under torchrun, this rank's share only (every world.size-th batch): the scenes are drawn in full (their
    noise depends on the whole draw), but only this rank's batches go through the processor.
    """
    seed = scenes.SPLIT_SEEDS[split] if seed is None else seed
    images, _, q = scenes.generate(n, seed, kinds=scenes.BENCHMARK_KINDS)
    batches = []
    for index in distributed.shard(range((n + batch_size - 1) // batch_size), world):
        start = index * batch_size
        idx = range(start, min(n, start + batch_size))
        texts = [prompt(processor, q.text(i)) for i in idx]
        inputs = processor(text=texts, images=scenes.to_pil(images[start:idx.stop]), padding=True,
                           return_tensors="pt")
        batches.append({"index": index, "inputs": inputs, "answers": [q.answer_text(i) for i in idx],
                        "kinds": [scenes.KINDS[int(q.kind[i])] for i in idx]})
    return batches


@torch.no_grad()
def accuracy(model, processor, batches: list[dict], method: str | None = None, keep_ratio: float = 1.0,
             layer: int = DEFAULT_LAYER, params: dict | None = None,
             world: distributed.World = distributed.World()) -> tuple[float, dict[str, float]]:
    """Exact-match accuracy (overall, per question kind); method None or keep_ratio 1 runs unpatched.

    Under torchrun each rank holds a shard of the batches; counts are summed over ranks.
    """
    counts: Counter = Counter()
    for bi, batch in enumerate(batches):
        if method is None or keep_ratio >= 1.0:
            hook.remove(model)
        else:  # a fresh seed per batch, so "random" is not one fixed pattern
            hook.apply(model, keep_ratio=keep_ratio, method=method, layer=layer, seed=batch["index"],
                        **(params or {}))
        inputs = batch["inputs"].to(model.device)
        out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
        texts = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        for text, ans, kind in zip(texts, batch["answers"], batch["kinds"]):
            counts[(kind, "n")] += 1
            counts[(kind, "correct")] += int(text.strip() == ans)
    hook.remove(model)
    counts = distributed.gather_counts(counts, world)
    kinds = sorted({k for k, _ in counts})
    total = sum(counts[(k, "correct")] for k in kinds) / max(1, sum(counts[(k, "n")] for k in kinds))
    return total, {k: counts[(k, "correct")] / counts[(k, "n")] for k in kinds}


def benchmark(model, processor, batches: list[dict], methods, ratios, layer: int, params: dict,
              log=print, world: distributed.World = distributed.World()) -> list[dict]:
    """Rows {method, keep_ratio, accuracy, n, per_kind}; ratio 1.0 (nothing pruned) is run once and shared."""
    n = int(distributed.gather_counts(Counter(n=sum(len(b["answers"]) for b in batches)), world)["n"])
    rows, full = [], None
    t0 = time.time()
    for ratio in ratios:
        for method in methods:
            if ratio >= 1.0:
                full = full or accuracy(model, processor, batches, world=world)
                acc, per = full
            else:
                acc, per = accuracy(model, processor, batches, method, ratio, layer,
                                    params if method == "iwp" else {}, world)
            rows.append({"method": method, "keep_ratio": ratio, "accuracy": round(acc, 4), "n": n,
                         "per_kind": {k: round(v, 4) for k, v in per.items()}})
            log(f"[{time.time() - t0:6.0f}s] {method:>9} keep={ratio:<5} accuracy={acc:.4f}")
    return rows


def table(rows: list[dict]) -> str:
    """Method x keep-ratio accuracy table in Markdown."""
    ratios = sorted({r["keep_ratio"] for r in rows}, reverse=True)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    acc = {(r["method"], r["keep_ratio"]): r["accuracy"] for r in rows}
    lines = ["| method | " + " | ".join(f"{x:.1%}" for x in ratios) + " |", "|---" * (len(ratios) + 1) + "|"]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{100 * acc[m, x]:.1f}" for x in ratios) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str | Path, title: str = "toy-lvlm: accuracy vs visual tokens kept") -> None:
    """Accuracy-vs-keep-ratio lines, one per method, drawn with PIL."""
    from PIL import Image, ImageDraw

    W, H, left, right, top, bottom = 760, 460, 70, 170, 40, 60
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    ratios = sorted({r["keep_ratio"] for r in rows})
    x_of = {x: left + i * (W - left - right) / max(1, len(ratios) - 1) for i, x in enumerate(ratios)}

    def y_of(a: float) -> float:
        return top + (1 - a) * (H - top - bottom)

    for a in [i / 10 for i in range(11)]:
        d.line([(left, y_of(a)), (W - right, y_of(a))], fill=(225, 225, 225))
        d.text((left - 40, y_of(a) - 6), f"{a:.0%}", fill="black")
    for x, px in x_of.items():
        d.text((px - 14, H - bottom + 8), f"{x:.1%}", fill="black")
    d.text((left + 120, H - 24), "visual tokens kept (keep ratio)", fill="black")
    d.text((left, 12), title, fill="black")
    colors = {"iwp": (214, 39, 40), "fastv": (31, 119, 180), "divprune": (44, 160, 44), "magnitude": (255, 127, 14),
              "uniform": (148, 103, 189), "random": (127, 127, 127)}
    for i, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        pts = sorted((x_of[r["keep_ratio"]], y_of(r["accuracy"])) for r in rows if r["method"] == method)
        c = colors.get(method, (0, 0, 0))
        d.line(pts, fill=c, width=4 if method == "iwp" else 2)
        for px, py in pts:
            d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=c)
        d.line([(W - right + 20, top + 20 + 22 * i), (W - right + 45, top + 20 + 22 * i)], fill=c, width=3)
        d.text((W - right + 52, top + 14 + 22 * i), method, fill="black")
    img.save(path)


def sweep(model, processor, batches: list[dict], layers, lams, schedules, ratios, peers: bool = True, log=print,
          save=None, world: distributed.World = distributed.World()) -> dict:
    """IWP on the validation split: layer x lam at the default schedule, then schedules at the best pair.

    With `peers`, the other selectors run at every layer too, so the choice of K can be read against them.
    Best = highest mean accuracy over `ratios`. `save(partial_result)` is called after every configuration.
    """
    results, t0 = [], time.time()

    def run(method: str, layer: int, params: dict) -> float:
        accs = [accuracy(model, processor, batches, method, r, layer, params, world)[0] for r in ratios]
        results.append({"method": method, "layer": layer, **params,
                        "accuracy": {str(r): round(a, 4) for r, a in zip(ratios, accs)},
                        "mean": round(sum(accs) / len(accs), 4)})
        log(f"[{time.time() - t0:6.0f}s] {method} layer={layer} {params} -> "
            + " ".join(f"{a:.3f}" for a in accs))
        if save:
            save({"ratios": list(ratios), "results": results})
        return sum(accs) / len(accs)

    first_chunk, growth = schedules[0]      # ties go to the earliest configuration (smaller K, lam; default schedule)
    best = max([(run("iwp", k, {"lam": lam, "first_chunk": first_chunk, "growth": growth}), k, lam)
                for k in layers for lam in lams], key=lambda t: t[0])
    for k in layers if peers else []:
        for method in METHODS[1:]:
            run(method, k, {})
    _, layer, lam = best
    best_sched = max([(run("iwp", layer, {"lam": lam, "first_chunk": f, "growth": g}) if (f, g) != schedules[0]
                       else best[0], f, g) for f, g in schedules], key=lambda t: t[0])
    chosen = {"layer": layer, "lam": lam, "first_chunk": best_sched[1], "growth": best_sched[2]}
    return {"chosen": chosen, "ratios": list(ratios), "results": results}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=str(DEFAULT_PATH))
    p.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--split", default="test", choices=sorted(scenes.SPLIT_SEEDS))
    p.add_argument("--seed", type=int, default=None, help="draw a fresh split from this seed (overrides --split)")
    p.add_argument("--questions", "--n", dest="n", type=int, default=300,
                   help="questions: the first n of the split (--n is an alias; torchrun swallows --n itself)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--layer", type=int, default=TOY_LAYER)
    p.add_argument("--lam", type=float, default=None, help="IWP lam (default: iwp.selectors.DEFAULT_LAM)")
    p.add_argument("--first-chunk", type=int, default=None)
    p.add_argument("--growth", type=float, default=None)
    p.add_argument("--query", default=None, choices=["text", "last"], help="IWP query tokens (default: text)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--plot", default=None, help="write the accuracy-vs-ratio PNG here")
    p.add_argument("--sweep", action="store_true", help="choose IWP's defaults on the split (use --split val)")
    p.add_argument("--sweep-layers", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--sweep-lams", type=float, nargs="+", default=[0.3, 0.5, 0.7, 1.0])
    p.add_argument("--no-peers", action="store_true", help="sweep IWP only")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default=None, help="default: cpu; under torchrun each rank's own GPU when there is one")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    world = distributed.init()                 # torchrun / accelerate launch: each rank a shard of the questions
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if world.is_main else (lambda msg: None)  # noqa: E731

    model, processor = load(args.model)
    model.to(args.device or (world.device if world.size > 1 else "cpu"))
    t0 = time.time()
    batches = prepare(processor, args.split, args.n, args.batch_size, world, args.seed)
    prepare_s = time.time() - t0
    log(f"prepared {args.n} {args.split} questions in {prepare_s:.0f}s ({world.size} process(es))")
    params = {k: v for k, v in (("lam", args.lam), ("first_chunk", args.first_chunk), ("growth", args.growth),
                                ("query", args.query)) if v is not None}
    result = {"model": str(args.model), "split": args.split if args.seed is None else f"seed {args.seed}",
              "seed": scenes.SPLIT_SEEDS[args.split] if args.seed is None else args.seed,
              "n": args.n, "threads": torch.get_num_threads()}
    if args.sweep:
        def save(partial: dict) -> None:
            if args.json and world.is_main:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps({**result, **partial, "partial": True}, indent=1))

        result.update(sweep(model, processor, batches, layers=args.sweep_layers, lams=args.sweep_lams,
                            schedules=[(1, 2.0), (1, 1.0), (4, 2.0)], ratios=[0.111, 0.222],
                            peers=not args.no_peers, log=log, save=save, world=world))
        if world.is_main:
            print(json.dumps(result["chosen"]))
    else:
        from ..selectors import DEFAULT_FIRST_CHUNK, DEFAULT_GROWTH, DEFAULT_LAM
        iwp_params = {"lam": DEFAULT_LAM, "first_chunk": DEFAULT_FIRST_CHUNK, "growth": DEFAULT_GROWTH, **params}
        result.update({"layer": args.layer, "iwp_params": iwp_params})
        result["results"] = benchmark(model, processor, batches, args.methods, args.ratios, args.layer, iwp_params,
                                      log, world)
        # seconds: prepare + questions (what a user waits for after the model is loaded)
        result.update(seconds=round(time.time() - t0, 1), prepare_s=round(prepare_s, 1),
                      questions_s=round(time.time() - t0 - prepare_s, 1))
        if world.is_main:
            print(table(result["results"]))
            if args.plot:
                plot(result["results"], args.plot)
    result["processes"] = world.size
    distributed.finish(world)
    if args.json and world.is_main:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
