"""Where the pruning hook's host time goes at real size: cProfile of api.select_tokens during one generate().

    python scripts/profile_hook.py --model-shape llava-onevision-7b --input video32 --methods random,iwp
"""
import argparse
import cProfile
import io
import pstats

import torch

import iwp
from iwp.hook import api
from iwp.bench import real_size as bench_models

p = argparse.ArgumentParser()
p.add_argument("--model-shape", default="llava-onevision-7b")
p.add_argument("--input", default="video32")
p.add_argument("--methods", default="random,iwp")
p.add_argument("--keep-ratio", type=float, default=0.111)
a = p.parse_args()
model = bench_models.build_model(bench_models.real_config(a.model_shape), "cuda")
prompt = bench_models.build_prompt(model, a.input)
stock = api.select_tokens
for method in a.methods.split(","):
    iwp.apply(model, keep_ratio=a.keep_ratio, method=method)
    for _ in range(3):                                   # warm-up: kernels compiled, graphs captured
        with torch.no_grad():
            model.generate(**prompt.kwargs, max_new_tokens=1, do_sample=False)
    prof = cProfile.Profile()

    def profiled(*args, **kwargs):
        prof.enable()
        try:
            return stock(*args, **kwargs)
        finally:
            prof.disable()

    api.select_tokens = profiled
    try:
        for _ in range(5):
            with torch.no_grad():
                model.generate(**prompt.kwargs, max_new_tokens=1, do_sample=False)
    finally:
        api.select_tokens = stock
    print(f"=== {method}: hook seconds {iwp.last_selection(model)[0].seconds * 1e3:.2f} ms (last call)")
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(22)
    print(out.getvalue()[-5000:])
    iwp.remove(model)
