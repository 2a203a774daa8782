"""What a training micro-batch's loss is: one small component per objective, one protocol for all.

The loop (``rewardkit.training.loop``) calls, per optimizer step, ``before_step(model, micros)`` once (a value
the step's micro-batches share: ODIN's whole-batch correlation sums) and ``loss(model, micro, context)`` per
micro-batch → :class:`MicroLoss`. A recipe also asks the objective how records are encoded and weighted, how
it grows the score head before training (``prepare_model``), what a resumed checkpoint needs to load
(``load_transform``), what the checkpoint records (``checkpoint_options``) and whether anything is fitted
after training (``after_training``: the aspect gate's refit). Nothing per call is kept on the objective.

* :class:`Pairwise` — the ranking losses of ``rewardkit.losses`` (bt, bt_softplus, margin, balanced,
  Plackett-Luce; eq. 3–6) on one scalar head, with optional length-balance weights (``--length-debias balance``);
* :class:`Odin` — ODIN (Chen et al. 2024): a quality and a length head, ranked by their sum and disentangled;
* :class:`Aspects` — aspect heads and a gate on the prompt (ArmoRM-style, ``rewardkit.heads``);
* :class:`Verifier` — a GenRM: the causal LM's logit P(Yes) is the reward (``rewardkit.judges.genrm``);
* :class:`Outcome` — an outcome reward model (ORM): pointwise BCE on each solution's correctness;
* :class:`Process` — a process reward model (PRM): per-step BCE at each step's end marker.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from rewardkit.batching import Encoder, TruncationStats, encode_steps, pad_batch
from rewardkit.data.record import PreferenceExample, completion_text
from rewardkit.data.steps import VerifierExample
from rewardkit.errors import UserError
from rewardkit.heads import (
    LENGTH_HEAD_FILE,
    GateFit,
    add_aspect_heads,
    add_length_head,
    aspect_metadata,
    check_aspects,
    encode_probed,
    fit_gate,
    gate_label_loss,
    head_weights,
    join_length_head,
    length_balance_weights,
    mix,
    scale_gate,
    score_linear,
)
from rewardkit.inference.scoring import aggregate_steps
from rewardkit.judges.judge import VerdictTokens, verdict_logprobs
from rewardkit.losses import (
    correlation_sums,
    odin_disentangle_share,
    pointwise_bce_loss,
    record_loss,
    sigmoid,
    step_bce_loss,
    symmetric_pair_differences,
    within_problem_ranking_loss,
)
from rewardkit.plan import Item, micro_batch_token_budget, micro_batches
from rewardkit.sharing import group_rewards


@dataclass
class MicroLoss:
    """One micro-batch's result: per-record losses (weighted; the loop sums them and divides by the step's record
    count), records ordered right and the summed best-minus-worst margin (for the log), the reward head's values
    per record (the free source of reward statistics), and the forward path that computed them."""

    losses: torch.Tensor
    correct: float
    margin: float
    rewards: list[torch.Tensor] | None = None
    path: str | None = None
    reason: str | None = None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP / DeepSpeed wrapper (no wrapper: itself)."""
    return getattr(model, "module", model)


def records_loss(cfg: Any, records: list[PreferenceExample], pairs: list[list[tuple[int, int, bool]]],
                 rewards: list[torch.Tensor]) -> tuple[torch.Tensor, float, float]:
    """Per-record losses of ``cfg.loss`` (``rewardkit.losses.record_loss``), plus (records ordered right, summed
    best-minus-worst margin) for the log."""
    losses = torch.stack([
        record_loss(cfg.loss, r, ex.ranking, p, margin=ex.margin, label_smoothing=cfg.label_smoothing,
                    center_coef=cfg.reward_center_coef, l2_coef=cfg.reward_l2_coef, where=ex.source,
                    unordered=bool(ex.unordered))
        for ex, p, r in zip(records, pairs, rewards)])
    correct, margins = zip(*(order_stats(r.detach(), p, ex.ranking) for ex, p, r in zip(records, pairs, rewards)))
    return losses, sum(correct), sum(margins)


