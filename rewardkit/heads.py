"""Score heads beyond one scalar: ODIN's quality and length heads (Chen et al. 2024, arXiv 2402.07319), and
aspect-conditioned multi-objective heads with a gate (ArmoRM-style; Wang et al. 2024, arXiv 2406.12845).

**ODIN.**

The model's ``score`` layer grows from one output to two: output 0 is the **quality** head, output 1 the
**length** head. Training ranks with r_Q + r_L and adds ODIN's disentangling terms
(``rewardkit.losses.odin_disentangle_loss``), so length is pushed into r_L and out of r_Q. The reward at
inference is r_Q alone.

Why the checkpoint keeps only the quality head in ``model.safetensors`` (a plain 1-label
sequence-classification model) and the length head beside it in ``rewardkit_length_head.safetensors``:
the deployed reward is r_Q, so ``AutoModelForSequenceClassification`` and every rewardkit scorer read
exactly that without knowing about ODIN, and nothing downstream can pick up the length head by mistake.
The length head is kept for analysis and to resume training.

**Aspects.** With A named aspects (e.g. helpful, harmless) the ``score`` layer has 2A outputs: outputs 0…A−1 are
the aspect rewards r_a(x, y), read at the completion's last token like any reward; outputs A…2A−1 are the gate's
logits g(x), read at the last token of the **probe**: the prompt followed by an empty assistant reply
(:data:`PROBE`), so the gate sees the prompt and nothing of the completion. The reward is the mixture
r(x, y) = Σ_a w_a(x) r_a(x, y) with w(x) = softmax(g(x)), or with explicit weights given at inference
(steering: ``helpful=1,harmless=0`` scores with the helpful head alone). Unlike ArmoRM, which regresses frozen
embeddings on absolute ratings and then fits the gate, every head here is trained end to end with the pairwise
loss on its own aspect's records, and the gate with the same loss on the mixture with the heads' rewards held
fixed (detached), so the mixture cannot bend a head away from its aspect (``rewardkit.train``).

Why one 2A-output layer, saved as is: the checkpoint stays a standard ``*ForSequenceClassification`` folder
(``num_labels = 2A``, ``id2label`` naming ``reward:<aspect>`` and ``gate:<aspect>``). Plain transformers run on
the conversation gives the aspect rewards in its first A logits (the gate logits there are meaningless), and
run on the probe conversation gives the gate in its last A; the mixture is two passes and a softmax
(docs/aspects.md, tested). Under prefix sharing the probe costs its own two or three tokens per group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rewardkit.batching import Encoder, TruncationStats
from rewardkit.data.record import Message
from rewardkit.errors import UserError
from rewardkit.losses import bradley_terry_loss
from rewardkit.model import RewardModel, init_head_rows

LENGTH_HEAD_FILE = "rewardkit_length_head.safetensors"


def score_linear(model: RewardModel) -> nn.Linear:
    """The score layer that trains (under LoRA, peft's trainable copy of it)."""
    score = model.hf.score
    return score.modules_to_save["default"] if hasattr(score, "modules_to_save") else score


def add_length_head(model: RewardModel, head_init: str = "normal") -> None:
    """Grow the score layer to [quality, length]: the quality row keeps the existing head's weights, the length
    row starts as an independent draw of ``head_init`` (``rewardkit.model.init_head_rows``; seeded by the caller)."""
    old = model.hf.score
    if old.out_features != 1:
        raise ValueError(f"expected a 1-output score head, got {old.out_features}")
    new = nn.Linear(old.in_features, 2, bias=old.bias is not None, dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        new.weight[0] = old.weight[0]
        init_head_rows(new.weight[1:], head_init, model.hf.config)
        if old.bias is not None:
            new.bias[0], new.bias[1] = old.bias[0], 0.0
    model.hf.score = new
    model.hf.config.num_labels = 2


def head_weights(model: RewardModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(w_Q, w_L): the quality and length heads' weight vectors (for ODIN's orthogonality term)."""
    w = score_linear(model).weight
    return w[0], w[1]


def split_length_head(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A 2-head state dict → (the model's state with the quality head as its 1-output score, the length head)."""
    state = dict(state)
    length = {"weight": state["score.weight"][1:2].clone()}
    state["score.weight"] = state["score.weight"][0:1].clone()
    if "score.bias" in state:
        length["bias"] = state["score.bias"][1:2].clone()
        state["score.bias"] = state["score.bias"][0:1].clone()
    return state, length


def join_length_head(state: dict[str, torch.Tensor], folder: Path) -> dict[str, torch.Tensor]:
    """The inverse of :func:`split_length_head` when a checkpoint is loaded back to train (``--resume``)."""
    from safetensors.torch import load_file

    length = load_file(folder / LENGTH_HEAD_FILE)
    state = dict(state)
    state["score.weight"] = torch.cat([state["score.weight"], length["weight"]])
    if "score.bias" in state:
        state["score.bias"] = torch.cat([state["score.bias"], length["bias"]])
    return state


def length_balance_weights(chosen_longer: list[bool | None]) -> list[float]:
    """Per-record loss weights so that pairs whose chosen reply is longer and pairs whose chosen reply is shorter
    weigh the same in total (``None``: equal lengths or not a pair, weight 1); the mean weight stays 1.

    The simple baseline beside ODIN: if most chosen replies are longer, a model can lower its loss by reading
    length; after re-weighting, length alone predicts the label no better than chance."""
    longer = sum(1 for c in chosen_longer if c is True)
    shorter = sum(1 for c in chosen_longer if c is False)
    if not longer or not shorter:
        return [1.0] * len(chosen_longer)
    n = longer + shorter
    return [1.0 if c is None else n / (2 * (longer if c else shorter)) for c in chosen_longer]


# ------------------------------------------------------------------------------------- aspect heads

PROBE: list[Message] = [{"role": "assistant", "content": ""}]  # the gate reads the prompt + an empty reply


def parse_aspects(text: str) -> list[str]:
    """'helpful,harmless' → ['helpful', 'harmless'] (the heads' order); '' → [] (a plain reward model)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(set(names)) != len(names):
        raise UserError(f"--aspects {text!r}: each aspect once")
    if len(names) == 1:
        raise UserError(f"--aspects {text!r}: one aspect is a plain reward model; name two or more, or none")
    return names


def parse_aspect_weights(given: str | Mapping[str, float] | None, aspects: list[str],
                         where: str = "--aspect-weights") -> list[float] | None:
    """Explicit aspect weights, 'helpful=1,harmless=0.5' or a mapping → one weight per aspect, in head order
    (aspects not named get 0); None / '' / 'gate' → None (the gate's weights, per prompt). Used as given, not
    normalised: weights summing to 1 keep the reward on the scale of the heads."""
    if given is None or (isinstance(given, str) and given.strip() in ("", "gate")):
        return None
    if not aspects:
        raise UserError(f"{where} {given!r}: this model has no aspect heads (train one with --aspects)")
    pairs = (given.items() if isinstance(given, Mapping) else
             [(part.partition("=")[0], part.partition("=")[2] if "=" in part else None) for part in given.split(",")])
    weights = dict.fromkeys(aspects, 0.0)
    for name, value in pairs:
        name = str(name).strip()
        if value is None or name not in weights:
            raise UserError(f"{where} {given!r}: expected name=weight for the aspects {', '.join(aspects)} "
                            "(or 'gate'), e.g. " + ",".join(f"{a}={int(i == 0)}" for i, a in enumerate(aspects)))
        try:
            weights[name] = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where} {given!r}: {value!r} is not a number") from None
        if not math.isfinite(weights[name]):
            raise UserError(f"{where} {given!r}: weights must be finite")
    return list(weights.values())


def check_aspects(examples: list[Any], aspects: list[str]) -> None:
    """Every training record of an aspect model names one of its aspects (a source tag or an ``aspect`` field)."""
    if not aspects:
        return
    for ex in examples:
        if ex.aspect not in aspects:
            got = f"aspect {ex.aspect!r}" if ex.aspect else "no aspect"
            raise UserError(f"{ex.source or 'a record'}: {got}, but --aspects is {','.join(aspects)}. Tag each data "
                            f"source with its aspect ('{aspects[0]}=data.jsonl,{aspects[1]}=other.jsonl') or give "
                            "records an 'aspect' field")


def aspect_metadata(aspects: list[str], gate_scale: float) -> dict[str, Any]:
    """What ``rewardkit.json`` records about an aspect model: enough to score it without rewardkit."""
    n = len(aspects)
    return {"names": aspects, "trained_gate_scale": gate_scale, "rewards": f"score outputs 0..{n - 1}, read at the completion's last token",
            "gate": f"score outputs {n}..{2 * n - 1}, read at the last token of the prompt followed by an empty "
                    "assistant reply; softmax gives the aspect weights",
            "reward": "sum over aspects of weight × aspect reward (weights: the gate's, or given at inference)"}


def add_aspect_heads(model: RewardModel, aspects: list[str], head_init: str = "normal") -> None:
    """Grow the 1-output score layer to A aspect rewards + A gate logits. Aspect 0 keeps the existing head's
    weights, the others are independent draws of ``head_init`` (``rewardkit.model.init_head_rows``; seeded by the
    caller); the gate starts at zero, i.e. uniform weights."""
    old, n = model.hf.score, len(aspects)
    if old.out_features != 1:
        raise ValueError(f"expected a 1-output score head, got {old.out_features}")
    new = nn.Linear(old.in_features, 2 * n, bias=old.bias is not None, dtype=old.weight.dtype,
                    device=old.weight.device)
    with torch.no_grad():
        new.weight[0] = old.weight[0]
        new.weight[n:].zero_()
        init_head_rows(new.weight[1:n], head_init, model.hf.config)
        if old.bias is not None:
            new.bias.zero_()
            new.bias[0] = old.bias[0]
    model.hf.score = new
    set_aspect_labels(model.hf.config, aspects)


def set_aspect_labels(config: Any, aspects: list[str]) -> None:
    config.num_labels = 2 * len(aspects)
    config.id2label = {i: f"reward:{a}" for i, a in enumerate(aspects)} | {
        len(aspects) + i: f"gate:{a}" for i, a in enumerate(aspects)}
    config.label2id = {v: k for k, v in config.id2label.items()}


@dataclass(frozen=True)
class Probed:
    """A group with the probe appended as its last completion (``Encoder.encode_groups`` reads prompt and
    completions; the probe is truncated with its siblings, so it keeps the same prompt tokens)."""

    prompt: list[Message]
    completions: list[list[Message]]

    @classmethod
    def of(cls, group: Any) -> Probed:
        return cls(group.prompt, [*group.completions, PROBE])


def gate_logits(outputs: torch.Tensor, n_aspects: int, gate_scale: float = 1.0) -> torch.Tensor:
    """The gate's logits (A,) of one probed group: the probe row (the last), outputs A…2A−1, times ``gate_scale``."""
    return gate_scale * outputs[-1, n_aspects:]


def mix(outputs: torch.Tensor, n_aspects: int, weights: torch.Tensor | None = None, *, probed: bool = True,
        detach_heads: bool = False, gate_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One group's score outputs (K [+1 probe], 2A) → (mixed rewards (K,), aspect weights (A,)).

    ``weights`` None: the gate's softmax(``gate_scale`` × logits) read on the probe row (the last, ``probed``);
    else the given weights. ``detach_heads``: the aspect rewards enter as constants (the gate's training loss).
    ``gate_scale``: γ during training (:func:`scale_gate`); 1 for a saved checkpoint, which holds γ·W_g."""
    heads = outputs[:-1, :n_aspects] if probed else outputs[:, :n_aspects]
    if detach_heads:
        heads = heads.detach()
    if weights is None:
        if not probed:
            raise ValueError("the gate needs the probe row")
        weights = torch.softmax(gate_logits(outputs, n_aspects, gate_scale), dim=-1)
    return heads @ weights.to(heads.dtype), weights


def gate_label_loss(outputs: torch.Tensor, n_aspects: int, aspect: int, gate_scale: float = 1.0) -> torch.Tensor:
    """The gate's aspect-classification loss for one group of aspect ``aspect``: cross-entropy of
    softmax(``gate_scale`` × the probe row's gate logits) against that aspect, times log 2 / log A.

    Why a label loss: the preference term alone (ArmoRM's) moves the gate only as far as one head explains a
    prompt's labels better than the other, a weak and noisy signal while the heads are still learning; on
    SmolLM2/HH it left the gate uniform after 50 steps (RESULTS.md). The training records already say which
    aspect each prompt was collected for, so the gate can learn that directly. Why the factor: at uniform weights
    the cross-entropy is log A; scaled, it is log 2 like a pairwise loss at chance, so the mean with the pairwise
    terms keeps the training summary's chance check meaningful for any A."""
    logits = gate_logits(outputs, n_aspects, gate_scale)
    return aspect_cross_entropy(logits[None], torch.tensor([aspect], device=logits.device))


def aspect_cross_entropy(logits: torch.Tensor, aspect: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of gate logits (N, A) against aspect indices (N,), times log 2 / log A: log 2 at
    uniform weights whatever A (:func:`gate_label_loss`, :func:`fit_gate`)."""
    return nn.functional.cross_entropy(logits, aspect) * (math.log(2) / math.log(logits.shape[-1]))


def scale_gate(state: dict[str, torch.Tensor], n_aspects: int, factor: float) -> dict[str, torch.Tensor]:
    """The state dict with the gate rows of the score layer multiplied by ``factor``.

    Why: training reads the gate as softmax(γ · W_g h). Under Adam every weight moves about one learning rate
    per step whatever its gradient's size, so the factor γ makes the gate's logits move γ× faster than the
    heads' rewards: the gate starts from uniform weights and must travel O(1) logits in a few hundred steps at a
    fine-tuning rate (at γ = 1 and lr 2e-5 it stayed within 0.05 of uniform after 50 SmolLM2 steps, RESULTS.md);
    ArmoRM trains its gate as a separate stage for the same reason. Checkpoints store γ·W_g (``factor`` = γ on
    save, 1/γ when training resumes), so inference and plain transformers read ordinary logits."""
    state = dict(state)
    for key in ("score.weight", "score.bias"):
        if key in state:
            t = state[key].clone()
            t[n_aspects:] *= factor
            state[key] = t
    return state


def _without_probe(stats: TruncationStats) -> TruncationStats:
    """A probed group's truncation counts, the probe taken out. The probe shares its siblings' prompt tokens, so
    it was cut from the left exactly when some sequence of the group was (or, when every real completion was too
    long by itself, when the prompt alone was): it is in ``prompt_truncated`` iff that count is above 0."""
    return TruncationStats(stats.sequences - 1, stats.prompt_truncated - (stats.prompt_truncated > 0),
                           stats.completion_truncated)


def encode_probed(encoder: Encoder, groups: list[Any]) -> list[tuple[list[list[int]], TruncationStats]]:
    """``Encoder.encode_groups`` with each group's probe as its last sequence; counts are the real completions'."""
    return [(ids, _without_probe(stats)) for ids, stats in encoder.encode_groups([Probed.of(g) for g in groups])]


def encode_rendered_probed(encoder: Encoder, texts: list[str], prompt_text: str | None, stats: TruncationStats,
                           complete_turn: bool = True) -> tuple[list[list[int]], int]:
    """``Encoder.encode_rendered`` plus the probe: the rendered prompt followed by an end of turn (the text of an
    empty reply). The gate needs the prompt, so ``prompt_text`` is required and must start every text."""
    if not prompt_text or not all(t.startswith(prompt_text) for t in texts):
        raise UserError("an aspect model's gate reads the prompt: give prompt_text (the rendered prompt every text "
                        "starts with), or explicit aspect weights")
    probe = encoder.complete_turn(prompt_text)[0]
    own = TruncationStats()
    ids, added = encoder.encode_rendered([*texts, probe], prompt_text, own, complete_turn=complete_turn)
    stats.merge(_without_probe(own))
    return ids, added  # the probe already ends its turn: never counted as completed


GATE_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)  # ridge strengths tried by fit_gate, in units of standardised features


@dataclass(frozen=True)
class GateFit:
    """The refit gate: ``weight`` (A, H) [and ``bias`` (A,)] on the score layer's input features, and how it
    was chosen (the validation objective of each ridge strength, the chosen one, the aspect accuracy)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    l2: float
    validation: dict[float, float]
    records: int
    train_accuracy: float
    validation_accuracy: float | None

    def summary(self) -> dict[str, Any]:
        return {"records": self.records, "l2": self.l2, "train_aspect_accuracy": round(self.train_accuracy, 4),
                "validation_aspect_accuracy": None if self.validation_accuracy is None
                else round(self.validation_accuracy, 4),
                "validation_objective": {str(k): round(v, 5) for k, v in self.validation.items()}}


def fit_gate(features: torch.Tensor, aspect: torch.Tensor, pair_record: torch.Tensor, pair_heads: torch.Tensor,
             terms: str, *, bias: bool, seed: int, validation_share: float = 0.2) -> GateFit:
    """Refit the gate on fixed features once the heads are trained: ArmoRM's second stage (Wang et al. 2024, §3.2
    trains its gate on frozen embeddings after the objectives), here as a full-batch fit.

    ``features`` (N, H): each training record's score-layer input at its probe (the prompt + an empty reply);
    ``aspect`` (N,): the aspect index the record was collected for; ``pair_record`` (P,) and ``pair_heads``
    (P, A): for each strict preference pair, its record and the heads' reward margins r_a(preferred) −
    r_a(other), fixed. The objective is the training's gate terms (``terms`` as ``--aspect-gate-loss``): the
    aspect cross-entropy times log 2 / log A ('label'), eq. 3 on the mixture's margins Σ_a w_a Δr_a, each record
    weighing 1 ('preference'), or their mean ('both'); plus a ridge penalty on the weights of standardised
    features, its strength picked from :data:`GATE_L2_GRID` by the objective on a held-out share of the records
    (seeded), then refit on all of them. L-BFGS, float64.

    Why refit: the end-to-end gate moves one Adam step at a time, and on SmolLM2/HH after 50 steps it was far from
    routing (RESULTS.md); a linear gate on fixed features is a small problem (convex for the label term) that
    L-BFGS solves to convergence."""
    x = features.double()
    n, n_aspects = x.shape[0], pair_heads.shape[1]
    scale = x.pow(2).mean(0).sqrt().clamp_min(1e-6)  # per-feature RMS: the ridge treats every feature alike
    xs, heads = x / scale, pair_heads.double()
    per_record = torch.bincount(pair_record, minlength=n).clamp_min(1).double()

    def objective(w: torch.Tensor, b: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor:
        logits = xs[keep] @ w.T + (b if b is not None else 0.0)
        parts = []
        if terms in ("label", "both"):
            parts.append(aspect_cross_entropy(logits, aspect[keep]))
        if terms in ("preference", "both"):
            weights = torch.zeros(n, n_aspects, dtype=x.dtype)
            weights[keep] = torch.softmax(logits, -1)
            chosen = keep[pair_record]
            margin = (heads[chosen] * weights[pair_record[chosen]]).sum(-1)
            loss = bradley_terry_loss(margin, torch.zeros_like(margin)) / per_record[pair_record[chosen]]
            parts.append(loss.sum() / keep.sum())
        return sum(parts) / len(parts)

    def fit(keep: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = torch.zeros(n_aspects, x.shape[1], dtype=x.dtype, requires_grad=True)
        b = torch.zeros(n_aspects, dtype=x.dtype, requires_grad=True) if bias else None
        opt = torch.optim.LBFGS([w] + ([b] if b is not None else []), max_iter=1000, tolerance_grad=1e-10,
                                tolerance_change=1e-14, line_search_fn="strong_wolfe")  # float64: converge tightly

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = objective(w, b, keep) + l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return w.detach(), None if b is None else b.detach()

    def accuracy(w: torch.Tensor, b: torch.Tensor | None, keep: torch.Tensor) -> float:
        logits = xs[keep] @ w.T + (b if b is not None else 0.0)
        return float((logits.argmax(-1) == aspect[keep]).double().mean())

    everyone = torch.ones(n, dtype=torch.bool)
    validation, val_acc = {}, None
    n_val = int(n * validation_share)
    if n_val >= 2 and n - n_val >= 2:
        held = torch.zeros(n, dtype=torch.bool)
        held[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_val]] = True
        accs = {}
        for l2 in GATE_L2_GRID:
            w, b = fit(~held, l2)
            with torch.no_grad():
                validation[l2] = float(objective(w, b, held))
            accs[l2] = accuracy(w, b, held)
        best = min(validation, key=validation.get)
        val_acc = accs[best]
    else:  # too few records to hold any out: the middle of the grid
        best = GATE_L2_GRID[len(GATE_L2_GRID) // 2]
    w, b = fit(everyone, best)
    return GateFit(weight=(w / scale).float(), bias=None if b is None else b.float(), l2=best,
                   validation=validation, records=n, train_accuracy=accuracy(w, b, everyone),
                   validation_accuracy=val_acc)
