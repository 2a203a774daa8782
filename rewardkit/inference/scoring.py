"""Inference: the one path from inputs to rewards, used by every caller.

``train`` (its held-out evaluation), ``eval``, ``score``, ``rerank`` and ``serve`` all score through
a :class:`Scorer`:

    groups ──prepare──▶ Prepared (token ids, truncation, token count) ──run──▶ ScoreResult

* A :class:`Group` is one prompt and its K ≥ 1 completions — chat messages, or already-rendered
  conversations (``texts``, e.g. OpenRLHF's ``query``). The completions of one group are truncated
  together (same prompt tokens, ``rewardkit.batching``) and share one pass over their prompt.
* ``prepare`` only tokenizes; it is cheap and can run on many threads (a server calls it per request
  to count tokens and enforce limits). ``run`` takes any number of prepared requests and scores them
  in as few forward passes as the token budget allows (a server's dynamic batch), then splits the
  results back per request.
* Everything a call produces — rewards, truncation counts, a judge's per-example details and verdict
  statistics, which path ran — comes back in the :class:`ScoreResult`. Scorers hold configuration
  and weights only, so concurrent callers cannot see each other's numbers.

Scorers: :class:`RewardModelScorer` (a rewardkit checkpoint, a plain Hugging Face
``*ForSequenceClassification`` reward model, or a backbone with a new seeded head; see
:func:`load_classifier_scorer`) and ``rewardkit.judges.JudgeScorer`` (LLM judges and trained GenRMs); the one
factory for any checkpoint is ``rewardkit.inference.factory.load_scorer``.

Classifier forward passes: groups sorted by size and cut into batches of at most ``max_batch_tokens``
real tokens (default :func:`forward_token_budget`), each prompt computed once and groups packed without padding (``rewardkit.sharing``),
where the model supports it exactly; otherwise sequences sorted by length into padded batches of at
most ``max_batch_tokens`` padded tokens. Both give the same rewards (tested to 1e-4), in any input
order, batch size or padding side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from rewardkit.batching import Encoder, TruncationStats, length_sorted_batches, pad_batch
from rewardkit.config import AGGREGATES
from rewardkit.data.record import Message
from rewardkit.errors import UserError
from rewardkit.losses import sigmoid
from rewardkit.model import ModelLoadError, RewardModel, resolve_backbone
from rewardkit.pooling import POOLING_RULE
from rewardkit.precision import Precision, precision_for

# ------------------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class Group:
    """One prompt and the completions scored with it (their rewards are comparable: one context).

    Either ``completions`` (chat messages following ``prompt``) or ``texts``: whole conversations
    already rendered as strings, scored as given (the checkpoint's end-of-turn marker is completed if
    missing, ``Encoder.complete_turn``). ``prompt_text``, if every text starts with it, is the rendered
    prompt: an over-length text then loses prompt tokens from the left, as in training.
    """

    prompt: list[Message] = field(default_factory=list)
    completions: list[list[Message]] = field(default_factory=list)
    texts: list[str] | None = None
    prompt_text: str | None = None
    source: str = ""  # where the group came from ("file:line"), for messages about it
    # Aspect models only: this group's mixing weights {aspect: w} (steering), instead of the scorer's (rewardkit.heads)
    aspect_weights: dict[str, float] | None = None
    # Process reward models only: each completion's steps; None: each completion's text split at the step marker
    steps: list[list[str]] | None = None

    def __post_init__(self) -> None:
        if self.texts is not None and self.completions:
            raise UserError("a group holds either completions (messages) or rendered texts, not both")
        if not len(self):
            raise UserError("a group needs at least one completion")

    def __len__(self) -> int:
        return len(self.texts) if self.texts is not None else len(self.completions)

    @classmethod
    def of(cls, example: Any) -> Group:
        """A group from anything with ``prompt`` and ``completions`` (a ``PreferenceExample``)."""
        if isinstance(example, Group):
            return example
        return cls(prompt=example.prompt, completions=example.completions, source=getattr(example, "source", ""),
                   steps=getattr(example, "steps", None))


@dataclass
class Prepared:
    """One request's groups, tokenized and ready for :meth:`Scorer.run`."""

    groups: list[Group]
    tokens: int  # tokens the forward pass will process (a shared prompt counted once)
    truncation: list[TruncationStats]  # per group
    end_of_turn_added: int = 0  # rendered texts whose end-of-turn marker was completed
    ids: list[list[list[int]]] | None = None  # classifier: per group, per completion
    # aspect models: per group its mixing weights, None where the gate decides (its ids end with the probe)
    mixing: list[list[float] | None] | None = None
    payload: Any = None  # judges: their encoded queries
    reads: list[list[list[int]]] | None = None  # process reward models: per group, per completion, step-end offsets
    steps_total: list[list[int]] | None = None  # process reward models: per group, per completion, steps given

    @property
    def completions(self) -> int:
        return sum(len(g) for g in self.groups)


