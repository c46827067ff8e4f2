#!/usr/bin/env bash
# fused_rotary on one H200 (at most ~115 s: 45 + 65 s limits), from the repository root; results under $OUT:
#   1. rotary.json (+ rotary.log): scripts/gpu_rotary.py, the Triton rotary kernel bitwise against transformers'
#      apply_rotary_pos_emb_vision on real shapes (bf16/fp16/fp32, S = 46080 and 4784, head_dim 80 and 72) with
#      times, and Qwen2.5-VL-7B's vision tower on a 32-frame video accelerated with / without fused_rotary;
#   2. vision-rotary.json (+ vision-rotary.log): python -m iwp.bench vision, stock vs accelerate_vision (the new
#      part included), bitwise check built in.
#   OUT=/tmp/out bash scripts/gpu_rotary.sh
set -u
OUT=${OUT:?set OUT to the folder for the results}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
python -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" \
  2>&1 | tee "$OUT/env.log"
timeout -k 5 45 python scripts/gpu_rotary.py "$OUT/rotary.json" > "$OUT/rotary.log" 2>&1
echo "gpu_rotary.py rc=$?"; tail -n 25 "$OUT/rotary.log"
timeout -k 5 65 python -m iwp.bench vision --repeats 5 --warmup 1 --profile 30 --json "$OUT/vision-rotary.json" \
  > "$OUT/vision-rotary.log" 2>&1
echo "bench vision rc=$?"; grep -E "bitwise|rotary|error" "$OUT/vision-rotary.log" | head -20
