#!/usr/bin/env bash
# One H200 call closing issues 17 / 19 / 12: decoding per step by arm (OneVision-0.5B image: per-step wall
# medians, GPU kernel time, hook host time), Qwen3-VL-8B's video with transformers' own vision as an
# interleaved arm (accelerate_vision timed on a GPU), the demo's runner with iwp.accelerate_vision as the demo
# loads models. Results: $OUT/results.tgz (scripts/gpu_lib.sh).
BUDGET=${BUDGET:-400}
source "$(dirname "$0")/gpu_lib.sh"
step decode 150 python scripts/profile_decode.py --model-shape llava-onevision-0.5b --input image \
  --arms none,iwp@1.0,iwp@0.111 --rounds 9 --new-tokens 64 --json "$W/profile-decode-steps-llava-onevision-0.5b-image-h200.json"
step qwen3 110 python -m iwp.bench models --model-shape qwen3-vl-8b --input video32 --methods iwp --ratios 1.0,0.111 \
  --layer 2 --stock-arm --repeats 5 --warmup 1 --new-tokens 16 --time-budget 40 \
  --json "$W/models-qwen3-vl-8b-{input}-{gpu}-stock-arm.json"
step demo_runner 110 python scripts/gpu_demo_runner.py --budget-s 80 --rounds 2 --out "$W/demo-runner-accelerated-h200.json"
finish
