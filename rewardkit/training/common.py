"""What every training recipe needs around its objective and the loop: records, the optimizer and schedule,
held-out scoring across processes, reward statistics, the not-learning warning and the report.

Shared by ``rewardkit.train`` (classifier reward models) and ``rewardkit.judges.genrm`` (GenRMs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from transformers import get_scheduler

from rewardkit.allocator import allocator_setting, retain_freed_memory
from rewardkit.batching import StepEncoding, TruncationStats
from rewardkit.config import TrainConfig
from rewardkit.data import PreferenceExample, ReadReport, read_preferences
from rewardkit.data.readers import count_raw_records, iter_preferences
from rewardkit.data.record import completion_text
from rewardkit.data.steps import VerifierExample, iter_verifier_examples, read_verifier_examples
from rewardkit.data.transforms import drop_ties, flatten_rankings
from rewardkit.errors import UserError
from rewardkit.evaluate import completion_reward_stats, metrics_from_rewards
from rewardkit.inference import Scorer, score
from rewardkit.losses import check_record
from rewardkit.plan import Item, Step, memory_steps, stream_steps
from rewardkit.precision import Precision, precision_for
from rewardkit.run import Clock, Run, make_accelerator, shards_parameters, training_device

STATS_RECORDS = 500  # records behind the reward statistics when there is no held-out set


# ------------------------------------------------------------------------------ records


def load_examples(spec: str, cfg: TrainConfig, split: str) -> tuple[list[PreferenceExample], ReadReport]:
    """Training (``split="train"``) or held-out (``"eval"``) records: each reads its own split of a hub id or
    saved dataset (``--split`` / ``--eval-split``), so held-out data never silently comes from 'train'."""
    if spec.startswith("builtin:"):
        from rewardkit.data.synthetic import builtin_dataset

        return builtin_dataset(spec, split)
    hub_split, flag = (cfg.split, "--split") if split == "train" else (cfg.eval_split, "--eval-split")
    if cfg.objective != "pairwise":  # outcome / process reward models read solutions with labels
        return read_verifier_examples(spec, skip_bad=cfg.skip_bad_records, split=hub_split, split_flag=flag)
    return read_preferences(spec, skip_bad=cfg.skip_bad_records, split=hub_split, likert=cfg.likert_margins,
                            split_flag=flag)


def eval_spec(cfg: TrainConfig) -> str | None:
    """The held-out data: ``--eval-data``, or the built-in held-out split when training on a built-in set."""
    return cfg.eval_data or (cfg.train_data if cfg.train_data.startswith("builtin:") else None)


def prepare_records(examples: list[PreferenceExample], cfg: TrainConfig) -> tuple[list[PreferenceExample], dict[str, int]]:
    """Apply the record transforms the config asks for; returns the records and what changed."""
    changes: dict[str, int] = {}
    if cfg.flatten_rankings:
        examples, changes["rankings_flattened"] = flatten_rankings(examples)
    if cfg.drop_ties:
        examples, changes["ties_dropped"] = drop_ties(examples)
    if cfg.margin_source != "none":
        from rewardkit.data.margins import apply_margins

        examples = apply_margins(examples, cfg.margin_source, scale=cfg.margin_scale)
    return examples, changes


def check_records(examples: list[PreferenceExample], cfg: TrainConfig) -> None:
    """Refuse, before any compute, records the chosen loss cannot train on (first offender named)."""
    for ex in examples:
        check_record(cfg.loss, len(ex.completions), any(t for _, _, t in ex.preference_pairs()), ex.margin, ex.source,
                     all_tied=ex.is_tie, unordered=bool(ex.unordered))


class Records:
    """Turns read records into training items (all at once, or a stream's window at a time): the config's
    transforms, the loss's and the objective's checks, loss weights, and tokens (``encode``). It counts what it
    changed and truncated over every call, for the report (``changes``, ``truncation``)."""

    def __init__(self, cfg: TrainConfig, objective: Any,
                 encode: Callable[[list[PreferenceExample], TruncationStats], list[list[list[int]]]]):
        self.cfg, self.objective, self.encode = cfg, objective, encode
        self.changes: Counter[str] = Counter()
        self.truncation = TruncationStats()

    def items(self, examples: list[PreferenceExample]) -> list[Item]:
        if self.cfg.objective == "pairwise":
            examples, window_changes = prepare_records(examples, self.cfg)
            self.changes.update(window_changes)
            check_records(examples, self.cfg)
        self.objective.check(examples)
        weights = self.objective.record_weights(examples)
        return [_item(ex, encoded, w, tuple(len(completion_text(c)) for c in ex.completions))
                for ex, encoded, w in zip(examples, self.encode(examples, self.truncation), weights)]

    def stand_in(self) -> Item:
        """The zero-weight record of a process left without one in a streamed step."""
        ex = self.objective.stand_in()
        return _item(ex, self.encode([ex], TruncationStats())[0], 1.0, ())

    def gathered(self) -> tuple[Counter[str], TruncationStats]:
        """Every process's counts added up (a streamed run: each process read its own shard)."""
        changes = sum(gather_object([self.changes]), Counter())
        truncation = TruncationStats()
        for t in gather_object([self.truncation]):
            truncation.merge(t)
        return changes, truncation


def _item(example: Any, encoded: Any, weight: float, char_lengths: tuple[int, ...]) -> Item:
    """A training item from an objective's encoding: token ids, or a process model's ids with step-end offsets."""
    if isinstance(encoded, StepEncoding):
        return Item(example, encoded.ids, example.preference_pairs(), weight, char_lengths, reads=encoded.reads)
    return Item(example, encoded, example.preference_pairs(), weight, char_lengths)


def memory_plan(cfg: TrainConfig, items: list[Item], rank: int, world: int) -> Iterator[Step]:
    return memory_steps(items, cfg.batch_size, np.random.default_rng(cfg.seed), cfg.group_by_length, rank, world,
                        cfg.epochs, cfg.max_steps)


def stream_plan(cfg: TrainConfig, records: Records, report: ReadReport, rank: int, world: int) -> Iterator[Step]:
    """``--streaming``: read, validate and tokenize a window at a time (``rewardkit.plan.stream_steps``)."""
    def read(keep: Callable[[int], bool]) -> Any:
        if cfg.objective != "pairwise":
            return iter_verifier_examples(cfg.train_data, report, skip_bad=cfg.skip_bad_records, split=cfg.split,
                                          streaming=True, keep=keep, positions=True)
        return iter_preferences(cfg.train_data, report, skip_bad=cfg.skip_bad_records, split=cfg.split,
                                likert=cfg.likert_margins, streaming=True, keep=keep, positions=True)

    return stream_steps(read, records.items, batch_size=cfg.batch_size, window=stream_window(cfg),
                        rng=np.random.default_rng(cfg.seed), group_by_length=cfg.group_by_length, rank=rank,
                        world=world, epochs=cfg.epochs, stand_in=records.stand_in(), max_steps=cfg.max_steps)


def stream_window(cfg: TrainConfig) -> int:
    return cfg.stream_window or 50 * cfg.batch_size


def streamed_total_steps(cfg: TrainConfig) -> tuple[int, int | None]:
    """(optimizer steps, raw records or None) of a streamed run: ``--max-steps``, or the records counted."""
    raw_count = count_raw_records(cfg.train_data, cfg.split) if not cfg.max_steps else None
    if not cfg.max_steps and raw_count is None:
        raise UserError(f"--streaming {cfg.train_data}: a streamed hub dataset has no known length; pass "
                        "--max-steps N")
    return cfg.max_steps or math.ceil(raw_count / cfg.batch_size) * cfg.epochs, raw_count


def total_steps(cfg: TrainConfig, records: int) -> int:
    return cfg.max_steps or math.ceil(records / cfg.batch_size) * cfg.epochs


def changes_line(changes: dict[str, int], kept: int) -> str:
    return ("records: " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in changes.items())
            + f" → {kept} records")


