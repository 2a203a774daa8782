"""Evaluation of verifiers — outcome and process reward models: metrics as pure functions, and the run that scores.

* **ProcessBench** (Zheng et al. 2024, arXiv 2412.06559, ``QwenLM/ProcessBench`` ``code/run_eval_prm.py``): a PRM's
  step scores become a predicted first wrong step — the first step whose P(right) is below ``threshold``, or −1
  when none is. Accuracy on the erroneous solutions (label ≠ −1) is the fraction whose predicted index equals the
  label exactly, accuracy on the correct ones the fraction predicted −1, and **F1 is their harmonic mean**, per
  subset (the data's file: ``gsm8k``, ``math``, …). The threshold is 0.5 unless given (P(right) from a BCE-trained
  head; the reference script uses 0.5 for Qwen2.5-Math-PRM); ``threshold_sweep`` shows F1 at other thresholds
  and says that picking the best of them on the test set is optimistic. Trivial baselines: always −1 (F1 0: no
  erroneous solution is right) and always step 0.
* **PRMBench-style step F1** (Song et al. 2025, arXiv 2501.03124): over the steps of the solutions with inserted
  errors, per error type, F1 of detecting wrong steps (positive = a wrong step, predicted wrong when P(right) <
  threshold), F1 of the right steps, and their mean (PRMBench's "PRMScore" combines the two classes this way).
* **Best-of-N** (Cobbe et al. 2021): per problem, the solution with the highest score is picked; accuracy =
  the fraction of problems whose pick is correct. Beside it: random choice (the mean correctness of a problem's
  solutions, its expected value), majority vote over final answers (``rewardkit.data.answers``; a tie among
  the most frequent answers broken uniformly, as an expectation), and the oracle (any solution correct); also
  verifier-weighted voting (each answer's summed P(correct); Uesato et al. 2022, Lightman et al. 2023) and the
  accuracy of always taking the solution at each position — on GSM8K's released solutions each position is one
  model (``175b_verification``, itself chosen by Cobbe et al.'s verifier out of 100 samples, is right 56 % of the
  time), a baseline a verifier must be read against. Percentile bootstrap CIs over problems, and paired CIs of
  the differences (the same resamples).
* **Outcome metrics**: accuracy of P(correct) > 0.5 against the outcome labels, AUROC, mean BCE.

Scores come from the one scoring path (``rewardkit.inference``): an ORM's reward is the logit of P(correct)
(``probabilities=False``), a PRM's ``rewards`` are already aggregated probabilities and its ``step_rewards`` the
steps' P(right).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from rewardkit.data.answers import normalize_answer
from rewardkit.data.steps import VerifierExample
from rewardkit.evaluate import Bootstrap
from rewardkit.losses import sigmoid

THRESHOLD = 0.5


# ------------------------------------------------------------------------------ ProcessBench


def predicted_first_error(step_scores: np.ndarray, threshold: float = THRESHOLD) -> int:
    """The first step whose P(right) is below ``threshold`` (0-based), −1 when every scored step is at or above it.
    A NaN score (a step past max_length) counts as unscored: it cannot be predicted wrong."""
    for i, p in enumerate(np.asarray(step_scores, dtype=np.float64)):
        if not np.isnan(p) and p < threshold:
            return i
    return -1


def _harmonic(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def processbench_f1(labels: list[int], predicted: list[int]) -> dict[str, Any]:
    """ProcessBench's metric on one subset: ``labels`` / ``predicted`` are first-error indices (−1: all right)."""
    labels_a, pred_a = np.asarray(labels), np.asarray(predicted)
    err, ok = labels_a != -1, labels_a == -1
    acc_err = float((pred_a[err] == labels_a[err]).mean()) if err.any() else float("nan")
    acc_ok = float((pred_a[ok] == -1).mean()) if ok.any() else float("nan")
    return {"error_accuracy": acc_err, "correct_accuracy": acc_ok,
            "f1": _harmonic(acc_err, acc_ok) if err.any() and ok.any() else float("nan"),
            "erroneous": int(err.sum()), "correct": int(ok.sum())}


