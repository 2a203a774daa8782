"""The issue-16 table from experiments/length_debias.sh's eval outputs: python experiments/length_table.py runs/length"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

DEBIASED = ("odin", "odin-0.1", "odin-pairs", "odin-pairs-0.1", "odin-both", "balance")  # experiments/length_debias.sh's variants


def ci(value: float | None, interval: list | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def main(folder: str) -> None:
    out = Path(folder)
    rows = ["| method | HH acc. [95% CI] | HH acc., chosen shorter [95% CI] (pairs) | HH prefers longer | "
            "HH Spearman(r, length) | PandaLM acc. [95% CI] | PandaLM length baseline |",
            "|---|---|---|---|---|---|---|"]
    for method in ("none", *DEBIASED):
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
    paired = [paired_difference(out, method, data) for data in ("hh", "pandalm") for method in DEBIASED]
    print("\n".join(line for line in paired if line))
    cuts = [spearman_cut(out, method) for method in DEBIASED]
    print("\n".join(line for line in cuts if line))


def spearman_cut(out: Path, method: str) -> str | None:
    """How much of the plain run's HH reward–length rank correlation ``method`` removes (the issue's target: half)."""
    files = [out / f"hh-{m}.json" for m in (method, "none")]
    if not all(f.exists() for f in files):
        return None
    mine, plain = (json.loads(f.read_text())["length"]["reward_length_spearman"] for f in files)
    return f"hh: {method} Spearman(r, length) {mine:+.3f} vs plain {plain:+.3f}: cut {1 - mine / plain:.0%}"


def correct(path: Path) -> np.ndarray:
    """Per held-out pair: 1 if the chosen reply got the higher reward, 0.5 for equal rewards, else 0; NaN for a
    pair labelled a tie (PandaLM has them; accuracy leaves them out)."""
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        best, worst = row["ranks"].index(0), row["ranks"].index(max(row["ranks"]))
        r = row["rewards"]
        if best == worst:
            out.append(float("nan"))
            continue
        out.append(1.0 if r[best] > r[worst] else 0.5 if r[best] == r[worst] else 0.0)
    return np.asarray(out)


def paired(a: Path, b: Path) -> tuple[float, float, float, int] | None:
    """Accuracy from rewards file ``a`` minus ``b``'s on the same pairs: (mean, 95 % low, high, pairs), by a paired
    bootstrap over pairs (2,000 resamples, seed 0); None when either file is missing."""
    if not a.exists() or not b.exists():
        return None
    diff = correct(a) - correct(b)
    diff = diff[~np.isnan(diff)]
    rng = np.random.default_rng(0)
    boot = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(diff.mean()), float(lo), float(hi), len(diff)


def seed_mean(files: list[Path]) -> tuple[float, float, float, int]:
    """Accuracy averaged over several runs (e.g. seeds) scored on the same pairs: (mean, 95 % low, high, pairs).
    Each pair's correctness is averaged over the runs first, then pairs are resampled (2,000 times, seed 0), so the
    interval covers the held-out sample; the runs' spread is what the caller reports beside it."""
    each = np.stack([correct(f) for f in files]).mean(axis=0)
    each = each[~np.isnan(each)]
    rng = np.random.default_rng(0)
    boot = [each[rng.integers(0, len(each), len(each))].mean() for _ in range(2000)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(each.mean()), float(lo), float(hi), len(each)


def paired_difference(out: Path, method: str, data: str) -> str | None:
    """Accuracy of ``method`` minus the plain run's on the same pairs, with a paired bootstrap 95 % interval."""
    d = paired(out / f"{data}-{method}.rewards.jsonl", out / f"{data}-none.rewards.jsonl")
    return d and f"{data}: {method} − plain accuracy {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] (paired bootstrap, {d[3]} pairs)"


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/length")
