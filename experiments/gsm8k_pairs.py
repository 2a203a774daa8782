"""GSM8K model solutions as within-question preferences, for a verifier trained on ranking a question's solutions.

    python experiments/gsm8k_pairs.py '../shared/data/gsm8k/example_model_solutions.jsonl[:660]' OUT.jsonl

Each question with at least one correct and one incorrect solution becomes one RewardBench-2-style record,
``{"prompt", "chosen": [correct…], "rejected": [incorrect…]}``: every correct solution beats every incorrect one,
and the reader ties the correct ones among themselves, so ``rewardkit train --loss balanced`` (eq. 6, a record's
pairs weighted 1/#pairs) also trains correct-vs-correct pairs at target ½ (with 3 correct and 1 incorrect: 3
strict pairs and 3 tied ones). ``--objective orm --orm-ranking-coef`` ranks only pairs whose labels differ. The solution text is exactly what
``rewardkit eval-verifier`` scores for that solution (rewardkit's own reader renders both), so training and
best-of-N see the same strings. Two models sometimes wrote the same solution: a repeat is written once (the
trainer refuses identical completions in one ranking). Questions whose solutions are all right or all wrong carry no within-question
signal and are counted, not written.
"""

from __future__ import annotations

import json
import sys

from rewardkit.data.readers import ReadReport
from rewardkit.data.steps import iter_verifier_examples


def main(spec: str, out: str) -> None:
    report = ReadReport(spec)
    written = one_sided = duplicates = 0
    with open(out, "w") as f:
        for ex in iter_verifier_examples(spec, report):
            texts = [c[0]["content"] for c in ex.completions]
            chosen = list(dict.fromkeys(t for t, c in zip(texts, ex.correct) if c is not None and c >= 0.5))
            rejected = list(dict.fromkeys(t for t, c in zip(texts, ex.correct) if c is not None and c < 0.5))
            labelled = sum(c is not None for c in ex.correct)
            duplicates += labelled - len(chosen) - len(rejected)
            if not chosen or not rejected:
                one_sided += 1
                continue
            question = next(m["content"] for m in ex.prompt if m["role"] == "user")
            f.write(json.dumps({"prompt": question, "chosen": chosen, "rejected": rejected, "id": ex.source}) + "\n")
            written += 1
    print(f"{written} records written to {out}; {one_sided} questions skipped (all solutions right or all wrong); "
          f"{duplicates} repeated solutions written once")


if __name__ == "__main__":
    main(*sys.argv[1:3])
