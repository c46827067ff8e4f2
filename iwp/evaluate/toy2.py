"""python -m iwp.evaluate: the pre-registered pruning benchmark on toy model v2 (README, "Benchmark").

Fixed before any selector was run on the v2 model: every selector goes through the same hook (iwp.apply),
pruning before decoder layer K = round(DEPTH * layers) (2 on the 8-layer toy, the library default), keeping
11.1 / 22.2 / 33.3% of each image's / frame's 576 tokens; questions are a fresh split drawn from --seed.
Two tables: single-turn (one question per scene), and multi-turn reuse (prune once with the first question,
answer a follow-up about another object from the same pruned prefill, after the model's own first answer).
Per kind: accuracy with a 95% Wilson interval and the paired difference against IWP with its 95% interval.
Ceilings: every-object oracle (the tokens of every object, the rest of the budget random), asked-object
oracle (the tokens of the objects the first question asks about, the rest random). Floors: random, uniform.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import torch

from .. import hook
from ..selectors import SELECTORS
from ..toy import scenes2 as S
from ..toy.load import load

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "assets" / "toy-lvlm-v2"
METHODS = ("iwp", "iwp_last", "fastv", "divprune", "magnitude", "uniform", "random", "oracle_all", "oracle_asked")
RATIOS = (0.111, 0.222, 0.333)
DEPTH = 2 / 8            # K = round(DEPTH * decoder layers): the library default K = 2 on the 8-layer toy
_HOOK_METHOD = "_benchmark"   # a temporary registry entry: the hook runs every selector under this name


def layer_for(model) -> int:
    """The relative-depth rule: K = round(DEPTH * L), at least 1."""
    return max(1, round(DEPTH * model.config.text_config.num_hidden_layers))


def split(seed: int, n_images: int, n_videos: int) -> list[dict]:
    """Items (images first, then videos) with a first question and a follow-up about another object, drawn
    on CPU from `seed` (videos from seed + 1)."""
    items = []
    for n, frames, seed_ in ((n_images, 1, seed), (n_videos, S.FRAMES, seed + 1)):
        if n == 0:
            continue
        gen = torch.Generator().manual_seed(seed_)
        s = S.sample_scenes(n, gen, frames)
        pils = S.to_pil(S.render(s))
        q1 = S.sample_questions(s, gen)
        q2 = S.sample_questions(s, gen, kinds=("video_digit",) if frames > 1 else None, avoid=q1.target)
        every = S.object_tokens(s, torch.ones_like(s.present))
        asked = S.object_tokens(s, q1.relevant)
        for i in range(n):
            items.append({"images": pils[i * frames:(i + 1) * frames], "frames": frames,
                          "q1": q1.text(i), "a1": q1.answer_text(i), "kind1": S.KINDS[int(q1.kind[i])],
                          "q2": q2.text(i), "a2": q2.answer_text(i), "kind2": S.KINDS[int(q2.kind[i])],
                          "every": every[i], "asked": asked[i]})
    return items


def _messages(item: dict, answer1: str | None = None) -> list[dict]:
    msgs = [{"role": "user", "content": [{"type": "image"}] * item["frames"] + [{"type": "text", "text": item["q1"]}]}]
    if answer1 is not None:
        msgs += [{"role": "assistant", "content": [{"type": "text", "text": answer1}]},
                 {"role": "user", "content": [{"type": "text", "text": item["q2"]}]}]
    return msgs


def batches(items: list[dict], image_batch: int, video_batch: int) -> list[list[int]]:
    out, cur = [], []
    for i, it in enumerate(items):
        size = image_batch if it["frames"] == 1 else video_batch
        if cur and (len(cur) >= size or items[cur[0]]["frames"] != it["frames"]):
            out.append(cur)
            cur = []
        cur.append(i)
    return out + ([cur] if cur else [])


@contextlib.contextmanager
def hook_selector(fn):
    """Register `fn(inp, budget)` as the hook's selector for the duration (the hook calls it per prompt, then
    per image / frame, in order)."""
    SELECTORS[_HOOK_METHOD] = fn
    try:
        yield
    finally:
        SELECTORS.pop(_HOOK_METHOD, None)


def _selector(method: str, recorded: list, oracle_tokens: list | None):
    """The hook's selector for `method`: the real one (recording its picks) or an oracle fed per group."""
    queue = iter(oracle_tokens or [])

    def run(inp, budget):
        if method.startswith("oracle"):
            must = next(queue)[:budget]
            gen = torch.Generator().manual_seed(inp.seed * 7919 + len(recorded))
            rest = torch.randperm(inp.n, generator=gen)
            rest = rest[~torch.isin(rest, must)][:budget - must.numel()]
            picks = torch.cat([must, rest]).to(inp.k.device)
        elif method == "iwp_last":
            picks = SELECTORS["iwp"](inp, budget, query="last")
        else:
            picks = SELECTORS[method](inp, budget)
        recorded.append(picks.detach().cpu())
        return picks
    return run


