#!/usr/bin/env bash
# The GPU check for issue 12, as one script (≤ 10 min on one GPU): the same serving benchmark on CUDA,
# where dynamic batching is expected to matter most. Run it through the device tool when a GPU is lent:
#   bash benchmarks/gpu_check.sh            (results land in $OUT, or ./gpu-results)
# Nothing here runs in the test suite. Never quote a GPU figure that this script did not print.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-results}"; mkdir -p "$OUT"
if [ ! -x .venv/bin/python ]; then ./setup.sh; fi
.venv/bin/python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
# The CPU wheel is pinned for this project's CPU machines; a GPU machine needs a CUDA build of torch.
.venv/bin/python -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" || \
  .venv/bin/pip install -q --force-reinstall "torch==2.13.0" --index-url https://download.pytorch.org/whl/cu128
timeout 540 .venv/bin/python benchmarks/serving.py --device cuda --threads 4 --repeats 3 --sweep 1,8,32,64 \
  --sweep-pairs 64 --clients 64 --requests 50 --output "$OUT/serving-gpu.json" | tee "$OUT/serving-gpu.md"
