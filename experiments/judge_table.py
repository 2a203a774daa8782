"""The RESULTS.md table for issue 6: judges, the trained GenRM and the classifier RM side by side.

    python experiments/judge_table.py            # reads runs/judges/*.json and runs/eval/*-trained.json

Wall time per pair is the whole process (``/usr/bin/time`` in the run's log: model load, scoring,
bootstrap) divided by the records scored (PandaLM: 999, its 105 ties included), the same for every row; one-order pairwise rows reuse the
both-order run's forward passes, so their time is half of it (each order is one judge prompt per pair).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = [  # (label, json stem, single-order view)
    ("pairwise judge, one order (random per pair)", "judges/{d}-pairwise", "random"),
    ("pairwise judge, one order (chosen shown as A)", "judges/{d}-pairwise", "chosen_first"),
    ("pairwise judge, one order (chosen shown as B)", "judges/{d}-pairwise", "chosen_second"),
    ("pairwise judge, both orders (mean log-odds)", "judges/{d}-pairwise", None),
    ("pointwise judge (expected 1–10 rating)", "judges/{d}-pointwise", None),
    ("verifier judge (logit P(Yes))", "judges/{d}-verifier", None),
    ("trained GenRM verifier (top 4 blocks, HH[:1000])", "judges/{d}-genrm", None),
    ("classifier RM runs/hh-helpful-1000 (full fine-tune, HH[:1000])", "eval/{d}-trained", None),
]


def wall_seconds(log: Path) -> float | None:
    m = re.search(r"([\d.]+) s wall", log.read_text()) if log.exists() else None
    return float(m.group(1)) if m else None


def row(label: str, stem: str, view: str | None, d: str) -> str | None:
    path = ROOT / "runs" / f"{stem.format(d=d)}.json"
    if not path.exists():
        return None
    full = json.loads(path.read_text())
    r = (full.get("single_order") or full["judge_metrics"]["single_order"])[view] if view else full
    jm = full.get("judge_metrics", {})
    wall = wall_seconds(path.with_suffix(".log"))
    scored = full["data"]["loaded"]  # every record is scored (PandaLM's ties too), so time is per record scored
    per_pair = wall / scored / (2 if view else 1) if wall else None
    ci = r.get("accuracy_ci") or r.get("pairwise_accuracy_ci")
    flip = jm.get("flip_rate") if (view is None and jm.get("flip_rate") is not None) else None
    pos_a = jm.get("position_a_rate") if view is None else None
    mass = jm.get("mean_verdict_mass")
    cells = [
        label, f"{r['accuracy']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{r['accuracy']:.3f}",
        f"{flip:.3f}" if flip is not None else "–", f"{pos_a:.3f}" if pos_a is not None else "–",
        f"{r['ece']:.3f}", f"{r['calibration_normalized']['ece']:.3f}" if "calibration_normalized" in r else "–",
        f"{r['brier']:.3f}", f"{r['length']['model_prefers_longer']:.2f}" if "length" in r else "–",
        f"{mass:.2f}" if mass is not None else "–", f"{per_pair:.2f}" if per_pair else "–",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    for d, title in (("hh", "HH helpful-base held-out (498 pairs)"), ("pandalm", "PandaLM test set (894 strict pairs)")):
        print(f"**{title}**\n")
        print("| scorer | accuracy [95% CI] | flip rate | verdict A rate | ECE σ(Δr) | ECE σ(Δr/std) | Brier "
              "| prefers longer | verdict mass | s / pair |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label, stem, view in ROWS:
            line = row(label, stem, view, d)
            print(line if line else f"| {label} | not run | | | | | | | | |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
