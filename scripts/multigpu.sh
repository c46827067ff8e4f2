#!/usr/bin/env bash
# Issue 6 on one machine with several GPUs, from the repository root; everything it writes goes under $OUT:
#   1. Qwen2.5-VL-72B shapes split over every GPU (accelerate), unpruned vs IWP / random at 11.1%, image and video
#   2. python -m iwp.evaluate in one process vs torchrun over every GPU: wall and evaluate time, efficiency,
#      identical accuracy rows
#   3. the GPU test of a model split over two devices (tests/test_device_map.py)
# Each step runs under `timeout` and the next one runs whatever happened; the whole stays under
# IWP_MULTIGPU_BUDGET seconds (default 470; about 6 minutes on 2 H200s).
# IWP_MULTIGPU_SMALL=1: tiny shapes and a few questions (CPU dry run).
#
#   OUT=/tmp/out bash scripts/multigpu.sh
set -u
OUT=${OUT:?set OUT to the folder for the results}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."

# NVLink multicast stays off: it can take a shared host's GPUs down
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
export TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error
BUDGET=${IWP_MULTIGPU_BUDGET:-470}
SMALL=${IWP_MULTIGPU_SMALL:-0}
NGPU=$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
START=$(date +%s)

log() { echo "[$(date -u +%H:%M:%S) +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/progress.log"; }

# step NAME LIMIT CMD...: CMD under timeout (capped by what is left of BUDGET), output in $OUT/NAME.log
step() {
  local name=$1 limit=$2 left rc
  shift 2
  left=$(( BUDGET - ($(date +%s) - START) - 15 ))
  (( limit > left )) && limit=$left
  if (( limit < 20 )); then log "skip $name: ${left}s of the budget left"; return; fi
  log "start $name (limit ${limit}s): $*"
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  log "end $name: rc=$rc$( ((rc == 124)) && echo ' (timed out)')"
  tail -n 8 "$OUT/$name.log"
}

log "multigpu.sh: $NGPU GPU(s), small=$SMALL, budget ${BUDGET}s, out $OUT"
step env 30 bash -c 'nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv 2>&1 || true
  nvidia-smi topo -m 2>&1 | head -8 || true
  python -c "import torch, transformers, accelerate, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, transformers.__version__, accelerate.__version__)"
  nproc; free -g | head -2; env | grep -E "NCCL_NVLS|MULTICAST|NVSHMEM" | sort'

if [ "$SMALL" = 1 ]; then
  BENCH=(--small --size 112,168 --frames 4 --repeats 1 --new-tokens 2)
  EVAL=(--questions 8 --batch-size 4 --methods iwp random --ratios 1.0 0.111 --threads 1 --timeout 120)
else
  BENCH=(--model-shape qwen2.5-vl-72b --repeats 3 --warmup 1 --new-tokens 8 --time-budget 75)
  # one-process evaluate aimed at 60 s (two calibration runs fit its fixed and per-question seconds)
  EVAL=(--target-seconds 60 --timeout 150)
fi
step bench72b 250 python -m iwp.bench.multigpu --input image,video32 "${BENCH[@]}" --json "$OUT/multigpu.json"
step evalscaling 270 python -m iwp.evaluate.scaling --nproc "$(( NGPU > 1 ? NGPU : 2 ))" "${EVAL[@]}" \
  --json "$OUT/evaluate-scaling.json" --out-dir "$OUT/evaluate"
if python -c "import pytest" 2>/dev/null; then
  step gputest 60 python -m pytest -q -p no:cacheprovider tests/test_device_map.py
fi

log "summary"
[ -f "$OUT/multigpu.json" ] && python -m iwp.bench.multigpu --report "$OUT/multigpu.json" 2>&1 | tee "$OUT/summary.md"
[ -f "$OUT/evaluate-scaling.json" ] && python -c "import json, sys; from iwp.evaluate.scaling import markdown
r = json.load(open(sys.argv[1])); print(markdown(r) if 'scaling' in r else json.dumps(r)[:1500])" \
  "$OUT/evaluate-scaling.json" 2>&1 | tee -a "$OUT/summary.md"
log "done in $(( $(date +%s) - START ))s"
