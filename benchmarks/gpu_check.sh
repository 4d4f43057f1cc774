#!/usr/bin/env bash
# One prepared run on a CUDA machine, at most 9.5 minutes (run it with timeout_s 580), in order
# of what it settles, each step a fresh process as in a Dagster run (faces decoded from PNG,
# masks written, process start included):
# 1. at 256 (the default resolution): the 2020 script's loop as a step (batch 1, PyTorch's
#    default numerics), eager bf16 (the asset's default), strict fp32 in the default layout
#    (NCHW) without a search and channels-last with a capped cuDNN search (limit1);
# 2. the AOTInductor packages at 256, bf16 channels-last and fp32 NCHW: built into an empty
#    folder, then loaded warm;
# 3. at 1024: the published loop, eager bf16, the bf16 package 2. built, and fp32 NCHW;
# 4. with PYTEST=1, the GPU tests (PYTEST_K selects; PYTEST_LIMIT seconds).
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
# A stage per kind of step, so that a slow compile cannot starve the rest. The published loop
# runs first in a stage: the agreement column is then each step's agreement with its masks.
chunk 160 256 a published,eager,eager-fp32-nchw,eager-fp32-limit1
chunk 150 256 b aotcold,aot
chunk 120 256 c aot-fp32-nchw,aot-fp32-nchw
chunk 125 1024 "" published,eager,aot,eager-fp32-nchw
if [ "${PYTEST:-0}" = 1 ]; then
  # The GPU tests (-m gpu): about a minute without the compiled ones, three with them.
  stage "${PYTEST_LIMIT:-90}" python3 -m pytest -c /dev/null --rootdir . -p no:cacheprovider -m gpu \
    -k "${PYTEST_K:-not compiled and not aot}" -q -rs --durations=0 \
    ffhq_aging_assets_tests/test_lib_segment.py ffhq_aging_assets_tests/test_benchmarks_segment_variants.py \
    ffhq_aging_assets_tests/test_lib_gpu_claim.py
fi
echo "=== summary ===" | tee -a "$LOG"
grep -h '^|\|faces at\|^failed\|^=== exit' "$LOG"
