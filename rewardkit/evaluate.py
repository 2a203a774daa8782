"""Evaluation of a reward model: scoring, then metrics as pure functions of (examples, rewards).

Every example contributes all its C(K,2) annotator pairs (``PreferenceExample.preference_pairs``);
for a pair, Δr = r(better) − r(worse). Pairs the annotators judged equal ("tied pairs") are kept
apart: they enter the tie and 3-way metrics only.

* ``accuracy``: RewardBench's headline (``rewardkit.rewardbench``): mean per-example credit (strict
  win for pairs, 1/(number tied at the top) for best-of-N and rankings), per subset, and — with a
  section map — the mean of section scores. On pair data it equals ``pairwise_accuracy``.
* ``pairwise_accuracy``: fraction of strict pairs with Δr > 0; a reward tie (Δr == 0) is wrong and
  counted in ``ties``.
* ``reward_mean`` / ``reward_std`` (top level and per subset): over **completions**, each counted
  once (mean and population std of every reward of the examples), not over pair sides, where a
  completion would count once per pair it is in (the chosen of a best-of-4 three times).
* with a section map naming ``ties_subsets`` (``rewardbench-v2``), those subsets are scored with
  RewardBench 2's Ties rule (``rewardbench.ties_score``), its terms under ``ties_subset_scores``.
* calibration of σ(Δr) (eq. 2): each strict pair is scored by the confidence of the predicted
  winner, max(σ(Δr), 1 − σ(Δr)), against whether that prediction was right; ECE over equal-width
  bins on [0.5, 1] (Guo et al. 2017); Brier = mean (1 − σ(Δr))², the squared error of the
  probability given to the annotators' choice. When the scorer knows reward statistics (held-out
  mean/std), the same for σ(Δr/std), the probability read off normalised rewards.
* length: the "longer wins" baseline (length in **characters** of the completion text, equal lengths
  count as wrong), pairwise accuracy bucketed by len(better) − len(worse), how often the model
  prefers the longer side, and the Spearman correlation of reward with length.
* rankings (K > 2): pairwise accuracy over all strict pairs, Kendall τ-b per prompt (averaged) and
  top-1 credit per prompt.
* tied pairs (records with K = 2 only; tied completions inside rankings are only excluded from
  pairwise accuracy and counted in ``annotator_tied_pairs``): the model "calls a tie" when
  |σ(Δr) − 0.5| < t. Tie accuracy = fraction of tied pairs called a tie. By default t is
  **rate-matched**: the model calls exactly as many ties as the annotators did (t sits between the
  k-th and (k+1)-th smallest |σ(Δr) − 0.5| over all pairs, k = number of tied pairs). A fixed t
  depends on the reward scale (an untrained model calls almost everything close), the
  rate-matched one does not; a fixed t can be passed instead. With the same t, 3-way accuracy and
  macro-F1 (PandaLM's metrics, Wang et al. 2023, arXiv 2306.05087) over all pairs, in the record's
  completion order (first better / tie / second better).
* bootstrap: percentile confidence intervals on every accuracy, resampling **prompts** (examples
  sharing a prompt move together), seeded; the seed is in the output.

Scoring is not done here: rewards come from ``rewardkit.inference`` (``run_evaluation`` composes the
two), so training's held-out evaluation, ``eval``, ``score`` and ``serve`` read identical rewards.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rewardkit.data.record import PreferenceExample, completion_text
from rewardkit.errors import UserError
from rewardkit.losses import sigmoid
from rewardkit.rewardbench import (
    TIES_WEIGHTS,
    SectionMap,
    example_credit,
    section_scores,
    ties_items,
    ties_row,
    ties_score,
)

# Buckets of len(better) − len(worse) in characters; HH replies are a few hundred characters long.
LENGTH_EDGES: tuple[float, ...] = (-500, -150, -50, 50, 150, 500)


# ------------------------------------------------------------------------------------ the pair table


@dataclass
class PairTable:
    """Every annotator pair of a dataset, flattened. ``a`` is the better side (for a tied pair, the
    side listed first in ``ranking``)."""

    example: np.ndarray  # index of the example each pair comes from
    a: np.ndarray  # completion index
    b: np.ndarray
    tied: np.ndarray  # bool: the annotators judged a and b equal
    r_a: np.ndarray
    r_b: np.ndarray
    len_a: np.ndarray  # characters
    len_b: np.ndarray

    def select(self, mask: np.ndarray) -> PairTable:
        return PairTable(**{k: v[mask] for k, v in self.__dict__.items()})

    def __len__(self) -> int:
        return len(self.example)


def pair_table(examples: list[PreferenceExample], rewards: list[np.ndarray]) -> PairTable:
    cols: dict[str, list] = defaultdict(list)
    for i, (ex, r) in enumerate(zip(examples, rewards)):
        if len(r) != len(ex.completions):
            raise ValueError(f"example {i} ({ex.source}): {len(r)} rewards for {len(ex.completions)} completions")
        lengths = [len(completion_text(c)) for c in ex.completions]
        for a, b, tied in ex.preference_pairs():
            cols["example"].append(i)
            cols["a"].append(a)
            cols["b"].append(b)
            cols["tied"].append(tied)
            cols["r_a"].append(r[a])
            cols["r_b"].append(r[b])
            cols["len_a"].append(lengths[a])
            cols["len_b"].append(lengths[b])
    ints = ("example", "a", "b", "len_a", "len_b")
    return PairTable(**{k: np.asarray(cols[k], dtype=np.int64 if k in ints else bool if k == "tied" else np.float64)
                        for k in ("example", "a", "b", "tied", "r_a", "r_b", "len_a", "len_b")})


# -------------------------------------------------------------------------------------- calibration


def calibration(p_label: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """ECE, Brier and reliability bins for probabilities given to the annotators' choice.

    ``p_label`` = σ(Δr) per strict pair (eq. 2). The prediction is the side with p ≥ ½, its
    confidence max(p, 1 − p); p == ½ exactly (a reward tie) is a wrong prediction, as in accuracy.
    ECE = Σ_bins (n_b / n)·|accuracy_b − confidence_b| over ``n_bins`` equal-width bins on [0.5, 1].
    """
    p = np.asarray(p_label, dtype=np.float64)
    conf = np.maximum(p, 1 - p)
    correct = p > 0.5
    idx = np.minimum(((conf - 0.5) / 0.5 * n_bins).astype(int), n_bins - 1)
    ece, bins = 0.0, []
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        row = {"lo": 0.5 + 0.5 * b / n_bins, "hi": 0.5 + 0.5 * (b + 1) / n_bins, "count": n,
               "confidence": float(conf[sel].mean()) if n else None, "accuracy": float(correct[sel].mean()) if n else None}
        if n:
            ece += n / len(p) * abs(row["accuracy"] - row["confidence"])
        bins.append(row)
    return {"ece": float(ece), "brier": float(((1 - p) ** 2).mean()), "n_bins": n_bins, "bins": bins}


def pair_metrics(r_chosen: np.ndarray, r_rejected: np.ndarray, len_chosen: np.ndarray, len_rejected: np.ndarray,
                 n_bins: int = 10) -> dict[str, float]:
    """Accuracy, reward ties, margin, ECE, Brier and length baseline of strict pairs.

    No reward statistics: a completion is in as many pairs as it has partners, so they would weigh
    completions by pair count; :func:`completion_reward_stats` takes the completions themselves.
    """
    delta = np.asarray(r_chosen, dtype=np.float64) - np.asarray(r_rejected, dtype=np.float64)
    cal = calibration(sigmoid(delta), n_bins)
    return {
        "pairs": int(len(delta)),
        "accuracy": float((delta > 0).mean()),
        "ties": int((delta == 0).sum()),
        "mean_margin": float(delta.mean()),
        "ece": cal["ece"],
        "brier": cal["brier"],
        "length_baseline_accuracy": float((np.asarray(len_chosen) > np.asarray(len_rejected)).mean()),
    }


def completion_reward_stats(rewards: list[np.ndarray]) -> dict[str, float]:
    """``reward_mean`` / ``reward_std`` (population) over every completion of ``rewards``, each once; NaN rewards
    (non-finite outputs, e.g. a skipped non-finite training step's) are left out and counted (``reward_nan``)."""
    everything = np.concatenate(rewards)
    nan = np.isnan(everything)
    everything = everything[~nan]
    out = {"reward_mean": float(everything.mean()) if everything.size else float("nan"),
           "reward_std": float(everything.std()) if everything.size else float("nan")}
    if nan.any():
        out["reward_nan"] = int(nan.sum())
    return out


# ---------------------------------------------------------------------------------------- bootstrap


def prompt_groups(examples: list[PreferenceExample]) -> np.ndarray:
    """Per example, the index of its prompt (examples with the same prompt share one)."""
    ids: dict[str, int] = {}
    out = np.empty(len(examples), dtype=np.int64)
    for i, ex in enumerate(examples):
        key = json.dumps(ex.prompt, sort_keys=True) if ex.prompt else f"#example-{i}"
        out[i] = ids.setdefault(key, len(ids))
    return out


class Bootstrap:
    """Percentile bootstrap over prompts (Efron & Tibshirani 1993, ch. 13).

    One matrix of resample counts (samples × prompts) is drawn once from ``seed``; every statistic
    that is a ratio of sums over items (an accuracy) is computed on the same resamples, so intervals
    of different metrics (and of sections built from subsets) are consistent with each other.
    """

    def __init__(self, group_of_example: np.ndarray, samples: int = 1000, seed: int = 0, level: float = 0.95):
        if samples < 0 or not 0 < level < 1:
            raise ValueError(f"bootstrap needs samples >= 0 and 0 < level < 1 (got {samples}, {level})")
        self.group = np.asarray(group_of_example, dtype=np.int64)
        self.n_groups = int(self.group.max()) + 1 if len(self.group) else 0
        self.samples, self.seed, self.level = samples, seed, level
        rng = np.random.default_rng(seed)
        self.counts = (rng.multinomial(self.n_groups, np.full(self.n_groups, 1 / self.n_groups), size=samples)
                       .astype(np.float64) if samples and self.n_groups else None)

    def replicates(self, values: np.ndarray, example: np.ndarray) -> np.ndarray | None:
        """Σ values / count of items on each resample; ``example[i]`` is item i's example index."""
        if self.counts is None or len(values) == 0:
            return None
        g = self.group[np.asarray(example, dtype=np.int64)]
        num = np.bincount(g, weights=np.asarray(values, dtype=np.float64), minlength=self.n_groups)
        den = np.bincount(g, minlength=self.n_groups).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.counts @ num) / (self.counts @ den)

    def interval(self, replicates: np.ndarray | None) -> list[float] | None:
        if replicates is None or np.isnan(replicates).all():
            return None
        tail = (1 - self.level) / 2 * 100
        lo, hi = np.nanpercentile(replicates, [tail, 100 - tail])
        return [float(lo), float(hi)]

    def ci(self, values: np.ndarray, example: np.ndarray) -> list[float] | None:
        return self.interval(self.replicates(values, example))

    def describe(self) -> dict[str, Any]:
        return {"method": "percentile", "unit": "prompt", "samples": self.samples, "seed": self.seed,
                "level": self.level, "prompts": self.n_groups}


