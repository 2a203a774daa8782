#!/bin/bash
# Issue 33, quality under bf16: the same 500 HH helpful-base pairs trained in fp32 and in bf16 (SmolLM2-135M, the
# defaults otherwise), and Gemma 3 270M in the CPU's auto precision; each model scored on HH helpful-base[-500:]
# (held out) and PandaLM; the fp32 model scored again in bf16 (agreement of the two precisions on the same weights).
# Then: python experiments/precision_table.py runs/precision
# ~50 min on 2 cores with avx512_bf16. Logs and /usr/bin/time lines beside each output.
# RUNS picks runs (default all three): on a CPU without native bf16, bf16 is emulated and far slower, so run the fp32
# half there (RUNS="smollm2-fp32 gemma3" NO_BF16_SCORING=1) and the bf16 half on a bf16 CPU; finished outputs are skipped.
cd "$(dirname "$0")/.."
RK=".venv/bin/rewardkit"; OUT=runs/precision; mkdir -p $OUT
D=../shared/data; TRAIN="$D/hh-rlhf/helpful-base.jsonl.gz[:500]"; HH="$D/hh-rlhf/helpful-base.jsonl.gz[-500:]"
PL=$D/pandalm/testset-v1.json
T() { /usr/bin/time -f "%e s wall, %M KB peak" "$@"; }
RUNS=${RUNS:-"smollm2-fp32 smollm2-bf16 gemma3"}
for run in smollm2-fp32:smollm2-135m:fp32 smollm2-bf16:smollm2-135m:bf16 gemma3:gemma3-270m:auto; do
  IFS=: read -r name model prec <<< "$run"
  [[ " $RUNS " == *" $name "* ]] || continue
  [ -f $OUT/$name/report.json ] || T $RK train --model $model --train-data "$TRAIN" --skip-bad-records --precision $prec \
    --no-eval-before --output-dir $OUT --run-name $name --overwrite > $OUT/$name.train.log 2>&1
  for data in hh:"$HH" pandalm:$PL; do
    key=${data%%:*}; spec=${data#*:}
    [ -f $OUT/$key-$name.json ] || T $RK eval --model $OUT/$name --data "$spec" --skip-bad-records --precision $prec \
      --output $OUT/$key-$name.json > $OUT/$key-$name.log 2>&1
  done
done
# The fp32-trained model under bf16 inference (bf16 weights, fp32 head): agreement with its fp32 scoring.
[ -n "$NO_BF16_SCORING" ] || [ -f $OUT/hh-smollm2-fp32-as-bf16.json ] || T $RK eval --model $OUT/smollm2-fp32 --data "$HH" --skip-bad-records \
  --precision bf16 --output $OUT/hh-smollm2-fp32-as-bf16.json > $OUT/hh-smollm2-fp32-as-bf16.log 2>&1