@dataclass
class ScoreResult:
    """What one scoring call produced, as a value."""

    rewards: list[np.ndarray]  # per group, aligned with its completions (NaN: a judge gave no verdict)
    truncation: list[TruncationStats]  # per group
    path: str  # "shared" (prefix-shared, packed), "padded", or "judge:<mode>"
    end_of_turn_added: int = 0
    forward_passes: int = 0  # batches run for this call (a dynamic batch shares them between requests)
    details: list[dict[str, Any]] | None = None  # judges: per group what the judge saw and said
    # aspect models: per group {"weights": {aspect: w}, "rewards": {aspect: [r per completion]}} (rewardkit.heads)
    aspects: list[dict[str, Any]] | None = None
    stats: dict[str, Any] | None = None  # judges: verdict statistics of this call (flip rate, position bias, ...)
    # process reward models: per group, per completion, P(step is right) = σ(r_step) of each step; a step past
    # max_length is NaN (``dropped_steps`` counts them); ``rewards`` is their aggregate (``aggregate_steps``)
    step_rewards: list[list[np.ndarray]] | None = None
    dropped_steps: int = 0

    def truncation_total(self) -> TruncationStats:
        total = TruncationStats()
        for t in self.truncation:
            total = total.add(t)
        return total


@runtime_checkable
class Scorer(Protocol):
    """Anything that gives a reward to each completion of each group (higher = better)."""

    name: str

    def prepare(self, groups: list[Any]) -> Prepared:
        """Tokenize ``groups`` (``Group`` or ``PreferenceExample``); no model call."""
        ...

    def run(self, prepared: list[Prepared]) -> list[ScoreResult]:
        """Score several prepared requests together; one result per request, in order."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (what scores, how, with which settings). ``reward_mean`` / ``reward_std``,
        when present, are the checkpoint's reward statistics (normalisation, calibration of σ(Δr/std))."""
        ...


def score(scorer: Scorer, groups: list[Any]) -> ScoreResult:
    """Score ``groups`` (``Group``s or preference examples) in one call."""
    return scorer.run([scorer.prepare(list(groups))])[0]


# ------------------------------------------------------------------------------ classifier forward


@torch.inference_mode()
def _padded_rewards(model: RewardModel, sequences: list[list[int]], pad_id: int, max_batch_tokens: int,
                    max_batch_size: int, padding_side: str, progress: bool, all_heads: bool = False
                    ) -> tuple[np.ndarray, int]:
    device = next(model.parameters()).device
    rewards = np.zeros((len(sequences), model.config.num_labels) if all_heads else len(sequences), dtype=np.float64)
    batches = length_sorted_batches([len(s) for s in sequences], max_batch_tokens, max_batch_size)
    for idx in _progress(batches, progress):
        ids, mask = pad_batch([sequences[i] for i in idx], pad_id, padding_side)
        rewards[idx] = model(ids.to(device), mask.to(device), all_heads=all_heads).double().cpu().numpy()
    return rewards, len(batches)


def group_tokens(group: list[list[int]]) -> int:
    """Tokens a group costs in the shared forward pass: its common prefix once, then each completion."""
    from rewardkit.sharing import shared_prefix_length

    prefix = shared_prefix_length(group)
    return prefix + sum(len(s) - prefix for s in group)


