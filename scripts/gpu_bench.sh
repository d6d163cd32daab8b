#!/usr/bin/env bash
# The GPU benchmark on a device machine: Python 3.12 with CUDA torch, nothing to download from. Needs .gpu/
# (scripts/gpu_bundle.sh: wheels and upstream's package) carried with the working tree; writes to $OUT.
#   usage: scripts/gpu_bench.sh [gpu_bench.py arguments]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-bench}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site COSYVOICE_SRC=$PWD/.gpu/upstream COSYVOICE_MODEL_CACHE=/tmp/models
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>&1
python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())"
PYTHONUNBUFFERED=1 python3 scripts/gpu_bench.py --out "$OUT/gpu_bench.md" "$@" 2>&1 | tee "$OUT/log.txt"
