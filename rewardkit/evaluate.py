"""Evaluation of a reward model on preference pairs.

Metrics (all on pairs; ``Δr = r(chosen) − r(rejected)``):

* ``accuracy``: fraction with Δr > 0. Ties (Δr == 0) count as wrong and are reported as ``ties``.
* ``mean_margin``: mean Δr.
* ``ece``: expected calibration error of P(chosen ≻ rejected) = σ(Δr) (eq. 2). Each pair is scored
  by the confidence of its predicted winner, max(σ(Δr), 1 − σ(Δr)), against whether that prediction
  was right, over 10 equal-width bins on [0.5, 1].
* ``brier``: mean (1 − σ(Δr))², the squared error of the probability given to the human label.
* ``length_baseline_accuracy``: accuracy of "the longer completion (in characters) wins" — an RM
  that cannot beat it may only be measuring length. Equal lengths count as wrong.
* ``reward_mean`` / ``reward_std`` over every scored completion, and the same per ``subset``.

Scoring sorts sequences by length into token-bounded batches, so results do not depend on the
order, batch size or padding side beyond float rounding (tested to 1e-4).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

from rewardkit.batching import Encoder, length_sorted_batches, pad_batch
from rewardkit.data.record import PreferenceExample, completion_text
from rewardkit.model import RewardModel


@torch.inference_mode()
def score_token_ids(
    model: RewardModel,
    sequences: list[list[int]],
    pad_id: int,
    *,
    max_batch_tokens: int = 16384,
    max_batch_size: int = 64,
    padding_side: str = "right",
    progress: bool = False,
) -> np.ndarray:
    """Rewards for already-tokenized sequences, in input order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rewards = np.zeros(len(sequences), dtype=np.float64)
    batches = length_sorted_batches([len(s) for s in sequences], max_batch_tokens, max_batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="scoring", unit="batch")
    for idx in batches:
        ids, mask = pad_batch([sequences[i] for i in idx], pad_id, padding_side)
        out = model(ids.to(device), mask.to(device))
        rewards[idx] = out.double().cpu().numpy()
    model.train(was_training)
    return rewards


def score_examples(model: RewardModel, encoder: Encoder, examples: list[PreferenceExample], **kw) -> list[np.ndarray]:
    """Rewards per example, aligned with each example's completions."""
    encoded = encoder.encode_examples(examples)
    flat = [ids for ex in encoded for ids in ex]
    rewards = score_token_ids(model, flat, encoder.tokenizer.pad_token_id, **kw)
    out, i = [], 0
    for ex in encoded:
        out.append(rewards[i:i + len(ex)])
        i += len(ex)
    return out


def pair_metrics(r_chosen: np.ndarray, r_rejected: np.ndarray, len_chosen: np.ndarray, len_rejected: np.ndarray,
                 n_bins: int = 10) -> dict[str, float]:
    delta = r_chosen - r_rejected
    p = 1.0 / (1.0 + np.exp(-delta))
    correct = delta > 0
    conf = np.maximum(p, 1 - p)
    bins = np.minimum(((conf - 0.5) / 0.5 * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    both = np.concatenate([r_chosen, r_rejected])
    return {
        "pairs": int(len(delta)),
        "accuracy": float(correct.mean()),
        "ties": int((delta == 0).sum()),
        "mean_margin": float(delta.mean()),
        "ece": float(ece),
        "brier": float(((1 - p) ** 2).mean()),
        "length_baseline_accuracy": float((len_chosen > len_rejected).mean()),
        "reward_mean": float(both.mean()),
        "reward_std": float(both.std()),
    }


def evaluate(model: RewardModel, encoder: Encoder, examples: list[PreferenceExample], **kw) -> dict:
    """Pairwise metrics overall and per subset (pairs are each example's best vs. worst completion)."""
    result = metrics_from_rewards(examples, score_examples(model, encoder, examples, **kw))
    result["truncation"] = encoder.stats.to_dict()
    return result


def metrics_from_rewards(examples: list[PreferenceExample], rewards: list[np.ndarray]) -> dict:
    rc = np.array([r[ex.ranking[0]] for r, ex in zip(rewards, examples)])
    rr = np.array([r[ex.ranking[-1]] for r, ex in zip(rewards, examples)])
    lc = np.array([len(completion_text(ex.chosen)) for ex in examples])
    lr = np.array([len(completion_text(ex.rejected)) for ex in examples])
    result = pair_metrics(rc, rr, lc, lr)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        if ex.subset is not None:
            groups[ex.subset].append(i)
    if groups:
        result["subsets"] = {name: pair_metrics(rc[ix], rr[ix], lc[ix], lr[ix]) for name, ix in sorted(groups.items())}
    if not all(math.isfinite(v) for v in (result["accuracy"], result["mean_margin"])):
        raise FloatingPointError("evaluation produced non-finite rewards; the model has diverged")
    return result
