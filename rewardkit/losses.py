"""Reward-model losses: pure functions of rewards, numbered as in the source document (MISSION.md).

Pairwise losses take rewards of shape (N,) and return per-pair losses of shape (N,). Group losses
(eq. 6, Plackett-Luce) take one prompt's K rewards and return that prompt's loss (a scalar).
Reducing over a batch is the caller's choice; ``rewardkit.train`` averages over records.

Ties are represented as a preference target of 1/2 (the Bradley-Terry probability of a coin
flip). Losses built on a target probability (eq. 3/4 with label smoothing, eq. 6) use it; the
margin loss (eq. 5) and Plackett-Luce have no notion of a tie and raise ``TieError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rewardkit.config import LOSS_NAMES
from rewardkit.errors import UserError


class TieError(UserError):
    """A loss that cannot represent equal preference was given a tie."""


def sigmoid(x: Any) -> Any:
    """σ(x) for floats or numpy arrays, without overflow for any |x| (``math.exp`` overflows past 709).

    σ(x) = ½(1 + tanh(x/2)) is exact and bounded. Every probability rewardkit reports — P(a ≻ b) =
    σ(r_a − r_b) (eq. 2), calibration, a judge's P(A) — goes through this one function.
    """
    if isinstance(x, (float, int)):
        return 0.5 * (1.0 + math.tanh(0.5 * float(x)))
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Eq. 3: L = −log σ(r(x, y_w) − r(x, y_l)).

    The negative log-likelihood of the Bradley-Terry model (eq. 1–2), P(y_w ≻ y_l) = σ(r_w − r_l).
    ``logsigmoid`` is stable for large |Δr| (no overflow, no log(0)).
    """
    return -F.logsigmoid(r_chosen - r_rejected)