def check_train_config(cfg: TrainConfig) -> None:
    """Warn about settings that train but rarely well (ranges, choices and cross-field rules are checked by the
    config itself)."""
    if cfg.epochs > 1:
        warnings.warn(f"epochs={cfg.epochs}: reward models tend to overfit after one epoch; "
                      "compare held-out accuracy per epoch before trusting the last one.", stacklevel=3)


# ------------------------------------------------------------------------------ optimisation


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, with torch's fused kernel where every parameter allows it.

    Fused is the same update (to fp32 rounding) in one kernel over all tensors instead of a loop of
    small ops: on the 2-core CPU of BENCHMARKS.md one SmolLM2-135M step of the optimizer takes 0.12 s
    fused vs 0.39 s unfused, ~4 % of a training step. It is also TRL's default optimizer on torch ≥ 2.8.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused or None)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> Any:
    """Linear warmup over ``warmup_ratio`` of the steps, then ``lr_schedule``.

    transformers' ``constant`` ignores warmup steps, so 'constant' maps to ``constant_with_warmup``:
    the help promises warmup for every schedule."""
    name = "constant_with_warmup" if cfg.lr_schedule == "constant" else cfg.lr_schedule
    return get_scheduler(name, optimizer, num_warmup_steps=round(cfg.warmup_ratio * total_steps),
                         num_training_steps=total_steps)


