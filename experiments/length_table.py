"""The issue-16 table from experiments/length_debias.sh's eval outputs: python experiments/length_table.py runs/length"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def ci(value: float | None, interval: list | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def main(folder: str) -> None:
    out = Path(folder)
    rows = ["| method | HH acc. [95% CI] | HH acc., chosen shorter [95% CI] (pairs) | HH prefers longer | "
            "HH Spearman(r, length) | PandaLM acc. [95% CI] | PandaLM length baseline |",
            "|---|---|---|---|---|---|---|"]
    for method in ("none", "odin", "odin-0.1", "balance"):
        hh_file, pl_file = out / f"hh-{method}.json", out / f"pandalm-{method}.json"
        if not hh_file.exists() or not pl_file.exists():
            continue
        hh, pl = json.loads(hh_file.read_text()), json.loads(pl_file.read_text())
        h, p = hh["length"], pl["length"]
        rows.append(f"| {method} | {ci(hh['accuracy'], hh.get('accuracy_ci'))} | "
                    f"{ci(h['accuracy_chosen_shorter'], h.get('accuracy_chosen_shorter_ci'))} ({h['chosen_shorter_pairs']}) | "
                    f"{h['model_prefers_longer']:.3f} | {h['reward_length_spearman']:+.3f} | "
                    f"{ci(pl['accuracy'], pl.get('accuracy_ci'))} | {p['length_baseline_accuracy']:.3f} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/length")
