"""Speed of a real-size model split over every visible GPU (accelerate's big-model inference), unpruned vs pruned.

The model is built on the meta device; accelerate balances a device map over the GPUs (whole decoder layers and
vision blocks, the model's _no_split_modules); every parameter is then created directly on its GPU with random
bf16 values and accelerate.dispatch_model adds the hooks that carry activations from GPU to GPU. The iwp.apply
hook prunes before decoder layer K wherever that layer sits. Prompts are bench_models' (tensors of the
processors' shapes, random values). Configurations run once per round in a shuffled order after warm-up; the
tables show medians, peak memory is per GPU (reset before every run). Without a GPU the same code runs on the
CPU, the map balanced over virtual devices that all mean "cpu" (the tests use it).

    python -m iwp.bench multigpu --model-shape qwen2.5-vl-72b --input image,video32 --json out.json
                                                          # (python -m iwp.bench.multigpu: the same)
    python -m iwp.bench multigpu --small                  # tiny shapes, CPU dry run
    python -m iwp.bench multigpu --report out.json        # print the tables of earlier runs
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from ..clock import Clock
from ..evaluate.distributed import MULTICAST_OFF
from . import configs as realsize
from .real_size import Probe, build_prompt, configure, timed_generate

SHAPES = {"qwen2.5-vl-72b": realsize.qwen72b_config, "qwen2.5-vl-7b": realsize.qwen_config}
STD = 0.02                    # the published configs' initializer_range
GPU_RESERVE = 0.1             # share of each GPU's free memory kept out of the map, for activations and the cache


# --------------------------------------------------------------------------------------------- build

def model_class(config):
    from transformers import LlavaOnevisionForConditionalGeneration, Qwen2_5_VLForConditionalGeneration
    return {"llava_onevision": LlavaOnevisionForConditionalGeneration,
            "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration}[config.model_type]


def empty_model(config, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Parameters on the meta device; buffers (rotary inv_freq, ...) computed for real on the CPU, as __init__ does."""
    from accelerate import init_empty_weights
    with init_empty_weights(include_buffers=False):
        model = model_class(config)._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.generation_config.pad_token_id = 0
    return model.eval()


def gpu_budgets() -> dict[int, int]:
    """Bytes the map may fill on each visible GPU: its free memory less a reserve for activations."""
    return {i: int(torch.cuda.mem_get_info(i)[0] * (1 - GPU_RESERVE)) for i in range(torch.cuda.device_count())}


def plan(model: nn.Module, budgets: dict, dtype: torch.dtype = torch.bfloat16) -> dict:
    """A device map balanced over the devices of `budgets` ({device: bytes}); _no_split_modules stay whole."""
    from accelerate.utils import get_balanced_memory, infer_auto_device_map
    no_split = sorted(model._no_split_modules or [])
    quiet = logging.getLogger("accelerate.utils.modeling")
    level = quiet.level
    if not torch.cuda.is_available():         # virtual devices: accelerate warns that they do not exist
        quiet.setLevel(logging.ERROR)
    try:
        balanced = get_balanced_memory(model, max_memory=dict(budgets), no_split_module_classes=no_split, dtype=dtype,
                                       low_zero=False)
        device_map = infer_auto_device_map(model, max_memory=balanced, no_split_module_classes=no_split, dtype=dtype)
    finally:
        quiet.setLevel(level)
    unplaced = {k: v for k, v in device_map.items() if v not in budgets}
    if unplaced:
        raise RuntimeError(f"the model does not fit on {sorted(budgets)}: {len(unplaced)} modules left over, "
                           f"e.g. {next(iter(unplaced))} -> {next(iter(unplaced.values()))}")
    return device_map


def virtual_budgets(model: nn.Module, n: int) -> dict[int, int]:
    """n pretend devices, each a little over 1/n of the model: a balanced split to run on the CPU."""
    size = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return {i: int(size / n * 1.5) + 2**20 for i in range(n)}