def bootstrap_ci(values: np.ndarray, groups: np.ndarray | None = None, *, samples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> list[float] | None:
    """Percentile interval of the mean of ``values``, resampling ``groups`` (default: each value alone)."""
    values = np.asarray(values, dtype=np.float64)
    groups = np.arange(len(values)) if groups is None else np.unique(groups, return_inverse=True)[1]
    boot = Bootstrap(groups, samples, seed, level)
    return boot.ci(values, np.arange(len(values)))


# ------------------------------------------------------------------------------------------ rankings


def kendall_tau(ranks: np.ndarray, rewards: np.ndarray) -> float:
    """Kendall τ-b between annotator ranks (0 = best) and rewards; nan if the annotators tied everything.

    τ-b = (C − D) / sqrt((n0 − n_ties_annotators)(n0 − n_ties_rewards)); 0 when all rewards are equal.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    i, j = np.triu_indices(len(r), 1)
    human = np.sign(ranks[j] - ranks[i])  # +1: i ranked better than j
    model = np.sign(r[i] - r[j])  # +1: i scored higher
    n_h, n_m = int((human != 0).sum()), int((model != 0).sum())
    if n_h == 0:
        return float("nan")
    if n_m == 0:
        return 0.0
    return float((human * model).sum() / math.sqrt(n_h * n_m))


def top1_credit(ranks: np.ndarray, rewards: np.ndarray) -> float:
    """|T ∩ B| / |T|, T = completions at the top reward, B = the annotators' best (RewardBench 2's rule)."""
    r = np.asarray(rewards, dtype=np.float64)
    ranks = np.asarray(ranks)
    top = r == r.max()
    return float((top & (ranks == ranks.min())).sum() / top.sum())


def ranking_metrics(examples: list[PreferenceExample], rewards: list[np.ndarray]) -> dict[str, Any]:
    """Ranking metrics over ``examples`` (any K): pairwise accuracy over all strict pairs (each pair
    counted once, and averaged per prompt as eq. 6 weights them), mean Kendall τ-b and mean top-1 credit."""
    per_prompt_acc, taus, top1 = [], [], []
    correct = total = 0
    for ex, r in zip(examples, rewards):
        if ex.is_tie:
            continue
        ranks = np.asarray(ex.ranks)
        strict = [(a, b) for a, b, tied in ex.preference_pairs() if not tied]
        wins = sum(1 for a, b in strict if r[a] > r[b])
        correct, total = correct + wins, total + len(strict)
        per_prompt_acc.append(wins / len(strict))
        taus.append(kendall_tau(ranks, r))
        top1.append(top1_credit(ranks, r))
    if not total:
        return {"prompts": 0, "pairs": 0}
    return {
        "prompts": len(top1),
        "pairs": total,
        "pairwise_accuracy": correct / total,
        "pairwise_accuracy_per_prompt": float(np.mean(per_prompt_acc)),
        "kendall_tau": float(np.nanmean(taus)),
        "top1_accuracy": float(np.mean(top1)),
        "completions_per_prompt": {str(k): n for k, n in sorted(Counter(len(ex.completions) for ex in examples).items())},
    }


# -------------------------------------------------------------------------------------------- length


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def rank(v: np.ndarray) -> np.ndarray:
        _, inv, counts = np.unique(v, return_inverse=True, return_counts=True)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return (starts + (counts - 1) / 2)[inv]

    rx, ry = rank(np.asarray(x)), rank(np.asarray(y))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def length_metrics(pairs: PairTable, boot: Bootstrap, edges: tuple[float, ...] = LENGTH_EDGES) -> dict[str, Any]:
    """Is the model counting characters? The longer-wins baseline and accuracy by length difference.

    ``pairs`` are strict pairs. Buckets are half-open [lo, hi) of len(better) − len(worse).
    """
    diff = pairs.len_a - pairs.len_b
    correct = (pairs.r_a > pairs.r_b).astype(np.float64)
    longer = (pairs.len_a > pairs.len_b).astype(np.float64)
    differ = diff != 0
    model_prefers_longer = ((pairs.r_a > pairs.r_b) == (pairs.len_a > pairs.len_b)) & (pairs.r_a != pairs.r_b)
    bounds = [-math.inf, *edges, math.inf]
    buckets = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sel = (diff >= lo) & (diff < hi)
        n = int(sel.sum())
        buckets.append({
            "lo": lo if math.isfinite(lo) else None, "hi": hi if math.isfinite(hi) else None, "count": n,
            "accuracy": float(correct[sel].mean()) if n else None,
            "accuracy_ci": boot.ci(correct[sel], pairs.example[sel]) if n else None,
            "length_baseline_accuracy": float(longer[sel].mean()) if n else None,
        })
    shorter = diff < 0  # the annotators preferred the shorter reply: where a length-reading model fails
    return {
        "unit": "characters",
        "chosen_shorter_pairs": int(shorter.sum()),
        "accuracy_chosen_shorter": float(correct[shorter].mean()) if shorter.any() else None,
        "accuracy_chosen_shorter_ci": boot.ci(correct[shorter], pairs.example[shorter]) if shorter.any() else None,
        "length_baseline_accuracy": float(longer.mean()),
        "length_baseline_accuracy_ci": boot.ci(longer, pairs.example),
        "equal_length_pairs": int((~differ).sum()),
        "model_prefers_longer": float(model_prefers_longer[differ].mean()) if differ.any() else None,
        "buckets": buckets,
    }


# --------------------------------------------------------------------------------------------- ties


def tie_threshold_rate_matched(closeness: np.ndarray, n_ties: int) -> float:
    """The t at which the model calls as many ties (|σ(Δr) − ½| < t) as there are annotator ties."""
    d = np.sort(np.asarray(closeness, dtype=np.float64))
    if n_ties <= 0:
        return 0.0
    if n_ties >= len(d):
        return float(d[-1] + 1e-12)
    return float((d[n_ties - 1] + d[n_ties]) / 2)


def tie_metrics(pairs: PairTable, boot: Bootstrap, threshold: float | None = None) -> dict[str, Any]:
    """Accuracy on annotator ties and 3-way (first / tie / second) accuracy over all pairs."""
    closeness = np.abs(sigmoid(pairs.r_a - pairs.r_b) - 0.5)
    n_ties = int(pairs.tied.sum())
    rule = "fixed" if threshold is not None else "rate-matched"
    t = float(threshold) if threshold is not None else tie_threshold_rate_matched(closeness, n_ties)
    called_tie = (closeness < t) | (pairs.r_a == pairs.r_b)
    # 3-way labels in completion order: 0 = the lower-indexed completion is better, 1 = tie, 2 = the other.
    first_is_a = pairs.a < pairs.b
    human = np.where(pairs.tied, 1, np.where(first_is_a, 0, 2))
    a_wins = pairs.r_a > pairs.r_b
    model = np.where(called_tie, 1, np.where(a_wins == first_is_a, 0, 2))
    confusion = np.zeros((3, 3), dtype=np.int64)
    np.add.at(confusion, (human, model), 1)
    f1 = []
    for c in range(3):
        tp, pred, true = confusion[c, c], confusion[:, c].sum(), confusion[c].sum()
        if true == 0 and pred == 0:
            continue  # a class absent from both sides does not enter the macro average
        precision = tp / pred if pred else 0.0
        recall = tp / true if true else 0.0
        f1.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    three_way = (human == model).astype(np.float64)
    tie_hit = called_tie[pairs.tied].astype(np.float64)
    return {
        "tied_pairs": n_ties,
        "threshold": t,
        "threshold_rule": rule,
        "accuracy": float(tie_hit.mean()) if n_ties else None,
        "accuracy_ci": boot.ci(tie_hit, pairs.example[pairs.tied]) if n_ties else None,
        "false_tie_rate": float(called_tie[~pairs.tied].mean()) if (~pairs.tied).any() else None,
        "mean_closeness_tied": float(closeness[pairs.tied].mean()) if n_ties else None,
        "mean_closeness_strict": float(closeness[~pairs.tied].mean()) if (~pairs.tied).any() else None,
        "three_way_accuracy": float(three_way.mean()),
        "three_way_accuracy_ci": boot.ci(three_way, pairs.example),
        "three_way_macro_f1": float(np.mean(f1)),
        "three_way_labels": ["first better", "tie", "second better"],
        "three_way_confusion": confusion.tolist(),  # rows: annotators, columns: model
        "pairs": len(pairs),
    }


# -------------------------------------------------------------------------------------- everything


def metrics_from_rewards(
    examples: list[PreferenceExample],
    rewards: list[np.ndarray],
    *,
    section_map: SectionMap | None = None,
    reward_stats: tuple[float, float] | None = None,
    tie_threshold: float | None = None,
    calibration_bins: int = 10,
    bootstrap_samples: int = 1000,
    seed: int = 0,
    length_edges: tuple[float, ...] = LENGTH_EDGES,
) -> dict[str, Any]:
    """All metrics of the module docstring, as one JSON-ready dict.

    ``reward_stats`` = (mean, std) of rewards, when known, adds calibration of normalised rewards.
    ``seed`` drives the bootstrap and is recorded in ``bootstrap.seed``.
    """
    if len(examples) != len(rewards):
        raise ValueError(f"{len(examples)} examples but {len(rewards)} reward arrays")
    if not all(np.isfinite(r).all() for r in rewards):
        raise UserError("evaluation produced non-finite rewards (NaN/inf): the model has diverged; use an earlier "
                        "checkpoint, or retrain with a lower --learning-rate")
    pairs = pair_table(examples, rewards)
    strict = pairs.select(~pairs.tied)
    if not len(strict):
        raise UserError("no strict preference pairs to evaluate: every pair in the data is a tie")
    boot = Bootstrap(prompt_groups(examples), bootstrap_samples, seed)
    correct = (strict.r_a > strict.r_b).astype(np.float64)

    result: dict[str, Any] = pair_metrics(strict.r_a, strict.r_b, strict.len_a, strict.len_b, calibration_bins)
    result.update(completion_reward_stats(rewards))
    all_rewards = np.concatenate(rewards)
    result["pairwise_accuracy"] = result["accuracy"]
    result["pairwise_accuracy_ci"] = boot.ci(correct, strict.example)
    result.update(rewardbench_metrics(examples, rewards, boot, section_map))

    result["calibration"] = calibration(sigmoid(strict.r_a - strict.r_b), calibration_bins)
    if reward_stats is not None and reward_stats[1]:
        mean, std = reward_stats
        result["calibration_normalized"] = {
            "reward_mean": mean, "reward_std": std, "probability": "σ((r_a − r_b) / std)",
            **calibration(sigmoid((strict.r_a - strict.r_b) / std), calibration_bins)}
    result["length"] = length_metrics(strict, boot, length_edges)
    lengths = np.concatenate([[len(completion_text(c)) for c in ex.completions] for ex in examples])
    result["length"]["reward_length_spearman"] = spearman(all_rewards, lengths)

    if any(len(ex.completions) > 2 for ex in examples):
        # Every prompt counts, K = 2 included (its τ and top-1 are its pair's accuracy, as a ranking of 2).
        result["rankings"] = ranking_metrics(examples, rewards)
    result["annotator_tied_pairs"] = int(pairs.tied.sum())
    # Win/tie/loss is a question about pairs; tied completions inside rankings (equal scores) stay out of
    # it, as do best-of-N's rejected completions, which are not pairs at all (``unordered``).
    two = pairs.select(np.isin(pairs.example, [i for i, ex in enumerate(examples) if len(ex.completions) == 2]))
    if len(two) and (two.tied.any() or tie_threshold is not None):
        result["tied"] = tie_metrics(two, boot, tie_threshold)

    groups: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        if ex.subset is not None:
            groups[ex.subset].append(i)
    if groups:
        subsets = {}
        for name, ix in sorted(groups.items()):
            sel = np.isin(strict.example, ix)
            if sel.any():
                sub = strict.select(sel)
                subsets[name] = pair_metrics(sub.r_a, sub.r_b, sub.len_a, sub.len_b, calibration_bins)
                subsets[name].update(completion_reward_stats([rewards[i] for i in ix]))  # the top level's definition
                subsets[name]["accuracy_ci"] = boot.ci(correct[sel], sub.example)
        result["subsets"] = subsets
    result["bootstrap"] = boot.describe()
    if not all(math.isfinite(v) for v in (result["accuracy"], result["mean_margin"])):
        raise UserError("evaluation produced non-finite rewards (NaN/inf): the model has diverged; use an earlier "
                        "checkpoint, or retrain with a lower --learning-rate")
    return result


def ties_replicates(rows_example: np.ndarray, items: dict[str, tuple[np.ndarray, np.ndarray]],
                    boot: Bootstrap) -> np.ndarray | None:
    """Bootstrap replicates of a Ties score: its terms are means of items, so each term is resampled
    like an accuracy (on the run's one resample matrix) and the weighted sum taken per resample.
    ``rows_example[j]`` is the example index of Ties row j."""
    if boot.counts is None:
        return None
    total = np.zeros(boot.samples)
    for name, w in TIES_WEIGHTS.items():
        values, rows = items[name]
        if not len(values):
            # As in ties_score: no prompt of a kind → accuracy 0; no pair → the score is nan anyway.
            total = total + (0.0 if name in ("ref_accuracy", "tied_accuracy") else math.nan)
            continue
        total = total + w * boot.replicates(values, rows_example[rows])
    return total


def rewardbench_metrics(examples: list[PreferenceExample], rewards: list[np.ndarray], boot: Bootstrap,
                        section_map: SectionMap | None = None) -> dict[str, Any]:
    """RewardBench's results shape: ``accuracy``, ``num_prompts``, ``extra_results`` (per subset),
    plus per-subset counts and intervals and, with a section map, sections and their intervals.

    Subsets in ``section_map.ties_subsets`` get RewardBench 2's Ties score instead of mean credit,
    with its terms under ``ties_subset_scores``; one with no ref/tied pair has no official score
    (nan), so it is left out of ``extra_results`` and its section is listed in ``missing_sections``.
    """
    scored = [i for i, ex in enumerate(examples) if not ex.is_tie]
    credit = np.array([example_credit(examples[i].ranks, rewards[i]) for i in scored])
    index = np.array(scored, dtype=np.int64)
    subset_of = np.array([examples[i].subset or "all" for i in scored], dtype=object)
    names = sorted(set(subset_of))
    ties_names = set(section_map.ties_subsets) if section_map is not None else set()
    acc = {s: float(credit[subset_of == s].mean()) for s in names if s not in ties_names}
    count = {s: int((subset_of == s).sum()) for s in names}
    reps = {s: boot.replicates(credit[subset_of == s], index[subset_of == s]) for s in names if s not in ties_names}
    ties: dict[str, dict[str, float]] = {}
    for s in sorted(ties_names & set(names)):
        ix = index[subset_of == s]
        rows = [ties_row(examples[i], rewards[i]) for i in ix]
        ties[s] = ties_score(rows)
        if math.isnan(ties[s]["score"]):
            continue
        acc[s] = ties[s]["score"]
        reps[s] = ties_replicates(ix, ties_items(rows), boot)
    acc = {s: acc[s] for s in names if s in acc}  # subset order as before, Ties included
    out: dict[str, Any] = {
        "num_prompts": len(scored),
        "extra_results": acc,
        "subset_counts": count,
        "subset_accuracy_ci": {s: boot.interval(reps[s]) for s in acc},
    }
    if ties:
        out["ties_subset_scores"] = ties  # not "ties": that is the count of reward ties (pair_metrics)
    if section_map is None:
        # No sections: one section holding every subset, i.e. the example-weighted mean credit.
        out["accuracy"] = float(credit.mean())
        out["accuracy_ci"] = boot.ci(credit, index)
        return out
    sec = section_scores(acc, count, section_map)
    if not sec["sections"]:
        raise UserError(f"none of the data's subsets {names} is in the section map {section_map.name!r}; "
                         "give each record a 'subset' named in the map, or pass a map that names them")
    out["accuracy"] = float(sec["overall"])
    out["sections"] = {k: float(v) for k, v in sec["sections"].items()}
    out["section_map"] = section_map.to_dict()
    out["missing_sections"], out["unmapped_subsets"] = sec["missing_sections"], sec["unmapped_subsets"]
    if boot.counts is not None:
        rep_sec = section_scores({s: r for s, r in reps.items() if r is not None}, count, section_map)
        out["sections_ci"] = {k: boot.interval(np.asarray(v)) for k, v in rep_sec["sections"].items()}
        out["accuracy_ci"] = boot.interval(np.asarray(rep_sec["overall"])) if rep_sec["sections"] else None
    return out


# ------------------------------------------------------------------------------------ running + I/O


def run_evaluation(scorer: Any, examples: list[PreferenceExample], *, section_map: SectionMap | None = None,
                   tie_threshold: float | None = None, calibration_bins: int = 10, bootstrap_samples: int = 1000,
                   seed: int = 0, scored: Any = None) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Score ``examples`` with a scorer (``rewardkit.inference``) and compute every metric → (results, rewards).

    ``scored``: a ``ScoreResult`` already computed for ``examples`` (e.g. a judge's), to skip the scoring.
    A completion a judge could not decide (NaN) makes its example a tie: counted wrong, never guessed.
    """
    from rewardkit.inference import score

    scored = scored if scored is not None else score(scorer, examples)
    rewards = [np.zeros_like(r) if np.isnan(r).any() else r for r in scored.rewards]
    info = scorer.describe()
    stats = (info["reward_mean"], info["reward_std"]) if info.get("reward_std") else None
    metrics = metrics_from_rewards(examples, rewards, section_map=section_map, reward_stats=stats,
                                   tie_threshold=tie_threshold, calibration_bins=calibration_bins,
                                   bootstrap_samples=bootstrap_samples, seed=seed)
    truncation = scored.truncation_total().to_dict()
    result = {"model": scorer.name, **metrics, "scorer": {**info, "scoring_path": scored.path},
              "truncation": truncation}
    if scored.aspects:
        result["aspects"] = aspect_metrics(examples, scored.aspects, bootstrap_samples=bootstrap_samples, seed=seed)
    return result, rewards


def aspect_metrics(examples: list[PreferenceExample], aspects: list[dict[str, Any]], *, bootstrap_samples: int = 1000,
                   seed: int = 0) -> dict[str, Any]:
    """An aspect model's extra numbers (``ScoreResult.aspects``): the mean mixing weight of each aspect over the
    examples (the gate's, or the given ones), and each aspect head's own accuracy [95 % CI] on all the examples,
    as if it alone were the reward."""
    names = list(aspects[0]["weights"])
    heads = {}
    for a in names:
        m = metrics_from_rewards(examples, [np.asarray(d["rewards"][a]) for d in aspects],
                                 bootstrap_samples=bootstrap_samples, seed=seed)
        heads[a] = {"accuracy": m["accuracy"], "accuracy_ci": m.get("accuracy_ci")}
    return {"mean_weights": {a: float(np.mean([d["weights"][a] for d in aspects])) for a in names},
            "head_accuracy": heads}


def rewards_path_for(output: str | Path) -> Path:
    """The per-example sidecar beside an eval JSON: ``eval.json`` → ``eval.rewards.jsonl``."""
    output = Path(output)
    return output.with_name(output.name.removesuffix(".json") + ".rewards.jsonl")


def write_eval_output(output: str | Path, result: dict[str, Any], examples: list[PreferenceExample],
                      rewards: list[np.ndarray]) -> Path:
    """Write the results JSON and, beside it, one line per example with its rewards (for plots and audits)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    sidecar = rewards_path_for(output)
    with open(sidecar, "w") as f:
        for i, (ex, r) in enumerate(zip(examples, rewards)):
            f.write(json.dumps({"index": i, "source": ex.source, "subset": ex.subset, "rewards": r.tolist(),
                                "ranks": ex.ranks, "lengths": [len(completion_text(c)) for c in ex.completions]})
                    + "\n")
    result = {**result, "rewards_file": sidecar.name}
    output.write_text(json.dumps(result, indent=2) + "\n")
    return sidecar


def emit_eval(cfg: Any, result: dict, examples: list, rewards: list) -> None:
    """``rewardkit eval``'s output (``cfg``: an ``EvalConfig``): print the results; write them (and the
    per-example rewards beside them) and the visual report if asked."""
    output = cfg.output or (str(Path(cfg.report) / "eval.json") if cfg.report else None)
    if output:
        sidecar = write_eval_output(output, result, examples, rewards)
        print(f"results: {output} (per-example rewards: {sidecar})", file=sys.stderr)
    print(json.dumps(result, indent=2))
    if cfg.report:
        from rewardkit.report import write_report

        print(f"report: {write_report([output], cfg.report)}", file=sys.stderr)
