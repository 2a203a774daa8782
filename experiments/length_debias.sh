#!/bin/bash
# Issue 16: plain vs ODIN vs length-balanced weighting, all LoRA r=16 on the same HH helpful pairs
# (helpful-base lines 1-1000), evaluated on the HH held-out set (last 500 lines) and PandaLM.
# Usage: [VARIANTS="none balance ..."] [SEED=43] experiments/length_debias.sh [PYTHONPATH of a frozen copy of the code]
# SEED reruns the variants with another seed (head draw and batch order) into runs/length-seedN, run names
# ending in -seedN; `python experiments/length_table.py runs/length runs/length-seedN` then pools the seeds.
cd "$(dirname "$0")/.."
export PYTHONPATH="${1:-$PWD}"
PY=.venv/bin/python
SUF=${SEED:+-seed$SEED}
OUT=runs/length$SUF; mkdir -p $OUT
HH_TRAIN='../shared/data/hh-rlhf/helpful-base.jsonl.gz[:1000]'
HH='../shared/data/hh-rlhf/helpful-base.jsonl.gz[-500:]'; PL=../shared/data/pandalm/testset-v1.json
COMMON=(--model smollm2-135m --train-data "$HH_TRAIN" --eval-data "$HH" --skip-bad-records --batch-size 16
        --micro-batch-size 4 --learning-rate 2e-4 --max-length 1024 --lora-r 16 --lora-alpha 32 --no-eval-before ${SEED:+--seed $SEED})
# odin-0.1: ODIN with all three disentangling weights at 0.1 (a point of the λ sweep). odin-pairs / odin-both: ODIN's
# correlations over each pair's margins (the within-pair length preference) / over completions and pairs;
# odin-pairs-0.1: over pairs with the three weights at 0.1.
declare -A EXTRA=([none]="--length-debias none" [odin]="--length-debias odin" [balance]="--length-debias balance"
                  [odin-0.1]="--length-debias odin --odin-length-coef 0.1 --odin-quality-coef 0.1 --odin-ortho-coef 0.1"
                  [odin-pairs]="--length-debias odin --odin-correlation pairs"
                  [odin-both]="--length-debias odin --odin-correlation both"
                  [odin-pairs-0.1]="--length-debias odin --odin-correlation pairs --odin-length-coef 0.1 --odin-quality-coef 0.1 --odin-ortho-coef 0.1")
for m in ${VARIANTS:-none odin balance odin-0.1 odin-pairs odin-pairs-0.1 odin-both}; do
  run=runs/hh-helpful-1000-lora-$m$SUF
  [ -f $run/rewardkit.json ] || /usr/bin/time -f "%e s wall, %M KB peak" $PY -m rewardkit.cli train "${COMMON[@]}" \
      ${EXTRA[$m]} --output-dir runs --run-name hh-helpful-1000-lora-$m$SUF --overwrite > $OUT/train-$m.log 2>&1
  for d in hh:"$HH" pandalm:$PL; do
    [ -f $OUT/${d%%:*}-$m.json ] || /usr/bin/time -f "%e s wall, %M KB peak" $PY -m rewardkit.cli eval --model $run --data "${d#*:}" \
      --skip-bad-records --output $OUT/${d%%:*}-$m.json > $OUT/${d%%:*}-$m.log 2>&1
  done
done
$PY experiments/length_table.py $OUT
