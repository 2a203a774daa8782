#!/bin/bash
# Issue 16, choosing the recipe's defaults on a proxy: rewardkit's defaults (full fine-tune, 2e-5, cosine, chat
# template, length-grouped batches, balance weights, transformers' head init) on HH helpful-base lines 1-1000 (997
# pairs, 63 steps, about 16 min of steps on the 2-core CPU), against one change at a time, evaluated on the HH
# held-out set (helpful-base's last 500 lines) and PandaLM; same seed, so each difference is paired on the same
# held-out pairs. A variant that wins here is then worth one full recipe run (experiments/recipe.sh, about 2 h).
# Usage: [VARIANTS="base raw ..."] experiments/recipe_sweep.sh [PYTHONPATH of a frozen copy of the code]
# Tables: python experiments/sweep_table.py (every variant against base, paired);
#         python experiments/recipe_table.py runs/sweep-V runs/hh-helpful-sweep-V runs/sweep-base (one variant)
cd "$(dirname "$0")/.."
export PYTHONPATH="${1:-$PWD}"
PY=.venv/bin/python; D=../shared/data/hh-rlhf
HH="$D/helpful-base.jsonl.gz[-500:]"
declare -A EXTRA=([base]="" [raw]="--template raw" [ungrouped]="--no-group-by-length"
                  [constant]="--lr-schedule constant" [linear]="--lr-schedule linear" [warmup0.1]="--warmup-ratio 0.1"
                  [zero]="--head-init zero" [scaled]="--head-init scaled" [seed43]="--seed 43")
for v in ${VARIANTS:-base ungrouped raw constant}; do
  OUT=runs/sweep-$v; mkdir -p $OUT; run=runs/hh-helpful-sweep-$v
  [ -f $run/rewardkit.json ] || /usr/bin/time -f "%e s wall, %M KB peak" $PY -m rewardkit.cli train --model smollm2-135m \
    --train-data "$D/helpful-base.jsonl.gz[:1000]" --eval-data "$HH" --skip-bad-records --no-eval-before \
    --run-name hh-helpful-sweep-$v --overwrite ${EXTRA[$v]} > $OUT/train.log 2>&1
  for d in hh:"$HH" pandalm:../shared/data/pandalm/testset-v1.json; do
    [ -f $OUT/${d%%:*}.json ] || /usr/bin/time -f "%e s wall, %M KB peak" $PY -m rewardkit.cli eval --model $run \
      --data "${d#*:}" --skip-bad-records --output $OUT/${d%%:*}.json > $OUT/${d%%:*}.log 2>&1
  done
done