# ------------------------------------------------------------------------------ held-out scoring

LOCKSTEP_GROUPS = 8  # groups per forward pass when held-out scoring runs in lockstep (sharded parameters)


def sharded_rewards(accelerator: Accelerator, scorer: Scorer, examples: list[PreferenceExample]
                    ) -> tuple[list[np.ndarray], str]:
    """Score examples split across processes (``rewardkit.inference``, as ``eval`` does), gathered back in order;
    with the scoring path every process reports having run (``ScoreResult.path``, joined with "+" if they differ).

    Under ZeRO-3 / FSDP every forward pass is a collective (each layer's parameters are gathered from all
    processes), so every process must run the same number of passes, or the busier one waits forever. There the
    processes score in lockstep: rounds of ``LOCKSTEP_GROUPS`` groups, one forward pass per round (the token cap
    lifted for it), the same number of rounds everywhere; a process with no groups left scores a stand-in and
    drops its rewards (the zero-weight pass of training)."""
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(range(rank, len(examples), world))
    if world > 1 and shards_parameters(accelerator) and examples:
        rewards, paths = _lockstep_rewards(scorer, examples, mine, math.ceil(len(examples) / world))
    else:
        scored = score(scorer, [examples[i] for i in mine]) if mine else None
        rewards, paths = (scored.rewards if scored else []), ([scored.path] if scored else [])
    gathered = gather_object([(i, r.tolist()) for i, r in zip(mine, rewards)])
    paths = gather_object(paths)
    out: list[Any] = [None] * len(examples)
    for i, r in gathered:
        out[i] = np.asarray(r)
    return out, "+".join(sorted(set(paths)))


def _lockstep_rewards(scorer: Scorer, examples: list[PreferenceExample], mine: list[int], most: int
                      ) -> tuple[list[np.ndarray], list[str]]:
    one_pass = dataclasses.replace(scorer, max_batch_tokens=1 << 40, max_batch_size=1 << 20, progress=False)
    rewards, paths = [], []
    for start in range(0, most, LOCKSTEP_GROUPS):
        chunk = [examples[i] for i in mine[start:start + LOCKSTEP_GROUPS]]
        scored = score(one_pass, chunk or [examples[0]])
        if scored.forward_passes != 1:  # cannot happen with the cap lifted; a silent mismatch would hang
            raise RuntimeError(f"lockstep scoring ran {scored.forward_passes} forward passes for one round")
        if chunk:
            rewards.extend(scored.rewards)
            paths.append(scored.path)
    return rewards, paths


@dataclass
class Evaluation:
    """One held-out evaluation during training: its step, metrics, per-example rewards and scoring path."""

    step: int
    result: dict[str, Any]
    rewards: list[np.ndarray]
    path: str


