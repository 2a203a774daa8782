#!/bin/bash
# Issue 34, fourth round: does more training move best-of-4? The third round's ORM (experiments/verifiers_larger.sh
# orm: pointwise BCE + the within-question ranking term, --orm-ranking-coef 1.0, on GSM8K
# example_model_solutions.jsonl lines 1-660) trained for EPOCHS passes instead of one, with a checkpoint at the end
# of every pass (--save-every = the steps in one pass, all kept), then best-of-4 on all 659 held-out questions
# (lines 661-1319) for each pass's checkpoint. The learning-rate schedule spans all EPOCHS passes, so pass 1 here
# is not the third round's one-pass run.
#   OMP_NUM_THREADS=2 experiments/verifiers_epochs.sh        # tables: python experiments/verifier_table.py runs/verifiers_epochs
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
RK=".venv/bin/rewardkit"; OUT=runs/verifiers_epochs; mkdir -p $OUT
GSM=../shared/data/gsm8k/example_model_solutions.jsonl
EPOCHS=${EPOCHS:-3}; PASS=${PASS:-83}  # 660 questions / batch 8 = 83 steps per pass
T() { /usr/bin/time -f "%e s wall, %M KB peak" "$@"; }
[ -f $OUT/orm/report.json ] || T $RK train --model smollm2-135m --objective orm --train-data "$GSM[:660]" \
  --orm-ranking-coef 1.0 --epochs $EPOCHS --batch-size 8 --micro-batch-tokens 2048 --learning-rate 2e-5 \
  --no-eval-before --save-every $PASS --keep-checkpoints $EPOCHS --output-dir $OUT --run-name orm --overwrite \
  > $OUT/orm.train.log 2>&1
for ((e = EPOCHS; e >= 1; e--)); do  # the last pass first: it is the run's result; earlier passes as time allows
  ckpt=$OUT/orm/checkpoints/step-$(printf %06d $((e * PASS)))
  [ -f $OUT/orm-pass$e-gsm8k-bo4.json ] || T $RK eval-verifier --model $ckpt --data "$GSM[660:]" \
    --output $OUT/orm-pass$e-gsm8k-bo4.json > $OUT/orm-pass$e-gsm8k-bo4.log 2>&1
done
