#!/usr/bin/env bash
# Issues 19 and 17 on one H200 (torch 2.11, transformers 5.17), from the repository root; everything goes under $OUT:
#   1. vision: Qwen2.5-VL-7B's vision tower (random bf16), stock vs iwp.accelerate_vision: bitwise check and
#      median times on a 32-frame video (grid 16x48x60), a 1280x720 image (1x52x92) and both in one call
#   2. qwen7b:  python -m iwp.bench models, Qwen2.5-VL-7B video32, unpruned vs IWP at 11.1%; qwen7b_stock: the
#      unpruned arm alone with transformers' own vision (--stock-vision), for stock TTFT vs accelerated + IWP
#   3. ov05b / qwen3b: the real small shapes, image + video32: unpatched, IWP keep 1.0, IWP 11.1%, IWP 22.2%
# accelerate_vision runs in both arms of every bench but qwen7b_stock (recorded in each JSON's "vision_speed").
# Each step runs under `timeout`, failures do not stop the next; the whole stays under IWP_GPU_VISION_BUDGET
# seconds (default 470). IWP_GPU_VISION_STEPS: a comma list of the steps to run (default all:
# vision,qwen7b,qwen7b_stock,ov05b,qwen3b), e.g. two calls under 6 minutes each. IWP_GPU_VISION_SMALL=1: tiny widths, few
# rounds (a CPU dry run).
#
#   OUT=/tmp/out bash scripts/gpu_vision.sh
#   OUT=/tmp/out IWP_GPU_VISION_STEPS=vision,qwen7b bash scripts/gpu_vision.sh
set -u
OUT=${OUT:?set OUT to the folder for the results}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error
BUDGET=${IWP_GPU_VISION_BUDGET:-470}
SMALL=${IWP_GPU_VISION_SMALL:-0}
STEPS=",${IWP_GPU_VISION_STEPS:-vision,qwen7b,qwen7b_stock,ov05b,qwen3b},"
START=$(date +%s)

log() { echo "[$(date -u +%H:%M:%S) +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/progress.log"; }

# step NAME LIMIT CMD...: CMD under timeout (capped by what is left of BUDGET), output in $OUT/NAME.log
step() {
  local name=$1 limit=$2 left rc
  shift 2
  if [ "$name" != env ] && [[ "$STEPS" != *",$name,"* ]]; then log "skip $name: not in IWP_GPU_VISION_STEPS"; return 0; fi
  [ "$SMALL" = 1 ] && limit=$(( limit * 10 ))          # CPU dry run: same steps, slower machine
  left=$(( BUDGET - ($(date +%s) - START) - 10 ))
  (( limit > left )) && limit=$left
  if (( limit < 20 )); then log "skip $name: ${left}s of the budget left"; return 0; fi
  log "start $name (limit ${limit}s): $*"
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  log "end $name: rc=$rc$( ((rc == 124)) && echo ' (timed out)')"
  tail -n 6 "$OUT/$name.log" || true
  return 0
}

log "gpu_vision.sh: small=$SMALL, budget ${BUDGET}s, out $OUT"
step env 30 bash -c 'nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv 2>&1 || true
  python -c "import torch, transformers, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, transformers.__version__)"'

if [ "$SMALL" = 1 ]; then
  VISION=(--small --repeats 1 --warmup 0 --profile 5)
  QWEN7=(--small --repeats 1 --warmup 0 --new-tokens 2)
  SMALLSHAPE=(--small --repeats 1 --warmup 0 --new-tokens 2)
else
  VISION=(--repeats 5 --warmup 1 --profile 30)
  QWEN7=(--repeats 5 --warmup 1 --new-tokens 32 --time-budget 60)
  SMALLSHAPE=(--repeats 7 --warmup 1 --new-tokens 48 --time-budget 30)
fi

