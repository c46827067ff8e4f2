#!/usr/bin/env bash
# The session's last H200 call: fused_rotary on the GPU (bitwise check, kernel and tower times, the vision
# benchmark), Qwen2.5-VL-7B's video end to end with the stock-vision arm, and the ratio ladder at real size
# (issue 18). Results: $OUT/results.tgz (scripts/gpu_lib.sh).
BUDGET=${BUDGET:-430}
source "$(dirname "$0")/gpu_lib.sh"
mkdir -p "$W/rotary"
step rotary 125 env OUT="$W/rotary" bash scripts/gpu_rotary.sh
step qwen7b 120 python -m iwp.bench models --model-shape qwen2.5-vl-7b --input video32 --methods iwp --ratios 1.0,0.111 \
  --layer 2 --stock-arm --repeats 5 --warmup 1 --new-tokens 32 --time-budget 45 \
  --json "$W/models-qwen2.5-vl-7b-{input}-{gpu}-stock-arm-rotary.json"
step ladder 110 python scripts/ladder_gpu.py --out "$W/ladder-gpu.json"
step tests 40 python -m pytest -q -x tests/test_vision_speed.py -k "rotary"
finish