def order_stats(rewards: torch.Tensor, pairs: list[tuple[int, int, bool]], ranking: list[int]) -> tuple[float, float]:
    """(fraction of the record's strict pairs ordered right, best-minus-worst reward) for the training log."""
    strict = [(i, j) for i, j, tied in pairs if not tied]
    correct = sum(float(rewards[i] > rewards[j]) for i, j in strict) / len(strict) if strict else 0.0
    return correct, float(rewards[ranking[0]] - rewards[ranking[-1]])


def chosen_longer(ex: PreferenceExample) -> bool | None:
    """For a strict pair: is the chosen reply longer (characters) than the rejected? None for ties, rankings
    and equal lengths (``length_balance_weights`` leaves those at weight 1)."""
    if len(ex.completions) != 2 or ex.is_tie:
        return None
    a, b = (len(completion_text(c)) for c in (ex.chosen, ex.rejected))
    return None if a == b else a > b


class Objective:
    """The protocol, with the defaults of a plain one-head objective."""

    name = "objective"
    all_heads = False  # the forward returns every output of the score layer, not only the reward

    def prepare_model(self, model: Any) -> None:
        """Grow the score head before LoRA wraps the model (so peft's trainable copy has every output)."""

    def encode(self, encoder: Encoder, examples: list[PreferenceExample], stats: TruncationStats
               ) -> list[list[list[int]]]:
        return encoder.encode_examples(examples, stats)

    def check(self, examples: list[PreferenceExample]) -> None:
        """Refuse records this objective cannot train on (before any compute)."""

    def record_weights(self, examples: list[PreferenceExample]) -> list[float]:
        return [1.0] * len(examples)

    def stand_in(self) -> PreferenceExample:
        """A record for a zero-weight pass (a process with none left in a step)."""
        return PreferenceExample.pair("stand-in", "a", "b")

    def before_step(self, model: torch.nn.Module, micros: list[list[Item]]) -> Any:
        return None

    def loss(self, model: torch.nn.Module, micro: list[Item], context: Any) -> MicroLoss:
        raise NotImplementedError

    def load_transform(self, folder: Path) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None:
        """How a checkpoint's saved weights become this model's state (for resume); None: as saved."""
        return None

    def checkpoint_options(self) -> dict[str, Any]:
        """Keyword arguments of ``rewardkit.checkpoint.save_checkpoint``: head layout and metadata."""
        return {}

    def after_training(self, accelerator: Accelerator, model: Any, items: list[Item] | None) -> dict[str, Any] | None:
        """A fit after the last step (on the unwrapped model); returns its summary for the report, or None."""
        return None


class Pairwise(Objective):
    """The ranking loss ``cfg.loss`` on the reward head; ``balance``: chosen-longer and chosen-shorter pairs
    weigh the same (``rewardkit.heads.length_balance_weights``)."""

    name = "pairwise"

    def __init__(self, cfg: Any, pad_id: int, balance: bool = False):
        self.cfg, self.pad_id, self.balance = cfg, pad_id, balance

    def record_weights(self, examples: list[PreferenceExample]) -> list[float]:
        if not self.balance:
            return super().record_weights(examples)
        return length_balance_weights([chosen_longer(ex) for ex in examples])

    def forward(self, model: torch.nn.Module, micro: list[Item]) -> Any:
        return group_rewards(model, [it.ids for it in micro], self.pad_id, shared=self.cfg.prefix_sharing,
                             padding_side=self.cfg.padding_side, all_heads=self.all_heads, route=self.cfg.route)

    def loss(self, model: torch.nn.Module, micro: list[Item], context: Any) -> MicroLoss:
        rewards = self.forward(model, micro)
        weights = torch.tensor([it.weight for it in micro], device=rewards[0].device)
        losses, correct, margin = records_loss(self.cfg, [it.example for it in micro], [it.pairs for it in micro],
                                               rewards)
        return MicroLoss(losses * weights, correct, margin, list(rewards), rewards.path, rewards.reason)

    def checkpoint_options(self) -> dict[str, Any]:
        if not self.balance:
            return {}
        return {"length_debias": {"method": "balance",
                                  "weights": "chosen-longer and chosen-shorter pairs weigh the same"}}