def device_of(name: str, device_map: dict) -> torch.device:
    """The device of a parameter or module name: its longest prefix in the map."""
    parts = name.split(".")
    for i in range(len(parts), -1, -1):
        key = ".".join(parts[:i])
        if key in device_map:
            d = device_map[key]
            return torch.device(f"cuda:{d}" if isinstance(d, int) else d)
    raise KeyError(f"{name} is not covered by the device map")


def materialise(model: nn.Module, device_map: dict, seed: int = 0) -> None:
    """Create every parameter on its device (normal(0, STD); norm weights 1, biases 0) and move the buffers there.

    Tied parameters stay one tensor. No weight passes through host memory."""
    gens: dict[torch.device, torch.Generator] = {}
    made: dict[int, nn.Parameter] = {}
    for mod_name, module in model.named_modules():
        norm = "Norm" in type(module).__name__
        for leaf, p in list(module._parameters.items()):
            if p is None:
                continue
            name = f"{mod_name}.{leaf}" if mod_name else leaf
            if id(p) not in made:
                dev = device_of(name, device_map)
                t = torch.empty(p.shape, dtype=p.dtype, device=dev)
                if norm and leaf == "weight":
                    t.fill_(1.0)
                elif leaf == "bias":
                    t.zero_()
                else:
                    if dev not in gens:
                        gens[dev] = torch.Generator(device=dev).manual_seed(seed)
                    t.normal_(0.0, STD, generator=gens[dev])
                made[id(p)] = nn.Parameter(t, requires_grad=False)
            module._parameters[leaf] = made[id(p)]
        for leaf, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[leaf] = b.to(device_of(f"{mod_name}.{leaf}" if mod_name else leaf, device_map))
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"still on the meta device after materialising: {left[:5]}")


def dispatch(model: nn.Module, device_map: dict) -> nn.Module:
    """accelerate's hooks: each block runs where its weights are, outputs come back to the first device."""
    from accelerate import dispatch_model
    main = next(iter(device_map.values()))
    quiet = logging.getLogger("accelerate.big_modeling")
    level = quiet.level
    if main == "cpu":                 # the CPU is the execution device here, not an offload: no warning
        quiet.setLevel(logging.ERROR)
    try:
        # force_hooks: a map over the CPU alone (the dry run) gets the same hooks as one over several GPUs
        dispatch_model(model, device_map=device_map, main_device=main, force_hooks=True)
    finally:
        quiet.setLevel(level)
    model.hf_device_map = dict(device_map)
    return model


