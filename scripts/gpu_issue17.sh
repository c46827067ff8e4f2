#!/usr/bin/env bash
# One H200 call for issue 17 (and 18's leftover): where decoding time goes per arm (OneVision-0.5B image),
# OneVision-7B on the 32-frame video at 11.1% (TTFT target 2.5x) with a profile of the pruned prefill, and the
# ratio ladder at real size. Results: $OUT/results.tgz and $OUT/progress.log (see scripts/gpu_lib.sh).
BUDGET=${BUDGET:-420}
source "$(dirname "$0")/gpu_lib.sh"
step decode 130 python scripts/profile_decode.py --model-shape llava-onevision-0.5b --input image \
  --arms none,iwp@1.0,iwp@0.111 --rounds 5 --new-tokens 64 --json "$W/profile-decode-llava-onevision-0.5b-image-h200.json"
step ov7b 170 python -m iwp.bench models --model-shape llava-onevision-7b --input video32 --methods iwp,fastv \
  --ratios 1.0,0.111 --layer 2 --repeats 5 --warmup 1 --new-tokens 16 --time-budget 60 --profile \
  --json "$W/models-llava-onevision-7b-{input}-{gpu}.json"
step ladder 100 python scripts/ladder_gpu.py --out "$W/ladder-gpu.json"
finish