class Odin(Pairwise):
    """ODIN (Chen et al. 2024): rank with r_Q + r_L; make r_L correlate with length and r_Q not, over the whole
    step's completions (``--odin-correlation``: completions, symmetrised pairs, or both), with |w_Q · w_L|
    keeping the heads apart. The quality head alone is the saved reward; the length head is saved beside it."""

    name = "odin"
    all_heads = True

    def __init__(self, cfg: Any, pad_id: int, accelerator: Accelerator):
        super().__init__(cfg, pad_id)
        self.accelerator = accelerator

    def prepare_model(self, model: Any) -> None:
        add_length_head(model, self.cfg.head_init)

    def before_step(self, model: torch.nn.Module, micros: list[list[Item]]) -> Any:
        """The (r_Q, ℓ) and (r_L, ℓ) correlation sums over every process's records of the step (no gradient; a
        forward without backward, +40 % step time on SmolLM2 with LoRA), so the correlations are the whole
        batch's as in the paper, not one micro-batch's few completions. None when the step is one micro-batch on
        one process: that micro-batch's own rewards are then the whole step's."""
        accelerator, cfg = self.accelerator, self.cfg
        if accelerator.num_processes == 1 and len(micros) == 1:
            return None
        levels = 2 if cfg.odin_correlation == "both" else 1
        sums = torch.zeros(levels, 2, 6, dtype=torch.float64, device=accelerator.device)  # a process may hold none
        inner = unwrap(model)  # no DDP forward: processes may run different numbers of these
        with torch.no_grad():
            for micro in micros:
                rewards = group_rewards(inner, [it.ids for it in micro], self.pad_id, shared=cfg.prefix_sharing,
                                        padding_side=cfg.padding_side, all_heads=True, route=cfg.route)
                sums += odin_sums(odin_views(micro, list(rewards), cfg.odin_correlation))
        records = sum(len(micro) for micro in micros)
        total = accelerator.reduce(torch.cat([sums.flatten(), sums.new_tensor([records])]), "sum")
        return total[:-1].view(levels, 2, 6), int(total[-1])

    def loss(self, model: torch.nn.Module, micro: list[Item], context: Any) -> MicroLoss:
        cfg = self.cfg
        rewards = self.forward(model, micro)  # (records carry weight 1: ODIN is not combined with balance)
        losses, correct, margin = records_loss(cfg, [it.example for it in micro], [it.pairs for it in micro],
                                               [r.sum(-1) for r in rewards])
        views = odin_views(micro, rewards, cfg.odin_correlation)
        # (one micro-batch on one process is the whole step: its own sums, no pre-pass was needed)
        population, n_records = context or (odin_sums(views), len(micro))
        share = sum(odin_disentangle_share(x[:, 0], x[:, 1], lengths, sums, length_coef=cfg.odin_length_coef,
                                           quality_coef=cfg.odin_quality_coef)
                    for (x, lengths), sums in zip(views, population))
        w_q, w_l = head_weights(unwrap(model))
        ortho = cfg.odin_ortho_coef * (w_q.flatten() @ w_l.flatten()).abs()
        # The loop divides the summed record losses by the step's record count: every record carries the ortho
        # term and its part of the micro-batch's share times that count, so the step's loss is ranking + ODIN terms.
        return MicroLoss(losses + ortho + share * n_records / len(micro), correct, margin,
                         [r[:, 0] for r in rewards], rewards.path, rewards.reason)

    def load_transform(self, folder: Path) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        return lambda state: join_length_head(state, folder)

    def checkpoint_options(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"length_head": True, "length_debias": {
            "method": "odin", "reward": "the quality head (model.safetensors)", "length_head": LENGTH_HEAD_FILE,
            "length_coef": cfg.odin_length_coef, "quality_coef": cfg.odin_quality_coef,
            "ortho_coef": cfg.odin_ortho_coef, "correlation": cfg.odin_correlation}}


def completion_lengths(micro: list[Item], device: torch.device) -> torch.Tensor:
    """The lengths (characters) of a micro-batch's completions, in the order of its concatenated rewards."""
    return torch.tensor([n for it in micro for n in it.char_lengths], dtype=torch.float32, device=device)


