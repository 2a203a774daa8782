"""The issue-16 recipe table from experiments/recipe.sh's outputs.

Usage: python experiments/recipe_table.py [runs/recipe [runs/hh-helpful-recipe [BASE]]]
With BASE (another recipe output folder, e.g. runs/recipe beside runs/recipe-lr5e-5), also the paired accuracy
difference against it on the same held-out pairs.
       python experiments/recipe_table.py --seeds runs/recipe runs/recipe-seed43 ...
Several runs of one recipe that differ only in seed: each run's accuracy and their mean on each held-out set."""

from __future__ import annotations

import json
import sys
from pathlib import Path

# experiments/ is on sys.path when this file is run as a script
from length_table import ci, paired, seed_mean


def main(out: Path, run: Path, base: Path | None = None) -> None:
    report = json.loads((run / "report.json").read_text())
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [s for s in steps if s.get("split") == "train"]
    quarter = max(1, len(train) // 4)
    print(f"steps: {len(train)}; training loss, mean of the first / last quarter: "
          f"{sum(s['loss'] for s in train[:quarter]) / quarter:.3f} / {sum(s['loss'] for s in train[-quarter:]) / quarter:.3f}")
    print(f"time in steps (sum of step_s): {sum(s['step_s'] for s in train):.0f} s; report timings_s: {report['timings_s']}")
    log = out / "train.log"
    if log.exists():
        print("segments (/usr/bin/time):", [line for line in log.read_text().splitlines() if "s wall" in line])
    print(f"train data: {report['train_data']}\ntruncation: {report['train_truncation']}")
    print("\n| held-out set | accuracy [95% CI] | length baseline | acc., chosen shorter [95% CI] (pairs) | "
          "prefers longer | Spearman(r, length) | ECE | Brier |\n|---|---|---|---|---|---|---|---|")
    sets = [("HH helpful-base[-500:] (in-run eval)", report["after"])]
    sets += [(name, json.loads((out / f"{key}.json").read_text())) for key, name in
             (("hh", "HH helpful-base[-500:] (`rewardkit eval` of the saved model)"), ("pandalm", "PandaLM test set"))
             if (out / f"{key}.json").exists()]
    for name, m in sets:
        length = m["length"]
        print(f"| {name} | {ci(m['accuracy'], m.get('accuracy_ci'))} | {length['length_baseline_accuracy']:.3f} | "
              f"{ci(length['accuracy_chosen_shorter'], length.get('accuracy_chosen_shorter_ci'))} "
              f"({length['chosen_shorter_pairs']}) | {length['model_prefers_longer']:.3f} | "
              f"{length['reward_length_spearman']:+.3f} | {m['ece']:.3f} | {m['brier']:.3f} |")
    for key in ("hh", "pandalm") if base else ():
        d = paired(out / f"{key}.rewards.jsonl", base / f"{key}.rewards.jsonl")
        if d:
            print(f"{key}: {out.name} − {base.name} accuracy {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] "
                  f"(paired bootstrap, {d[3]} pairs)")


def seeds(outs: list[Path]) -> None:
    for key in ("hh", "pandalm"):
        files = [out / f"{key}.rewards.jsonl" for out in outs]
        accs = [json.loads((out / f"{key}.json").read_text())["accuracy"] for out in outs]
        mean, lo, hi, n = seed_mean(files)
        print(f"{key}: " + ", ".join(f"{out.name} {a:.3f}" for out, a in zip(outs, accs)) +
              f"; mean of {len(outs)} runs {mean:.3f} [{lo:.3f}, {hi:.3f}] (bootstrap over {n} pairs), "
              f"spread {max(accs) - min(accs):.3f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--seeds"]:
        seeds([Path(a) for a in args[1:]])
        sys.exit()
    main(Path(args[0] if args else "runs/recipe"), Path(args[1] if len(args) > 1 else "runs/hh-helpful-recipe"),
         Path(args[2]) if len(args) > 2 else None)