def group_batches(sizes: list[int], budget: int) -> list[list[int]]:
    """Group indices sorted by size, cut into batches of at most ``budget`` tokens (a larger group alone).

    The batching depends only on the sizes, never on the input order, so rewards do not either.
    """
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], i))
    batches, current, used = [], [], 0
    for i in order:
        if current and used + sizes[i] > budget:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += sizes[i]
    if current:
        batches.append(current)
    return batches


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' → the first CUDA device when there is one, else the CPU; anything else as torch spells it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"device {device!r} is not a device torch knows ({e}); use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but this torch sees no CUDA device; use --device cpu")
    return resolved


def forward_token_budget(device: torch.device) -> int:
    """Default tokens per forward pass: 2,048 on CPU, 16,384 on GPU.

    On CPU a smaller pass keeps each layer's activations in cache. ``python benchmarks/forward_budget.py``
    (SmolLM2-135M, 32 HH pairs, the 2-core machine of BENCHMARKS.md, budgets alternating in one process):
    1,024-token passes ran at a median 736 tokens/s (664–812) vs 606 (602–693) for one 16,384-token
    pass; an earlier probe of the same kind put 512–2,048 within noise of each other and 256 lower.
    A GPU needs large passes to fill the device.
    """
    return 16384 if device.type == "cuda" else 2048


def reward_groups(model: RewardModel, groups: list[list[list[int]]], pad_id: int, *, max_batch_tokens: int | None = None,
                  max_batch_size: int = 64, padding_side: str = "right", prefix_sharing: bool = True,
                  progress: bool = False, all_heads: bool = False, route: str = "auto",
                  reads: list[list[list[int]]] | None = None) -> tuple[list[np.ndarray], str, int]:
    """Rewards of already-encoded groups → (per group rewards, path taken, forward passes run). With
    ``all_heads`` each group's array is (K, outputs): every output of the score layer (``rewardkit.heads``).
    With ``reads`` (per group, per sequence, offsets: a process reward model's step ends) each group's array
    holds the reward at every offset, sequence after sequence.

    The path is what ran, as ``group_rewards`` reports it: ``"shared"`` when prefix sharing ran
    (``rewardkit.sharing``), ``"padded"`` otherwise (asked for, or the model does not support sharing
    exactly; the reason is logged once).
    """
    from rewardkit.sharing import sharing_unsupported_reason

    max_batch_tokens = max_batch_tokens or forward_token_budget(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        if not groups:
            return [], "shared" if prefix_sharing else "padded", 0
        use_shared = prefix_sharing and route != "padded" and sharing_unsupported_reason(model) is None
        if reads is not None or use_shared:  # whole groups per pass (step rewards: on either path)
            return _group_passes(model, groups, pad_id, reads, max_batch_tokens, padding_side, progress, use_shared,
                                 route, all_heads)
        flat = [ids for g in groups for ids in g]
        rewards, passes = _padded_rewards(model, flat, pad_id, max_batch_tokens, max_batch_size, padding_side,
                                          progress, all_heads)
        return list(np.split(rewards, np.cumsum([len(g) for g in groups])[:-1])), "padded", passes
    finally:
        model.train(was_training)


@torch.inference_mode()
def _group_passes(model: RewardModel, groups: list[list[list[int]]], pad_id: int, reads: list[list[list[int]]] | None,
                  max_batch_tokens: int, padding_side: str, progress: bool, shared: bool, route: str,
                  all_heads: bool = False) -> tuple[list[np.ndarray], str, int]:
    """Whole groups per forward pass, batched by their token cost (``group_batches``)."""
    from rewardkit.sharing import group_rewards

    sizes = [group_tokens(g) if shared else max(map(len, g)) * len(g) for g in groups]
    batches = group_batches(sizes, max_batch_tokens)
    out: list[np.ndarray | None] = [None] * len(groups)
    paths = set()
    for batch in _progress(batches, progress):
        rewards = group_rewards(model, [groups[i] for i in batch], pad_id, shared=shared, padding_side=padding_side,
                                route=route if shared else "padded", all_heads=all_heads,
                                reads=None if reads is None else [reads[i] for i in batch])
        paths.add(rewards.path)
        for i, r in zip(batch, rewards):
            out[i] = r.double().cpu().numpy()
    return out, "+".join(sorted(paths)), len(batches)  # type: ignore[return-value]


def aggregate_steps(step_scores: np.ndarray, rule: str) -> float:
    """One score per solution from its steps' P(right) (``AGGREGATES``); steps past max_length (NaN) are left out,
    a solution with no scored step gets NaN."""
    if rule not in AGGREGATES:
        raise UserError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {rule!r}")
    p = np.asarray(step_scores, dtype=np.float64)
    p = p[~np.isnan(p)]
    if not p.size:
        return float("nan")
    return float({"min": np.min, "prod": np.prod, "last": lambda a: a[-1], "mean": np.mean}[rule](p))


def split_steps(text: str, marker: str) -> list[str]:
    """A solution given as text → its steps: the pieces between step markers, stripped, empty ones dropped (the
    inverse of how ``encode_steps`` joins them, for steps that do not contain the marker)."""
    cut = marker.strip() or marker
    return [piece.strip() for piece in text.split(cut) if piece.strip()]


def _progress(batches: list, on: bool) -> Any:
    if not on:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc="scoring", unit="batch")


