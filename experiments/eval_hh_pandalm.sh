#!/bin/bash
# Issue 5: the foundation RM (runs/hh-helpful-1000) and the untrained SmolLM2 on HH held-out and PandaLM.
cd "$(dirname "$0")/.."
RK=".venv/bin/rewardkit"
OUT=runs/eval
mkdir -p $OUT runs/logs
HH='../shared/data/hh-rlhf/helpful-base.jsonl.gz[-500:]'; PL=../shared/data/pandalm/testset-v1.json
for m in runs/hh-helpful-1000:trained smollm2-135m:untrained; do
  /usr/bin/time -f "%e s wall, %M KB peak" $RK eval --model ${m%%:*} --data "$HH" --skip-bad-records --output $OUT/hh-${m##*:}.json > $OUT/hh-${m##*:}.log 2>&1
  /usr/bin/time -f "%e s wall, %M KB peak" $RK eval --model ${m%%:*} --data $PL --skip-bad-records --output $OUT/pandalm-${m##*:}.json > $OUT/pandalm-${m##*:}.log 2>&1
done
$RK report $OUT/hh-trained.json $OUT/hh-untrained.json --output-dir $OUT/report-hh > $OUT/report-hh.log 2>&1
$RK report $OUT/pandalm-trained.json $OUT/pandalm-untrained.json --output-dir $OUT/report-pandalm > $OUT/report-pandalm.log 2>&1
# Issue 3 context: the untrained model (same seed as the OA runs' head) on the held-out OA trees.
$RK eval --model smollm2-135m --data '../shared/data/oasst-rankings/en_100_tree.jsonl[70:]' --max-length 512 --output $OUT/oa-untrained.json > $OUT/oa-untrained.log 2>&1
