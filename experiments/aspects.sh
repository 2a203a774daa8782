#!/bin/bash
# Issue 16, aspect-conditioned heads: one model with helpful and harmless heads and a gate, against a single RM
# trained on the same mixed data (HH helpful-base lines 1-400 + harmless-base lines 1-400, rewardkit's defaults
# otherwise, but see below), each evaluated on the helpful held-out set (helpful-base's last 500 lines) and the harmless one
# (harmless-base's last 500 lines); then a steering example. Both train the top 10 of SmolLM2's 30 blocks
# (--trainable-layers 10, about half a full step's compute: what the session's CPU time allowed beside the
# recipe run). Usage: experiments/aspects.sh [PYTHONPATH of a frozen copy]
cd "$(dirname "$0")/.."
export PYTHONPATH="${1:-$PWD}"
PY=.venv/bin/python; D=../shared/data/hh-rlhf
OUT=runs/aspects; mkdir -p $OUT
HELPFUL="$D/helpful-base.jsonl.gz"; HARMLESS="$D/harmless-base.jsonl.gz"
# armo: the default gate loss ('both': the mixture ranks the pair + the gate predicts the record's aspect);
# armo-preference: the gate trained by the ranking term alone (ArmoRM's), the first run of this experiment.
ASPECTS="helpful=$HELPFUL[:400],harmless=$HARMLESS[:400] --aspects helpful,harmless"
# armo-refit: the defaults, with the gate refit after training (--aspect-gate-refit, the default since 2026-12-01);
# armo, armo-preference and armo-label were run before the refit existed, so they are run without it.
NOREFIT="$ASPECTS --no-aspect-gate-refit"
declare -A TRAIN=([armo-refit]="$ASPECTS" [armo]="$NOREFIT" [armo-preference]="$NOREFIT --aspect-gate-loss preference"
                  [armo-label]="$NOREFIT --aspect-gate-loss label"
                  [single]="$HELPFUL[:400],$HARMLESS[:400]")
for m in ${VARIANTS:-armo-refit armo armo-preference single}; do
  run=runs/hh-aspects-$m
  set -- ${TRAIN[$m]}
  [ -f $run/rewardkit.json ] || /usr/bin/time -f "%e s wall, %M KB peak" $PY -m rewardkit.cli train --model smollm2-135m \
    --train-data "$@" --skip-bad-records --no-eval-before --trainable-layers 10 --run-name hh-aspects-$m --overwrite > $OUT/train-$m.log 2>&1
  for d in helpful:"$HELPFUL[-500:]" harmless:"$HARMLESS[-500:]"; do
    [ -f $OUT/${d%%:*}-$m.json ] || /usr/bin/time -f "%e s wall, %M KB peak" $PY -m rewardkit.cli eval --model $run \
      --data "${d#*:}" --skip-bad-records --output $OUT/${d%%:*}-$m.json > $OUT/${d%%:*}-$m.log 2>&1
  done
done
# Steering: three harmless held-out prompts, each pair scored by the gate, by the helpful head, by the harmless head.
[ -f $OUT/steer-input.jsonl ] || $PY - "$HARMLESS" > $OUT/steer-input.jsonl <<'PY'
import json, sys
from rewardkit.data import read_preferences
examples, _ = read_preferences(sys.argv[1] + "[-500:]", skip_bad=True)
for ex in examples[:3]:
    for w in (None, {"helpful": 1}, {"harmless": 1}):
        row = {"prompt": ex.prompt, "chosen": ex.chosen, "rejected": ex.rejected, "source": ex.source}
        print(json.dumps(row | ({"aspect_weights": w} if w else {})))
PY
for m in armo-refit armo; do
  [ -f $OUT/steer-$m.jsonl ] || [ ! -f runs/hh-aspects-$m/rewardkit.json ] || $PY -m rewardkit.cli score \
    --model runs/hh-aspects-$m --input $OUT/steer-input.jsonl --output $OUT/steer-$m.jsonl
done
$PY experiments/aspects_table.py $OUT