def bradley_terry_loss_softplus(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Eq. 4: L = log(1 + exp(r(x, y_l) − r(x, y_w))) = softplus(r_l − r_w).

    The source prints ``log(1 + e^{r_l} − e^{r_w})``, a typo that is not equivalent (it is
    undefined when e^{r_w} > 1 + e^{r_l}); this is the correct second form, equal to eq. 3.
    ``softplus`` switches to the identity for large arguments, so it does not overflow either.
    """
    return F.softplus(r_rejected - r_chosen)


def soft_bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, target: torch.Tensor | float) -> torch.Tensor:
    """Eq. 3 with a soft label: L = −t·log σ(Δr) − (1 − t)·log σ(−Δr), t = P(y_w ≻ y_l).

    t = 1 is eq. 3; t = 1 − ε is label smoothing for noisy labels (annotator disagreement is
    25–35 % on HH-style data); t = 1/2 is a tie, whose loss is minimised at Δr = 0.
    """
    delta = r_chosen - r_rejected
    return -(target * F.logsigmoid(delta) + (1 - target) * F.logsigmoid(-delta))


def label_smoothed_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Eq. 3 with label smoothing ε: the label says y_w ≻ y_l with probability 1 − ε."""
    if not 0.0 <= epsilon < 0.5:
        raise UserError(f"label smoothing must be in [0, 0.5), got {epsilon}")
    return soft_bradley_terry_loss(r_chosen, r_rejected, 1.0 - epsilon)


def margin_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Eq. 5 (Llama 2): L = −log σ(r_w − r_l − m(r)); the pair must win by at least ``margin``."""
    return -F.logsigmoid(r_chosen - r_rejected - margin)


def balanced_pairwise_loss(rewards: torch.Tensor, pairs: Sequence[tuple[int, int, bool]], epsilon: float = 0.0) -> torch.Tensor:
    """Eq. 6 (InstructGPT): one prompt's loss over all its C(K,2) pairs, each weighted 1/C(K,2).

    L = −1/C(K,2) · Σ_{(w,l)} log σ(r(x, y_w) − r(x, y_l)). ``pairs`` are (better, worse, tied)
    indices into ``rewards`` (``PreferenceExample.preference_pairs()``); a tied pair uses target
    1/2, an untied one 1 − ``epsilon``. Every prompt thus carries the same total weight (1) whatever
    its K, so prompts with many completions do not dominate the gradient.
    """
    if len(pairs) == 0:
        raise ValueError("a ranking needs at least two completions")
    better = rewards[[p[0] for p in pairs]]
    worse = rewards[[p[1] for p in pairs]]
    target = torch.tensor([0.5 if tied else 1.0 - epsilon for _, _, tied in pairs], dtype=rewards.dtype,
                          device=rewards.device)
    return soft_bradley_terry_loss(better, worse, target).mean()


def plackett_luce_loss(rewards_best_first: torch.Tensor) -> torch.Tensor:
    """K-wise Plackett-Luce loss (Zhu, Jordan & Jiao 2023, arXiv 2301.11270; Starling-RM).

    For a ranking y_(1) ≻ … ≻ y_(K): L = −Σ_{k=1}^{K} log( exp r(y_(k)) / Σ_{j=k}^{K} exp r(y_(j)) ).
    The k = K term is log 1 = 0. With K = 2 this is exactly eq. 3. ``logcumsumexp`` over the
    reversed rewards gives every denominator in one stable pass.
    """
    if rewards_best_first.numel() < 2:
        raise ValueError("a ranking needs at least two completions")
    tail_logsumexp = torch.logcumsumexp(rewards_best_first.flip(0), dim=0).flip(0)
    return (tail_logsumexp - rewards_best_first).sum()


def pointwise_bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Outcome reward model (ORM) loss, Cobbe et al. 2021 (arXiv 2110.14168, "Training Verifiers to Solve Math Word
    Problems"): L = −[t log σ(r) + (1 − t) log(1 − σ(r))] per solution, where r is the reward read at the solution's
    last token and t ∈ [0, 1] its correctness label — 0/1 as checked, or a soft label (e.g. the fraction of checks
    that passed) kept as given. ``binary_cross_entropy_with_logits`` is the stable form (no log(0) for any |r|).
    Per-solution losses, shape of ``logits``."""
    targets = torch.as_tensor(targets, dtype=logits.dtype, device=logits.device)
    if targets.shape != logits.shape:
        raise ValueError(f"one target per logit: {tuple(targets.shape)} targets for {tuple(logits.shape)} logits")
    if ((targets < 0) | (targets > 1)).any():
        raise ValueError("targets must lie in [0, 1]")
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def within_problem_ranking_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A verifier's within-problem ranking term: eq. 6 (all pairs weighted 1/#pairs) over the pairs of one problem's
    solutions whose outcome labels differ, the better-labelled one preferred with the soft target
    ½ + (t_a − t_b)/2 (1 for a correct beside an incorrect solution; ½ + 0.05 for soft labels 0.7 vs 0.6), in the
    stable form of eq. 4. Best-of-N ranks *within* a problem, and pointwise BCE alone can be lowered by learning
    which problems are hard; V-STaR (Hosseini et al. 2024, arXiv 2402.06457) trains its verifier on exactly such
    correct-vs-incorrect pairs of one problem. A scalar; 0 when all labels are equal (nothing to rank)."""
    targets = torch.as_tensor(targets, dtype=logits.dtype, device=logits.device)
    if targets.shape != logits.shape or logits.dim() != 1:
        raise ValueError(f"one target per logit: {tuple(targets.shape)} targets for {tuple(logits.shape)} logits")
    a, b = torch.triu_indices(len(logits), len(logits), offset=1, device=logits.device)
    gap = targets[a] - targets[b]
    keep = gap != 0
    if not keep.any():
        return logits.sum() * 0.0  # keeps the graph (DDP expects every parameter used)
    a, b, gap = a[keep], b[keep], gap[keep]
    better, worse = torch.where(gap > 0, a, b), torch.where(gap > 0, b, a)
    return soft_bradley_terry_loss(logits[better], logits[worse], 0.5 + gap.abs() / 2).mean()


def step_bce_loss(step_logits: torch.Tensor, step_targets: torch.Tensor, *, last_step_only: bool = False
                  ) -> torch.Tensor:
    """Process reward model (PRM) loss for one solution: the mean over its labelled steps of the binary cross-entropy
    of each step's reward (read at the step's last token) against the step's label (Lightman et al. 2023, arXiv
    2305.20050, "Let's Verify Step by Step"; Math-Shepherd, Wang et al. 2024, arXiv 2312.08935, with its soft labels:
    the fraction of rollouts from the step that reach the answer). Targets are kept as given — a soft 0.7 stays 0.7
    (TRL's PRMTrainer casts it to int 0) — and NaN marks an unlabelled step, left out of the mean (e.g. the steps
    after ProcessBench's first error). ``last_step_only``: only the last labelled step counts (an outcome label read
    at the final step). A solution with no labelled step is an error, not a silent zero."""
    targets = torch.as_tensor(step_targets, dtype=step_logits.dtype, device=step_logits.device)
    if targets.shape != step_logits.shape or step_logits.dim() != 1:
        raise ValueError(f"one target per step: {tuple(targets.shape)} targets for {tuple(step_logits.shape)} steps")
    labelled = ~torch.isnan(targets)
    if last_step_only:
        idx = torch.nonzero(labelled).flatten()
        labelled = torch.zeros_like(labelled)
        if idx.numel():
            labelled[idx[-1]] = True
    if not labelled.any():
        raise ValueError("a solution needs at least one labelled step")
    t = targets[labelled]
    if ((t < 0) | (t > 1)).any():
        raise ValueError("step targets must lie in [0, 1] (or NaN for an unlabelled step)")
    return F.binary_cross_entropy_with_logits(step_logits[labelled], t, reduction="mean")


def reward_centering(rewards: torch.Tensor, pairs: Sequence[tuple[int, int, bool]], coef: float) -> torch.Tensor:
    """Reward centering (Eisenstein et al. 2023): + c · mean over pairs of (r_w + r_l)².

    Pulls each pair's rewards to sum to zero, so rewards stay near 0 and comparable across prompts.
    For a pair this is exactly c·(r_w + r_l)²; for K completions it averages over the C(K,2) pairs.
    """
    i = [p[0] for p in pairs]
    j = [p[1] for p in pairs]
    return coef * ((rewards[i] + rewards[j]) ** 2).mean()


def reward_l2(rewards: torch.Tensor, pairs: Sequence[tuple[int, int, bool]], coef: float) -> torch.Tensor:
    """Per-score L2 (Open-Assistant): + β/2 · (r_w² + r_l²), averaged over the prompt's pairs."""
    i = [p[0] for p in pairs]
    j = [p[1] for p in pairs]
    return coef / 2 * (rewards[i] ** 2 + rewards[j] ** 2).mean()


