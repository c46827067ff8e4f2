# Shared by the scripts/gpu_*.sh session files: `source scripts/gpu_lib.sh` after setting OUT (and BUDGET, seconds).
# step NAME LIMIT CMD...: runs CMD capped at LIMIT seconds and at what is left of BUDGET; its log goes to $W/NAME.log
# and its tail to $OUT/progress.log. Everything in $W is packed into $OUT/results.tgz on exit.
set -u
OUT=${OUT:?}
W=/tmp/gpu-session; mkdir -p "$W"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
START=$(date +%s); BUDGET=${BUDGET:-515}
log() { echo "[+$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/progress.log"; }
step() {
  local name=$1 limit=$2 left; shift 2
  left=$(( BUDGET - ($(date +%s) - START) ))
  (( limit > left )) && limit=$left
  if (( limit < 15 )); then log "skip $name (${left}s left)"; return 0; fi
  log "start $name (limit ${limit}s)"
  timeout -k 5 "$limit" "$@" > "$W/$name.log" 2>&1; log "end $name rc=$?"; tail -n 4 "$W/$name.log" >> "$OUT/progress.log"
}
pack() { tar czf "$OUT/results.tgz" -C "$W" . 2>/dev/null; }
trap pack EXIT
log "$(nvidia-smi --query-gpu=name --format=csv,noheader) $(python -c 'import torch, transformers; print(torch.__version__, transformers.__version__)')"
# finish: the markdown summary of every models-*.json and demo-runner*.json result, copied to $OUT.
finish() {
  python -m iwp.bench models --report "$W"/models-*.json > "$W/summary.md" 2>&1
  for f in "$W"/demo-runner*.json; do
    [ -e "$f" ] && python scripts/gpu_demo_runner.py --report "$f" >> "$W/summary.md" 2>&1
  done
  cp "$W/summary.md" "$OUT/summary.md" 2>/dev/null
  log done
}
