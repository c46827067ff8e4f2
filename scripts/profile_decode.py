"""Where decoding time goes, unpatched vs patched (issue 17): per-token wall time, CUDA runtime calls and
host functions of the decoding steps, for each arm, on one GPU.

    python scripts/profile_decode.py --model-shape llava-onevision-0.5b --input image --json out.json

Decode ms/token = (generate with 1 + N new tokens - generate with 1 new token) / N, arms interleaved,
medians over rounds. Then one torch.profiler run per arm (runtime-API call counts per decoding step,
GPU kernel time per step) and one cProfile run (the host functions with the largest own time).
"""
import argparse
import cProfile
import io
import json
import pstats
import statistics
import time

import torch

import iwp
from iwp.bench import real_size as bench_models

p = argparse.ArgumentParser()
p.add_argument("--model-shape", default="llava-onevision-0.5b")
p.add_argument("--input", default="image")
p.add_argument("--arms", default="none,iwp@1.0,iwp@0.111,random@0.111")
p.add_argument("--new-tokens", type=int, default=64)
p.add_argument("--rounds", type=int, default=7)
p.add_argument("--json", default=None)
p.add_argument("--device", default="cuda")
p.add_argument("--small", action="store_true", help="tiny widths (CPU dry run)")
a = p.parse_args()
cuda = a.device.startswith("cuda")
sync = torch.cuda.synchronize if cuda else (lambda: None)

model = bench_models.build_model(bench_models.real_config(a.model_shape, small=a.small), a.device,
                                 torch.bfloat16 if cuda else torch.float32)
prompt = bench_models.build_prompt(model, a.input)


def configure(arm: str) -> None:
    iwp.remove(model)
    if arm != "none":
        method, ratio = arm.split("@")
        iwp.apply(model, keep_ratio=float(ratio), method=method)


class Stamps:
    """A logits processor that stamps the host clock at every decoding step (generate calls it once a step,
    after the step's logits are computed; the stamps' intervals are the decoding steps' wall times)."""
    def __init__(self):
        self.t = []

    def __call__(self, input_ids, scores):
        self.t.append(time.perf_counter())
        return scores


def gen(n: int, stamps: Stamps | None = None) -> float:
    sync()
    t = time.perf_counter()
    extra = {"logits_processor": [stamps]} if stamps is not None else {}
    with torch.no_grad():
        model.generate(**prompt.kwargs, max_new_tokens=n, min_new_tokens=n, do_sample=False, **extra)
    sync()
    return time.perf_counter() - t


arms = a.arms.split(",")
N = a.new_tokens
per_token = {arm: [] for arm in arms}
steps = {arm: [] for arm in arms}                  # every decoding step's interval, all rounds
for arm in arms:                                   # warm-up: kernels, allocator, Triton
    configure(arm)
    gen(1), gen(N + 1)
for r in range(a.rounds):
    for arm in arms:
        configure(arm)
        stamps = Stamps()
        one, full = gen(1), gen(N + 1, stamps)
        per_token[arm].append((full - one) / N * 1e3)
        steps[arm] += [(b - a_) * 1e3 for a_, b in zip(stamps.t, stamps.t[1:])]
result = {"model_shape": a.model_shape, "input": a.input, "new_tokens": N, "rounds": a.rounds,
          "gpu": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
          "decode_ms_per_token": {arm: {"median": statistics.median(v), "all": v} for arm, v in per_token.items()},
          "step_ms": {arm: {"median": statistics.median(v), "q25": statistics.quantiles(v, n=4)[0],
                            "q75": statistics.quantiles(v, n=4)[2], "n": len(v)} for arm, v in steps.items()},
          "profile": {}}
base = per_token[arms[0]]
result["paired_minus_first_ms"] = {arm: {"median": statistics.median(a - b for a, b in zip(v, base)),
                                         "all": [a - b for a, b in zip(v, base)]} for arm, v in per_token.items()}
print({arm: round(statistics.median(v), 3) for arm, v in per_token.items()}, flush=True)
print("median step ms", {arm: round(v["median"], 3) for arm, v in result["step_ms"].items()}, flush=True)
print("paired vs", arms[0], {a: round(v["median"], 3) for a, v in result["paired_minus_first_ms"].items()}, flush=True)


def save():
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


save()
P = 8                                             # profiled generations are short: the profiler is slow
HOOKS = ("_on_call", "_after_call", "_on_layer")

for arm in arms:
    configure(arm)
    gen(P + 1)
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=acts) as prof:
        gen(P + 1)
    runtime, kernels_us, n_kernels = {}, 0.0, 0
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels_us += e.device_time
            n_kernels += 1
        elif e.name.startswith("cuda") or e.name.startswith("cu"):
            runtime[e.name] = runtime.get(e.name, 0) + 1
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    cp = cProfile.Profile()
    cp.enable()
    gen(P + 1)
    cp.disable()
    out = io.StringIO()
    stats = pstats.Stats(cp, stream=out)
    stats.sort_stats("tottime").print_stats(30)
    hooks = {f"{fn}": (cc, ct) for (file, line, fn), (cc, nc, tt, ct, callers) in stats.stats.items()
             if fn in HOOKS and "iwp" in file}
    per_step = {fn: {"calls": cc, "ms_per_generation": ct * 1e3} for fn, (cc, ct) in hooks.items()}
    result["profile"][arm] = {"new_tokens": P, "runtime_calls": runtime, "gpu_kernel_ms": kernels_us / 1e3,
                              "kernels": n_kernels, "hooks_host_time_cprofile": per_step,
                              "torch_table": table, "cprofile": out.getvalue()[-6000:]}
    print(f"=== {arm}: kernels {n_kernels}, GPU kernel time {kernels_us / 1e3:.1f} ms, hooks {per_step}, "
          f"runtime {runtime}", flush=True)
    save()
iwp.remove(model)