# ---------------------------------------------------------------- length debiasing (ODIN)


def pearson(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of two 1-D tensors (differentiable; 0 when either is constant)."""
    x, y = x - x.mean(), y - y.mean()
    return (x * y).sum() / (x.norm() * y.norm() + eps)


def correlation_sums(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n, Σx, Σx², Σy, Σy², Σxy) of two 1-D tensors, detached, in float64: what the Pearson correlation of a
    population needs, added up chunk by chunk (micro-batches, processes). float64 because Σy² of lengths in
    characters reaches 1e11 over a batch and the variance is a difference of such sums."""
    x, y = x.detach().double(), y.detach().double()
    return torch.stack([x.new_tensor(float(x.numel())), x.sum(), (x * x).sum(), y.sum(), (y * y).sum(), (x * y).sum()])


def _centred_sums(population: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """n, x̄, ȳ, n·var(x), n·var(y), n·cov(x, y) from :func:`correlation_sums`."""
    n, sx, sxx, sy, syy, sxy = population.unbind()
    mx, my = sx / n, sy / n
    return n, mx, my, (sxx - n * mx * mx).clamp_min(0), (syy - n * my * my).clamp_min(0), sxy - n * mx * my


def pearson_of_sums(population: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation from :func:`correlation_sums`, as :func:`pearson` computes it (0 for a constant)."""
    _, _, _, vx, vy, cxy = _centred_sums(population)
    return cxy / ((vx * vy).sqrt() + eps)


def pearson_share(x: torch.Tensor, y: torch.Tensor, population: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """One chunk's share of the Pearson correlation ρ(x, y) of a whole population, given the population's
    :func:`correlation_sums` (which must include this chunk's x and y at their current values).

    The shares of all chunks add up to ρ in value (each is ρ·len(x)/n) and in gradient: the gradient of a share
    with respect to its chunk's x is exactly ∂ρ/∂x of :func:`pearson` over the whole population. So a
    correlation over a batch split into micro-batches (gradient accumulation) or processes is computed exactly,
    with one backward per micro-batch. ``y`` gets no gradient (lengths)."""
    n, mx, my, vx, vy, cxy = _centred_sums(population)
    denom = (vx * vy).sqrt() + eps
    rho = cxy / denom
    # ∂ρ/∂x_i = (y_i − ȳ)/D − ρ·(x_i − x̄)·√vy / (D·√vx), D = √(vx·vy) + ε (the derivative of pearson() as written)
    slope = torch.where(vx > 0, rho * vy.sqrt() / (denom * vx.clamp_min(1e-300).sqrt()), torch.zeros_like(rho))
    grad = (y.double() - my) / denom - slope * (x.detach().double() - mx)
    return (rho * x.numel() / n).to(x.dtype) + (grad.to(x.dtype) * (x - x.detach())).sum()


def symmetric_pair_differences(values: Sequence[torch.Tensor],
                               pairs: Sequence[Sequence[tuple[int, int, bool]]]) -> torch.Tensor:
    """Every preference pair's difference values[i] − values[j] (one tensor of values per record, rows indexed
    by completion), followed by the same differences negated.

    For ODIN over pairs (``--odin-correlation pairs``): the Pearson correlation of two such sets is the
    correlation of reward margins with length margins about zero, Σ Δr·Δℓ / √(Σ Δr² · Σ Δℓ²), whatever way
    round each pair is written, because a pair and its negation make both means exactly 0. So the quality head
    is decorrelated from which reply of a pair is the longer, the thing "prefers the longer reply" measures,
    and a constant preference for the longer reply counts (a plain correlation of margins would subtract it
    as the mean). Ties are included: the length difference of replies judged equal is no less a shortcut."""
    diffs = torch.cat([torch.stack([v[i] - v[j] for i, j, _ in p]) for v, p in zip(values, pairs) if p])
    return torch.cat([diffs, -diffs])


def odin_disentangle_loss(r_quality: torch.Tensor, r_length: torch.Tensor, lengths: torch.Tensor,
                          w_quality: torch.Tensor, w_length: torch.Tensor, *, length_coef: float = 1.0,
                          quality_coef: float = 1.0, ortho_coef: float = 1.0) -> torch.Tensor:
    """ODIN's disentangling terms (Chen et al. 2024, "ODIN: Disentangled Reward Mitigates Hacking in RLHF",
    arXiv 2402.07319, §3.2), over one batch of completions:

        L = λ_L · (−ρ(r_L, ℓ)) + λ_Q · |ρ(r_Q, ℓ)| + λ_O · |w_Qᵀ w_L|

    with ρ the Pearson correlation over the batch and ℓ the completions' lengths: the length head is pushed to
    carry the length, the quality head to be uncorrelated with it, and the two heads' weights to be orthogonal.
    The ranking loss (eq. 3/6) is applied by the caller to r_Q + r_L; at inference the reward is r_Q alone.
    """
    lengths = lengths.to(r_length.dtype)
    return (length_coef * -pearson(r_length, lengths) + quality_coef * pearson(r_quality, lengths).abs()
            + ortho_coef * (w_quality.flatten() @ w_length.flatten()).abs())


def odin_disentangle_share(r_quality: torch.Tensor, r_length: torch.Tensor, lengths: torch.Tensor,
                           population: torch.Tensor, *, length_coef: float = 1.0,
                           quality_coef: float = 1.0) -> torch.Tensor:
    """One chunk's share of :func:`odin_disentangle_loss`'s correlation terms over a whole batch,
    λ_L·(−ρ(r_L, ℓ)) + λ_Q·|ρ(r_Q, ℓ)|, with ``population`` the batch's :func:`correlation_sums` of (r_Q, ℓ) and
    (r_L, ℓ) stacked, shape (2, 6). The shares of a batch's chunks add up to the batch's terms in value and
    gradient (:func:`pearson_share`). The paper computes ρ over the global batch (gathered from every GPU); over
    one micro-batch of a few completions ρ is mostly noise, and over one pair it is ±1 whatever the heads do.
    The orthogonality term λ_O·|w_Qᵀw_L| depends on no batch and is the caller's."""
    lengths = lengths.to(r_length.dtype)
    q_sign = torch.where(pearson_of_sums(population[0]) >= 0, 1.0, -1.0).to(r_quality.dtype)  # |ρ|' = sign(ρ)·ρ'
    return (length_coef * -pearson_share(r_length, lengths, population[1])
            + quality_coef * q_sign * pearson_share(r_quality, lengths, population[0]))


# ---------------------------------------------------------------- one record's loss, by name



def check_record(name: str, k: int, tied: bool, margin: float | None, where: str = "", *,
                 all_tied: bool | None = None, unordered: bool = False) -> None:
    """Raise, naming the record, if loss ``name`` cannot train on a record of ``k`` completions (with a tie,
    with completions whose order is unknown, or without a margin); the message says what to use instead.
    ``all_tied``: every completion is tied with every other (None: same as ``tied``)."""
    if name not in LOSS_NAMES:
        raise UserError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    if name in ("bt", "bt_softplus", "margin") and k != 2:
        raise UserError(f"{where}: loss '{name}' takes pairs, this record ranks {k} completions; use "
                        "--loss balanced (eq. 6) or --loss plackett_luce, or --flatten-rankings to train on its pairs")
    if unordered and name == "plackett_luce":
        raise UserError(f"{where}: this record orders only some of its completions (e.g. best-of-N: the rejected "
                        "ones are unordered among themselves), which loss 'plackett_luce' cannot represent; use "
                        "--loss balanced (the chosen against each rejected), or --flatten-rankings")
    if tied and name in ("margin", "plackett_luce"):
        if all_tied is None or all_tied:
            fix = "--drop-ties to skip tied records (counted)"
        else:  # --drop-ties skips only records tied throughout; this one has strict pairs too
            fix = "--flatten-rankings --drop-ties to train on its strict pairs only"
        raise TieError(f"{where}: this record has tied completions, which loss '{name}' cannot represent; use "
                       f"--loss bt or --loss balanced (ties get target 1/2), or {fix}")
    if name == "margin" and margin is None:
        raise UserError(f"{where}: loss 'margin' needs a margin for every record; set --margin-source "
                        "(field or scores) or add a 'margin' field")


def record_loss(
    name: str,
    rewards: torch.Tensor,
    ranking: Sequence[int],
    pairs: Sequence[tuple[int, int, bool]],
    *,
    margin: float | None = None,
    label_smoothing: float = 0.0,
    center_coef: float = 0.0,
    l2_coef: float = 0.0,
    where: str = "",
    unordered: bool = False,
) -> torch.Tensor:
    """The loss of one record (a pair or a K-wise ranking) given its completions' rewards.

    ``ranking`` lists completion indices best first and ``pairs`` is
    ``PreferenceExample.preference_pairs()`` (for a record with ``unordered`` completions only the pairs
    with a known order; pass ``unordered=True`` so losses that need a full order refuse it). The
    regularisers are added on top of any loss.
    """
    tied = any(t for _, _, t in pairs)
    check_record(name, len(ranking), tied, margin, where, all_tied=tied and all(t for _, _, t in pairs),
                 unordered=unordered)
    w, l_ = ranking[0], ranking[-1]
    if name == "bt" or name == "bt_softplus":
        target = 0.5 if tied else 1.0 - label_smoothing
        if name == "bt_softplus" and target == 1.0:
            loss = bradley_terry_loss_softplus(rewards[w], rewards[l_])
        elif target == 1.0:
            loss = bradley_terry_loss(rewards[w], rewards[l_])
        else:
            loss = soft_bradley_terry_loss(rewards[w], rewards[l_], target)
    elif name == "margin":
        m = torch.tensor(margin, dtype=rewards.dtype, device=rewards.device)
        # Smoothing applies to the margin-shifted difference: target 1 − ε on σ(Δr − m).
        loss = (soft_bradley_terry_loss(rewards[w] - m, rewards[l_], 1.0 - label_smoothing) if label_smoothing
                else margin_loss(rewards[w], rewards[l_], m))
    elif name == "balanced":
        loss = balanced_pairwise_loss(rewards, pairs, label_smoothing)
    else:  # plackett_luce (check_record has refused unknown names)
        if label_smoothing:
            raise UserError("label smoothing is defined for pairwise losses (bt, bt_softplus, margin, balanced), "
                             "not for plackett_luce")
        loss = plackett_luce_loss(rewards[list(ranking)])
    if center_coef:
        loss = loss + reward_centering(rewards, pairs, center_coef)
    if l2_coef:
        loss = loss + reward_l2(rewards, pairs, l2_coef)
    return loss
