#!/usr/bin/env bash
# The GPU check for issue 12, as one script (≤ 10 min on one GPU): the same serving benchmark on CUDA,
# where dynamic batching is expected to matter most. Run it through the device tool when a GPU is lent:
#   bash benchmarks/gpu_check.sh            (results land in $OUT, or ./gpu-results)
# The device machine is bare and offline: it uses that machine's own python3 and CUDA torch, with this
# checkout on PYTHONPATH; packages it lacks (see the device tool's KINDS.md) travel as wheels (.whl, carried).
# Nothing here runs in the test suite. Never quote a GPU figure that this script did not print.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-results}"; mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"
timeout 540 "$PY" benchmarks/serving.py --device cuda --threads 4 --repeats 3 --sweep 1,8,32,64 \
  --sweep-pairs 64 --clients 64 --requests 50 --output "$OUT/serving-gpu.json" 2>&1 | tee "$OUT/serving-gpu.md"