step vision 70 python -m iwp.bench vision "${VISION[@]}" --json "$OUT/vision-qwen2.5-vl-7b.json"
step qwen7b 110 python -m iwp.bench models --model-shape qwen2.5-vl-7b --input video32 --methods iwp \
  --ratios 1.0,0.111 --layer 2 "${QWEN7[@]}" --json "$OUT/models-qwen2.5-vl-7b-{input}-{gpu}.json"
step qwen7b_stock 60 python -m iwp.bench models --model-shape qwen2.5-vl-7b --input video32 --methods iwp \
  --ratios 1.0 --layer 2 --stock-vision "${QWEN7[@]}" --time-budget 25 \
  --json "$OUT/models-qwen2.5-vl-7b-{input}-{gpu}-stock-vision.json"
step ov05b 100 python -m iwp.bench models --model-shape llava-onevision-0.5b --input image,video32 --methods iwp \
  --ratios 1.0,0.222,0.111 --keep-one --layer 2 "${SMALLSHAPE[@]}" \
  --json "$OUT/models-llava-onevision-0.5b-{input}-{gpu}.json"
step qwen3b 120 python -m iwp.bench models --model-shape qwen2.5-vl-3b --input image,video32 --methods iwp \
  --ratios 1.0,0.222,0.111 --keep-one --layer 2 "${SMALLSHAPE[@]}" \
  --json "$OUT/models-qwen2.5-vl-3b-{input}-{gpu}.json"

log "summary"
python -m iwp.bench models --report "$OUT"/models-*.json > "$OUT/summary.md" 2>&1 || true
python - "$OUT" >> "$OUT/summary.md" 2>&1 <<'EOF' || true
import json, pathlib, sys
for p in sorted(pathlib.Path(sys.argv[1]).glob("vision-*.json")):
    r = json.loads(p.read_text())
    print(f"\n**{r['model']}** ({r['device']}, torch {r['torch']}, transformers {r['transformers']}, {r['attn_implementation']})\n")
    print("| input | grids | tokens | bitwise equal | stock ms | accelerated ms | speed-up |\n|---|---|---|---|---|---|---|")
    for name, x in r["inputs"].items():
        if "error" in x:
            print(f"| {name} | {x['error']} |||||")
        else:
            print(f"| {name} | {x['grids']} | {x['tokens']} | {x['bitwise_equal']} | {x['ms']['stock']:.1f} | "
                  f"{x['ms']['accelerated']:.1f} | {x['speedup']:.2f}x |")
# issue 19's TTFT target: stock vision unpruned (qwen7b_stock) against accelerated vision + IWP at 11.1% (qwen7b)
out = pathlib.Path(sys.argv[1])
stock = sorted(out.glob("models-qwen2.5-vl-7b-video32-*-stock-vision.json"))
fast = [p for p in sorted(out.glob("models-qwen2.5-vl-7b-video32-*.json")) if "stock-vision" not in p.name]
if stock and fast:
    row = lambda p, m, k: next((r for r in json.loads(p.read_text())["runs"]
                                if r["method"] == m and r["keep_ratio"] == k and r["repeats"]), None)   # noqa: E731
    base, none, iwp = row(stock[0], "none", 1.0), row(fast[0], "none", 1.0), row(fast[0], "iwp", 0.111)
    if base and iwp:
        b, f = base["median"], iwp["median"]
        print(f"\nQwen2.5-VL-7B video32: stock unpruned TTFT {b['ttft_ms']:.1f} ms (vision {b['vision_ms']:.1f}), "
              f"accelerated unpruned {none['median']['ttft_ms']:.1f} ms (vision {none['median']['vision_ms']:.1f})"
              if none else "", end="")
        print(f"; accelerated + IWP 11.1% {f['ttft_ms']:.1f} ms (vision {f['vision_ms']:.1f}): "
              f"TTFT {b['ttft_ms'] / f['ttft_ms']:.2f}x (target >= 3x)")
EOF
cat "$OUT/summary.md" || true
log "done"
