#!/bin/bash
# Issue 3 experiment B: OA rankings split by tree (70 train trees / 30 held-out trees):
# flattened independent pairs vs per-prompt balanced (eq. 6) vs Plackett-Luce, same steps and seed.
set -e
mkdir -p runs/logs
cd "$(dirname "$0")/.."
RK=".venv/bin/rewardkit"
OA=../shared/data/oasst-rankings/en_100_tree.jsonl
COMMON="--model smollm2-135m --train-data $OA[:70] --eval-data $OA[70:] --max-length 512 --trainable-layers 4 \
 --learning-rate 5e-5 --micro-batch-size 4 --seed 42 --overwrite --output-dir runs"
# 146 rankings (507 pairs) → 19 steps each: 8 rankings per step, or 27 flattened pairs per step.
/usr/bin/time -v $RK train $COMMON --loss balanced --batch-size 8 --run-name oa-balanced > runs/logs/oa-balanced.log 2>&1
/usr/bin/time -v $RK train $COMMON --loss plackett_luce --batch-size 8 --no-eval-before --run-name oa-pl > runs/logs/oa-pl.log 2>&1
/usr/bin/time -v $RK train $COMMON --loss bt --flatten-rankings --batch-size 27 --micro-batch-size 14 --no-eval-before --run-name oa-flat > runs/logs/oa-flat.log 2>&1
