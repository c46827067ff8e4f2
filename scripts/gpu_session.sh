#!/usr/bin/env bash
# One H200 call for this session's GPU measurements (device time is short: every step is capped, and what a
# step leaves is kept even if it times out). Results: $OUT/results.tgz (all JSON, logs) and $OUT/progress.log.
#   GPU tests (kernels, PC-MMR steps, device map, hook) | issue 19 vision tower stock vs accelerated |
#   issue 19/17 Qwen2.5-VL-7B video32 (+ stock-vision unpruned) | issue 17 OneVision-0.5B image+video32 arms |
#   issue 16 Qwen3-VL-8B image+video32 | issue 12 the demo's runner with real processors
source "$(dirname "$0")/gpu_lib.sh"
step tests 60 python -m pytest -q -x tests/test_pool_kernel.py tests/test_mmr.py tests/test_device_map.py tests/test_compat.py
step vision 55 python -m iwp.bench vision --repeats 5 --warmup 1 --profile 30 --json "$W/vision-qwen2.5-vl-7b.json"
step qwen7b 95 python -m iwp.bench models --model-shape qwen2.5-vl-7b --input video32 --methods iwp --ratios 1.0,0.111 \
  --layer 2 --repeats 5 --warmup 1 --new-tokens 32 --time-budget 45 --json "$W/models-qwen2.5-vl-7b-{input}-{gpu}.json"
step qwen7b_stock 45 python -m iwp.bench models --model-shape qwen2.5-vl-7b --input video32 --methods iwp --ratios 1.0 \
  --layer 2 --stock-vision --repeats 3 --warmup 1 --new-tokens 32 --time-budget 15 \
  --json "$W/models-qwen2.5-vl-7b-{input}-{gpu}-stock-vision.json"
step ov05b 75 python -m iwp.bench models --model-shape llava-onevision-0.5b --input image,video32 --methods iwp \
  --ratios 1.0,0.222,0.111 --keep-one --layer 2 --repeats 7 --warmup 1 --new-tokens 48 --time-budget 25 \
  --json "$W/models-llava-onevision-0.5b-{input}-{gpu}.json"
step qwen3 95 python -m iwp.bench models --model-shape qwen3-vl-8b --input video32,image --methods iwp,fastv \
  --ratios 1.0,0.222,0.111 --layer 2 --repeats 5 --warmup 1 --new-tokens 16 --time-budget 30 \
  --json "$W/models-qwen3-vl-8b-{input}-{gpu}.json"
step demo_runner 90 python scripts/gpu_demo_runner.py --budget-s 70 --rounds 2 --out "$W/demo-runner-h200.json"
finish