def _replay(recorded: list):
    queue = iter(recorded)
    return lambda inp, budget: next(queue).to(inp.k.device)


@torch.no_grad()
def answers(model, processor, items, idx, follow_up: list[str] | None, settings: dict | None, fn) -> list[str]:
    """Greedy first answer token for items idx (the follow-up turn when follow_up gives the first answers)."""
    texts = [processor.apply_chat_template(_messages(items[i], None if follow_up is None else follow_up[k]),
                                           add_generation_prompt=True) for k, i in enumerate(idx)]
    images = [im for i in idx for im in items[i]["images"]]
    inputs = processor(text=texts, images=images, padding=True, return_tensors="pt").to(model.device)
    with hook_selector(fn):
        if settings is None:
            hook.remove(model)
        else:
            hook.apply(model, method=_HOOK_METHOD, **settings)
        try:
            out = model.generate(**inputs, max_new_tokens=1, do_sample=False)
        finally:
            hook.remove(model)
    return [t.strip() for t in processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)]


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    if n == 0:
        return [0.0, 0.0]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def summarise(correct: dict, items: list[dict], turn: str) -> list[dict]:
    """Rows per (method, ratio, kind incl. 'all'): accuracy, Wilson CI, paired difference vs IWP (mean, CI)."""
    kinds = [items[i]["kind1" if turn == "single" else "kind2"] for i in range(len(items))]
    rows = []
    for (method, ratio), ok in correct.items():
        ref = correct.get(("iwp", ratio))
        for kind in ["all"] + sorted(set(kinds), key=S.KINDS.index):
            sel = [i for i, k in enumerate(kinds) if kind == "all" or k == kind]
            n, k = len(sel), sum(ok[i] for i in sel)
            row = {"table": turn, "method": method, "keep_ratio": ratio, "kind": kind, "n": n,
                   "accuracy": round(k / n, 4), "ci95": wilson(k, n)}
            if ref is not None and method != "iwp" and ratio < 1.0:
                d = [ok[i] - ref[i] for i in sel]
                mean = sum(d) / n
                sd = math.sqrt(sum((x - mean) ** 2 for x in d) / max(1, n - 1))
                row["diff_vs_iwp"] = round(mean, 4)
                half = 1.96 * sd / math.sqrt(n)
                row["diff_ci95"] = [round(mean - half, 4), round(mean + half, 4)]
            rows.append(row)
    return rows