def processbench_metrics(examples: list[VerifierExample], step_scores: list[list[np.ndarray]],
                         threshold: float = THRESHOLD) -> dict[str, Any]:
    """ProcessBench F1 per subset (and over all solutions), with the trivial baselines and a threshold sweep."""
    rows: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for ex, scores in zip(examples, step_scores):
        for k, sc in enumerate(scores):
            label = ex.first_error(k)
            if label is not None:
                rows[ex.subset or "all"].append((label, sc))
    out: dict[str, Any] = {"threshold": threshold, "subsets": {}}
    for subset, items in sorted(rows.items()):
        labels = [lab for lab, _ in items]
        result = processbench_f1(labels, [predicted_first_error(sc, threshold) for _, sc in items])
        result["baselines"] = {"always_correct": processbench_f1(labels, [-1] * len(labels)),
                               "always_first_step": processbench_f1(labels, [0] * len(labels))}
        result["threshold_sweep"] = {
            f"{t:.2f}": processbench_f1(labels, [predicted_first_error(sc, t) for _, sc in items])["f1"]
            for t in np.linspace(0.05, 0.95, 19)}
        out["subsets"][subset] = result
    out["note"] = ("threshold_sweep picks its best value on the evaluated data itself: optimistic, shown for the "
                   "shape of the curve only; the headline f1 uses the stated threshold")
    return out


THRESHOLD_GRID = tuple(round(t, 2) for t in np.arange(0.01, 1.0, 0.01))


def choose_threshold(examples: list[VerifierExample], step_scores: list[list[np.ndarray]],
                     grid: tuple[float, ...] = THRESHOLD_GRID) -> dict[str, Any]:
    """The threshold with the best ProcessBench F1 over all of these labelled solutions pooled (ties: the one
    nearest 0.5) — meant for data other than the evaluated set (PRMBench's test split, a held-out slice of the
    training data), so the evaluated F1 stays honest. Needs solutions with and without an error."""
    items = [(ex.first_error(k), sc) for ex, scores in zip(examples, step_scores) for k, sc in enumerate(scores)]
    items = [(lab, sc) for lab, sc in items if lab is not None]
    labels = [lab for lab, _ in items]
    if not any(lab == -1 for lab in labels) or all(lab == -1 for lab in labels):
        raise ValueError("choosing a threshold needs step-labelled solutions both with and without an error")
    f1 = {t: processbench_f1(labels, [predicted_first_error(sc, t) for _, sc in items])["f1"] for t in grid}
    best = max(f1.values())
    t = min((t for t, v in f1.items() if v == best), key=lambda t: abs(t - 0.5))
    return {"threshold": t, "f1": best, "solutions": len(items), "erroneous": sum(lab != -1 for lab in labels)}


# ------------------------------------------------------------------------------ PRMBench-style step F1


def _f1(tp: int, fp: int, fn: int) -> float:
    return 0.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def step_f1(examples: list[VerifierExample], step_scores: list[list[np.ndarray]],
            threshold: float = THRESHOLD) -> dict[str, Any]:
    """Per subset (error type), step-level F1 of wrong-step detection, of right steps, and their mean; over the
    solutions that have a wrong step (PRMBench's modified processes), labelled and scored steps only."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # tp, fp, fn, tn with positive = wrong step
    for ex, scores in zip(examples, step_scores):
        for labels, sc in zip(ex.step_labels, scores):
            if labels is None or not any(v is not None and v < 0.5 for v in labels):
                continue
            for label, p in zip(labels, sc):
                if label is None or np.isnan(p):
                    continue
                wrong, said_wrong = label < 0.5, p < threshold
                c = counts[ex.subset or "all"]
                c[0 if wrong and said_wrong else 1 if said_wrong else 2 if wrong else 3] += 1
    out: dict[str, Any] = {"threshold": threshold, "subsets": {}}
    total = [0, 0, 0, 0]
    for subset, (tp, fp, fn, tn) in sorted(counts.items()):
        total = [a + b for a, b in zip(total, (tp, fp, fn, tn))]
        f1_wrong, f1_right = _f1(tp, fp, fn), _f1(tn, fn, fp)
        out["subsets"][subset] = {"f1_wrong_steps": f1_wrong, "f1_right_steps": f1_right,
                                  "mean_f1": (f1_wrong + f1_right) / 2, "steps": tp + fp + fn + tn,
                                  "wrong_steps": tp + fn}
    tp, fp, fn, tn = total
    out["overall"] = {"f1_wrong_steps": _f1(tp, fp, fn), "f1_right_steps": _f1(tn, fn, fp),
                      "mean_f1": (_f1(tp, fp, fn) + _f1(tn, fn, fp)) / 2, "steps": sum(total)}
    return out


# ------------------------------------------------------------------------------ best-of-N


def _pick_value(scores: np.ndarray, correct: np.ndarray) -> float:
    """Correctness of the highest-scored solution; solutions tied at the top share the pick (expected value)."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    top = s == s.max()
    return float(correct[top].mean())