# ------------------------------------------------------------------------------ classifier scorer


@dataclass
class RewardModelScorer:
    """A classifier reward model r_θ(x, y) (eq. 1–2) with the encoder that renders its inputs."""

    model: RewardModel
    encoder: Encoder
    name: str
    kind: str  # "rewardkit-checkpoint", "hf-sequence-classification" or "backbone (untrained head)"
    metadata: dict[str, Any] = field(default_factory=dict)
    head_seed: int | None = None  # seed of a newly initialised head (untrained backbones only)
    max_batch_tokens: int | None = None  # per forward pass; None: forward_token_budget(device)
    max_batch_size: int = 64
    padding_side: str = "right"
    progress: bool = False
    prefix_sharing: bool = True
    route: str = "auto"  # the shared path's attention route (rewardkit.sharing.ROUTES; "padded": no sharing)
    complete_turn: bool = True  # rendered texts: append a missing end-of-turn marker
    # Aspect models (rewardkit.heads): the aspect names, and the weights that mix them (None: the gate's, per prompt).
    aspects: list[str] = field(default_factory=list)
    aspect_weights: list[float] | None = None
    gate_scale: float = 1.0  # γ of a model in training (rewardkit.heads.scale_gate); a checkpoint's gate is scaled
    precision: Precision | None = None  # how the model was loaded (rewardkit.precision); None: as given
    # Process reward models: the step-end marker the checkpoint records and the rule that aggregates step scores
    step_marker: str | None = None
    aggregate: str = "min"

    def prepare(self, groups: list[Any]) -> Prepared:
        from rewardkit.heads import encode_probed, encode_rendered_probed, parse_aspect_weights

        groups = [Group.of(g) for g in groups]
        if self.step_marker is not None:
            return self._prepare_steps(groups)
        mixing = None
        if self.aspects:  # a group's own weights, else the scorer's; None: the gate (the group carries the probe)
            mixing = [self.aspect_weights if g.aspect_weights is None else
                      parse_aspect_weights(g.aspect_weights, self.aspects, f"{g.source or 'a group'}: aspect_weights")
                      for g in groups]
        elif any(g.aspect_weights is not None for g in groups):
            raise UserError(f"{self.name} has no aspect heads: aspect_weights apply to models trained with --aspects")
        gated = [mixing is not None and mixing[i] is None for i in range(len(groups))]
        ids: list[list[list[int]] | None] = [None] * len(groups)
        truncation = [TruncationStats() for _ in groups]
        added = 0
        for probe in (False, True):
            chosen = [i for i, g in enumerate(groups) if g.texts is None and gated[i] == probe]
            encoded = (encode_probed(self.encoder, [groups[i] for i in chosen]) if probe else
                       self.encoder.encode_groups([groups[i] for i in chosen]))
            for i, (group_ids, stats) in zip(chosen, encoded):
                ids[i], truncation[i] = group_ids, stats
        for i, g in enumerate(groups):
            if g.texts is not None:
                ids[i], n = (encode_rendered_probed(self.encoder, g.texts, g.prompt_text, truncation[i],
                                                    complete_turn=self.complete_turn) if gated[i] else
                             self.encoder.encode_rendered(g.texts, g.prompt_text, truncation[i],
                                                          complete_turn=self.complete_turn))
                added += n
        tokens = sum(group_tokens(g) if self.prefix_sharing else sum(map(len, g)) for g in ids)
        return Prepared(groups=groups, tokens=tokens, truncation=truncation, end_of_turn_added=added, ids=ids,
                        mixing=mixing)

    def _prepare_steps(self, groups: list[Group]) -> Prepared:
        """A process reward model's inputs: each completion's steps (given, or its text split at the marker)."""
        from rewardkit.batching import encode_steps

        ids, reads, truncation, totals = [], [], [], []
        for g in groups:
            prompt_text = None
            if g.texts is not None:  # rendered conversations: the reply is what follows the rendered prompt
                if not g.prompt_text or not all(t.startswith(g.prompt_text) for t in g.texts):
                    raise UserError(f"{self.name} is a process reward model: rendered texts need their rendered "
                                    "prompt (OpenRLHF's 'prompts'), each text starting with it, so the reply's steps "
                                    "can be found; or send prompt + completions (or steps) to /v1/score")
                prompt_text = g.prompt_text
                end = self.encoder.end_of_turn()
                # a reply cut at EOS (no trailing newline of the marker) is completed first, then the marker removed
                replies = [self.encoder.complete_turn(t)[0][len(prompt_text):] for t in g.texts]
                replies = [r[:-len(end)] if end and r.endswith(end) else r for r in replies]
                steps = g.steps if g.steps is not None else [split_steps(r, self.step_marker) for r in replies]
            else:
                steps = g.steps if g.steps is not None else [
                    split_steps("\n".join(m["content"] for m in c if m["role"] == "assistant"), self.step_marker)
                    for c in g.completions]
            if len(steps) != len(g):
                raise UserError(f"{g.source or 'a group'}: {len(steps)} step lists for {len(g)} completions")
            for k, solution in enumerate(steps):
                if not solution:
                    raise UserError(f"{g.source or 'a group'}: completion {k} has no step text")
            stats = TruncationStats()
            encoded = encode_steps(self.encoder, g.prompt, steps, self.step_marker, stats, prompt_text=prompt_text)
            ids.append(encoded.ids)
            reads.append(encoded.reads)
            truncation.append(stats)
            totals.append([len(s) for s in steps])
        tokens = sum(group_tokens(g) if self.prefix_sharing else sum(map(len, g)) for g in ids)
        return Prepared(groups=groups, tokens=tokens, truncation=truncation, ids=ids, reads=reads, steps_total=totals)

    def _run_steps(self, prepared: list[Prepared]) -> list[ScoreResult]:
        flat = [g for p in prepared for g in p.ids]
        reads = [r for p in prepared for r in p.reads]
        rewards, path, passes = reward_groups(
            self.model, flat, self.encoder.tokenizer.pad_token_id, max_batch_tokens=self.max_batch_tokens,
            padding_side=self.padding_side, prefix_sharing=self.prefix_sharing, progress=self.progress,
            route=self.route, reads=reads)
        out, i = [], 0
        for p in prepared:
            group_steps, group_rewards, dropped = [], [], 0
            for logits, group_reads, totals in zip(rewards[i:i + len(p.groups)], p.reads, p.steps_total):
                probs = sigmoid(logits)
                per, start = [], 0
                for r, total in zip(group_reads, totals):
                    scores = np.full(total, np.nan)
                    scores[:len(r)] = probs[start:start + len(r)]
                    dropped += total - len(r)
                    start += len(r)
                    per.append(scores)
                group_steps.append(per)
                group_rewards.append(np.array([aggregate_steps(sc, self.aggregate) for sc in per]))
            out.append(ScoreResult(rewards=group_rewards, truncation=p.truncation, path=path, forward_passes=passes,
                                   step_rewards=group_steps, dropped_steps=dropped))
            i += len(p.groups)
        return out

    def run(self, prepared: list[Prepared]) -> list[ScoreResult]:
        if self.step_marker is not None:
            return self._run_steps(prepared)
        flat = [g for p in prepared for g in p.ids]
        rewards, path, passes = reward_groups(
            self.model, flat, self.encoder.tokenizer.pad_token_id, max_batch_tokens=self.max_batch_tokens,
            max_batch_size=self.max_batch_size, padding_side=self.padding_side, prefix_sharing=self.prefix_sharing,
            progress=self.progress, all_heads=bool(self.aspects), route=self.route)
        mixing = [w for p in prepared for w in (p.mixing or [None] * len(p.groups))]
        aspects = [self._mix(r, w) for r, w in zip(rewards, mixing)] if self.aspects else None
        if aspects is not None:
            rewards = [r for r, _ in aspects]
        out, i = [], 0
        for p in prepared:
            out.append(ScoreResult(rewards=rewards[i:i + len(p.groups)], truncation=p.truncation, path=path,
                                   end_of_turn_added=p.end_of_turn_added, forward_passes=passes,
                                   aspects=[d for _, d in aspects[i:i + len(p.groups)]] if aspects else None))
            i += len(p.groups)
        return out

    def _mix(self, outputs: np.ndarray, weights: list[float] | None) -> tuple[np.ndarray, dict[str, Any]]:
        """One group's score outputs → (mixed rewards, its aspect weights and per-aspect rewards); ``weights``
        None: the gate's, read on the probe (the group's last row)."""
        from rewardkit.heads import mix

        n, gated = len(self.aspects), weights is None
        given = None if gated else torch.tensor(weights, dtype=torch.float64)
        rewards, weights = mix(torch.from_numpy(outputs), n, given, probed=gated, gate_scale=self.gate_scale)
        heads = outputs[:-1, :n] if gated else outputs[:, :n]
        return rewards.numpy(), {"weights": dict(zip(self.aspects, weights.tolist())),
                                 "rewards": {a: heads[:, k].tolist() for k, a in enumerate(self.aspects)}}

    def score_examples(self, examples: list[Any]) -> list[np.ndarray]:
        """Rewards only (a shortcut of :func:`score`)."""
        return score(self, examples).rewards

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "reward_model", "name": self.name, "kind": self.kind, "pooling": POOLING_RULE,
            "template": self.encoder.template, "max_length": self.encoder.max_length,
            "end_of_turn": self.encoder.end_of_turn(),
            "pad_token_id": self.encoder.tokenizer.pad_token_id,
            "max_batch_tokens": self.max_batch_tokens or forward_token_budget(next(self.model.parameters()).device),
            "padding_side": self.padding_side,
            "prefix_sharing": self.prefix_sharing and self.route != "padded",
            "route": self.route,
        }
        if self.precision is not None:
            out["precision"] = self.precision.describe()
        if self.step_marker is not None:
            out["verifier"] = {"kind": "prm", "step_marker": self.step_marker, "aggregate": self.aggregate,
                               "step_scores": "P(step is right) = sigmoid(reward at the step's marker)"}
        elif self.metadata.get("verifier"):
            out["verifier"] = self.metadata["verifier"]
        if self.head_seed is not None:
            out["head_init_seed"] = self.head_seed
        if self.aspects:
            out["aspects"] = self.aspects
            out["aspect_weights"] = ("gate" if self.aspect_weights is None else
                                     dict(zip(self.aspects, self.aspect_weights)))
        for key in ("reward_mean", "reward_std", "reward_stats_source", "base_model"):
            if self.metadata.get(key) is not None:
                out[key] = self.metadata[key]
        return out


