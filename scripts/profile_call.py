"""Host time of one generate() by function, unpruned vs pruned: what the pruning hooks add outside the cut.

    python scripts/profile_call.py --model-shape llava-onevision-7b --input video32 --methods none,random
"""
import argparse
import cProfile
import io
import pstats

import torch

import iwp
from iwp.bench import real_size as bench_models

p = argparse.ArgumentParser()
p.add_argument("--model-shape", default="llava-onevision-7b")
p.add_argument("--input", default="video32")
p.add_argument("--methods", default="none,random,iwp")
a = p.parse_args()
model = bench_models.build_model(bench_models.real_config(a.model_shape), "cuda")
prompt = bench_models.build_prompt(model, a.input)
bench_models.set_vision_speed(model, prompt, pooling=bench_models.set_pooling(model, prompt))
for method in a.methods.split(","):
    bench_models.configure(model, None if method == "none" else method, 0.111, 2)
    run = lambda: model.generate(**prompt.kwargs, max_new_tokens=1, do_sample=False)   # noqa: E731
    with torch.no_grad():
        for _ in range(3):
            run()
        torch.cuda.synchronize()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(5):
            run()
            torch.cuda.synchronize()
        prof.disable()
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out).sort_stats("tottime")
    st.print_stats(18)
    print(f"===== {method}\n" + out.getvalue()[-4500:])
