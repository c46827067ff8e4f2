#!/usr/bin/env bash
# The demo's own Runner on one GPU (issue 12, item 4): OneVision-0.5B/-7B and Qwen2.5-VL-3B/-7B, real configs and
# processors (tests/fixtures/real-processors; torchvision needed for native video), random bf16 weights, a
# 1920x1080 image and a 32-frame video, unpruned / IWP 22.2% / 11.1%; plus the native-video and real-processor
# tests on the GPU machine's torchvision. Usage: OUT=/some/dir bash scripts/gpu_demo_runner.sh (about 3-5 min, H200)
set -uo pipefail
OUT="${OUT:-out}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
timeout 120 python -m pytest -q -rs tests/test_processors.py tests/test_real_models.py 2>&1 | tee "$OUT/tests.txt"
timeout 330 python scripts/gpu_demo_runner.py --budget-s 240 --out "$OUT/demo-runner-h200.json" 2>&1 \
    | tee "$OUT/demo-runner.txt"
python scripts/gpu_demo_runner.py --report "$OUT/demo-runner-h200.json" | tee "$OUT/demo-runner.md"
