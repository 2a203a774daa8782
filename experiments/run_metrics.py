"""Held-out metrics of a training run from its saved per-completion rewards (no model needed).

    python experiments/run_metrics.py runs/uf-bt '../shared/data/ultrafeedback-scored/eval.jsonl' --skip-bad-records

Reads ``<run>/eval_rewards.jsonl`` (written by ``rewardkit train``), re-reads the held-out data with
the same spec, checks that the records line up, and prints ``rewardkit.evaluate.metrics_from_rewards``
(pairwise accuracy without annotator ties, bootstrap intervals, ranking metrics, calibration).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from rewardkit.data import read_preferences
from rewardkit.evaluate import metrics_from_rewards


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("data")
    p.add_argument("--skip-bad-records", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    saved = [json.loads(x) for x in (Path(args.run) / "eval_rewards.jsonl").read_text().splitlines()]
    examples, _ = read_preferences(args.data, skip_bad=args.skip_bad_records)
    if [s["source"] for s in saved] != [ex.source for ex in examples]:
        print("the run's saved rewards do not match this data spec (different records)", file=sys.stderr)
        return 2
    result = metrics_from_rewards(examples, [np.asarray(s["rewards"]) for s in saved], seed=args.seed)
    keys = ("pairs", "pairwise_accuracy", "pairwise_accuracy_ci", "annotator_tied_pairs", "ece", "brier",
            "mean_margin", "length_baseline_accuracy", "rankings")
    print(json.dumps({k: result.get(k) for k in keys}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
