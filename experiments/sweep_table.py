"""The issue-16 recipe sweep as one table, from experiments/recipe_sweep.sh's outputs.

Usage: python experiments/sweep_table.py [runs]
One row per finished variant (runs/sweep-V with hh.json and pandalm.json, run folder runs/hh-helpful-sweep-V):
accuracy on each held-out set and the paired difference against `base` on the same pairs, the length figures,
calibration, the training loss and the time in steps."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from length_table import ci, paired  # experiments/ is on sys.path when this file is run as a script

ORDER = ("base", "seed43", "ungrouped", "raw", "constant", "linear", "warmup0.1", "zero", "scaled")


def loss_quarters(run: Path) -> tuple[float, float, float]:
    """(mean training loss of the first quarter of the steps, of the last quarter, median step seconds)."""
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [s for s in steps if s.get("split") == "train"]
    q = max(1, len(train) // 4)
    return (sum(s["loss"] for s in train[:q]) / q, sum(s["loss"] for s in train[-q:]) / q,
            statistics.median(s["step_s"] for s in train))


def main(root: Path) -> None:
    found = {p.name.removeprefix("sweep-") for p in root.glob("sweep-*") if (p / "pandalm.json").exists()}
    variants = [v for v in ORDER if v in found] + sorted(found - set(ORDER))
    base = root / "sweep-base"
    print("| variant | HH acc. [95% CI] | HH − base, paired [95% CI] | PandaLM acc. [95% CI] | "
          "PandaLM − base, paired [95% CI] | HH acc., chosen shorter | HH Spearman(r, length) | HH ECE | "
          "train loss, first / last quarter | median step (s) |\n|---|---|---|---|---|---|---|---|---|---|")
    for v in variants:
        out = root / f"sweep-{v}"
        m = {k: json.loads((out / f"{k}.json").read_text()) for k in ("hh", "pandalm")}
        diffs = []
        for k in ("hh", "pandalm"):
            d = paired(out / f"{k}.rewards.jsonl", base / f"{k}.rewards.jsonl") if v != "base" else None
            diffs.append(f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]" if d else "–")
        first, last, step = loss_quarters(root / f"hh-helpful-sweep-{v}")
        length = m["hh"]["length"]
        print(f"| {v} | {ci(m['hh']['accuracy'], m['hh'].get('accuracy_ci'))} | {diffs[0]} | "
              f"{ci(m['pandalm']['accuracy'], m['pandalm'].get('accuracy_ci'))} | {diffs[1]} | "
              f"{length['accuracy_chosen_shorter']:.3f} | {length['reward_length_spearman']:+.3f} | "
              f"{m['hh']['ece']:.3f} | {first:.3f} / {last:.3f} | {step:.1f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs"))
