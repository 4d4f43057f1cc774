#!/usr/bin/env bash
# One prepared run on a CUDA machine, in order of what it settles: the GPU tests, then the
# chunk step as Dagster runs it (a fresh process per step): the asset's defaults (bf16 with its
# fp32 comparison, loader threads), strict fp32 in channels-last and in the default layout
# (NCHW), each without and with cuDNN's algorithm search, compiled with an empty and with a
# warm inductor cache. With THROUGHPUT=1 also the in-memory throughput against the published
# loop. Each stage has its own timeout: at most 9 minutes, 11 with THROUGHPUT=1 (making the
# 1,000 test faces takes about a minute).
# PYTEST_K selects GPU tests ("not compiled" saves about a minute).
# Needs python3 with torch, numpy, pillow, scipy, pyarrow, requests and pytest; Dagster is
# not needed. Writes logs and JSON to $OUT (default /tmp/gpu_check).
# Usage: bash benchmarks/gpu_check.sh [images-per-chunk] [resolution]
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
IMAGES=${1:-1000}
RES=${2:-1024}
WORK=${WORK:-/tmp/ffhq_seg_bench}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
  --format=csv | tee "$OUT/gpu.txt"
python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda,
torch.cuda.get_device_properties(0))" | tee -a "$OUT/gpu.txt"
FFHQ_TEST_COMPILE_CACHE="$WORK/inductor-tests" timeout 110 python3 -m pytest -c /dev/null \
  --rootdir . -p no:cacheprovider -m gpu -k "${PYTEST_K:-}" -q -rs --durations=0 \
  ffhq_aging_assets_tests/test_lib_segment.py \
  ffhq_aging_assets_tests/test_benchmarks_segment_variants.py 2>&1 | grep -v '^DEBUG' | tee "$OUT/pytest.log"
timeout 420 python3 -m benchmarks.segment chunk --work "$WORK" --device cuda --images "$IMAGES" \
  --resolution "$RES" --batch-size 64 \
  --variants eager,eager-fp32,eager-fp32-nchw,eager-fp32-nchw-search,cold,warm,eager-fp32-search \
  --json "$OUT/chunk.json" 2>&1 | tee "$OUT/chunk.log"
if [ "${THROUGHPUT:-0}" = 1 ]; then
  timeout 120 python3 -m benchmarks.segment throughput --device cuda --images 512 --rounds 1 \
    --published-images 64 --published-modes fp32 --cache "$WORK/inductor" \
    --variants eager-bf16:64,eager-fp32:64,compiled-bf16:64 \
    --json "$OUT/throughput.json" 2>&1 | tee "$OUT/throughput.log"
fi
echo "=== summary ==="
tail -n 8 "$OUT/pytest.log"
grep -h '^|\|faces at\|published model vs' "$OUT"/chunk.log "$OUT"/throughput.log 2>/dev/null
