#!/bin/bash
# Issue 3 experiment A: UltraFeedback-scored, plain BT vs margin loss (eq. 5), same budget.
set -e
mkdir -p runs/logs
cd "$(dirname "$0")/.."
RK=".venv/bin/rewardkit"
UF=../shared/data/ultrafeedback-scored
COMMON="--model smollm2-135m --train-data $UF/train.jsonl --eval-data $UF/eval.jsonl --skip-bad-records --drop-ties \
 --max-length 512 --trainable-layers 4 --learning-rate 5e-5 --batch-size 16 --micro-batch-size 4 --seed 42 --no-eval-before --overwrite --output-dir runs"
/usr/bin/time -v $RK train $COMMON --loss bt --run-name uf-bt > runs/logs/uf-bt.log 2>&1
/usr/bin/time -v $RK train $COMMON --loss margin --margin-source scores --margin-scale 0.5 --run-name uf-margin > runs/logs/uf-margin.log 2>&1
