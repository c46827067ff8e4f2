#!/usr/bin/env bash
# Toy v2 (issue 14): three training recipes side by side on one H200 (they share it), about 8.5 minutes.
# Chosen by full-token validation accuracy only (no selector has been run on any v2 model). All: context
# curriculum (the first 90% of steps see 48 visual tokens per frame: every object, the rest random background,
# at their original positions; the last 10% all 576), training-only token probes, attention supervision at
# layer 4 (<sep> -> the asked objects) and at layer 1 (<sep> -> its question's colour / shape / digit words).
#   a: lr 1.5e-3, batch 128 images + 16 videos, 8 turns   b: as a, lr 3e-3   c: as a, batch 256 + 32
# Writes $OUT/{a,b,c}.safetensors (+ reports) and keeps the models in /tmp/toy2-{a,b,c}.
set -uo pipefail
OUT=${OUT:-out-toy2}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
BUDGET=${TRAIN_BUDGET:-400}
common="--steps 100000 --short-frac 0.9 --short-keep 48 --turns 8 --warmup 150 --attn 1 --attn-layer 4 --gather-layer 1 \
  --time-budget $BUDGET --val-every 400 --log-every 100 --eval-n 400 --eval-videos 120"
python -m iwp.toy.train2 --out /tmp/toy2-a $common --lr 1.5e-3 --batch 128 --video-batch 16 > "$OUT/a.log" 2>&1 &
python -m iwp.toy.train2 --out /tmp/toy2-b $common --lr 3e-3 --batch 128 --video-batch 16 > "$OUT/b.log" 2>&1 &
python -m iwp.toy.train2 --out /tmp/toy2-c $common --lr 1.5e-3 --batch 256 --video-batch 32 > "$OUT/c.log" 2>&1 &
wait
for v in a b c; do
  cp /tmp/toy2-$v/model.safetensors "$OUT/$v.safetensors" 2>/dev/null
  cp /tmp/toy2-$v/train_report.json "$OUT/$v-report.json" 2>/dev/null
done
grep -h "test\|steps/s" "$OUT"/*.log
