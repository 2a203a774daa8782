#!/bin/bash
# Issue 34, second round (after experiments/verifiers.sh's small runs), on SmolLM2-135M-Instruct:
# * `bt`: a verifier trained to rank a question's solutions — GSM8K example_model_solutions.jsonl lines 1-660 (the
#   training side of the by-question split; lines 661-1319 are held out) as within-question preferences
#   (experiments/gsm8k_pairs.py: every correct solution beats every incorrect one; the questions with both kinds),
#   --loss balanced, 1 epoch (45 steps); then best-of-4 on all 659 held-out questions.
# * `prm`: a PRM on PRMBench train/ (the first PRM_N records of each of the 8 files), then ProcessBench gsm8k and
#   math with the step threshold chosen on PRMBench *test* (the first CAL_N records of each file, original
#   processes included) — never on ProcessBench — and best-of-4 on the first BO4_Q held-out GSM8K questions.
# * `orm`: an outcome RM on all 660 training questions' 2,640 solutions (pointwise BCE + ORM_RANK × the
#   within-problem ranking term, --orm-ranking-coef), 1 epoch; then best-of-4 on all 659 held-out questions. Its
#   voting weights are sigma(r) = P(correct), the ORM's own probability (a calibrated objective, unlike the ranker).
# Each part runs with OMP_NUM_THREADS=1 so the two can share a 2-core CPU: `experiments/verifiers_larger.sh bt &
# experiments/verifiers_larger.sh prm`. Tables: python experiments/verifier_table.py runs/verifiers_larger
cd "$(dirname "$0")/.."; PART=${1:?bt, prm or orm}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
RK=".venv/bin/rewardkit"; OUT=runs/verifiers_larger; mkdir -p $OUT
D=../shared/data; PRM_N=${PRM_N:-32}; CAL_N=${CAL_N:-12}; BO4_Q=${BO4_Q:-330}; ORM_RANK=${ORM_RANK:-1.0}
T() { /usr/bin/time -f "%e s wall, %M KB peak" "$@"; }
GSM=$D/gsm8k/example_model_solutions.jsonl
if [ $PART = bt ]; then
  [ -f $OUT/gsm8k-pairs.jsonl ] || .venv/bin/python experiments/gsm8k_pairs.py "$GSM[:660]" $OUT/gsm8k-pairs.jsonl
  [ -f $OUT/bt/report.json ] || T $RK train --model smollm2-135m --train-data $OUT/gsm8k-pairs.jsonl --loss balanced \
    --batch-size 8 --micro-batch-tokens 2048 --learning-rate 2e-5 --no-eval-before --output-dir $OUT --run-name bt --overwrite \
    > $OUT/bt.train.log 2>&1
  [ -f $OUT/bt-gsm8k-bo4.json ] || T $RK eval-verifier --model $OUT/bt --data "$GSM[660:]" \
    --output $OUT/bt-gsm8k-bo4.json > $OUT/bt-gsm8k-bo4.log 2>&1
elif [ $PART = orm ]; then
  [ -f $OUT/orm/report.json ] || T $RK train --model smollm2-135m --objective orm --train-data "$GSM[:660]" \
    --orm-ranking-coef $ORM_RANK --batch-size 8 --micro-batch-tokens 2048 --learning-rate 2e-5 --no-eval-before \
    --output-dir $OUT --run-name orm --overwrite > $OUT/orm.train.log 2>&1
  [ -f $OUT/orm-gsm8k-bo4.json ] || T $RK eval-verifier --model $OUT/orm --data "$GSM[660:]" \
    --output $OUT/orm-gsm8k-bo4.json > $OUT/orm-gsm8k-bo4.log 2>&1
elif [ $PART = prm ]; then
  TRAIN=$(ls $D/prmbench/train/*.jsonl | sed "s/\$/[:$PRM_N]/" | paste -sd, -)
  CAL=$(ls $D/prmbench/test/*.jsonl | sed "s/\$/[:$CAL_N]/" | paste -sd, -)
  [ -f $OUT/prm/report.json ] || T $RK train --model smollm2-135m --objective prm --train-data "$TRAIN" \
    --skip-bad-records --batch-size 8 --learning-rate 2e-5 --no-eval-before --output-dir $OUT --run-name prm \
    --overwrite > $OUT/prm.train.log 2>&1
  # both ProcessBench files in one run: F1 per subset (file), the calibration data scored once.
  # PRM_EVALS picks the evaluations (default both; e.g. PRM_EVALS=gsm8k-bo4 for best-of-4 alone)
  for job in processbench:$D/processbench/gsm8k.json,$D/processbench/math.json "gsm8k-bo4:$GSM[660:$((660 + BO4_Q))]"; do
    name=${job%%:*}; spec=${job#*:}
    [[ " ${PRM_EVALS:-processbench gsm8k-bo4} " == *" $name "* ]] || continue
    cal=(); [ $name = processbench ] && cal=(--threshold-data "$CAL" --skip-bad-records)
    [ -f $OUT/prm-$name.json ] || T $RK eval-verifier --model $OUT/prm --data "$spec" "${cal[@]}" \
      --output $OUT/prm-$name.json > $OUT/prm-$name.log 2>&1
  done
fi