def build(config, budgets: dict | None = None, virtual: int = 2, seed: int = 0) -> tuple[nn.Module, dict, dict]:
    """(dispatched model, device map, build facts). budgets None: every GPU, or `virtual` pretend CPU devices.

    facts["balanced_map"] is the map as balanced (virtual device numbers on the CPU)."""
    times = {}
    t0 = time.perf_counter()
    model = empty_model(config)
    times["meta_s"] = time.perf_counter() - t0
    on_cpu = budgets is None and not torch.cuda.is_available()
    t0 = time.perf_counter()
    balanced = plan(model, virtual_budgets(model, virtual) if on_cpu else (budgets or gpu_budgets()))
    device_map = {k: "cpu" for k in balanced} if on_cpu else balanced
    times["plan_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    materialise(model, device_map, seed)
    _sync_all(_gpus(device_map))
    times["materialise_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dispatch(model, device_map)
    times["dispatch_s"] = time.perf_counter() - t0
    facts = {"seconds": {k: round(v, 2) for k, v in times.items()},
             "params": sum(p.numel() for p in model.parameters()), "virtual_devices": virtual if on_cpu else 0,
             "balanced_map": balanced}
    return model, device_map, facts


# --------------------------------------------------------------------------------------------- where things are

def _gpus(device_map: dict) -> list[int]:
    return sorted({d for d in device_map.values() if isinstance(d, int)})


def _sync_all(gpus: list[int]) -> None:
    for g in gpus:
        torch.cuda.synchronize(g)


def placement(model: nn.Module, device_map: dict, layer: int, label: str = "cuda:") -> dict:
    """Where the map puts the vision tower, layer K, the embeddings and the LM head; decoder layers per device."""
    names = {id(m): n for n, m in model.named_modules()}
    inner = model.model
    vision = next(getattr(inner, a) for a in ("visual", "vision_tower", "vision_model") if hasattr(inner, a))
    layers = inner.language_model.layers

    def where(module: nn.Module) -> str:
        d = device_of(names[id(module)], device_map)
        return f"{label}{d.index}" if d.type == "cuda" else str(d)

    per_device: dict[str, list[int]] = {}
    for i, lay in enumerate(layers):
        per_device.setdefault(where(lay), []).append(i)
    out = {"vision_tower": where(vision), "layer_k": where(layers[layer]), "layer": layer,
           "embed_tokens": where(model.get_input_embeddings()), "lm_head": where(model.get_output_embeddings()),
           "decoder_layers": {d: [ix[0], ix[-1], len(ix)] for d, ix in per_device.items()},
           "device_map_entries": len(device_map)}
    gpus = _gpus(device_map)
    if gpus and label == "cuda:" and torch.cuda.is_available():
        out["weights_gib"] = {f"cuda:{g}": round(torch.cuda.memory_allocated(g) / 2**30, 2) for g in gpus}
    return out


# --------------------------------------------------------------------------------------------- timing

class SyncProbe(Probe):
    """Host clock after synchronising every GPU: events of one device cannot time work spread over several.

    generate() already waits for the host at every decoding step, so the extra syncs cost next to nothing."""

    def __init__(self, model: nn.Module, layer: int, gpus: list[int]):
        super().__init__(model, layer)
        self.cuda = False                 # no single-device peaks (run_once reads every GPU's)
        self.clock = Clock("cpu")         # marks on the host clock, each after every GPU is done
        self.gpus = gpus

    def _now(self) -> int:
        _sync_all(self.gpus)
        return self.clock.mark()


def kept_tokens(model: nn.Module, n_total: int) -> int:
    """The prompt length after the cut (n_total when the last prefill pruned nothing)."""
    import iwp
    sels = iwp.last_selection(model)
    if not sels:
        return n_total
    return n_total - sum(len(g.positions) - len(g.kept) for g in sels[0].groups)


def run_once(model: nn.Module, prompt, probe: SyncProbe, new_tokens: int) -> tuple[dict, torch.Tensor]:
    """timed_generate's stage times (ms) and decode tokens/s, and the peak GiB on every GPU."""
    for g in probe.gpus:
        torch.cuda.reset_peak_memory_stats(g)
    res, out = timed_generate(model, prompt, probe, new_tokens)
    res["peak_gib"] = {f"cuda:{g}": torch.cuda.max_memory_allocated(g) / 2**30 for g in probe.gpus} or None
    return res, out


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def bench(model: nn.Module, prompt, configs: list[tuple[str, float]], layer: int, gpus: list[int], repeats: int = 3,
          warmup: int = 1, new_tokens: int = 8, time_budget: float | None = None, seed: int = 0,
          log=print, on_round=None) -> list[dict]:
    """Every (method, keep ratio) once per round, shuffled, through the iwp.apply hook ("none": unpatched).

    on_round(summary) after every round, so that a run cut short still leaves its medians."""
    probe = SyncProbe(model, layer, gpus)
    rows = {c: {"method": c[0], "keep_ratio": c[1], "samples": [], "n_tokens": None, "error": None} for c in configs}
    order, rng, t0 = list(configs), random.Random(seed), time.perf_counter()
    try:
        for rnd in range(warmup + repeats):
            rng.shuffle(order)
            for conf in order:
                row = rows[conf]
                try:
                    configure(model, None if conf[0] == "none" else conf[0], conf[1], layer)
                    res, _ = run_once(model, prompt, probe, new_tokens)
                    if row["n_tokens"] is None:        # the same every round (seeded selectors)
                        row["n_tokens"] = kept_tokens(model, prompt.n_total) if conf[0] != "none" else prompt.n_total
                except Exception as e:           # out of memory in one configuration leaves the others to run
                    row["error"] = f"{type(e).__name__}: {e}"[:300]
                    configure(model, None, 1.0, layer)
                    if gpus:
                        torch.cuda.empty_cache()
                    log(f"round {rnd} {conf[0]} @ {conf[1]}: {row['error']}")
                    continue
                if rnd >= warmup:
                    row["samples"].append(res)
                log(f"round {rnd}{' (warm-up)' if rnd < warmup else ''} {conf[0]:>6} @ {conf[1]:.3f}: ttft "
                    f"{res['ttft_ms']:.1f} ms, decoder {res['decoder_prefill_ms']:.1f} ms, tokens {row['n_tokens']}")
            if on_round is not None and rnd >= warmup:
                on_round(summarize(list(rows.values())))
            if time_budget is not None and rnd >= warmup and time.perf_counter() - t0 > time_budget:
                log(f"time budget of {time_budget:.0f} s reached after round {rnd}")
                break
    finally:
        probe.remove()
        configure(model, None, 1.0, layer)
    return summarize(list(rows.values()))


def summarize(rows: list[dict]) -> list[dict]:
    """Medians per configuration and speed-ups against the unpruned row."""
    out = []
    for row in rows:
        s = row["samples"]
        med = {k: _median([x[k] for x in s]) for k in ("vision_ms", "ttft_ms", "decoder_prefill_ms", "total_ms",
                                                       "decode_tok_s")}
        peaks = [x["peak_gib"] for x in s if x["peak_gib"]]
        med["peak_gib"] = {d: statistics.median(p[d] for p in peaks) for d in peaks[0]} if peaks else None
        out.append({"method": row["method"], "keep_ratio": row["keep_ratio"], "n_tokens": row["n_tokens"],
                    "repeats": len(s), "error": row["error"], "median": med, "samples": s})
    base = next((r for r in out if r["method"] == "none" and r["repeats"]), None)
    for r in out:
        if base is not None and r["repeats"]:
            r["speedup"] = {k: base["median"][f"{k}_ms"] / r["median"][f"{k}_ms"] for k in ("ttft", "decoder_prefill")}
    return out


def parity(model: nn.Module, prompt, layer: int, keep_ratio: float, new_tokens: int) -> dict:
    """Greedy tokens unpatched vs keep_ratio 1.0 (must be identical) and at keep_ratio, on this sharded model."""
    outs = {}
    L = prompt.kwargs["input_ids"].shape[1]
    try:
        for name, method, ratio in (("unpruned", None, 1.0), ("keep_1", "iwp", 1.0), ("pruned", "iwp", keep_ratio)):
            configure(model, method, ratio, layer)
            with torch.no_grad():
                outs[name] = model.generate(**prompt.kwargs, max_new_tokens=new_tokens, do_sample=False).cpu()
            if name == "pruned":
                outs["pruned_tokens"] = kept_tokens(model, prompt.n_total)
    finally:
        configure(model, None, 1.0, layer)
    return {"keep_1_token_identical": bool(torch.equal(outs["unpruned"], outs["keep_1"])),
            "unpruned_new_tokens": outs["unpruned"][0, L:].tolist(),
            "keep_1_new_tokens": outs["keep_1"][0, L:].tolist(),
            "pruned_keep_ratio": keep_ratio, "pruned_tokens": outs["pruned_tokens"],
            "pruned_new_tokens": outs["pruned"][0, L:].tolist(),
            "pruned_same_as_unpruned": bool(torch.equal(outs["unpruned"], outs["pruned"]))}


# --------------------------------------------------------------------------------------------- report

def environment(gpus: list[int], argv: list[str]) -> dict:
    import accelerate
    import transformers
    return {"gpus": [torch.cuda.get_device_name(g) for g in gpus], "gpu_count": len(gpus),
            "gpu_memory_gib": [round(torch.cuda.get_device_properties(g).total_memory / 2**30, 1) for g in gpus],
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "dtype": "bfloat16", "attn_implementation": "sdpa",
            "multicast_env": {k: os.environ.get(k) for k in MULTICAST_OFF},
            "command": _prog() + " " + " ".join(argv)}


def _prog() -> str:
    """How this run was started: through python -m iwp.bench, or this module directly."""
    direct = Path(sys.argv[0]).stem == "bench_multigpu"
    return "python -m iwp.bench.multigpu" if direct else "python -m iwp.bench multigpu"


def _f(x, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def _virtual_line(place: dict | None) -> str:
    if not place:
        return ""
    where = "; ".join(f"layers {a}-{b} on {d}" for d, (a, b, _) in place["decoder_layers"].items())
    return f" (as balanced: vision tower on {place['vision_tower']}, layer K on {place['layer_k']}; {where})"


def markdown(result: dict) -> str:
    """One table per input: times, tokens, per-GPU peak memory; a line on placement and parity."""
    env, place = result["env"], result["placement"]
    where = "; ".join(f"layers {a}-{b} on {d}" for d, (a, b, _) in place["decoder_layers"].items())
    over = (f"split over {env['gpu_count']} x {', '.join(dict.fromkeys(env['gpus']))}" if env["gpu_count"] else
            f"on the CPU (map balanced over {result['build']['virtual_devices']} virtual devices)")
    parts = [f"**{result['model_shape']}** ({result['build']['params'] / 1e9:.3g} B parameters, random bf16) "
             f"{over}; torch {env['torch']}, "
             f"transformers {env['transformers']}, accelerate {env['accelerate']}. Vision tower on "
             f"{place['vision_tower']}, pruning layer K = {place['layer']} on {place['layer_k']}; {where}"
             + _virtual_line(result["build"].get("virtual_placement")) + ".\n"]
    for kind, res in result["inputs"].items():
        if "error" in res:
            parts.append(f"{kind}: {res['error']}\n")
            continue
        runs = res.get("runs", [])
        devs = sorted({d for r in runs for d in (r["median"]["peak_gib"] or {})})
        n = sorted({r["repeats"] for r in runs if r["repeats"]}) or [0]
        par = res.get("parity", {})
        parts.append(f"*{kind}*: {res['n_visual']} visual of {res['n_total']} tokens; medians of "
                     f"{n[0] if len(n) == 1 else f'{n[0]}-{n[-1]}'} interleaved rounds after {result['warmup']} "
                     f"warm-up; keep 1.0 token-identical to unpruned: {par.get('keep_1_token_identical', '-')}\n")
        parts.append("| method | kept | tokens | vision ms | TTFT ms | decoder ms | decode tok/s | "
                     + "".join(f"peak GiB {d} | " for d in devs) + "TTFT x | decoder x |")
        parts.append("|---" * (9 + len(devs)) + "|")
        for r in runs:
            m = r["median"]
            if not r["repeats"]:
                parts.append(f"| {r['method']} | {r['keep_ratio']:.1%} | {r['error'] or 'not run'} |"
                             + " |" * (6 + len(devs)))
                continue
            sp = r.get("speedup", {})
            parts.append(f"| {r['method']} | {r['keep_ratio']:.1%} | {r['n_tokens']} | {_f(m['vision_ms'])} | "
                         f"{_f(m['ttft_ms'])} | {_f(m['decoder_prefill_ms'])} | {_f(m['decode_tok_s'])} | "
                         + "".join(f"{_f((m['peak_gib'] or {}).get(d), '{:.2f}')} | " for d in devs)
                         + f"{_f(sp.get('ttft'), '{:.2f}')} | {_f(sp.get('decoder_prefill'), '{:.2f}')} |")
        parts.append("")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------- CLI

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m iwp.bench multigpu", description=__doc__.splitlines()[0])
    p.add_argument("--model-shape", default="qwen2.5-vl-72b", choices=sorted(SHAPES))
    p.add_argument("--small", action="store_true", help="tiny shapes of the same architecture (CPU dry run)")
    p.add_argument("--input", default="image,video32", help="image, video32, or a comma list")
    p.add_argument("--size", default=None, help="H,W of the image / video frames (default: bench_models' 720p)")
    p.add_argument("--frames", type=int, default=None, help="video frames (default 32)")
    p.add_argument("--methods", default="iwp,random", help="pruned configurations, beside the unpruned one")
    p.add_argument("--keep", type=float, default=0.111)
    p.add_argument("--layer", type=int, default=2, help="pruning layer K")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=8, help="decoded tokens after the first (decode tok/s)")
    p.add_argument("--time-budget", type=float, default=None, help="seconds of rounds per input before they stop")
    p.add_argument("--virtual-devices", type=int, default=2, help="without a GPU: balance over this many, all CPU")
    p.add_argument("--json", default=None, help="write the result here (rewritten after every input)")
    p.add_argument("--report", nargs="*", default=None, help="JSON files: print their tables, run nothing")
    return p.parse_args(argv)


def _geometry(args: argparse.Namespace, kind: str) -> dict:
    geo = {}
    if args.size:
        geo["size"] = tuple(int(x) for x in args.size.split(","))
    if args.frames and kind != "image":
        geo["frames"] = args.frames
    return geo


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.report is not None:
        for path in args.report:
            print(markdown(json.loads(Path(path).read_text())))
        return 0
    for k, v in MULTICAST_OFF.items():
        os.environ.setdefault(k, v)
    model, device_map, facts = build(SHAPES[args.model_shape](args.small), virtual=args.virtual_devices)
    gpus = _gpus(device_map)
    balanced = facts.pop("balanced_map")
    if facts["virtual_devices"]:
        facts["virtual_placement"] = placement(model, balanced, args.layer, label="virtual:")
    result = {"benchmark": "multigpu", "model_shape": args.model_shape + (" (small)" if args.small else ""),
              "params_billion": round(facts["params"] / 1e9, 3), "env": environment(gpus, argv), "build": facts,
              "placement": placement(model, device_map, args.layer), "layer": args.layer, "keep_ratio": args.keep,
              "repeats": args.repeats, "warmup": args.warmup, "new_tokens": args.new_tokens,
              "weights": f"random bf16, normal(0, {STD}), norm weights 1, biases 0; created on their devices",
              "inputs": {}}
    print(json.dumps({k: result[k] for k in ("build", "placement")}), flush=True)

    def save() -> None:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=1))

    def partial(kind: str):
        def update(runs: list[dict]) -> None:
            result["inputs"][kind]["runs"] = runs
            save()
        return update

    save()
    configs = [("none", 1.0)] + [(m, args.keep) for m in args.methods.split(",") if m]
    for kind in args.input.split(","):
        entry = result["inputs"][kind] = {}
        try:
            prompt = build_prompt(model, kind, _geometry(args, kind))
            entry.update(n_total=prompt.n_total, n_visual=prompt.n_visual, geometry=prompt.geometry)
            print(f"{kind}: {prompt.n_visual} visual of {prompt.n_total} tokens", flush=True)
            entry["parity"] = parity(model, prompt, args.layer, args.keep, args.new_tokens)
            print(f"{kind} parity: {entry['parity']}", flush=True)
            save()
            entry["runs"] = bench(model, prompt, configs, args.layer, gpus, args.repeats, args.warmup,
                                  args.new_tokens, args.time_budget, log=lambda s: print(s, flush=True),
                                  on_round=partial(kind))
        except Exception as e:                              # one input failing leaves the others to run
            entry["error"] = f"{type(e).__name__}: {e}"[:500]
            print(f"{kind}: {entry['error']}", flush=True)
        save()
        if gpus:
            torch.cuda.empty_cache()
    print(markdown(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
