#!/usr/bin/env bash
# Toy model v2 (issue 14), the next attempt, one H200, about 9 minutes (TRAIN_BUDGET seconds of training, then
# the full-token test). Fixed before any selector is run on a v2 model: from scratch; a context curriculum (90%
# of the steps see 48 visual tokens per frame: every object token, the rest random background, at their original
# positions; the last 10% all 576); training-only token probes; attention supervision: each question word onto
# the visual tokens showing it (--word-layer 1: the supervision that first left the answer-prior plateau, run 4
# in assets/benchmarks/toy2-train.json), <sep> onto its question's words (--gather-layer 1) and onto the asked
# objects (--attn-layer 4). Images and 8-frame videos.
# Writes $OUT/m/{model.safetensors,config.json,generation_config.json,train_report.json}; the model (with its
# processor) stays in /tmp/toy2 for scripts/toy2_bench.sh in the same call, if it meets the bar.
set -euo pipefail
OUT=${OUT:-out-toy2}
PYTHONUNBUFFERED=1 python -m iwp.toy.train2 --out /tmp/toy2 --steps 100000 --short-frac 0.9 --short-keep 48 \
  --batch 128 --video-batch 16 --turns 8 --lr 1.5e-3 --warmup 100 --attn 1 --attn-layer 4 --gather-layer 1 \
  --word-layer 1 --time-budget "${TRAIN_BUDGET:-480}" --val-every 1000 --eval-n 600 --eval-videos 200
mkdir -p "$OUT/m"
cp /tmp/toy2/{model.safetensors,config.json,generation_config.json,train_report.json} "$OUT/m/"
