"""Re-draw the rollouts behind labels of experiments/math_shepherd.sh, to read them by hand.

    python experiments/math_shepherd_rollouts.py RUN ID@STEP [ID@STEP ...]   (RUN: reference or policy)

Each rollout is drawn alone with the seed the run used (sample_seed(seed, id, step, j)), so the counts printed must
equal the stored ``rollouts_correct``: the samples do not depend on their batch.
"""

from __future__ import annotations

import json
import sys

import torch

from rewardkit.config import LabelStepsConfig
from rewardkit.data.answers import extract_answer, is_correct
from rewardkit.shepherd import load_policy, sample_seed


def main(run: str, specs: list[str]) -> None:
    summary = json.load(open(f"runs/math-shepherd/{run}.summary.json"))
    cfg = LabelStepsConfig(**summary["config"])
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    policy = load_policy(cfg)
    rows = {r["id"]: r for r in map(json.loads, open(f"runs/math-shepherd/{run}.jsonl"))}
    for spec in specs:
        rid, step_text = spec.rsplit("@", 1)
        step, row = int(step_text), rows[rid]
        prompt = policy.prompt_text(row["prompt"], row["completions"][:step + 1])
        samples = [policy.sample([prompt], [sample_seed(cfg.seed, rid, step, j)])[0] for j in range(cfg.k)]
        correct = sum(is_correct(s.text, row["reference_answer"]) for s in samples)
        print(f"== {run} {rid} step {step}: reference {row['reference_answer']}, label {row['labels'][step]}, "
              f"stored {row['rollouts_correct'][step]} correct, re-drawn {correct}")
        for s in samples:
            print(f"  [answer {extract_answer(s.text)!r}, {s.tokens} tokens, finished {s.finished}] "
                  + s.text.replace("\n", " \\n ")[:400])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
