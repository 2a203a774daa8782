#!/bin/bash
# Issue 34: an outcome RM and a process RM on SmolLM2-135M-Instruct (fp32 here: this CPU's auto precision), evaluated
# on ProcessBench (gsm8k, math: F1 per subset) and best-of-4 on GSM8K's released model solutions.
#
# The GSM8K split is by question: example_model_solutions.jsonl has one line per test question with its four
# solutions, so lines 1-660 ([:660]) train the ORM and lines 661-1319 ([660:]) are held out — no question's solutions
# on both sides. The ORM trains on the first ORM_Q of the 660 training questions (4 solutions each).
# The PRM trains on PRMBench train/ (the first PRM_N records of each of its 8 error-type files, each record = the
# modified process with its error steps + the original all-correct process), step marker "\n\n" (the default).
# `experiments/verifiers.sh orm` and `experiments/verifiers.sh prm` run the two halves (in parallel on two cores, each
# with OMP_NUM_THREADS=1: two-thread processes sharing a busy 2-core CPU spent 6x longer per step in OpenMP waits);
# no argument runs both, one after the other. Then: python experiments/verifier_table.py runs/verifiers
cd "$(dirname "$0")/.."; PART=${1:-all}
RK=".venv/bin/rewardkit"; OUT=runs/verifiers; mkdir -p $OUT
D=../shared/data; ORM_Q=${ORM_Q:-200}; PRM_N=${PRM_N:-24}
T() { /usr/bin/time -f "%e s wall, %M KB peak" "$@"; }
GSM_TRAIN="$D/gsm8k/example_model_solutions.jsonl[:$ORM_Q]"; GSM_HELD="$D/gsm8k/example_model_solutions.jsonl[660:]"
PRM_TRAIN=$(ls $D/prmbench/train/*.jsonl | sed "s/\$/[:$PRM_N]/" | paste -sd, -)
[ $PART = prm ] || [ -f $OUT/orm/report.json ] || T $RK train --model smollm2-135m --objective orm --train-data "$GSM_TRAIN" \
  --batch-size 8 --learning-rate 2e-5 --no-eval-before --output-dir $OUT --run-name orm --overwrite \
  > $OUT/orm.train.log 2>&1
[ $PART = orm ] || [ -f $OUT/prm/report.json ] || T $RK train --model smollm2-135m --objective prm --train-data "$PRM_TRAIN" \
  --skip-bad-records --batch-size 8 --learning-rate 2e-5 --no-eval-before --output-dir $OUT --run-name prm \
  --overwrite > $OUT/prm.train.log 2>&1
for job in orm:gsm8k-bo4:"$GSM_HELD" prm:processbench-gsm8k:$D/processbench/gsm8k.json prm:gsm8k-bo4:"$GSM_HELD" \
           prm:processbench-math:$D/processbench/math.json; do
  IFS=: read -r model name spec <<< "$job"
  [ $PART = all ] || [ $PART = $model ] || continue
  [ -f $OUT/$model-$name.json ] || T $RK eval-verifier --model $OUT/$model --data "$spec" \
    --output $OUT/$model-$name.json > $OUT/$model-$name.log 2>&1
done
