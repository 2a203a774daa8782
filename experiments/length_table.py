"""The issue-16 table from experiments/length_debias.sh's eval outputs: python experiments/length_table.py runs/length

With several folders (the same variants at other seeds: python experiments/length_table.py runs/length
runs/length-seed43), one table per folder, then each method's figures averaged over the seeds and its accuracy
difference against the plain run, paired on the same pairs and pooled over the seeds."""

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
    return pair_bootstrap(correct(a) - correct(b))


def pair_bootstrap(values: np.ndarray) -> tuple[float, float, float, int]:
    """Mean of one value per held-out pair (NaN pairs left out) with a percentile 95 % interval from resampling
    pairs (2,000 resamples, seed 0): (mean, low, high, pairs)."""
    values = values[~np.isnan(values)]
    rng = np.random.default_rng(0)
    boot = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(2000)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(values.mean()), float(lo), float(hi), len(values)


def seed_mean(files: list[Path]) -> tuple[float, float, float, int]:
    """Accuracy averaged over several runs (e.g. seeds) scored on the same pairs: (mean, 95 % low, high, pairs).
    Each pair's correctness is averaged over the runs first, then pairs are resampled (2,000 times, seed 0), so the
    interval covers the held-out sample; the runs' spread is what the caller reports beside it."""
    return pair_bootstrap(np.stack([correct(f) for f in files]).mean(axis=0))


def paired_difference(out: Path, method: str, data: str) -> str | None:
    """Accuracy of ``method`` minus the plain run's on the same pairs, with a paired bootstrap 95 % interval."""
    d = paired(out / f"{data}-{method}.rewards.jsonl", out / f"{data}-none.rewards.jsonl")
    return d and f"{data}: {method} − plain accuracy {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] (paired bootstrap, {d[3]} pairs)"


def pooled(folders: list[Path]) -> None:
    """Mean over seeds of each method's HH figures and PandaLM accuracy, and its accuracy minus plain's, paired per
    pair and seed: each pair's difference is averaged over the seeds, then pairs are resampled (2,000, seed 0)."""
    print(f"\nmean over {len(folders)} seeds ({', '.join(f.name for f in folders)}); differences paired and pooled:")
    print("| method | HH acc. | HH − plain [95% CI] | HH acc., chosen shorter | HH prefers longer | "
          "HH Spearman(r, length) (cut vs plain) | PandaLM acc. | PandaLM − plain [95% CI] |\n|---|---|---|---|---|---|---|---|")
    spearman_plain = None
    for method in ("none", *DEBIASED):
        if not all((f / f"{k}-{method}.json").exists() for f in folders for k in ("hh", "pandalm")):
            continue
        hh = [json.loads((f / f"hh-{method}.json").read_text()) for f in folders]
        pl = [json.loads((f / f"pandalm-{method}.json").read_text()) for f in folders]
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        spearman = mean([m["length"]["reward_length_spearman"] for m in hh])
        spearman_plain = spearman if method == "none" else spearman_plain
        cut = f" ({1 - spearman / spearman_plain:.0%})" if method != "none" and spearman_plain else ""
        diffs = []
        for k in ("hh", "pandalm"):
            files = [(f / f"{k}-{method}.rewards.jsonl", f / f"{k}-none.rewards.jsonl") for f in folders]
            if method == "none" or not all(a.exists() and b.exists() for a, b in files):
                diffs.append("–")
                continue
            d = pair_bootstrap(np.stack([correct(a) - correct(b) for a, b in files]).mean(axis=0))
            diffs.append(f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]")
        print(f"| {method} | {mean([m['accuracy'] for m in hh]):.3f} | {diffs[0]} | "
              f"{mean([m['length']['accuracy_chosen_shorter'] for m in hh]):.3f} | "
              f"{mean([m['length']['model_prefers_longer'] for m in hh]):.3f} | {spearman:+.3f}{cut} | "
              f"{mean([m['accuracy'] for m in pl]):.3f} | {diffs[1]} |")


if __name__ == "__main__":
    folders = sys.argv[1:] or ["runs/length"]
    for folder in folders:
        main(folder)
    if len(folders) > 1:
        pooled([Path(f) for f in folders])
