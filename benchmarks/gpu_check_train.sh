#!/usr/bin/env bash
# The GPU check for issue 15 (training), one script, ≤ 10 min on one H100/H200. Run it through the device
# tool when a GPU is lent:   bash benchmarks/gpu_check_train.sh   (results land in $OUT, or ./gpu-results)
#   1. exactness: the prefix-shared flex route vs the padded path, rewards and gradients, fp32 and bf16;
#   2. speed vs TRL in bf16 on the HH benchmark (8 pairs per step; TRL at micro-batch 8 and 2);
#   3. one LoRA run (r 16, bf16 autocast) on HH helpful-base with a held-out evaluation;
#   4. one DeepSpeed ZeRO-3 run through the shipped accelerate config (1 process on the one GPU: the engine,
#      the accumulation boundary and the gathered save on CUDA; the 2-process equality is tested on CPU).
# Not here: FSDP (one GPU cannot show sharding). Never quote a figure this did not print.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-results}"; mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
HH=../shared/data/hh-rlhf/helpful-base.jsonl.gz
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"
timeout 120 "$PY" benchmarks/gpu_exactness.py --output "$OUT/exactness.json" 2>&1 | tee "$OUT/exactness.txt"
timeout 210 "$PY" benchmarks/speed.py --device cuda --bf16 --threads 4 --steps 3 --repeats 3 \
  --configs trl,trl_mb2,rk_plain,rk_shared 2>&1 | tee "$OUT/speed-gpu.md"
timeout 150 "$PY" -m rewardkit.cli train --train-data "$HH[:1600]" --eval-data "$HH[-500:]" --skip-bad-records \
  --lora-r 16 --lora-alpha 32 --learning-rate 2e-4 --batch-size 16 --micro-batch-size 16 --precision bf16 \
  --max-steps 100 --no-eval-before --output-dir "$OUT" --run-name lora-gpu --overwrite 2>&1 | tail -20 | tee "$OUT/lora.txt"
rm -f "$OUT"/lora-gpu/*.safetensors "$OUT"/lora-gpu/lora-adapter/*.safetensors  # weights do not travel back
timeout 90 "$PY" -m accelerate.commands.launch --config_file configs/accelerate/deepspeed_zero3.yaml --num_processes 1 \
  -m rewardkit.cli train --train-data "$HH[:320]" --eval-data "$HH[-200:]" --skip-bad-records --batch-size 16 \
  --micro-batch-size 8 --learning-rate 1e-5 --max-steps 20 --no-eval-before --output-dir "$OUT" --run-name zero3-gpu \
  --overwrite 2>&1 | tail -8 | tee "$OUT/zero3.txt"
"$PY" -c "
from safetensors.torch import load_file; w = load_file('$OUT/zero3-gpu/model.safetensors')
print('zero3 saved tensors:', len(w), 'smallest numel:', min(v.numel() for v in w.values()))" | tee -a "$OUT/zero3.txt"
rm -f "$OUT"/zero3-gpu/*.safetensors
