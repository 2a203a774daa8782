#!/bin/bash
# The PRM's evaluations of experiments/verifiers.sh, sized for a shared 2-core CPU (one thread): ProcessBench gsm8k
# (all 400), ProcessBench math in two halves ([:500] and [500:]: math.json lists its 594 erroneous solutions first, so
# a half alone has no F1; experiments/verifier_table.py joins them) and best-of-4 on the first BO4_Q held-out GSM8K
# questions (lines 661-...). Waits for runs/verifiers/prm to finish training.
cd "$(dirname "$0")/.."
RK=".venv/bin/rewardkit"; OUT=runs/verifiers; D=../shared/data
BO4_Q=${BO4_Q:-330}
T() { /usr/bin/time -f "%e s wall, %M KB peak" "$@"; }
while [ ! -f $OUT/prm/report.json ]; do sleep 20; done
for job in processbench-gsm8k:$D/processbench/gsm8k.json "gsm8k-bo4:$D/gsm8k/example_model_solutions.jsonl[660:$((660 + BO4_Q))]" \
           "processbench-math:$D/processbench/math.json[:500]" "processbench-math-2:$D/processbench/math.json[500:]"; do
  name=${job%%:*}; spec=${job#*:}
  [ -f $OUT/prm-$name.json ] || T $RK eval-verifier --model $OUT/prm --data "$spec" --output $OUT/prm-$name.json \
    > $OUT/prm-$name.log 2>&1
done
