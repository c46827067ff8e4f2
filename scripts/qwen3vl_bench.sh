#!/usr/bin/env bash
# Qwen3-VL-8B shapes (published config, random bf16, nothing downloaded) on one GPU: unpruned vs IWP / FastV /
# DivPrune / random, a 720p image and a 32-frame 720p video (timestamped runs, DeepStack cut at K = 2).
# Everything goes under $OUT; about 5 minutes on one H200 (two inputs, 120 s of rounds each, plus the build).
# IWP_QWEN3_SMALL=1: tiny widths of the same shapes (a CPU dry run).
#
#   OUT=/tmp/out bash scripts/qwen3vl_bench.sh
set -u
OUT=${OUT:?set OUT to the folder for the results}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
if [ "${IWP_QWEN3_SMALL:-0}" = 1 ]; then
  ARGS=(--small --repeats 1 --warmup 0 --new-tokens 2 --ratios 1.0,0.111 --methods iwp,random)
else
  ARGS=(--repeats 5 --warmup 1 --layer 2 --time-budget 120 --methods iwp,fastv,divprune,random)
fi
timeout -k 10 330 python -m iwp.bench models --model-shape qwen3-vl-8b --input video32,image "${ARGS[@]}" \
  --json "$OUT/models-qwen3-vl-8b-{input}-{gpu}.json" 2>&1 | tee "$OUT/bench.log" | tail -n 40
python -m iwp.bench models --report "$OUT"/models-qwen3-vl-8b-*.json 2>&1 | tee "$OUT/summary.md"
