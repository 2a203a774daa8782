#!/bin/bash
# Issue 32: "behaviour unchanged". Trains the five recipes on the first 160 HH helpful pairs (seed 42, the defaults
# otherwise, 40 held-out pairs so metrics.jsonl has eval lines) with the code at PYTHONPATH, into runs/house-<tag>-*.
# (-P: the code at PYTHONPATH, not the checkout in the working directory.)
# Run it once with a frozen copy of the old code and once with the new, then compare:
#   git worktree add /tmp/base <old commit>
#   experiments/house_equivalence.sh base /tmp/base ; experiments/house_equivalence.sh new
#   .venv/bin/python experiments/house_compare.py runs/house-base runs/house-new
cd "$(dirname "$0")/.."
TAG=${1:?tag}; export PYTHONPATH="${2:-$PWD}"
# One thread: the two sides can run at once, one core each, and compute with the same thread count (a float sum
# split over another number of threads may round differently).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY="$PWD/.venv/bin/python -P"; D=../shared/data/hh-rlhf
H="$D/helpful-base.jsonl.gz"; HARM="$D/harmless-base.jsonl.gz"
COMMON="--skip-bad-records --eval-data $H[-40:] --output-dir runs/house-$TAG --overwrite"
declare -A ARGS=([plain]="--train-data $H[:160]"
                 [odin]="--train-data $H[:160] --length-debias odin"
                 [aspects]="--train-data helpful=$H[:80],harmless=$HARM[:80] --aspects helpful,harmless"
                 [lora]="--train-data $H[:160] --lora-r 8 --lora-alpha 16")
mkdir -p runs/house-$TAG
for v in ${VARIANTS:-plain odin aspects lora genrm}; do
  if [ "$v" = genrm ]; then
    # train-genrm: its defaults (the whole LM), 10 steps; a shorter max length keeps it within minutes.
    cmd="$PY -m rewardkit.cli train-genrm --train-data $H[:160] --max-length 512 $COMMON --run-name genrm"
  else
    cmd="$PY -m rewardkit.cli train ${ARGS[$v]} $COMMON --run-name $v"
  fi
  echo "$cmd" > runs/house-$TAG/$v.cmd
  /usr/bin/time -f "%e s wall, %M KB peak" $cmd > runs/house-$TAG/$v.log 2>&1
  echo "$v: $(tail -1 runs/house-$TAG/$v.log)"
done
