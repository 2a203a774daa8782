#!/bin/bash
# Issue 6: SmolLM2 as a judge (pairwise both orders, pointwise, verifier), the trained GenRM, and the
# classifier RM (runs/eval/*-trained.json from eval_hh_pandalm.sh) on the same HH held-out pairs and PandaLM.
# Usage: experiments/judges.sh [judges|genrm-train|genrm-eval|all]   (default all; sequential, ~2 h on 2 CPU cores)
# To run a frozen snapshot: ROOT=<snapshot> RUNS=<abs path> RK="<python> -m rewardkit.cli" (python -m imports from ROOT).
set -e
cd "${ROOT:-$(dirname "$0")/..}"
RK=${RK:-.venv/bin/rewardkit}
RUNS=${RUNS:-runs}
OUT=${OUT:-$RUNS/judges}
mkdir -p "$OUT"
HH='../shared/data/hh-rlhf/helpful-base.jsonl.gz[-500:]'; PL=../shared/data/pandalm/testset-v1.json
TIME=(/usr/bin/time -f "%e s wall, %M KB peak")
what=${1:-all}
if [[ $what == judges || $what == all ]]; then
  for kind in pairwise pointwise verifier; do
    for d in hh:"$HH" pandalm:"$PL"; do
      "${TIME[@]}" $RK eval --judge $kind --model smollm2-135m --data "${d#*:}" --skip-bad-records \
        --output "$OUT/${d%%:*}-$kind.json" > "$OUT/${d%%:*}-$kind.log" 2>&1
    done
  done
fi
if [[ $what == genrm-train || $what == all ]]; then
  # Same training data and schedule as runs/hh-helpful-1000 (HH[:1000], batch 16, lr 2e-5, one epoch),
  # but only the top 4 of 30 blocks trained, like the issue-3 runs (see RESULTS.md: full fine-tuning did not fit the session).
  "${TIME[@]}" $RK train-genrm --model smollm2-135m --train-data '../shared/data/hh-rlhf/helpful-base.jsonl.gz[:1000]' \
    --skip-bad-records --trainable-layers 4 --max-length 1024 --output-dir "$RUNS" --run-name genrm-hh-1000 \
    --no-eval-before --overwrite > "$OUT/genrm-train.log" 2>&1
fi
if [[ $what == genrm-eval || $what == all ]]; then
  for d in hh:"$HH" pandalm:"$PL"; do
    "${TIME[@]}" $RK eval --model "$RUNS/genrm-hh-1000" --data "${d#*:}" --skip-bad-records \
      --output "$OUT/${d%%:*}-genrm.json" > "$OUT/${d%%:*}-genrm.log" 2>&1
  done
fi