def held_out(accelerator: Accelerator, run: Run, scorer: Scorer, examples: list[PreferenceExample], seed: int,
             clock: Clock | None = None) -> Callable[[int], Evaluation | None]:
    """``evaluate(step)``: score the held-out set across processes, log and print its metrics, return them."""

    def evaluate(step: int) -> Evaluation | None:
        if not examples:
            return None
        with clock.phase("eval") if clock else contextlib.nullcontext():
            rewards, path = sharded_rewards(accelerator, scorer, examples)
        if isinstance(examples[0], VerifierExample):  # an outcome / process reward model
            result = verifier_eval_metrics(examples, rewards, probabilities=getattr(scorer, "step_marker", None)
                                           is not None)
            run.log({"step": step, "split": "eval", **result})
            accelerator.print(f"[eval step {step}] outcome accuracy {result['accuracy']:.4f}  auroc "
                              f"{result['auroc']:.4f}  best-of-N {result.get('best_of_n', float('nan')):.4f}")
            return Evaluation(step, result, rewards, path)
        result = metrics_from_rewards(examples, rewards, seed=seed)  # the bootstrap `rewardkit eval --seed` draws
        run.log({"step": step, "split": "eval", **result})
        accelerator.print(f"[eval step {step}] accuracy {result['accuracy']:.4f}  ece {result['ece']:.4f}  "
                          f"margin {result['mean_margin']:+.3f}  (length baseline "
                          f"{result['length_baseline_accuracy']:.4f})")
        return Evaluation(step, result, rewards, path)

    return evaluate


def verifier_eval_metrics(examples: list[Any], rewards: list[np.ndarray], *, probabilities: bool) -> dict[str, Any]:
    """A verifier's held-out numbers during training: outcome accuracy / AUROC / BCE, best-of-N accuracy where
    problems have several solutions, and the reward statistics a checkpoint records."""
    from rewardkit.verifiers import best_of_n, outcome_metrics

    result = outcome_metrics(examples, rewards, probabilities=probabilities)
    result.setdefault("accuracy", float("nan"))
    result.setdefault("auroc", float("nan"))
    bon = best_of_n(examples, rewards, probabilities=probabilities, samples=0)
    if bon.get("problems"):
        result["best_of_n"] = bon["scorer"]["accuracy"]
    result.update(completion_reward_stats(rewards))
    return result


def eval_stats(evaluation: Evaluation | None) -> dict[str, Any]:
    """The reward statistics a periodic checkpoint carries: the latest held-out evaluation's, if any."""
    if evaluation is None:
        return {}
    r = evaluation.result
    return {"reward_mean": r["reward_mean"], "reward_std": r["reward_std"],
            "reward_stats_source": f"eval at step {evaluation.step}"}


def reward_statistics(accelerator: Accelerator, cfg: TrainConfig, scorer: Scorer,
                      train_ex: list[PreferenceExample] | None, recent: list[tuple[int, np.ndarray]],
                      steps: int, records: int) -> tuple[str, float, float]:
    """(source, mean, std) of the rewards saved with a checkpoint trained without a held-out set (--reward-stats).

    "rescore" scores up to ``STATS_RECORDS`` training records with the final model: exact, and the right
    thing for any real run, where it is a rounding error of the training time. On a small run it is not: a
    forward pass costs about a third of a training step per record, so rescoring all of a 160-pair run's
    records adds a third to its training time. "auto" therefore rescores only when the run trained on at least
    ``STATS_RECORDS / 0.15`` records (``records``; rescoring then costs under 5 % of the steps), and otherwise
    uses the rewards the last steps computed (``recent``: (step, rewards) per record), which cost nothing and
    come from weights at most those steps old. The source string says which, over which of the run's ``steps``.
    """
    mode = cfg.reward_stats
    if mode == "auto":
        mode = "rescore" if records * 0.05 >= STATS_RECORDS / 3 else "last-steps"
    gathered = [x for part in gather_object([recent]) for x in part]
    if mode == "last-steps" and gathered:
        gathered = sorted(gathered, key=lambda x: x[0])[-STATS_RECORDS:]
        stats = completion_reward_stats([x for _, x in gathered])
        return (f"train rewards of steps {gathered[0][0]}-{gathered[-1][0]} of {steps} ({len(gathered)} "
                "records, computed during training)", stats["reward_mean"], stats["reward_std"])
    stream = (iter_verifier_examples(cfg.train_data, ReadReport(source=cfg.train_data), skip_bad=True,
                                     split=cfg.split, streaming=True) if cfg.objective != "pairwise" else
              iter_preferences(cfg.train_data, ReadReport(source=cfg.train_data), skip_bad=True, split=cfg.split,
                               likert=cfg.likert_margins, streaming=True))
    sample = train_ex[:STATS_RECORDS] if train_ex is not None else list(itertools.islice(stream, STATS_RECORDS))
    stats = completion_reward_stats(sharded_rewards(accelerator, scorer, sample)[0])
    return f"train ({len(sample)} records rescored with the final model)", stats["reward_mean"], stats["reward_std"]


