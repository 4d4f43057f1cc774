#!/usr/bin/env bash
# One prepared run on a CUDA machine: per-step chunk figures (eager, compiled cold, compiled
# warm with loader processes, and warm with loader threads), the in-memory throughput variants
# against the published loop, then the GPU tests. At most about 9 minutes: each stage has
# its own timeout.
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
timeout 240 python3 benchmarks/segment.py chunk --work "$WORK" --device cuda --images "$IMAGES" \
  --resolution "$RES" --batch-size 64 --variants eager,cold,warm,warm-threads \
  --json "$OUT/chunk.json" 2>&1 | tee "$OUT/chunk.log"
timeout 160 python3 benchmarks/segment.py throughput --device cuda --images 1024 \
  --published-images 64 --published-modes fp32 --cache "$WORK/inductor" \
  --variants compiled-bf16:64,compiled-fp32:64,eager-bf16:64,eager-fp32:64 \
  --json "$OUT/throughput.json" 2>&1 | tee "$OUT/throughput.log"
FFHQ_TEST_COMPILE_CACHE="$WORK/inductor" timeout 120 python3 -m pytest -c /dev/null --rootdir . \
  -p no:cacheprovider -m gpu -q -rs ffhq_aging_assets_tests/test_lib_segment.py 2>&1 \
  | grep -v '^DEBUG' | tee "$OUT/pytest.log"
echo "=== summary ==="
grep -h '^|\|faces at\|published model vs' "$OUT/chunk.log" "$OUT/throughput.log"
tail -n 5 "$OUT/pytest.log"
