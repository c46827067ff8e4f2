#!/usr/bin/env bash
# The pre-registered v2 benchmark (README, "Benchmark v2") on the model scripts/toy2_train.sh left in
# /tmp/toy2; one H200, about 3 minutes (about 5 s per configuration of 300 images + 80 videos, 28 of them).
# Writes $OUT/bench.json and $OUT/bench.md. Run it only if the model met the bar (>= 97% on every kind).
set -euo pipefail
OUT=${OUT:-out-toy2}
PYTHONUNBUFFERED=1 timeout 330 python -m iwp.evaluate.toy2 --model /tmp/toy2 --budget-seconds 300 \
  --json "$OUT/bench.json" --markdown "$OUT/bench.md"