def model_kind(name_or_path: str) -> str:
    """How ``name_or_path`` will be scored: a rewardkit checkpoint, a trained HF reward model, or a
    backbone that gets a new head. Raises for classifiers with more than one label."""
    from rewardkit.checkpoint import check_finished_run

    path = Path(name_or_path)
    if path.is_dir() and (path / "rewardkit.json").exists():
        return "rewardkit-checkpoint"
    check_finished_run(path)
    source = resolve_backbone(name_or_path)
    config_file = Path(source) / "config.json"
    if config_file.exists():
        config = json.loads(config_file.read_text())
    else:  # a hub id: ask transformers (offline it reads the local cache)
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(source).to_dict()
        except OSError as e:
            raise ModelLoadError(f"could not load the config of '{name_or_path}': {e}") from e
    architectures = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        labels = len(config.get("id2label") or {}) or config.get("num_labels", 1)
        if labels != 1:
            raise ModelLoadError(f"{name_or_path} is a sequence classifier with {labels} labels; a reward model "
                                 "has one scalar output (num_labels=1)")
        return "hf-sequence-classification"
    return "backbone (untrained head)"


def load_classifier_scorer(spec: str, *, max_length: int | None = None, template: str | None = None,
                max_batch_tokens: int | None = None, max_batch_size: int = 64, padding_side: str = "right",
                seed: int = 42, progress: bool = False, prefix_sharing: bool = True,
                device: str = "auto", aspect_weights: str | None = None, precision: str = "auto",
                route: str = "auto", aggregate: str | None = None, step_marker: str | None = None
                ) -> RewardModelScorer:
    """A scorer for ``spec``: a rewardkit run folder, a Hugging Face reward model (folder or hub id),
    a ``.gguf`` file or a built-in backbone name (untrained head initialised from ``seed``).

    * a rewardkit run folder (``rewardkit.json`` present): its template, max length, pooling rule and
      reward statistics are reused;
    * any Hugging Face ``*ForSequenceClassification`` model with one label: its own config, weights and
      tokenizer; the reward is read at the last real token found from the attention mask
      (``rewardkit.pooling``), never by searching for the pad id; template ``auto``;
    * a backbone without a score head (e.g. ``smollm2-135m``): a new head initialised from ``seed`` —
      the untrained baseline, reproducible and recorded as such.

    An aspect checkpoint (``rewardkit.heads``) scores the mixture of its aspect rewards, weighted by its gate or
    by ``aspect_weights`` ('helpful=1,harmless=0'; None or 'gate': the gate).

    ``precision`` (``rewardkit.precision``): 'auto' loads the backbone in bf16 where the device computes bf16
    natively, else fp32; the score head stays fp32 either way.

    A process reward model (``verifier.kind == "prm"`` in ``rewardkit.json``) scores every step at its recorded
    step marker and aggregates them by ``aggregate`` (default: the checkpoint's rule); ``step_marker`` makes any
    classifier a process scorer (e.g. a plain HF PRM whose marker you know).
    """
    from accelerate.utils import set_seed

    from rewardkit.checkpoint import load_checkpoint
    from rewardkit.heads import parse_aspect_weights

    if not spec:
        raise UserError("no model given: pass a rewardkit run folder, a Hugging Face reward model or a backbone")
    kind = model_kind(spec)
    # Seeded before loading so an untrained head matches `rewardkit train --seed` and is the same every run.
    set_seed(seed)
    where = resolve_device(device)
    chosen = precision_for(precision, where, training=False)
    model, encoder, meta = load_checkpoint(spec, max_length, template, dtype=chosen.weights_dtype)
    model.to(where)
    aspects = (meta.get("aspects") or {}).get("names", [])
    verifier = meta.get("verifier") or {}
    marker = step_marker if step_marker is not None else (verifier.get("step_marker") if verifier.get("kind") == "prm"
                                                          else None)
    if aggregate is not None and marker is None:
        raise UserError(f"--aggregate applies to process reward models; {spec} records no step marker "
                        "(pass --step-marker for a PRM trained elsewhere)")
    rule = aggregate or verifier.get("aggregate", "min")
    aggregate_steps(np.zeros(1), rule)  # an unknown rule is refused before any scoring
    return RewardModelScorer(model, encoder, name=spec, kind=kind, metadata=meta, aspects=aspects,
                             step_marker=marker, aggregate=rule,
                             aspect_weights=parse_aspect_weights(aspect_weights, aspects),
                             head_seed=seed if kind.startswith("backbone") else None,
                             max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
                             padding_side=padding_side, progress=progress, prefix_sharing=prefix_sharing,
                             precision=chosen, route=route)


def score_token_ids(model: RewardModel, sequences: list[list[int]], pad_id: int, *, max_batch_tokens: int | None = None,
                    max_batch_size: int = 64, padding_side: str = "right", progress: bool = False) -> np.ndarray:
    """Rewards of already-tokenized single sequences on the padded path, in input order."""
    rewards, _, _ = reward_groups(model, [[s] for s in sequences], pad_id, max_batch_tokens=max_batch_tokens,
                                  max_batch_size=max_batch_size, padding_side=padding_side, prefix_sharing=False,
                                  progress=progress)
    return np.concatenate(rewards) if rewards else np.zeros(0)
