#!/usr/bin/env bash
# One prepared run on a CUDA machine, at most 9.5 minutes (run it with timeout_s 580), in order
# of what it settles:
# 1. whole chunk steps at 256 (the default resolution), each a fresh process as in a Dagster run:
#    eager bf16 (the asset's default), strict fp32 in the default layout (NCHW) without a
#    search and channels-last with a capped cuDNN search (limit1), then the AOTInductor
#    packages (bf16 channels-last, fp32 NCHW): built into an empty folder, then loaded warm;
# 2. the published loop on the same card (batch 1, strict fp32), faces at 256;
# 3. eager bf16, the bf16 package 1. built, and fp32 NCHW at 1024;
# 4. the published loop with faces at 1024;
# 5. with PYTEST=1, the GPU tests (PYTEST_K selects; PYTEST_LIMIT seconds).
# Each stage has its own time limit, and every row is logged as it comes, so a stage cut short
# keeps what it measured. Needs python3 with torch, numpy, pillow, scipy, pyarrow and requests;
# Dagster is not needed. Writes to $OUT (default /tmp/gpu_check): gpu.txt, all.log and one JSON
# per stage that finished.
# Usage: bash benchmarks/gpu_check.sh [images-per-chunk]
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
IMAGES=${1:-1000}
WORK=${WORK:-/tmp/ffhq_seg_bench}
# DEVICE=cpu BATCH=4 with 4 images tries the script's plumbing on a machine without a GPU.
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-64}
LOG="$OUT/all.log"
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1

stage() {
  local limit=$1 began
  shift
  began=$(date +%s)
  echo "=== $* (limit ${limit} s)" | tee -a "$LOG"
  timeout "$limit" "$@" 2>&1 | grep -v '^DEBUG' | tee -a "$LOG"
  echo "=== exit ${PIPESTATUS[0]} after $(($(date +%s) - began)) s" | tee -a "$LOG"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
  --format=csv | tee "$OUT/gpu.txt"
python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda,
torch.cuda.get_device_properties(0))" | tee -a "$OUT/gpu.txt"
g++ --version | head -n 1 | tee -a "$OUT/gpu.txt"

chunk() {
  local limit=$1 res=$2 name=$3 variants=$4
  stage "$limit" python3 -m benchmarks.segment chunk --work "$WORK/$res" --aot-cache "$WORK/aot" \
    --device "$DEVICE" --images "$IMAGES" --resolution "$res" --batch-size "$BATCH" \
    --variants "$variants" --json "$OUT/chunk$res$name.json"
}
published() {
  local limit=$1 res=$2
  stage "$limit" python3 -m benchmarks.segment throughput --device "$DEVICE" --images $((2 * BATCH)) \
    --rounds 1 --published-images "$BATCH" --published-modes fp32 --face-size "$res" \
    --resolution "$res" --variants "eager-bf16:$BATCH" --json "$OUT/published$res.json"
}

# A stage per kind of step, so that a slow compile cannot starve the rest.
chunk 120 256 a eager,eager-fp32-nchw,eager-fp32-limit1
chunk 150 256 b aotcold,aot
chunk 120 256 c aot-fp32-nchw,aot-fp32-nchw
published 45 256
chunk 80 1024 "" eager,aot,eager-fp32-nchw
published 45 1024
if [ "${PYTEST:-0}" = 1 ]; then
  # The GPU tests (-m gpu): about a minute without the compiled ones, three with them.
  stage "${PYTEST_LIMIT:-90}" python3 -m pytest -c /dev/null --rootdir . -p no:cacheprovider -m gpu \
    -k "${PYTEST_K:-not compiled and not aot}" -q -rs --durations=0 \
    ffhq_aging_assets_tests/test_lib_segment.py ffhq_aging_assets_tests/test_benchmarks_segment_variants.py
fi
echo "=== summary ===" | tee -a "$LOG"
grep -h '^|\|faces at\|published model vs\|^=== exit' "$LOG"
