"""Where PC-MMR's time goes on the GPU: kernel totals over a few graph replays (torch.profiler).

    python scripts/profile_selection.py --n 6272 --ratio 0.111
"""
import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from iwp.bench.selection import structured_tokens
from iwp.dual_form import information_magnitude
from iwp.mmr import pc_mmr
from iwp.selectors import DEFAULT_FIRST_CHUNK, DEFAULT_GROWTH

p = argparse.ArgumentParser()
p.add_argument("--n", type=int, default=6272)
p.add_argument("--ratio", type=float, default=0.111)
p.add_argument("--runs", type=int, default=5)
a = p.parse_args()
q, k, v = structured_tokens(a.n, device="cuda")
budget = round(a.ratio * a.n)


def run():
    return pc_mmr(information_magnitude(q, k, v), k, v, budget, 0.5, DEFAULT_FIRST_CHUNK, DEFAULT_GROWTH)


for _ in range(5):
    run()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(a.runs):
        run()
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