def odin_views(micro: list[Item], rewards: list[torch.Tensor], over: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """What ODIN correlates with length, for each level ``--odin-correlation`` names: (both heads' values, shape
    (m, 2); the lengths, shape (m,)). 'completions': each completion's rewards and length, as in the paper;
    'pairs': each preference pair's reward and length margins, symmetrised (``symmetric_pair_differences``)."""
    device = rewards[0].device
    views = []
    if over in ("completions", "both"):
        views.append((torch.cat(rewards), completion_lengths(micro, device)))
    if over in ("pairs", "both"):
        pairs = [it.pairs for it in micro]
        lengths = [torch.tensor(it.char_lengths, dtype=torch.float32, device=device) for it in micro]
        views.append((symmetric_pair_differences(rewards, pairs), symmetric_pair_differences(lengths, pairs)))
    return views


def odin_sums(views: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The (quality head, length) and (length head, length) correlation sums of each view: shape (levels, 2, 6)."""
    return torch.stack([torch.stack([correlation_sums(x[:, h], lengths) for h in (0, 1)]) for x, lengths in views])


class Aspects(Pairwise):
    """Aspect heads and a gate (ArmoRM-style, ``rewardkit.heads``): each record trains its own aspect's head; the
    gate, read on a probe of the prompt (each record's last sequence), mixes the heads (``--aspect-gate-loss``:
    the mixture ranks the pair with the heads held fixed, the gate predicts the record's aspect, or both)."""

    name = "aspects"
    all_heads = True

    def __init__(self, cfg: Any, pad_id: int, aspects: list[str], balance: bool = False):
        super().__init__(cfg, pad_id, balance)
        self.aspects = aspects

    def prepare_model(self, model: Any) -> None:
        add_aspect_heads(model, self.aspects, self.cfg.head_init)

    def encode(self, encoder: Encoder, examples: list[PreferenceExample], stats: TruncationStats
               ) -> list[list[list[int]]]:
        out = []
        for ids, group_stats in encode_probed(encoder, examples):
            out.append(ids)
            stats.merge(group_stats)
        return out

    def check(self, examples: list[PreferenceExample]) -> None:
        check_aspects(examples, self.aspects)

    def stand_in(self) -> PreferenceExample:
        return PreferenceExample.pair("stand-in", "a", "b", aspect=self.aspects[0])

    def loss(self, model: torch.nn.Module, micro: list[Item], context: Any) -> MicroLoss:
        cfg, n = self.cfg, len(self.aspects)
        records, record_pairs = [it.example for it in micro], [it.pairs for it in micro]
        rewards = self.forward(model, micro)
        weights = torch.tensor([it.weight for it in micro], device=rewards[0].device)
        heads = [r[:-1, self.aspects.index(it.example.aspect)] for it, r in zip(micro, rewards)]
        head_losses, correct, margin = records_loss(cfg, records, record_pairs, heads)
        terms = [head_losses]
        if cfg.aspect_gate_loss in ("preference", "both"):
            mixed = [mix(r, n, detach_heads=True, gate_scale=cfg.aspect_gate_scale)[0] for r in rewards]
            terms.append(records_loss(cfg, records, record_pairs, mixed)[0])
        if cfg.aspect_gate_loss in ("label", "both"):
            terms.append(torch.stack([gate_label_loss(r, n, self.aspects.index(it.example.aspect),
                                                      cfg.aspect_gate_scale) for it, r in zip(micro, rewards)]))
        mixture = [mix(r.detach(), n, gate_scale=cfg.aspect_gate_scale)[0] for r in rewards]
        return MicroLoss(sum(terms) / len(terms) * weights, correct, margin,  # the mean: chance stays log 2
                         mixture, rewards.path, rewards.reason)

    def load_transform(self, folder: Path) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        return lambda state: scale_gate(state, len(self.aspects), 1 / self.cfg.aspect_gate_scale)

    def checkpoint_options(self) -> dict[str, Any]:
        return {**super().checkpoint_options(), "aspect_gate": (len(self.aspects), self.cfg.aspect_gate_scale),
                "aspects": aspect_metadata(self.aspects, self.cfg.aspect_gate_scale)}

    def after_training(self, accelerator: Accelerator, model: Any, items: list[Item] | None) -> dict[str, Any] | None:
        if not self.cfg.aspect_gate_refit:
            return None
        if items is None:
            return {"summary": "not run: --streaming holds no records to refit on"}
        fit = refit_gate(accelerator, model, items, self.aspects, self.cfg, self.pad_id)
        line = (f"gate refit on {fit.records} records' prompts (ridge {fit.l2:g}): aspect accuracy "
                f"{fit.train_accuracy:.3f} train" + ("" if fit.validation_accuracy is None else
                                                     f", {fit.validation_accuracy:.3f} held-out share"))
        return {"summary": fit.summary(), "line": line}


def refit_gate(accelerator: Accelerator, model: Any, items: list[Item], aspects: list[str], cfg: Any,
               pad_id: int) -> GateFit:
    """After training: read every record's probe features and head margins (no gradient, each process its share,
    then gathered), fit the gate on them (:func:`rewardkit.heads.fit_gate`, the same on every process) and
    write it into the score layer's gate rows (as W_g / γ: training reads γ·W_g, and the checkpoint stores γ·W_g)."""
    n_aspects, rank, world = len(aspects), accelerator.process_index, accelerator.num_processes
    score = score_linear(model)
    captured: list[torch.Tensor] = []
    hook = model.hf.score.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    mine = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            position = rank  # each record's place in ``items``, so the gathered records keep one order
            budget = micro_batch_token_budget(cfg.micro_batch_tokens, accelerator.device,
                                                  accelerator.mixed_precision == "bf16")
            for micro in micro_batches(items[rank::world], cfg.micro_batch_size, budget):
                captured.clear()
                rewards = group_rewards(model, [it.ids for it in micro], pad_id, shared=cfg.prefix_sharing,
                                        padding_side=cfg.padding_side, all_heads=True, route=cfg.route)
                rows = torch.cat([c.reshape(-1, c.shape[-1]) for c in captured]).float().cpu()
                ends = np.cumsum([len(it.ids) for it in micro])
                if len(rows) != ends[-1]:
                    raise RuntimeError(f"the score layer saw {len(rows)} rows for {ends[-1]} sequences")
                for it, end, r in zip(micro, ends, rewards):
                    heads = r[:-1, :n_aspects].float().cpu()
                    margins = [heads[a] - heads[b] for a, b, tied in it.pairs if not tied]
                    mine.append((position, rows[end - 1], aspects.index(it.example.aspect), margins))
                    position += world
    finally:
        hook.remove()
        model.train(was_training)
    gathered = sorted(gather_object(mine) if world > 1 else mine, key=lambda x: x[0])
    features = torch.stack([f for _, f, _, _ in gathered])
    aspect = torch.tensor([a for _, _, a, _ in gathered])
    pair_record = torch.tensor([k for k, (_, _, _, m) in enumerate(gathered) for _ in m], dtype=torch.long)
    pair_heads = torch.stack([d for _, _, _, m in gathered for d in m]) if len(pair_record) else torch.zeros(0, n_aspects)
    fit = fit_gate(features, aspect, pair_record, pair_heads, cfg.aspect_gate_loss, bias=score.bias is not None,
                   seed=cfg.seed)
    with torch.no_grad():
        score.weight[n_aspects:] = (fit.weight / cfg.aspect_gate_scale).to(score.weight)
        if score.bias is not None and fit.bias is not None:
            score.bias[n_aspects:] = (fit.bias / cfg.aspect_gate_scale).to(score.bias)
    return fit


def genrm_rewards(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, verdicts: VerdictTokens) -> torch.Tensor:
    """r = log P(Yes) − log P(No) for left-padded verifier prompts (differentiable)."""
    logp, _ = verdict_logprobs(model, ids, mask, verdicts)
    return logp[:, verdicts.labels.index("Yes")] - logp[:, verdicts.labels.index("No")]


class Verifier(Objective):
    """A generative verifier (GenRM): r(x, y) = logit P(Yes) of the causal LM after the verifier template, ranked
    by ``cfg.loss`` as the classifier's reward is. Records are encoded by the judge (``JudgeScorer.prepare``),
    batches padded on the left (the verdict is read at the last column)."""

    name = "verifier"

    def __init__(self, cfg: Any, pad_id: int, verdicts: VerdictTokens, device: torch.device):
        self.cfg, self.pad_id, self.verdicts, self.device = cfg, pad_id, verdicts, device

    def loss(self, model: torch.nn.Module, micro: list[Item], context: Any) -> MicroLoss:
        ids, mask = pad_batch([q for it in micro for q in it.ids], self.pad_id, "left")
        flat = genrm_rewards(model, ids.to(self.device), mask.to(self.device), self.verdicts)
        rewards = flat.split([len(it.ids) for it in micro])
        losses, correct, margin = records_loss(self.cfg, [it.example for it in micro], [it.pairs for it in micro],
                                               rewards)
        return MicroLoss(losses, correct, margin)


class Outcome(Objective):
    """An outcome reward model (ORM; Cobbe et al. 2021): the reward at a solution's last token is the logit of
    P(correct), trained with pointwise binary cross-entropy against each solution's label, soft labels as given
    (``rewardkit.losses.pointwise_bce_loss``). A record is a problem and its solutions (one shared prompt); its loss is
    the mean over its labelled solutions, plus ``--orm-ranking-coef`` × the within-problem ranking term
    (``rewardkit.losses.within_problem_ranking_loss``) when set. The checkpoint is a plain scalar reward model: σ(reward) = P(correct)."""

    name = "orm"

    def __init__(self, cfg: Any, pad_id: int):
        self.cfg, self.pad_id = cfg, pad_id

    def check(self, examples: list[Any]) -> None:
        for ex in examples:
            if all(c is None for c in ex.correct):
                raise UserError(f"{ex.source}: no solution has an outcome label ('correct'); --objective orm needs "
                                "them (train step-labelled data with --objective prm)")
        if self.cfg.orm_ranking_coef and examples and not any(
                len({c for c in ex.correct if c is not None}) > 1 for ex in examples):
            warnings.warn(f"--orm-ranking-coef {self.cfg.orm_ranking_coef}: no problem among these {len(examples)} "
                          "records has solutions with different labels, so the ranking term is 0 (it ranks a "
                          "problem's solutions against each other: give a record several solutions, e.g. "
                          "'completions' with per-solution 'correct')", stacklevel=2)

    def stand_in(self) -> Any:
        return VerifierExample([{"role": "user", "content": "stand-in"}], [["a"]], [None], [1.0])

    def loss(self, model: torch.nn.Module, micro: list[Item], context: Any) -> MicroLoss:
        rewards = group_rewards(model, [it.ids for it in micro], self.pad_id, shared=self.cfg.prefix_sharing,
                                padding_side=self.cfg.padding_side, route=self.cfg.route)
        losses, correct = [], 0.0
        for it, r in zip(micro, rewards):
            labelled = [k for k, c in enumerate(it.example.correct) if c is not None]
            t = torch.tensor([it.example.correct[k] for k in labelled], device=r.device, dtype=r.dtype)
            loss = pointwise_bce_loss(r[labelled], t).mean()
            if self.cfg.orm_ranking_coef:
                loss = loss + self.cfg.orm_ranking_coef * within_problem_ranking_loss(r[labelled], t)
            losses.append(loss)
            correct += float(((r[labelled].detach() > 0) == (t > 0.5)).float().mean())
        weights = torch.tensor([it.weight for it in micro], device=rewards[0].device)
        return MicroLoss(torch.stack(losses) * weights, correct, 0.0, list(rewards), rewards.path, rewards.reason)

    def checkpoint_options(self) -> dict[str, Any]:
        verifier = {"kind": "orm", "reward": "logit of P(solution is correct), read at its last token"}
        if self.cfg.orm_ranking_coef:
            verifier["ranking_coef"] = self.cfg.orm_ranking_coef
        return {"verifier": verifier}


class Process(Objective):
    """A process reward model (PRM; Lightman et al. 2023, Math-Shepherd): a reward at the end of every step, read
    at the step-end marker in one forward pass per solution (positions fixed by ``rewardkit.batching.encode_steps``),
    trained with per-step binary cross-entropy against the step labels, soft labels as given and unlabelled steps
    left out (``rewardkit.losses.step_bce_loss``; ``--prm-last-step-only``: only each solution's last labelled
    step). A record's loss is the mean over its solutions. The checkpoint records the marker and the aggregation
    rule (``rewardkit.inference.scoring.aggregate_steps``). The step's aggregated P(right) per solution — what the
    scorer returns — is handed back as the record's rewards, the free source of the checkpoint's reward statistics
    (before, a run without held-out data rescored up to 500 training records after the last step)."""

    name = "prm"

    def __init__(self, cfg: Any, pad_id: int):
        self.cfg, self.pad_id = cfg, pad_id

    def encode(self, encoder: Encoder, examples: list[Any], stats: TruncationStats) -> list[Any]:
        return [encode_steps(encoder, ex.prompt, ex.steps, self.cfg.step_marker, stats) for ex in examples]

    def check(self, examples: list[Any]) -> None:
        for ex in examples:
            if all(labels is None for labels in ex.step_labels):
                raise UserError(f"{ex.source}: no step labels; --objective prm needs per-step labels (outcome-only "
                                "data trains with --objective orm, or label its steps with `rewardkit label-steps`)")

    def stand_in(self) -> Any:
        return VerifierExample([{"role": "user", "content": "stand-in"}], [["a"]], [[1.0]], [1.0])

    def loss(self, model: torch.nn.Module, micro: list[Item], context: Any) -> MicroLoss:
        rewards = group_rewards(model, [it.ids for it in micro], self.pad_id, shared=self.cfg.prefix_sharing,
                                padding_side=self.cfg.padding_side, route=self.cfg.route,
                                reads=[it.reads for it in micro])
        losses, correct, solution_rewards = [], 0.0, []
        for it, flat in zip(micro, rewards):
            per, start, scored, aggregates = [], 0, 0.0, []
            probs = sigmoid(flat.detach().float().cpu().numpy())  # the one σ; one device sync per record
            for labels, positions in zip(it.example.step_labels, it.reads):
                logits = flat[start:start + len(positions)]
                # what the scorer will return for this solution: its steps' P(right) under the checkpoint's rule
                aggregates.append(aggregate_steps(probs[start:start + len(positions)], self.cfg.aggregate))
                start += len(positions)
                if labels is None:
                    continue
                t = torch.tensor([float("nan") if v is None else v for v in labels[:len(positions)]],
                                 device=logits.device, dtype=logits.dtype)
                if torch.isnan(t).all():  # its labelled steps were cut by max_length
                    continue
                per.append(step_bce_loss(logits, t, last_step_only=self.cfg.prm_last_step_only))
                known = ~torch.isnan(t)
                scored = scored + float(((logits.detach()[known] > 0) == (t[known] > 0.5)).float().mean())
            losses.append(torch.stack(per).mean() if per else flat.sum() * 0.0)
            correct += scored / max(len(per), 1)
            solution_rewards.append(torch.tensor(aggregates, dtype=torch.float32))
        weights = torch.tensor([it.weight for it in micro], device=rewards[0].device)
        return MicroLoss(torch.stack(losses) * weights, correct, 0.0, solution_rewards, rewards.path, rewards.reason)

    def checkpoint_options(self) -> dict[str, Any]:
        return {"verifier": {"kind": "prm", "step_marker": self.cfg.step_marker, "aggregate": self.cfg.aggregate,
                             "reward": "logit of P(step is right), read at the last token of each step's marker",
                             "last_step_only": self.cfg.prm_last_step_only}}


def classifier_objective(cfg: Any, pad_id: int, accelerator: Accelerator, aspects: list[str]) -> Objective:
    """The objective ``rewardkit train``'s flags name."""
    if cfg.objective == "orm":
        return Outcome(cfg, pad_id)
    if cfg.objective == "prm":
        return Process(cfg, pad_id)
    if cfg.length_debias == "odin":
        return Odin(cfg, pad_id, accelerator)
    balance = cfg.length_debias == "balance"
    return Aspects(cfg, pad_id, aspects, balance) if aspects else Pairwise(cfg, pad_id, balance)
