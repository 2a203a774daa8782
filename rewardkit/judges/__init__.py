"""Generative reward models: LLM-as-a-judge (pairwise, pointwise, verifier) and a trained GenRM verifier.

See docs/judges.md. ``load_judge`` + ``JudgeScorer`` give rewards with the same interface as classifier
RMs (``score_examples``); ``evaluate_judge`` adds judge-only metrics; ``train_genrm`` trains a verifier
whose P(Yes) is the reward.
"""

from rewardkit.judges.judge import (
    Judge,
    JudgeScorer,
    VerdictTokens,
    evaluate_judge,
    load_judge,
    resolve_verdict_tokens,
    verdict_logprobs,
)
from rewardkit.judges.parse import ParsedVerdict, parse_verdict
from rewardkit.judges.templates import JudgeTemplate, default_template, load_template

__all__ = [
    "Judge", "JudgeScorer", "JudgeTemplate", "ParsedVerdict", "VerdictTokens", "default_template",
    "evaluate_judge", "load_judge", "load_template", "parse_verdict", "resolve_verdict_tokens", "verdict_logprobs",
]
