#!/bin/bash
# Issue 16, the default recipe: `rewardkit train` with its defaults (only data, the bad-record policy, the run
# name, checkpointing and no before-training eval given) on all the HH helpful data we have minus the held-out set: helpful-base lines 1-1854,
# helpful-online and helpful-rejection-sampled (whole), evaluated on the HH held-out set (helpful-base's last
# 500 lines) and PandaLM. Usage: [EXTRA="flags" NAME=suffix] experiments/recipe.sh [PYTHONPATH of a frozen copy of
# the code]. EXTRA adds training flags (e.g. "--trainable-layers 10", a partial fine-tune at about half
# the compute); NAME keeps such a run apart (runs/hh-helpful-recipe-NAME, runs/recipe-NAME).
cd "$(dirname "$0")/.."
export PYTHONPATH="${1:-$PWD}"
PY=.venv/bin/python; D=../shared/data/hh-rlhf
SUF=${NAME:+-$NAME}
OUT=runs/recipe$SUF; mkdir -p $OUT
# Three sources joined by commas (each with its own slice; bad records are reported by file and line).
TRAIN="$D/helpful-base.jsonl.gz[:1854],$D/helpful-online.jsonl.gz,$D/helpful-rejection-sampled.jsonl.gz"
HH="$D/helpful-base.jsonl.gz[-500:]"
run=runs/hh-helpful-recipe$SUF
# 1 h 49 min on the idle 2-core CPU (RESULTS.md); checkpoints every 20 steps, so if it is stopped a second call
# continues the run from its latest one (--resume auto). Each segment's wall time is appended to train.log.
if [ -d $run/checkpoints ]; then AGAIN=(--resume auto); else AGAIN=(--overwrite); fi
[ -f $run/rewardkit.json ] || /usr/bin/time -f "%e s wall, %M KB peak" $PY -m rewardkit.cli train --model smollm2-135m \
  --train-data "$TRAIN" --eval-data "$HH" --skip-bad-records --no-eval-before \
  --run-name hh-helpful-recipe$SUF --save-every 20 "${AGAIN[@]}" $EXTRA >> $OUT/train.log 2>&1
for d in hh:"$HH" pandalm:../shared/data/pandalm/testset-v1.json; do
  [ -f $OUT/${d%%:*}.json ] || /usr/bin/time -f "%e s wall, %M KB peak" $PY -m rewardkit.cli eval --model $run \
    --data "${d#*:}" --skip-bad-records --output $OUT/${d%%:*}.json > $OUT/${d%%:*}.log 2>&1
done
