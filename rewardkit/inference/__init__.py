"""Inference: the one path from inputs to rewards (``rewardkit.inference.scoring``), the JSON rows that
``score``, ``rerank`` and ``serve`` read and write (``rewardkit.inference.rows``), and the one factory that
builds a scorer for any checkpoint — classifier reward model, LLM judge, trained GenRM
(``rewardkit.inference.factory.load_scorer``; it sits above ``rewardkit.judges`` in the layer order, so this
package's own names are only the scoring path's)."""

from rewardkit.inference.scoring import (
    Group,
    Prepared,
    RewardModelScorer,
    Scorer,
    ScoreResult,
    forward_token_budget,
    group_batches,
    group_tokens,
    load_classifier_scorer,
    model_kind,
    resolve_device,
    reward_groups,
    score,
    score_token_ids,
)

__all__ = [
    "Group", "Prepared", "RewardModelScorer", "ScoreResult", "Scorer", "forward_token_budget", "group_batches",
    "group_tokens", "load_classifier_scorer", "model_kind", "resolve_device", "reward_groups", "score",
    "score_token_ids",
]