def majority_value(answers: list[str | None], correct: np.ndarray) -> float:
    """Expected correctness of majority voting over final answers: the most frequent normalised answer wins, a
    tie among answers is broken uniformly; a solution with no answer does not vote (all without: random). It is
    weighted voting with every weight 1."""
    return weighted_vote_value(answers, np.ones(len(answers)), correct)


def weighted_vote_value(answers: list[str | None], weights: np.ndarray, correct: np.ndarray) -> float:
    """Expected correctness of verifier-weighted voting (Uesato et al. 2022; Lightman et al. 2023 "RM-weighted
    voting"; Math-Shepherd's "self-consistency + verifier"): each final answer collects the sum of its solutions'
    weights (P(correct)) and the heaviest answer wins, ties broken uniformly. A solution with no answer or no score
    does not vote; when none votes, the pick is random."""
    totals: dict[str, float] = defaultdict(float)
    members: dict[str, list[int]] = defaultdict(list)
    for k, (a, w) in enumerate(zip(answers, weights)):
        if a is not None and not np.isnan(w):
            key = normalize_answer(a)
            totals[key] += float(w)
            members[key].append(k)
    if not totals:
        return float(correct.mean())
    best = max(totals.values())
    tops = [members[a] for a, t in totals.items() if np.isclose(t, best, rtol=1e-12, atol=1e-12)]
    return float(np.mean([correct[v].mean() for v in tops]))


