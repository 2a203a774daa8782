"""The issue-16 aspect table from experiments/aspects.sh's outputs: python experiments/aspects_table.py runs/aspects"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from length_table import ci, paired  # experiments/ is on sys.path when this file is run as a script

MODELS = {"single": "single RM on the mixed data", "armo-preference": "aspect model, gate loss 'preference'",
          "armo-label": "aspect model, gate loss 'label'", "armo": "aspect model, gate loss 'both', no refit",
          "armo-refit": "aspect model, gate loss 'both', gate refit (default)"}
ASPECT_MODELS = ("armo-preference", "armo-label", "armo", "armo-refit")


def main(out: Path) -> None:
    res = {(d, m): json.loads((out / f"{d}-{m}.json").read_text())
           for d in ("helpful", "harmless") for m in MODELS if (out / f"{d}-{m}.json").exists()}
    print("| reward | helpful held-out acc. [95% CI] | harmless held-out acc. [95% CI] |\n|---|---|---|")
    rows = [(MODELS["single"], "single", None)] + [
        (f"{MODELS[m]}, {part}", m, head) for m in ASPECT_MODELS
        for part, head in (("gated mixture", None), ("helpful head alone", "helpful"), ("harmless head alone", "harmless"))]
    for label, m, head in rows:
        cells = []
        for d in ("helpful", "harmless"):
            r = res.get((d, m))
            if r is None:
                cells.append("–")
            elif head is None:
                cells.append(ci(r["accuracy"], r.get("accuracy_ci")))
            else:
                h = r["aspects"]["head_accuracy"][head]
                cells.append(ci(h["accuracy"], h["accuracy_ci"]))
        print(f"| {label} | {' | '.join(cells)} |")
    print("\n| model | prompts | gate weight on helpful | gate weight on harmless |\n|---|---|---|---|")
    for m in ASPECT_MODELS:
        for d, name in (("helpful", "helpful held-out (helpful-base)"), ("harmless", "harmless held-out (harmless-base)")):
            if (d, m) in res:
                w = res[(d, m)]["aspects"]["mean_weights"]
                print(f"| {MODELS[m]} | {name} | {w['helpful']:.3f} | {w['harmless']:.3f} |")
    for d in ("helpful", "harmless"):  # the same heads, the gate alone refit: the mixture's paired difference
        diff = paired(out / f"{d}-armo-refit.rewards.jsonl", out / f"{d}-armo.rewards.jsonl")
        if diff:
            print(f"{d}: gated mixture, refit − no refit {diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}] "
                  f"(paired bootstrap, {diff[3]} pairs)")
    for m in ("armo-refit", "armo"):
        steer = out / f"steer-{m}.jsonl"
        if steer.exists():
            steering_table(steer, MODELS[m])


def steering_table(steer: Path, model: str) -> None:
    print(f"\n{model}:\n| held-out record | weights | r(chosen) | r(rejected) | P(chosen ≻ rejected) |\n|---|---|---|---|---|")
    for line in steer.read_text().splitlines():
        row = json.loads(line)
        w = row["aspects"]["weights"]
        given = "gate" if "aspect_weights" not in row else ",".join(f"{k}={v:g}" for k, v in w.items())
        print(f"| {row['source'].rsplit('/', 1)[-1]} | {given} ({w['helpful']:.2f}/{w['harmless']:.2f}) | "
              f"{row['reward_a']:+.3f} | {row['reward_b']:+.3f} | {row['p_a_beats_b']:.3f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/aspects"))