def table(rows: list[dict], turn: str, ratio: float) -> str:
    """Markdown: methods x kinds at one ratio, accuracy % (95% CI half-width), paired difference vs IWP."""
    sub = [r for r in rows if r["table"] == turn and r["keep_ratio"] == ratio]
    kinds = list(dict.fromkeys(r["kind"] for r in sub))
    methods = list(dict.fromkeys(r["method"] for r in sub))
    cell = {(r["method"], r["kind"]): r for r in sub}
    lines = [f"| {turn} @ {ratio:.1%} | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for m in methods:
        parts = []
        for k in kinds:
            r = cell.get((m, k))
            if r is None:
                parts.append("")
                continue
            txt = f"{100 * r['accuracy']:.1f}"
            if "diff_vs_iwp" in r:
                lo, hi = r["diff_ci95"]
                txt += f" ({100 * r['diff_vs_iwp']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}])"
            parts.append(txt)
        lines.append(f"| {m} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=str(DEFAULT_PATH))
    p.add_argument("--seed", type=int, default=S.SPLIT_SEEDS["test"], help="the split: any seed draws a fresh one")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--videos", type=int, default=80)
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
    p.add_argument("--layer", type=int, default=None, help="default: the relative-depth rule (2 on the toy)")
    p.add_argument("--image-batch", type=int, default=50)
    p.add_argument("--video-batch", type=int, default=8)
    p.add_argument("--no-multi-turn", action="store_true")
    p.add_argument("--budget-seconds", type=float, default=0, help="start no new configuration after this")
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    args = p.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)          # noqa: E731

    model, processor = load(args.model)
    model.to(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    layer = args.layer if args.layer is not None else layer_for(model)
    t0 = time.time()
    items = split(args.seed, args.images, args.videos)
    groups = batches(items, args.image_batch, args.video_batch)
    log(f"split seed {args.seed}: {args.images} images + {args.videos} videos in {time.time() - t0:.0f}s, "
        f"layer {layer}")
    result = {"model": str(args.model), "seed": args.seed, "images": args.images, "videos": args.videos,
              "frames": S.FRAMES, "tokens_per_image": S.N_TOKENS, "layer": layer,
              "depth_rule": f"K = round({DEPTH} * L)",
              "ratios": args.ratios, "methods": args.methods, "device": str(model.device),
              "transformers": __import__("transformers").__version__, "torch": torch.__version__, "complete": False}
    single, multi = {}, {}

    def save() -> None:
        rows = summarise(single, items, "single") + summarise(multi, items, "multi")
        result["results"], result["seconds"] = rows, round(time.time() - t0, 1)
        md = [table(rows, t, r) for t in ("single", "multi") for r in [1.0] + list(args.ratios)
              if any(x["table"] == t and x["keep_ratio"] == r for x in rows)]
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=1))
        if args.markdown:
            Path(args.markdown).write_text("\n\n".join(md) + "\n")

    def run(method: str | None, ratio: float) -> None:
        first, second = [None] * len(items), [None] * len(items)
        for bi, idx in enumerate(groups):
            recorded: list = []
            settings = None if method is None else {"keep_ratio": ratio, "layer": layer, "seed": bi}
            oracle = None
            if method in ("oracle_all", "oracle_asked"):
                key = "every" if method == "oracle_all" else "asked"
                oracle = [f for i in idx for f in items[i][key]]
            got = answers(model, processor, items, idx, None, settings, _selector(method or "", recorded, oracle))
            for i, a in zip(idx, got):
                first[i] = int(a == items[i]["a1"])
            if not args.no_multi_turn:
                got2 = answers(model, processor, items, idx, got, settings, _replay(recorded))
                for i, a in zip(idx, got2):
                    second[i] = int(a == items[i]["a2"])
        name = method or "full"
        single[(name, ratio)] = first
        if not args.no_multi_turn:
            multi[(name, ratio)] = second
        acc = sum(first) / len(first)
        log(f"[{time.time() - t0:6.0f}s] {name:>12} keep={ratio:<5} single={acc:.4f}"
            + ("" if args.no_multi_turn else f" multi={sum(second) / len(second):.4f}"))
        save()

    run(None, 1.0)
    for ratio in args.ratios:
        for method in args.methods:
            if args.budget_seconds and time.time() - t0 > args.budget_seconds:
                log(f"budget reached: {method} at {ratio} and later configurations not run")
                return result
            run(method, ratio)
    result["complete"] = True
    save()
    if args.markdown:
        print(Path(args.markdown).read_text())
    return result


if __name__ == "__main__":
    main()
