#!/usr/bin/env bash
# PC-MMR's real steps on a GPU (issue 15, item 3): the kernel tests (steps equal the PyTorch path's, eager
# and graph runs agree, recording adds no host sync) and the selection bench with its step sizes per N.
# Usage: OUT=/some/dir bash scripts/gpu_steps.sh   (about 3-4 minutes on one H200)
set -euo pipefail
OUT="${OUT:-out}"
mkdir -p "$OUT"
python -m pytest -q tests/test_pool_kernel.py tests/test_mmr.py 2>&1 | tee "$OUT/tests.txt"
python -m iwp.bench selection --sizes 576 2880 6272 --repeats 20 --greedy-repeats 2 --warmup 3 \
    --json "$OUT/selection-steps.json" 2>&1 | tee "$OUT/bench.txt"
