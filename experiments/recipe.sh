#!/bin/bash
# Issue 16, the default recipe: `rewardkit train` with its defaults (only data, the bad-record policy and the
# run name given) on all the HH helpful data we have minus the held-out set: helpful-base lines 1-1854,
# helpful-online and helpful-rejection-sampled (whole), evaluated on the HH held-out set (helpful-base's last
# 500 lines) and PandaLM. Usage: experiments/recipe.sh [PYTHONPATH of a frozen copy of the code]
cd "$(dirname "$0")/.."
export PYTHONPATH="${1:-$PWD}"
PY=.venv/bin/python; D=../shared/data/hh-rlhf
OUT=runs/recipe; mkdir -p $OUT
# One training file, in file order (training shuffles): rewardkit reads one source per run.
[ -f $OUT/hh-helpful-train.jsonl ] || { zcat $D/helpful-base.jsonl.gz | head -n 1854; zcat $D/helpful-online.jsonl.gz \
  $D/helpful-rejection-sampled.jsonl.gz; } > $OUT/hh-helpful-train.jsonl
HH="$D/helpful-base.jsonl.gz[-500:]"
run=runs/hh-helpful-recipe
# ~2.7 h on the 2-core CPU, longer than a session: checkpoints every 20 steps, and a second call continues the
# run from its latest one (--resume auto). Each segment's wall time is appended to train.log.
if [ -d $run/checkpoints ]; then AGAIN=(--resume auto); else AGAIN=(--overwrite); fi
[ -f $run/rewardkit.json ] || /usr/bin/time -f "%e s wall, %M KB peak" $PY -m rewardkit.cli train --model smollm2-135m \
  --train-data $OUT/hh-helpful-train.jsonl --eval-data "$HH" --skip-bad-records --no-eval-before \
  --run-name hh-helpful-recipe --save-every 20 "${AGAIN[@]}" >> $OUT/train.log 2>&1
for d in hh:"$HH" pandalm:../shared/data/pandalm/testset-v1.json; do
  [ -f $OUT/${d%%:*}.json ] || /usr/bin/time -f "%e s wall, %M KB peak" $PY -m rewardkit.cli eval --model $run \
    --data "${d#*:}" --skip-bad-records --output $OUT/${d%%:*}.json > $OUT/${d%%:*}.log 2>&1
done