# ------------------------------------------------------------------------------ did it learn


def loss_floor(cfg: TrainConfig, records: list[PreferenceExample]) -> float | None:
    """The lowest mean loss the data allows, when the loss's chance level is log 2 (bt, bt_softplus, balanced);
    None for losses whose chance level is elsewhere (margin, Plackett-Luce).

    A record whose completions are all tied trains toward Δr = 0, where its loss is log 2; with label
    smoothing ε a strict pair's loss cannot go below the binary entropy H(ε). So a tie-heavy dataset
    cannot reach 0, and "not learning" must be judged against this floor, not against 0.
    """
    if (cfg.loss not in ("bt", "bt_softplus", "balanced") or not records or cfg.length_debias == "odin"
            or cfg.objective != "pairwise"):  # (a verifier's BCE floor is its labels' entropy, not checked)
        return None  # (ODIN's loss adds correlation terms, so log 2 is not its chance level)
    eps = cfg.label_smoothing
    strict_floor = -(eps * math.log(eps) + (1 - eps) * math.log(1 - eps)) if 0 < eps < 1 else 0.0
    ties = sum(1 for ex in records if ex.is_tie)
    return (ties * math.log(2) + (len(records) - ties) * strict_floor) / len(records)


def learning_warning(history: list[dict[str, Any]], before: dict | None, after: dict | None,
                     loss_floor: float | None = 0.0) -> str | None:
    """A plain signal for the classic failure: a run that stayed at chance (pain point 10).

    Chance costs log 2 per record for bt / bt_softplus / balanced; the data's floor (``loss_floor``) is
    what a perfect model would reach. The run "did not learn" when the mean loss of its last quarter
    closed less than 2 % of the gap between the two. For losses whose chance level is elsewhere
    (``loss_floor=None``: margin, Plackett-Luce) only held-out accuracy is checked.
    """
    tail = [r for r in history[-max(1, len(history) // 4):] if not r.get("skipped")]
    tail_loss = sum(r["loss"] for r in tail) / len(tail) if tail else None
    chance = math.log(2)
    if loss_floor is not None and tail_loss is not None and chance - loss_floor > 1e-6:
        learned = (chance - tail_loss) / (chance - loss_floor)
        if learned < 0.02:
            return (f"the training loss stayed at chance (mean over the last quarter of steps: {tail_loss:.3f}; chance "
                    f"log 2 = 0.693, the data's floor {loss_floor:.3f}); the model is not separating chosen from "
                    "rejected. Check the data, or raise --learning-rate / train on more pairs.")
    if before and after and after["accuracy"] <= before["accuracy"]:
        return (f"held-out accuracy did not improve ({before['accuracy']:.4f} → {after['accuracy']:.4f}); "
                "the model may be overfitting the training pairs or learning something that does not transfer.")
    return None


def prefix_sharing_summary(paths: dict[str, str | None]) -> str | None:
    """"on" when every training forward pass of this process ran prefix-shared, "off (why)" when every one ran
    padded, "mixed" otherwise; None when it ran none (a resumed run with nothing left to do)."""
    if not paths:
        return None
    if set(paths) == {"shared"}:
        return "on"
    if set(paths) == {"padded"}:
        return f"off ({paths['padded'] or '--no-prefix-sharing'})"
    return "mixed"


# ------------------------------------------------------------------------------ the report


def start_accelerator(cfg: TrainConfig) -> tuple[Accelerator, Precision]:
    """The run's ``Accelerator``, built with the precision ``cfg.precision`` means on this hardware (said once)."""
    device = training_device()
    precision = precision_for(cfg.precision, device, training=True)
    if device == "cpu":  # a GPU's caching allocator already reuses its memory
        retain_freed_memory()
    accelerator = make_accelerator(precision.mixed_precision)
    accelerator.print(precision.line())
    return accelerator, precision


def base_report(cfg: TrainConfig, run: Run, loop: Any, *, warning: str | None, wall: float, processes: int,
                train_data: ReadReport, changes: dict[str, int], eval_data: ReadReport | None, truncation: Any,
                before: dict | None, after: dict | None, resumed: Any, precision: Precision) -> dict[str, Any]:
    """The fields of ``report.json`` every trainer writes (a recipe adds its own)."""
    from rewardkit.config import to_dict

    history = loop.history
    return {
        "warning": warning, "run_dir": str(run.dir), "config": to_dict(cfg), "steps": loop.step,
        "wall_time_s": round(wall, 1), "processes": processes, "precision": precision.describe(),
        "allocator": allocator_setting(), "streaming": cfg.streaming,
        "train_data": train_data.to_dict(), "record_changes": dict(changes),
        "eval_data": eval_data.to_dict() if eval_data else None, "train_truncation": truncation.to_dict(),
        "before": before, "after": after,
        "first_train_loss": history[0]["loss"] if history else None,
        "last_train_loss": history[-1]["loss"] if history else None,
        "skipped_steps": sum(1 for r in history if r.get("skipped")),
        "overflow_steps": sum(1 for r in history if r.get("overflow")),
        "resumed_from": str(resumed.checkpoint) if resumed else None,
    }


def write_report(run: Run, report: dict[str, Any], title: str = "rewardkit training report") -> None:
    """``report.json`` and ``report.md`` into the run folder (main process), and the summary printed."""
    if not run.main:
        return
    (run.dir / "report.json").write_text(json.dumps(report, indent=2))
    (run.dir / "report.md").write_text(render_report(report, title))
    print(summary_lines(report))


def write_eval_rewards(folder: Path, examples: list[PreferenceExample], rewards: list[np.ndarray]) -> None:
    """Per-completion held-out rewards, so metrics can be recomputed without the model."""
    with open(folder / "eval_rewards.jsonl", "w") as f:
        for ex, r in zip(examples, rewards):
            f.write(json.dumps({"source": ex.source, "ranking": ex.ranking, "ties": ex.ties,
                                "rewards": [float(x) for x in r]}) + "\n")


def summary_lines(report: dict[str, Any]) -> str:
    lines = [f"run: {report['run_dir']}  steps: {report['steps']}  wall time: {report['wall_time_s']:.0f} s"]
    for label in ("before", "after"):
        m = report.get(label)
        if m and "auroc" in m:  # an outcome / process reward model
            lines.append(f"held-out outcome accuracy {label:>6}: {m['accuracy']:.4f}  (auroc {m['auroc']:.4f}"
                         + (f", best-of-N {m['best_of_n']:.4f}" if "best_of_n" in m else "")
                         + f", {m.get('solutions', 0)} solutions)")
        elif m:
            lines.append(f"held-out accuracy {label:>6}: {m['accuracy']:.4f}  (ece {m['ece']:.4f}, "
                         f"length baseline {m['length_baseline_accuracy']:.4f}, {m['pairs']} pairs)")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "–" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def render_report(report: dict[str, Any], title: str = "rewardkit training report") -> str:
    out = [f"# {title}", "", "```", summary_lines(report), "```", "",
           f"- train data: {report['train_data']['source']} ({report['train_data']['loaded']} pairs loaded, "
           f"skipped: {report['train_data']['skipped'] or 'none'})",
           f"- truncated sequences: {report['train_truncation']}",
           f"- train loss: first step {_fmt(report['first_train_loss'])}, last step "
           f"{_fmt(report['last_train_loss'])}",
           "", "| metric | before | after |", "|---|---|---|"]
    before, after = report.get("before") or {}, report.get("after") or {}
    for key in ("accuracy", "ties", "mean_margin", "ece", "brier", "length_baseline_accuracy", "reward_mean", "reward_std"):
        if key in after:
            out.append(f"| {key} | {_fmt(before.get(key))} | {_fmt(after.get(key))} |")
    return "\n".join(out) + "\n"
