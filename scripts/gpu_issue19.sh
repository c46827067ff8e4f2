#!/usr/bin/env bash
# One H200 call for issues 19 and 17: the vision MLP alignment (not bitwise) on Qwen2.5-VL-7B's tower; the
# 32-frame video end to end with transformers' own vision as an interleaved arm (exact parts only, then with
# aligned_mlp); where decoding time goes per arm (OneVision-0.5B image). Results: $OUT/results.tgz.
BUDGET=${BUDGET:-520}
source "$(dirname "$0")/gpu_lib.sh"
mkdir -p "$W/aligned"
step aligned 140 env OUT="$W/aligned" bash scripts/gpu_vision_aligned.sh
step qwen7b_exact 130 python -m iwp.bench models --model-shape qwen2.5-vl-7b --input video32 --methods iwp --ratios 1.0,0.111 \
  --layer 2 --stock-arm --repeats 5 --warmup 1 --new-tokens 32 --time-budget 50 --json "$W/models-qwen2.5-vl-7b-{input}-{gpu}-stock-arm.json"
step qwen7b_aligned 130 python -m iwp.bench models --model-shape qwen2.5-vl-7b --input video32 --methods iwp --ratios 1.0,0.111 \
  --layer 2 --stock-arm --inexact-vision --repeats 5 --warmup 1 --new-tokens 32 --time-budget 50 \
  --json "$W/models-qwen2.5-vl-7b-{input}-{gpu}-stock-arm-aligned.json"
step decode 110 python scripts/profile_decode.py --model-shape llava-onevision-0.5b --input image \
  --arms none,iwp@1.0,iwp@0.111 --rounds 9 --new-tokens 64 --json "$W/profile-decode-llava-onevision-0.5b-image-h200.json"
finish
