"""Tables for RESULTS.md from `experiments/verifiers.sh` and `experiments/verifiers_larger.sh` outputs: python experiments/verifier_table.py runs/verifiers_larger"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

VOTE_WEIGHTS = {"logit": "σ(reward) = P(correct)", "softmax": "softmax of the question's rewards",
                "probability": "the PRM's aggregate P(correct)"}


def load(folder: Path, name: str) -> dict | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def wall(folder: Path, log: str) -> str:
    path = folder / log
    if not path.exists():
        return "–"
    found = re.findall(r"([\d.]+) s wall, (\d+) KB peak", path.read_text())
    return f"{float(found[-1][0]):.0f} s" if found else "–"


def ci(m: dict) -> str:
    return f"{m['accuracy']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]" if m.get("ci") else f"{m['accuracy']:.3f}"


def diff(m: dict) -> str:
    return f"{m['difference']:+.3f} [{m['ci'][0]:+.3f}, {m['ci'][1]:+.3f}]" if m.get("ci") else f"{m['difference']:+.3f}"


def main(folder: Path) -> None:
    prm_bo4 = load(folder, "prm-gsm8k-bo4")
    if prm_bo4 and load(folder, "orm-gsm8k-bo4"):
        b = rescored_best_of_n(folder, "orm-gsm8k-bo4", prm_bo4["data"])
        if b:
            print(f"ORM on the PRM's {b['problems']} questions ({prm_bo4['data']}): scorer {ci(b['scorer'])}, random "
                  f"{ci(b['random'])}, majority {ci(b['majority_vote'])}, oracle {ci(b['oracle'])}; ORM − majority "
                  f"{diff(b['scorer_minus_majority_vote'])}\n")
    print("| run | records | steps | wall (train) |")
    print("|---|---|---|---|")
    for name in ("orm", "bt", "prm"):
        report = folder / name / "report.json"
        if report.exists():
            r = json.loads(report.read_text())
            print(f"| {name} | {r['train_data']['loaded']} ({r['train_data']['source'][:60]}…) | {r['steps']} | "
                  f"{wall(folder, name + '.train.log')} |")
    print()
    for name in ("orm-gsm8k-bo4", "bt-gsm8k-bo4", "prm-gsm8k-bo4"):
        out = load(folder, name)
        if not out or "best_of_n" not in out:
            continue
        # recomputed from the saved per-solution scores with the current metrics (the same seed as the run's)
        from rewardkit.verifiers import vote_weight_kind

        kind = vote_weight_kind(out["kind"] == "prm", out["scorer"])
        b = rescored_best_of_n(folder, name, out["data"], weights=kind) or out["best_of_n"]
        print(f"**{name}** ({b['problems']} held-out questions, {b['solutions_per_problem']:.0f} solutions each; "
              f"scoring {out['timings_s']['scoring']:.0f} s):\n")
        print("| picker | best-of-4 accuracy [95% CI] |")
        print("|---|---|")
        print(f"| {name.split('-')[0].upper()} ({out['scorer'].get('verifier', {}).get('aggregate', 'reward')}) | "
              f"{ci(b['scorer'])} |")
        for rule, m in (out.get("best_of_n_by_aggregate") or {}).items():
            print(f"| PRM, aggregate {rule} | {ci(m)} |")
        if "weighted_vote" in b:
            weights = VOTE_WEIGHTS.get(b.get("vote_weights", "logit"), b.get("vote_weights"))
            print(f"| verifier-weighted vote (each answer's weight: {weights}) | {ci(b['weighted_vote'])} |")
        for base in ("random", "majority_vote", "oracle"):
            print(f"| {base.replace('_', ' ')} | {ci(b[base])} |")
        if "best_position" in b:
            print(f"| always {b['best_position']['name']} (the best position, chosen on these questions) | "
                  f"{ci(b['best_position'])} |")
        print()
        if "pairs_ordered" in b:
            p = b["pairs_ordered"]
            print(f"Within-question order: {ci(p)} of the (correct, incorrect) solution pairs ordered right, over the "
                  f"{p['problems']} questions with both (chance 0.5).\n")
        if "positions" in b:
            print("Each position alone: " + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in b["positions"].items())
                  + "\n")
        print("| difference | value [95% paired CI] |")
        print("|---|---|")
        for picker in ("scorer", "weighted_vote"):
            for base in ("random", "majority_vote", "oracle", "best_position"):
                if f"{picker}_minus_{base}" in b:
                    print(f"| {picker.replace('_', ' ')} − {base.replace('_', ' ')} | "
                          f"{diff(b[f'{picker}_minus_{base}'])} |")
        o = out["outcome"]
        print(f"\noutcome: accuracy {o['accuracy']:.3f}, AUROC {o['auroc']:.3f}, BCE {o['bce']:.3f} over "
              f"{o['solutions']} solutions ({o['positive_rate']:.1%} correct)\n")
    rows = []
    for name in ("prm-processbench", "prm-processbench-gsm8k", "prm-processbench-math"):
        out = load(folder, name)
        if out and "processbench" in out:
            for subset, m in out["processbench"]["subsets"].items():
                best = max(m["threshold_sweep"].items(), key=lambda kv: kv[1] if kv[1] == kv[1] else -1)
                choice = out.get("threshold_choice")
                where = (f"{choice['threshold']:.2f} (chosen on PRMBench test, F1 {choice['f1']:.3f} there)"
                         if choice else f"{out['processbench']['threshold']:.2f}")
                rows.append(f"| {subset} | {where} | {m['erroneous']} + {m['correct']} | {m['error_accuracy']:.3f} | "
                            f"{m['correct_accuracy']:.3f} | **{m['f1']:.3f}** | "
                            f"{m['baselines']['always_correct']['f1']:.3f} | "
                            f"{m['baselines']['always_first_step']['f1']:.3f} | {best[1]:.3f} at {best[0]} | "
                            f"{out['timings_s']['scoring']:.0f} s |")
    halves = [folder / f"prm-processbench-math{x}.scores.jsonl" for x in ("", "-2")]
    if all(h.exists() for h in halves):  # math.json in two halves: ProcessBench's metric over both
        from rewardkit.verifiers import predicted_first_error, processbench_f1

        labels, predicted = [], []
        for h in halves:
            for r in map(json.loads, h.read_text().splitlines()):
                steps = r["step_labels"]
                first = next((i for i, v in enumerate(steps) if v is not None and v < 0.5), -1)
                labels.append(first)
                predicted.append(predicted_first_error([float("nan") if v is None else v for v in r["step_scores"]]))
        m = processbench_f1(labels, predicted)
        always = processbench_f1(labels, [-1] * len(labels))["f1"]
        step0 = processbench_f1(labels, [0] * len(labels))["f1"]
        sweep = {f"{t:.2f}": processbench_f1(labels, [predicted_first_error(
            [float("nan") if v is None else v for v in r["step_scores"]], t)
            for h in halves for r in map(json.loads, h.read_text().splitlines())])["f1"]
            for t in [0.05 * k for k in range(1, 20)]}
        best = max(sweep.items(), key=lambda kv: kv[1])
        rows.append(f"| math (both halves) | 0.50 | {m['erroneous']} + {m['correct']} | {m['error_accuracy']:.3f} | "
                    f"{m['correct_accuracy']:.3f} | **{m['f1']:.3f}** | {always:.3f} | {step0:.3f} | "
                    f"{best[1]:.3f} at {best[0]} | – |")
    if rows:
        print("| ProcessBench subset | threshold | erroneous + correct | acc. erroneous | acc. correct | F1 | "
              "always correct | always step 0 | best F1 of the sweep (optimistic) | scoring |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))


def rescored_best_of_n(folder: Path, name: str, spec: str, weights: str | None = None) -> dict | None:
    """Best-of-4 of a scorer's saved per-solution scores on the records of ``spec`` only (the ORM scored all held-out
    questions; the PRM the first 330 of them: this compares both on the same questions)."""
    import numpy as np

    from rewardkit.data.steps import read_verifier_examples
    from rewardkit.verifiers import best_of_n

    path = folder / f"{name}.scores.jsonl"
    if not path.exists():
        return None
    scores = {r["id"].split("gsm8k/")[-1]: r["score"] for r in map(json.loads, path.read_text().splitlines())}
    examples, _ = read_verifier_examples(spec)
    arrays = [np.array([np.nan if scores.get(i.split("gsm8k/")[-1]) is None else scores[i.split("gsm8k/")[-1]]
                        for i in ex.ids]) for ex in examples]
    return best_of_n(examples, arrays, weights=weights, samples=1000, seed=42)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/verifiers"))
