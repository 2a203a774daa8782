#!/bin/bash
# Issue 34 item 4: automatic step labels (Math-Shepherd) on a small real sample, SmolLM2-135M-Instruct as the policy.
# Two runs on the first GSM8K training questions, k = 4 rollouts per step prefix (sizes: N_REF, N_POLICY):
#   policy     the default: the policy writes one solution per question, its lines are the steps (first 50);
#   reference  --no-generate-solutions: GSM8K's own reference steps, annotations removed (first 20).
# Rollouts stop at the end of the turn, after a '#### n' line, or at 96 new tokens; policy solutions with more
# than 8 lines are skipped (counted: a cost cap). Each run resumes if stopped (run the script again).
# --threads 1 by default (THREADS=n to change): on the shared 2-core CPU two torch threads made a small matmul
# 18x slower than one (29.5 vs 1.6 ms, load average 7.5), as waiting threads spin.
# Usage: [PY=path/to/python] [THREADS=n] experiments/math_shepherd.sh [PYTHONPATH of a frozen copy of the code]
cd "$(dirname "$0")/.."
export PYTHONPATH="${1:-$PWD}"
PY=${PY:-.venv/bin/python}
OUT=runs/math-shepherd; mkdir -p $OUT
COMMON=(--model smollm2-135m --k 4 --max-new-tokens 96 --batch-size 16 --seed 42 --threads ${THREADS:-1})
for run in reference policy; do
  if [ $run = reference ]; then EXTRA=(--no-generate-solutions); N=${N_REF:-20}
  else EXTRA=(--generate-solutions --max-steps 8); N=${N_POLICY:-50}; fi
  /usr/bin/time -f "%e s wall, %M KB peak" $PY -m rewardkit.cli label-steps --input "../shared/data/gsm8k/train.jsonl[:$N]" \
    --output $OUT/$run.jsonl "${COMMON[@]}" "${EXTRA[@]}" >> $OUT/$run.log 2>&1
done
$PY - <<'PY'
import json
for run in ("reference", "policy"):
    s = json.load(open(f"runs/math-shepherd/{run}.summary.json"))
    c, lab = s["cost"], s["labels"]
    print(run, "wall_s", c["wall_s"], "tokens", c["tokens_generated"], "tok/s", round(c["tokens_per_s"], 1),
          "per solution", {k: round(v, 1) for k, v in c["per_solution"].items()}, "labels", lab)
    for i, st in c["per_step"].items():
        print("  step", i, {k: (round(v, 2) if isinstance(v, float) else v) for k, v in st.items()})
    print("  solutions", c["solutions"], "skipped", s["data"]["skipped"])
PY