def within_problem_order(scores: np.ndarray, correct: np.ndarray) -> float | None:
    """The fraction of one problem's (correct, incorrect) solution pairs whose scores put the correct one higher
    (ties count half; unscored solutions left out): a verifier's ranking within a problem, which best-of-N needs and
    a pooled AUROC does not measure (it also rewards knowing which problems are hard). None without both kinds."""
    ok = ~np.isnan(scores)
    good, bad = scores[ok & (correct >= 0.5)], scores[ok & (correct < 0.5)]
    if not len(good) or not len(bad):
        return None
    diff = good[:, None] - bad[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def _position_names(examples: list[VerifierExample]) -> list[str]:
    """A name per solution position: the id's last ``:`` field where every problem agrees on it (GSM8K's model
    names), else ``position k``."""
    width = max((len(e.ids) for e in examples), default=0)
    names = []
    for k in range(width):
        tails = {e.ids[k].rsplit(":", 1)[-1] for e in examples if k < len(e.ids)}
        tail = tails.pop() if len(tails) == 1 else ""
        names.append(tail if tail and "#" not in tail else f"position {k}")
    return names


VOTE_WEIGHTS = ("logit", "probability", "softmax")


def vote_weights(scores: np.ndarray, kind: str) -> np.ndarray:
    """A problem's solutions' voting weights from their scores: ``probability`` — the scores are P(correct) (a PRM's
    aggregate); ``logit`` — σ(score) (an ORM's reward is the logit of P(correct)); ``softmax`` — exp(r) / Σ exp(r)
    over the problem's scored solutions, for a preference reward model whose rewards are only defined up to a shift
    (the Bradley–Terry / Plackett–Luce probability that a solution is the problem's best). NaN stays NaN."""
    s = np.asarray(scores, dtype=np.float64)
    if kind == "probability":
        return s
    if kind == "logit":
        return sigmoid(s)  # NaN stays NaN
    if kind == "softmax":
        ok = ~np.isnan(s)
        out = np.full_like(s, np.nan)
        if ok.any():
            e = np.exp(s[ok] - s[ok].max())
            out[ok] = e / e.sum()
        return out
    raise ValueError(f"vote weights must be one of {VOTE_WEIGHTS}, got {kind!r}")


def vote_weight_kind(prm: bool, scorer_description: dict[str, Any]) -> str:
    """Which ``vote_weights`` a scorer's scores take: P for a PRM's aggregate, σ for an ORM's logit, softmax for a
    preference RM (``scorer.describe()`` names the verifier kind a checkpoint was trained as)."""
    if prm:
        return "probability"
    return "logit" if (scorer_description.get("verifier") or {}).get("kind") == "orm" else "softmax"


def best_of_n(examples: list[VerifierExample], scores: list[np.ndarray], *, probabilities: bool = False,
              weights: str | None = None, samples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Best-of-N accuracy of the scores against random, majority vote and the oracle, with bootstrap CIs over
    problems and paired CIs of the score's difference to each baseline. Problems need ≥ 2 labelled solutions.

    Also reported: verifier-weighted voting (``vote_weights``: ``weights``, default ``probability`` when
    ``probabilities`` else ``logit``; ``softmax`` for a preference RM) with its paired differences, the
    within-problem pair order, and the accuracy of always taking the solution at each
    position. When the data lists its solutions in a fixed order of sources (GSM8K's four models), the best
    position is a strong, data-specific baseline that a verifier should be compared with; it is chosen on the
    evaluated problems themselves, so it is optimistic."""
    kind = weights or ("probability" if probabilities else "logit")
    values: dict[str, list[float]] = defaultdict(list)
    names = _position_names(examples)
    positions: dict[int, list[float]] = defaultdict(list)
    pair_problems: list[int] = []
    pair_values: list[float] = []
    for ex, sc in zip(examples, scores):
        keep = [k for k, c in enumerate(ex.correct) if c is not None]
        if len(keep) < 2:
            continue
        correct = (np.array([ex.correct[k] for k in keep], dtype=np.float64) >= 0.5).astype(np.float64)
        s = np.asarray(sc, dtype=np.float64)[keep]
        answers = [ex.answers[k] for k in keep]
        values["scorer"].append(_pick_value(s, correct))
        values["weighted_vote"].append(weighted_vote_value(answers, vote_weights(s, kind), correct))
        values["random"].append(float(correct.mean()))
        values["majority_vote"].append(majority_value(answers, correct))
        values["oracle"].append(float(correct.max()))
        ordered = within_problem_order(s, correct)
        if ordered is not None:
            pair_problems.append(len(values["scorer"]) - 1)
            pair_values.append(ordered)
        for j, k in enumerate(keep):
            positions[k].append(correct[j])
    n = len(values["scorer"])
    if not n:
        return {"problems": 0, "note": "no problem has two or more labelled solutions"}
    boot = Bootstrap(np.arange(n), samples=samples, seed=seed)
    idx = np.arange(n)
    out: dict[str, Any] = {"problems": n, "solutions_per_problem": float(np.mean([len(e.correct) for e in examples])),
                           "bootstrap": boot.describe(), "vote_weights": kind}
    for name, v in values.items():
        arr = np.asarray(v)
        out[name] = {"accuracy": float(arr.mean()), "ci": boot.ci(arr, idx)}
    for picker in ("scorer", "weighted_vote"):
        for base in ("random", "majority_vote", "oracle"):
            diff = np.asarray(values[picker]) - np.asarray(values[base])
            out[f"{picker}_minus_{base}"] = {"difference": float(diff.mean()), "ci": boot.ci(diff, idx)}
    if pair_values:  # over the problems with both kinds of solution, on the same resamples as every other row
        arr = np.asarray(pair_values)
        out["pairs_ordered"] = {"accuracy": float(arr.mean()), "problems": len(arr),
                                "ci": boot.ci(arr, np.asarray(pair_problems)),
                                "note": "per problem with correct and incorrect solutions: the fraction of its "
                                        "(correct, incorrect) pairs the scores order right (ties half); chance 0.5"}
    out["positions"] = {names[k]: {"accuracy": float(np.mean(v)), "problems": len(v)}
                        for k, v in sorted(positions.items())}
    full = {k: v for k, v in positions.items() if len(v) == n}  # positions every problem has: paired with the scorer
    if full:
        k = max(full, key=lambda j: np.mean(full[j]))
        arr = np.asarray(full[k])
        out["best_position"] = {"name": names[k], "accuracy": float(arr.mean()), "ci": boot.ci(arr, idx),
                                "note": "chosen on the evaluated problems: optimistic"}
        for picker in ("scorer", "weighted_vote"):
            diff = np.asarray(values[picker]) - arr
            out[f"{picker}_minus_best_position"] = {"difference": float(diff.mean()), "ci": boot.ci(diff, idx)}
    return out


# ------------------------------------------------------------------------------ outcome metrics


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half), NaN when one class is missing."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(allv):  # average ranks of ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def outcome_metrics(examples: list[VerifierExample], scores: list[np.ndarray], *, probabilities: bool
                    ) -> dict[str, Any]:
    """Accuracy of P(correct) > 0.5, AUROC and mean BCE against the outcome labels (soft labels: ≥ 0.5 is correct
    for accuracy and AUROC, the label itself for BCE)."""
    p, t = [], []
    for ex, sc in zip(examples, scores):
        for c, s in zip(ex.correct, np.asarray(sc, dtype=np.float64)):
            if c is not None and not np.isnan(s):
                p.append(s if probabilities else sigmoid(float(s)))
                t.append(c)
    if not p:
        return {"solutions": 0}
    p_a, t_a = np.clip(np.asarray(p), 1e-7, 1 - 1e-7), np.asarray(t)
    return {"solutions": len(p), "accuracy": float(((p_a > 0.5) == (t_a >= 0.5)).mean()),
            "auroc": auroc(p_a, t_a >= 0.5), "bce": float(-(t_a * np.log(p_a) + (1 - t_a) * np.log(1 - p_a)).mean()),
            "positive_rate": float((t_a >= 0.5).mean()), "mean_p": float(p_a.mean())}


# ------------------------------------------------------------------------------ the run


def _scorer_for(cfg: Any) -> Any:
    from rewardkit.inference import load_classifier_scorer

    return load_classifier_scorer(cfg.model, max_length=cfg.max_length, max_batch_tokens=cfg.max_batch_tokens,
                                  seed=cfg.seed, progress=True, device=cfg.device, precision=cfg.precision,
                                  route=cfg.route, aggregate=cfg.aggregate, step_marker=cfg.step_marker)


def run_verifier_eval(cfg: Any, scorer: Any = None) -> dict[str, Any]:
    """``rewardkit eval-verifier``: score ``cfg.data``'s solutions with an ORM or PRM and compute every metric its
    labels allow — ProcessBench F1 and step F1 (step labels, PRMs), best-of-N (problems with several
    outcome-labelled solutions) under every aggregation rule for a PRM, and outcome metrics. Returns the results
    (also written to ``cfg.output`` with per-solution scores beside it)."""
    import json
    import time
    from pathlib import Path

    from rewardkit.data.steps import read_verifier_examples
    from rewardkit.errors import UserError
    from rewardkit.inference import score
    from rewardkit.inference.scoring import aggregate_steps

    if not cfg.model or not cfg.data:
        raise UserError("eval-verifier needs --model and --data")
    if cfg.threshold_data and cfg.threshold_data.strip() == cfg.data.strip():
        raise UserError("--threshold-data is --data: a threshold chosen on the evaluated set is optimistic (the "
                        "sweep shows that already); pass other labelled data, e.g. PRMBench's test split")
    started = time.time()
    examples, report = read_verifier_examples(cfg.data, skip_bad=cfg.skip_bad_records, split=cfg.split,
                                              originals=cfg.originals)
    scorer = scorer or _scorer_for(cfg)
    loaded = time.time()
    result = score(scorer, examples)
    scored = time.time()
    prm = result.step_rewards is not None
    if cfg.threshold_data and not prm:
        raise UserError("--threshold-data chooses a step threshold: it needs a process reward model (step scores), "
                        f"and {cfg.model} is scored as an outcome model; drop it, or pass --step-marker")
    out: dict[str, Any] = {"model": cfg.model, "data": cfg.data, "read": report.to_dict(), "scorer": scorer.describe(),
                           "kind": "prm" if prm else "orm", "path": result.path,
                           "truncation": result.truncation_total().to_dict(), "dropped_steps": result.dropped_steps}
    rewards = result.rewards
    out["outcome"] = outcome_metrics(examples, rewards, probabilities=prm)
    if prm:
        steps = result.step_rewards
        threshold = THRESHOLD if cfg.threshold is None else cfg.threshold
        if any(labels is not None for ex in examples for labels in ex.step_labels):
            if cfg.threshold_data:
                out["threshold_choice"] = _threshold_from(cfg, scorer)
                threshold = out["threshold_choice"]["threshold"]
            out["processbench"] = processbench_metrics(examples, steps, threshold)
            out["step_f1"] = step_f1(examples, steps, threshold)
        bon = {rule: best_of_n(examples, [np.array([aggregate_steps(s, rule) for s in per]) for per in steps],
                               probabilities=True, samples=cfg.bootstrap_samples, seed=cfg.seed)
               for rule in ("min", "prod", "last", "mean")}
        if any(b.get("problems") for b in bon.values()):
            out["best_of_n"] = bon[scorer.aggregate]
            out["best_of_n_by_aggregate"] = {rule: {"accuracy": b["scorer"]["accuracy"], "ci": b["scorer"]["ci"],
                                                    "weighted_vote": b["weighted_vote"]}
                                             for rule, b in bon.items() if b.get("problems")}
    else:
        bon = best_of_n(examples, rewards, weights=vote_weight_kind(False, scorer.describe()),
                        samples=cfg.bootstrap_samples, seed=cfg.seed)
        if bon.get("problems"):
            out["best_of_n"] = bon
    out["timings_s"] = {"read_and_load": round(loaded - started, 2), "scoring": round(scored - loaded, 2),
                        "total": round(time.time() - started, 2)}
    if cfg.output:
        path = Path(cfg.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2, default=_json_default) + "\n")
        with path.with_suffix(".scores.jsonl").open("w") as f:
            for g, ex in enumerate(examples):
                for k, sid in enumerate(ex.ids):
                    row = {"id": sid, "score": _num(rewards[g][k]), "correct": ex.correct[k]}
                    if prm:
                        row["step_scores"] = [_num(v) for v in result.step_rewards[g][k]]
                        row["step_labels"] = ex.step_labels[k]
                    f.write(json.dumps(row) + "\n")
    return out


def _threshold_from(cfg: Any, scorer: Any) -> dict[str, Any]:
    """Score ``cfg.threshold_data`` (every solution, PRMBench's original processes included: the choice needs
    all-correct solutions) and choose the step threshold there."""
    from rewardkit.data.steps import read_verifier_examples
    from rewardkit.errors import UserError
    from rewardkit.inference import score

    examples, report = read_verifier_examples(cfg.threshold_data, skip_bad=cfg.skip_bad_records, split=cfg.split,
                                              originals=True)
    result = score(scorer, examples)
    try:
        chosen = choose_threshold(examples, result.step_rewards)
    except ValueError as e:
        raise UserError(f"--threshold-data {cfg.threshold_data}: {e}") from None
    return {"data": cfg.threshold_data, "read": report.to_dict(), **chosen,
            "note": "the threshold with the best ProcessBench F1 on this data (pooled), applied unchanged to --data"}


def _num(v: float) -> float | None:
    v = float(v)
    return None if np.isnan(v) else v


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON: {type(v).__name__}")


def summary_lines(out: dict[str, Any]) -> list[str]:
    """What ``rewardkit eval-verifier`` prints."""
    lines = [f"{out['data']}: {out['read']['loaded']} records, {out['kind'].upper()} scored via {out['path']}"
             f" in {out['timings_s']['scoring']} s"]
    o = out["outcome"]
    if o.get("solutions"):
        lines.append(f"outcome: accuracy {o['accuracy']:.4f}  auroc {o['auroc']:.4f}  bce {o['bce']:.4f}  "
                     f"({o['solutions']} solutions, {o['positive_rate']:.1%} correct)")
    if out.get("threshold_choice"):
        c = out["threshold_choice"]
        lines.append(f"threshold {c['threshold']:.2f}, chosen on {c['data']} (F1 {c['f1']:.4f} there over "
                     f"{c['solutions']} solutions)")
    for subset, m in (out.get("processbench") or {}).get("subsets", {}).items():
        lines.append(f"ProcessBench {subset}: F1 {m['f1']:.4f} (error acc {m['error_accuracy']:.4f}, correct acc "
                     f"{m['correct_accuracy']:.4f}; always-correct F1 {m['baselines']['always_correct']['f1']:.4f}, "
                     f"always-first-step F1 {m['baselines']['always_first_step']['f1']:.4f})")
    bon = out.get("best_of_n")
    if bon and bon.get("problems"):
        fmt = lambda m: f"{m['accuracy']:.4f} [{m['ci'][0]:.4f}, {m['ci'][1]:.4f}]" if m["ci"] else f"{m['accuracy']:.4f}"  # noqa: E731
        lines.append(f"best-of-{bon['solutions_per_problem']:.0f} on {bon['problems']} problems: scorer {fmt(bon['scorer'])}"
                     f"  random {fmt(bon['random'])}  majority {fmt(bon['majority_vote'])}  oracle {fmt(bon['oracle'])}")
        if bon.get("pairs_ordered"):
            lines.append(f"within-problem order {fmt(bon['pairs_ordered'])} of (correct, incorrect) pairs over "
                         f"{bon['pairs_ordered']['problems']} problems (chance 0.5)")
        lines.append(f"verifier-weighted vote {fmt(bon['weighted_vote'])}"
                     + (f"  best fixed position ({bon['best_position']['name']}, optimistic) {fmt(bon['best_position'])}"
                        if bon.get("best_position") else ""))
    return lines
