"""The issue-33 quality table from experiments/precision_quality.sh's outputs.

Usage: python experiments/precision_table.py [runs/precision]
Per run: held-out HH and PandaLM accuracy (bootstrap 95 % CI from the eval), training wall time; bf16 − fp32 accuracy
paired per pair (bootstrap over pairs); and the fp32-trained model scored in fp32 vs bf16: pair decisions equal,
max and median |Δr|."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

# experiments/ is on sys.path when this file is run as a script
from length_table import ci, paired


def rewards(path: Path) -> list[np.ndarray]:
    return [np.asarray(json.loads(line)["rewards"]) for line in path.read_text().splitlines()]


def wall(log: Path) -> str:
    m = re.findall(r"([0-9.]+) s wall", log.read_text()) if log.exists() else []
    return f"{float(m[-1]):.0f} s" if m else "–"


def main(out: Path) -> None:
    print("| run | precision (as recorded) | train wall | HH held-out acc. [95% CI] | PandaLM acc. [95% CI] |\n"
          "|---|---|---|---|---|")
    for name in ("smollm2-fp32", "smollm2-bf16", "gemma3"):
        if not (out / name / "report.json").exists():
            continue
        report = json.loads((out / name / "report.json").read_text())
        p = report.get("precision", {})
        cells = []
        for key in ("hh", "pandalm"):
            f = out / f"{key}-{name}.json"
            m = json.loads(f.read_text()) if f.exists() else None
            cells.append(ci(m["accuracy"], m.get("accuracy_ci")) if m else "–")
        print(f"| {name} | {p.get('compute')} ({p.get('reason', '')}) | {wall(out / f'{name}.train.log')} | "
              f"{cells[0]} | {cells[1]} |")
    for key in ("hh", "pandalm"):
        d = paired(out / f"{key}-smollm2-bf16.rewards.jsonl", out / f"{key}-smollm2-fp32.rewards.jsonl")
        if d:
            print(f"\n{key}: bf16 − fp32 training, accuracy {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] "
                  f"(paired bootstrap, {d[3]} pairs)")
    a, b = out / "hh-smollm2-fp32.rewards.jsonl", out / "hh-smollm2-fp32-as-bf16.rewards.jsonl"
    if a.exists() and b.exists():
        ra, rb = rewards(a), rewards(b)
        same = np.mean([np.array_equal(np.argsort(-x, kind="stable"), np.argsort(-y, kind="stable"))
                        for x, y in zip(ra, rb)])
        delta = np.concatenate([np.abs(x - y) for x, y in zip(ra, rb)])
        scale = np.concatenate(ra)
        print(f"\nfp32-trained model scored in bf16 vs fp32 on HH held-out ({len(ra)} pairs): pair decisions equal "
              f"{same:.1%}; |Δr| max {delta.max():.4f}, median {np.median(delta):.4f} (reward std {scale.std():.3f})")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/precision"))
