#!/usr/bin/env bash
# aligned_mlp (iwp.accelerate_vision(model, exact=False)) on one H200, from the repository root; results under $OUT.
# Qwen2.5-VL-7B's vision tower (random bf16 weights, sdpa), python -m iwp.bench vision --inexact-vision, on a
# 32-frame 1280x720 video (grid 16x48x60) and a 1280x720 image (1x52x92):
#   - median ms of three interleaved arms: stock, accelerated (exact parts, checked bitwise), inexact (exact parts
#     + aligned_mlp: the vision MLP padded 3420 -> 3424, NOT bitwise);
#   - the inexact arm's difference from stock (max |diff|, that over max |x|, relative L2; visual tokens and last
#     hidden states);
#   - a torch.profiler table and the top device kernels (full names) of one inexact pass: were cuBLAS's
#     cutlass_80_tensorop_bf16_s1681* GEMMs (the MLP's, 157 ms of 357 ms before) replaced by Hopper nvjet ones?
# About 60-90 s (model build, 2 inputs x (warm-up + 5 rounds x 3 arms) + profiles); killed at 140 s.
#
#   OUT=/tmp/out bash scripts/gpu_vision_aligned.sh
#   OUT=/tmp/out IWP_GPU_SMALL=1 bash scripts/gpu_vision_aligned.sh      (CPU dry run: 2 blocks, small grids)
set -u
OUT=${OUT:?set OUT to the folder for the results}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error
JSON="$OUT/vision-aligned-qwen2.5-vl-7b.json"

{ nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv 2>&1 || true
  python -c "import torch, transformers, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, transformers.__version__)"
} > "$OUT/env.log" 2>&1
cat "$OUT/env.log"

if [ "${IWP_GPU_SMALL:-0}" = 1 ]; then
  ARGS=(--small --input video4,image --repeats 1 --warmup 0 --profile 10)
else
  ARGS=(--input video32,image --repeats 5 --warmup 1 --profile 40)
fi
timeout -k 10 140 python -m iwp.bench vision --inexact-vision "${ARGS[@]}" --json "$JSON" > "$OUT/vision-aligned.log" 2>&1
echo "bench vision: rc=$?"
grep -v '^USDT' "$OUT/vision-aligned.log" | grep -E '^(video|image)|NOT bitwise' || tail -n 20 "$OUT/vision-aligned.log"

python - "$JSON" > "$OUT/summary.md" 2>&1 <<'EOF' || true
import json, sys
r = json.load(open(sys.argv[1]))
print(f"**{r['model']}** ({r['device']}, torch {r['torch']}, transformers {r['transformers']}, {r['dtype']}, "
      f"{r['attn_implementation']}; medians of {r['repeats']} interleaved rounds)\n")
print("| input | tokens | stock ms | exact ms (bitwise) | + aligned_mlp ms | x exact | x aligned | aligned vs stock: "
      "max abs diff | max diff / max abs | rel L2 |\n|---|---|---|---|---|---|---|---|---|---|")
for name, x in r["inputs"].items():
    if "error" in x:
        print(f"| {name} | {x['error']} |" + " |" * 8)
        continue
    ms, d = x["ms"], x["inexact"]["pooler_output"]
    print(f"| {name} | {x['tokens']} | {ms['stock']:.1f} | {ms['accelerated']:.1f} ({x['bitwise_equal']}) | "
          f"{ms['inexact']:.1f} | {x['speedup']:.2f} | {x['inexact']['speedup']:.2f} | {d['max_abs_diff']:.3g} | "
          f"{d['max_rel_diff']:.3g} | {d['rel_l2_diff']:.3g} |")
for name, x in r["inputs"].items():
    kernels = x.get("kernels") or []
    if not kernels:
        continue
    gemm = lambda word: sum(k["self_device_ms"] for k in kernels if word in k["name"])    # noqa: E731
    print(f"\n{name}, one pass with aligned_mlp ({', '.join(x['inexact']['parts']) or 'not applied'}): "
          f"cutlass_80 kernels {gemm('cutlass_80'):.1f} ms, nvjet kernels {gemm('nvjet'):.1f} ms (of the top "
          f"{len(kernels)} kernels)\n\n| kernel | self device ms | calls |\n|---|---|---|")
    for k in kernels[:15]:
        print(f"| {k['name'][:120]} | {k['self_device_ms']:.2f} | {k['calls']} |")
EOF
cat "$OUT/summary.md"
