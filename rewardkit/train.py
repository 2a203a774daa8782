"""Reward-model training on ``accelerate``: one loop, top to bottom.

A record is a pair or a K-wise ranking; its loss is one of ``rewardkit.losses`` (eq. 3–6,
Plackett-Luce) chosen by ``TrainConfig.loss``. Each optimizer step takes a global batch of
``batch_size`` records. The batch is split across processes and into micro-batches; every
micro-batch runs all completions of its records through the model in one forward pass (so a
prompt's completions always share a batch, as InstructGPT prescribes), and its summed loss is
scaled by ``processes / batch_size`` so the averaged gradient equals that of the mean loss over
the global batch, whatever the process count or accumulation. The last, smaller batch of an
epoch is used, not dropped.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object, set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from rewardkit.batching import Encoder, TruncationStats
from rewardkit.checkpoint import METADATA_FILE, save_checkpoint
from rewardkit.config import TrainConfig, to_dict
from rewardkit.data import PreferenceExample, ReadReport, read_preferences
from rewardkit.data.readers import count_raw_records, iter_preferences, merge_reports
from rewardkit.data.record import completion_text
from rewardkit.data.transforms import drop_ties, flatten_rankings
from rewardkit.errors import UserError
from rewardkit.evaluate import completion_reward_stats, metrics_from_rewards
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
    parse_aspects,
    scale_gate,
    score_linear,
)
from rewardkit.inference import RewardModelScorer, Scorer, score
from rewardkit.lora import ADAPTER_DIR, apply_lora, load_adapter_weights
from rewardkit.losses import (
    check_record,
    correlation_sums,
    odin_disentangle_share,
    record_loss,
    symmetric_pair_differences,
)
from rewardkit.model import freeze_lower_layers, load_reward_model
from rewardkit.plan import Item, Step, memory_steps, micro_batches, stream_steps
from rewardkit.run import (
    Resumed,
    Run,
    configure_deepspeed,
    full_state_dict,
    load_weights,
    make_accelerator,
    shards_parameters,
)
from rewardkit.sharing import group_rewards, sharing_unsupported_reason


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the message says at which step and what to try."""


def load_examples(spec: str, cfg: TrainConfig, split: str) -> tuple[list[PreferenceExample], ReadReport]:
    """Training (``split="train"``) or held-out (``"eval"``) records: each reads its own split of a hub id or
    saved dataset (``--split`` / ``--eval-split``), so held-out data never silently comes from 'train'."""
    if spec.startswith("builtin:"):
        from rewardkit.data.synthetic import builtin_dataset

        return builtin_dataset(spec, split)
    hub_split, flag = (cfg.split, "--split") if split == "train" else (cfg.eval_split, "--eval-split")
    return read_preferences(spec, skip_bad=cfg.skip_bad_records, split=hub_split, likert=cfg.likert_margins,
                            split_flag=flag)


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


def sharded_rewards(accelerator: Accelerator, scorer: Scorer, examples: list[PreferenceExample]
                    ) -> tuple[list[np.ndarray], str]:
    """Score examples split across processes (``rewardkit.inference``, as ``eval`` does), gathered back in order;
    with the scoring path every process reports having run (``ScoreResult.path``, joined with "+" if they differ).

    Used for held-out evaluation by both trainers (classifier RM and GenRM)."""
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(range(rank, len(examples), world))
    scored = score(scorer, [examples[i] for i in mine]) if mine else None
    rewards = scored.rewards if scored else []
    gathered = gather_object([(i, r.tolist()) for i, r in zip(mine, rewards)])
    paths = gather_object([scored.path] if scored else [])
    out: list[Any] = [None] * len(examples)
    for i, r in gathered:
        out[i] = np.asarray(r)
    return out, "+".join(sorted(set(paths)))


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train a classifier reward model: the recipe, top to bottom, on a :class:`rewardkit.run.Run`."""
    accelerator = make_accelerator(cfg.mixed_precision)
    main = accelerator.is_main_process
    say = accelerator.print
    set_seed(cfg.seed)
    check_train_config(cfg)
    aspects = parse_aspects(cfg.aspects)
    if shards_parameters(accelerator) and (cfg.lora_r or cfg.length_debias == "odin" or aspects):
        flag = "--lora-r" if cfg.lora_r else "--length-debias odin" if cfg.length_debias == "odin" else "--aspects"
        raise UserError(f"{flag} with sharded parameters "
                        f"({accelerator.distributed_type}): saving merges or splits the head from whole weights, which "
                        "no process holds. Use DDP or DeepSpeed ZeRO-2 (configs/accelerate/)")
    run = Run.open(accelerator, cfg, "%Y%m%d-%H%M%S")
    started, clock = time.time(), run.clock

    # ---- model and data
    with clock.phase("load_model"):
        model, tokenizer = load_reward_model(cfg.model, dtype=cfg.torch_dtype, head_init=cfg.head_init)
    odin = cfg.length_debias == "odin"
    if aspects and cfg.lora_r and cfg.lora_save == "adapter":
        raise UserError("--aspects with --lora-save adapter: the gate is saved scaled in the merged model only; use "
                        "--lora-save merged (the default; the adapter is saved beside it)")
    if odin and aspects:
        raise UserError("--length-debias odin and --aspects both grow the score head; use one of them (--length-debias "
                        "balance works with --aspects)")
    if odin:  # before LoRA, so peft's trainable copy of the head has both outputs
        add_length_head(model, cfg.head_init)
    if aspects:  # likewise
        add_aspect_heads(model, aspects, cfg.head_init)
    lora = (apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
            if cfg.lora_r else None)
    n_trainable = (sum(p.numel() for p in model.parameters() if p.requires_grad) if lora
                   else freeze_lower_layers(model, cfg.trainable_layers))
    if cfg.gradient_checkpointing:
        model.hf.activation_checkpointing_enable({"use_reentrant": False})
    encoder = Encoder(tokenizer, max_length=cfg.max_length, template=cfg.template)
    eval_spec = cfg.eval_data or (cfg.train_data if cfg.train_data.startswith("builtin:") else None)
    with clock.phase("read_and_tokenize"):
        eval_ex, eval_report = load_examples(eval_spec, cfg, "eval") if eval_spec else ([], None)
    train_truncation, changes = TruncationStats(), Counter()

    def to_items(examples: list[PreferenceExample]) -> list[Item]:
        """Transform, check and tokenize records (all of them, or a stream's window) into training items."""
        examples, window_changes = prepare_records(examples, cfg)
        changes.update(window_changes)
        check_records(examples, cfg)
        check_aspects(examples, aspects)
        weights = (length_balance_weights([chosen_longer(ex) for ex in examples])
                   if cfg.length_debias == "balance" else [1.0] * len(examples))
        return [Item(ex, ids, ex.preference_pairs(), w, tuple(len(completion_text(c)) for c in ex.completions))
                for ex, ids, w in zip(examples, encode_items(examples, train_truncation), weights)]

    def encode_items(examples: list[PreferenceExample], stats: TruncationStats) -> list[list[list[int]]]:
        """Token ids per record; an aspect model's records carry the gate's probe as their last sequence."""
        if not aspects:
            return encoder.encode_examples(examples, stats)
        out = []
        for ids, group_stats in encode_probed(encoder, examples):
            out.append(ids)
            stats.merge(group_stats)
        return out

    rank, world = accelerator.process_index, accelerator.num_processes
    if cfg.streaming:  # read, validate and tokenize a window at a time (rewardkit.plan)
        train_report, train_ex, items = ReadReport(source=cfg.train_data), None, None
        raw_count = count_raw_records(cfg.train_data, cfg.split) if not cfg.max_steps else None
        if not cfg.max_steps and raw_count is None:
            raise UserError(f"--streaming {cfg.train_data}: a streamed hub dataset has no known length; pass "
                            "--max-steps N")
        total_steps = cfg.max_steps or math.ceil(raw_count / cfg.batch_size) * cfg.epochs
        say(f"train: streamed from {cfg.train_data}, {cfg.stream_window or 50 * cfg.batch_size} raw records at a "
            f"time" + (f" ({raw_count:,} raw records)" if raw_count is not None else ""))
    else:
        with clock.phase("read_and_tokenize"):
            train_ex, train_report = load_examples(cfg.train_data, cfg, "train")
            items = to_items(train_ex)
        total_steps = cfg.max_steps or math.ceil(len(items) / cfg.batch_size) * cfg.epochs
        say(train_report.summary())
        if changes:
            say("records: " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in changes.items())
                + f" → {len(items)} records")
        say(f"train: {train_truncation.summary()}")
    if eval_report:
        say(eval_report.summary())
    if cfg.prefix_sharing:
        why_not = sharing_unsupported_reason(model)
        say(f"prefix sharing: {'off (' + why_not + ')' if why_not else 'on (each prompt computed once, groups packed)'}")
    say(f"trainable parameters: {n_trainable:,} of {sum(p.numel() for p in model.parameters()):,}")
    say(f"processes: {accelerator.num_processes} ({accelerator.distributed_type}), device: {accelerator.device}")
    run.begin(to_dict(cfg))

    # ---- optimisation
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, total_steps)
    configure_deepspeed(accelerator, cfg.micro_batch_size, cfg.max_grad_norm)
    model, optimizer = accelerator.prepare(model, optimizer)
    pad_id = tokenizer.pad_token_id
    plain = accelerator.unwrap_model(model)
    resumed = run.resume(lambda folder: (load_adapter_weights(lora, folder / ADAPTER_DIR) if lora else load_weights(
        plain.hf, folder, transform=(lambda state: join_length_head(state, folder)) if odin else
        (lambda state: scale_gate(state, len(aspects), 1 / cfg.aspect_gate_scale)) if aspects else None)),
        optimizer, scheduler)
    if resumed:
        say(f"resumed from {resumed.checkpoint} at step {resumed.step} of {total_steps}")

    eval_scorer = RewardModelScorer(plain, encoder, name=cfg.model, kind="training", progress=main,
                                    padding_side=cfg.padding_side, prefix_sharing=cfg.prefix_sharing, aspects=aspects,
                                    gate_scale=cfg.aspect_gate_scale)
    last_eval: dict[str, Any] = {}

    def run_eval(step: int) -> dict[str, Any] | None:
        if not eval_ex:
            return None
        with clock.phase("eval"):
            rewards, path = sharded_rewards(accelerator, eval_scorer, eval_ex)
        result = metrics_from_rewards(eval_ex, rewards, seed=cfg.seed)  # the bootstrap `rewardkit eval --seed` draws
        last_eval.update(step=step, rewards=rewards, result=result, path=path)
        run.log({"step": step, "split": "eval", **result})
        say(f"[eval step {step}] accuracy {result['accuracy']:.4f}  ece {result['ece']:.4f}  "
            f"margin {result['mean_margin']:+.3f}  (length baseline {result['length_baseline_accuracy']:.4f})")
        return result

    debias_meta = ({"method": "odin", "reward": "the quality head (model.safetensors)", "length_head": LENGTH_HEAD_FILE,
                    "length_coef": cfg.odin_length_coef, "quality_coef": cfg.odin_quality_coef,
                    "ortho_coef": cfg.odin_ortho_coef, "correlation": cfg.odin_correlation} if odin else
                   {"method": "balance", "weights": "chosen-longer and chosen-shorter pairs weigh the same"}
                   if cfg.length_debias == "balance" else None)
    lora_meta = ({"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                  "target_modules": cfg.lora_target_modules} if lora else None)

    def save_model(folder: Path, state: dict[str, torch.Tensor] | None = None, final: bool = False, **stats: Any) -> None:
        with clock.phase("save"):
            _save_model(folder, state, final, **stats)

    def gather() -> dict[str, torch.Tensor] | None:  # on every process: the whole model when ZeRO-3 / FSDP shard it
        with clock.phase("save"):
            return full_state_dict(accelerator, model)

    def _save_model(folder: Path, state: dict[str, torch.Tensor] | None, final: bool = False, **stats: Any) -> None:
        if not stats and last_eval:  # a periodic checkpoint carries the latest held-out statistics
            r = last_eval["result"]
            stats = {"reward_mean": r["reward_mean"], "reward_std": r["reward_std"],
                     "reward_stats_source": f"eval at step {last_eval['step']}"}
        # Periodic checkpoints are always merged + adapter (loadable, and resumable from the adapter).
        lora_save = cfg.lora_save if final else "merged"
        save_checkpoint(folder, plain, tokenizer, encoder, state=state, lora_adapter=lora, lora_save=lora_save,
                        length_head=odin, base_model=cfg.model, padding_side=cfg.padding_side,
                        aspect_gate=(len(aspects), cfg.aspect_gate_scale) if aspects else None,
                        **({"lora": {**lora_meta, "saved": lora_save}} if lora else {}),
                        **({"length_debias": debias_meta} if debias_meta else {}),
                        **({"aspects": aspect_metadata(aspects, cfg.aspect_gate_scale)} if aspects else {}), **stats)

    if resumed:
        before = resumed.evals.get(0)
    else:
        before = run_eval(0) if cfg.eval_before else None
    train_paths: dict[str, str | None] = {}  # what the training forward passes ran: path → why not shared
    # The last training rewards (reward head), per record, with the step that computed them: the free source of the
    # checkpoint's reward statistics when there is no held-out set (--reward-stats).
    recent_rewards: collections.deque[tuple[int, torch.Tensor]] = collections.deque(maxlen=STATS_RECORDS)

    def remember(micro: list[Item], rewards: list[torch.Tensor]) -> None:
        for it, r in zip(micro, rewards):
            if id(it) in now["pending"]:  # each of this step's own records once (not a zero-weight stand-in pass)
                now["pending"].discard(id(it))
                recent_rewards.append((now["step"], r.detach()))  # stays on device: no sync

    def micro_loss(micro: list[Item]) -> tuple[torch.Tensor, float, float]:
        records, record_pairs = [it.example for it in micro], [it.pairs for it in micro]
        rewards = group_rewards(model, [it.ids for it in micro], pad_id, shared=cfg.prefix_sharing,
                                padding_side=cfg.padding_side, all_heads=odin or bool(aspects))
        train_paths[rewards.path] = rewards.reason
        weights = torch.tensor([it.weight for it in micro], device=rewards[0].device)
        if aspects:  # each record's own aspect head, and the gate on the mixture of the (fixed) head rewards
            heads = [r[:-1, aspects.index(it.example.aspect)] for it, r in zip(micro, rewards)]
            head_losses, correct, margin = records_loss(cfg, records, record_pairs, heads)
            terms = [head_losses]
            if cfg.aspect_gate_loss in ("preference", "both"):
                mixed = [mix(r, len(aspects), detach_heads=True, gate_scale=cfg.aspect_gate_scale)[0] for r in rewards]
                terms.append(records_loss(cfg, records, record_pairs, mixed)[0])
            if cfg.aspect_gate_loss in ("label", "both"):
                terms.append(torch.stack([gate_label_loss(r, len(aspects), aspects.index(it.example.aspect),
                                                          cfg.aspect_gate_scale) for it, r in zip(micro, rewards)]))
            remember(micro, [mix(r.detach(), len(aspects), gate_scale=cfg.aspect_gate_scale)[0] for r in rewards])
            return sum(terms) / len(terms) * weights, correct, margin  # the mean: chance stays log 2
        remember(micro, [r[:, 0] if odin else r for r in rewards])
        if not odin:
            losses, correct, margin = records_loss(cfg, records, record_pairs, rewards)
            return losses * weights, correct, margin
        # ODIN: rank with r_Q + r_L; disentangle the heads over all of the step's completions (on every process),
        # from the correlation sums of the step's pre-pass (odin_step): this micro-batch adds its exact share.
        losses, correct, margin = records_loss(cfg, records, record_pairs, [r.sum(-1) for r in rewards])
        views = odin_views(micro, rewards, cfg.odin_correlation)
        # (one micro-batch on one process is the whole step: its own sums, no pre-pass was needed)
        population, n_records = now["odin"] or (odin_sums(views), len(micro))
        share = sum(odin_disentangle_share(x[:, 0], x[:, 1], lengths, sums, length_coef=cfg.odin_length_coef,
                                           quality_coef=cfg.odin_quality_coef)
                    for (x, lengths), sums in zip(views, population))
        w_q, w_l = head_weights(plain)
        ortho = cfg.odin_ortho_coef * (w_q.flatten() @ w_l.flatten()).abs()
        # The loop divides the summed record losses by the step's record count: every record carries the ortho
        # term and its part of the micro-batch's share times that count, so the step's loss is ranking + ODIN terms.
        return losses + ortho + share * n_records / len(micro), correct, margin

    def odin_step(micros: list[list[Item]]) -> None:
        """ODIN's pre-pass over this process's micro-batches of the step: the (r_Q, ℓ) and (r_L, ℓ) correlation
        sums over every process's records (no gradient; a forward without backward, +40 % step time on SmolLM2
        with LoRA), so the correlations are the whole batch's as in the paper, not one micro-batch's few
        completions. Skipped (None) when the step is one micro-batch on one process: that micro-batch's own
        rewards are then the whole step's."""
        if accelerator.num_processes == 1 and len(micros) == 1:
            now["odin"] = None
            return
        levels = 2 if cfg.odin_correlation == "both" else 1
        sums = torch.zeros(levels, 2, 6, dtype=torch.float64, device=accelerator.device)  # a process may hold none
        inner = getattr(model, "module", model)  # no DDP forward: processes may run different numbers of these
        with torch.no_grad():
            for micro in micros:
                rewards = group_rewards(inner, [it.ids for it in micro], pad_id, shared=cfg.prefix_sharing,
                                        padding_side=cfg.padding_side, all_heads=True)
                sums += odin_sums(odin_views(micro, list(rewards), cfg.odin_correlation))
        records = sum(len(micro) for micro in micros)
        total = accelerator.reduce(torch.cat([sums.flatten(), sums.new_tensor([records])]), "sum")
        now["odin"] = (total[:-1].view(levels, 2, 6), int(total[-1]))

    rng = np.random.default_rng(cfg.seed)
    now: dict[str, Any] = {"step": 0, "pending": set()}  # the planned step being trained (for recent_rewards)

    def watched(plan: Iterable[Step]) -> Iterable[Step]:
        for i, planned in enumerate(plan, 1):
            now.update(step=i, pending={id(it) for it in planned.items})
            yield planned

    if cfg.streaming:
        def read(keep: Callable[[int], bool]) -> Any:
            return iter_preferences(cfg.train_data, train_report, skip_bad=cfg.skip_bad_records, split=cfg.split,
                                    likert=cfg.likert_margins, streaming=True, keep=keep, positions=True)

        stand_in = PreferenceExample.pair("stand-in", "a", "b", aspect=aspects[0] if aspects else None)  # weight 0
        steps = stream_steps(read, to_items, batch_size=cfg.batch_size, window=cfg.stream_window or 50 * cfg.batch_size,
                             rng=rng, group_by_length=cfg.group_by_length, rank=rank, world=world, epochs=cfg.epochs,
                             stand_in=Item(stand_in, encode_items([stand_in], TruncationStats())[0],
                                           stand_in.preference_pairs()), max_steps=cfg.max_steps)
        steps = watched(steps)
    else:
        steps = watched(memory_steps(items, cfg.batch_size, rng, cfg.group_by_length, rank, world, cfg.epochs,
                                     cfg.max_steps))
    history = optimise(accelerator, model, optimizer, scheduler, cfg, steps, total_steps, micro_loss, run=run,
                       run_eval=run_eval, save_model=save_model, gather=gather, started=started, resumed=resumed,
                       before_step=odin_step if odin else None)
    if cfg.streaming:  # every process read its own shard: add the counts up
        train_report = merge_reports(gather_object([train_report]))
        changes = sum(gather_object([changes]), Counter())
        truncations = gather_object([train_truncation])
        train_truncation = TruncationStats()
        for t in truncations:
            train_truncation.merge(t)
        say(train_report.summary())
        say(f"train: {train_truncation.summary()}")
    step = len(history)
    gate_fit = None
    if aspects and cfg.aspect_gate_refit and items is not None:
        with clock.phase("gate_refit"):
            gate_fit = refit_gate(accelerator, plain, items, aspects, cfg, pad_id)
        say(f"gate refit on {gate_fit.records} records' prompts (ridge {gate_fit.l2:g}): aspect accuracy "
            f"{gate_fit.train_accuracy:.3f} train" + ("" if gate_fit.validation_accuracy is None else
                                                       f", {gate_fit.validation_accuracy:.3f} held-out share"))
    after = run_eval(step)

    # ---- reward statistics (for normalised scores) and the checkpoint
    if after:
        stats_source, reward_mean, reward_std = "eval", after["reward_mean"], after["reward_std"]
    else:
        with clock.phase("reward_stats"):
            stats_source, reward_mean, reward_std = reward_statistics(
                accelerator, cfg, eval_scorer, train_ex,
                [(step, r.float().cpu().numpy()) for step, r in recent_rewards], history)
    wall = time.time() - started
    warning = learning_warning(history, before, after, loss_floor=loss_floor(cfg, train_ex or []))
    if warning:
        say(f"WARNING: {warning}")
    report = {
        "warning": warning,
        "run_dir": str(run.dir), "config": to_dict(cfg), "steps": step, "wall_time_s": round(wall, 1),
        "processes": world, "streaming": cfg.streaming, "train_data": train_report.to_dict(),
        "record_changes": dict(changes), "eval_data": eval_report.to_dict() if eval_report else None,
        "train_truncation": train_truncation.to_dict(), "before": before, "after": after,
        "first_train_loss": history[0]["loss"] if history else None,
        "last_train_loss": history[-1]["loss"] if history else None,
        "skipped_steps": sum(1 for r in history if r.get("skipped")),
        "resumed_from": str(resumed.checkpoint) if resumed else None,
        # what ran, as the code reports it (not the flags): the training passes' path, held-out scoring's path,
        # and whether the backbone recomputes activations
        "prefix_sharing": prefix_sharing_summary(train_paths),
        "eval_scoring_path": last_eval.get("path"),
        "gradient_checkpointing": bool(getattr(plain.hf, "is_activation_checkpointing", False)),
        "weights_dtype": str(next(plain.parameters()).dtype).removeprefix("torch."),
        "gate_refit": gate_fit.summary() if gate_fit else (
            "not run: --streaming holds no records to refit on" if aspects and cfg.aspect_gate_refit else None),
    }
    accelerator.wait_for_everyone()
    run.save_final(lambda folder, state: save_model(folder, state, final=True, reward_mean=reward_mean,
                                                    reward_std=reward_std, reward_stats_source=stats_source),
                   METADATA_FILE, gather=gather)
    # where the wall time went (this process); written last, so saving the model is in it
    report["timings_s"] = clock.summary([r["step_s"] for r in history if "step_s" in r])
    if main:
        (run.dir / "report.json").write_text(json.dumps(report, indent=2))
        if last_eval.get("step") == step:  # per-completion held-out rewards, so metrics can be recomputed without the model
            with open(run.dir / "eval_rewards.jsonl", "w") as f:
                for ex, r in zip(eval_ex, last_eval["rewards"]):
                    f.write(json.dumps({"source": ex.source, "ranking": ex.ranking, "ties": ex.ties,
                                        "rewards": [float(x) for x in r]}) + "\n")
        (run.dir / "report.md").write_text(render_report(report))
        say(summary_lines(report))
    run.close()
    accelerator.wait_for_everyone()
    return report


STATS_RECORDS = 500  # records behind the reward statistics when there is no held-out set


def reward_statistics(accelerator: Accelerator, cfg: TrainConfig, scorer: Scorer,
                      train_ex: list[PreferenceExample] | None, recent: list[tuple[int, np.ndarray]],
                      history: list[dict[str, Any]]) -> tuple[str, float, float]:
    """(source, mean, std) of the rewards saved with a checkpoint trained without a held-out set (--reward-stats).

    "rescore" scores up to ``STATS_RECORDS`` training records with the final model: exact, and the right
    thing for any real run, where it is a rounding error of the training time. On a small run it is not: a
    forward pass costs about a third of a training step per record, so rescoring all of a 160-pair run's
    records adds a third to its training time. "auto" therefore rescores only when the run trained on at least
    ``STATS_RECORDS / 0.15`` records (rescoring then costs under 5 % of the steps), and otherwise uses the
    rewards the last steps computed (``recent``: (step, rewards) per record), which cost nothing and come from
    weights at most those steps old. The source string says which, over which steps, for ``rewardkit.json``.
    """
    trained = sum(r.get("records", 0) for r in history)
    mode = cfg.reward_stats
    if mode == "auto":
        mode = "rescore" if trained * 0.05 >= STATS_RECORDS / 3 else "last-steps"
    gathered = [x for part in gather_object([recent]) for x in part]
    if mode == "last-steps" and gathered:
        gathered = sorted(gathered, key=lambda x: x[0])[-STATS_RECORDS:]
        stats = completion_reward_stats([x for _, x in gathered])
        return (f"train rewards of steps {gathered[0][0]}-{gathered[-1][0]} of {len(history)} ({len(gathered)} "
                "records, computed during training)", stats["reward_mean"], stats["reward_std"])
    sample = train_ex[:STATS_RECORDS] if train_ex is not None else list(itertools.islice(iter_preferences(
        cfg.train_data, ReadReport(source=cfg.train_data), skip_bad=True, split=cfg.split,
        likert=cfg.likert_margins, streaming=True), STATS_RECORDS))
    stats = completion_reward_stats(sharded_rewards(accelerator, scorer, sample)[0])
    return f"train ({len(sample)} records rescored with the final model)", stats["reward_mean"], stats["reward_std"]


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


def check_train_config(cfg: TrainConfig) -> None:
    """Warn about settings that train but rarely well (ranges and choices are checked by the config itself)."""
    if cfg.epochs > 1:
        warnings.warn(f"epochs={cfg.epochs}: reward models tend to overfit after one epoch; "
                      "compare held-out accuracy per epoch before trusting the last one.", stacklevel=3)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, with torch's fused kernel where every parameter allows it.

    Fused is the same update (to fp32 rounding) in one kernel over all tensors instead of a loop of
    small ops: on the 2-core CPU of BENCHMARKS.md one SmolLM2-135M step of the optimizer takes 0.12 s
    fused vs 0.39 s unfused, ~4 % of a training step. It is also TRL's default optimizer on torch ≥ 2.8.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused or None)


def micro_batch_token_budget(setting: int, device: torch.device) -> int:
    """Tokens per training micro-batch (``--micro-batch-tokens``); 0 means no cap (``--micro-batch-size`` decides).

    Auto (-1) is 1,024 on CPU. ``python benchmarks/end_to_end.py`` (SmolLM2-135M, 48 HH pairs, 8 a step, the
    2-core machine of BENCHMARKS.md, one run each): time in steps 49.5 / 46.7 / 44.6 / 48.7 s and peak RSS
    3.96 / 4.12 / 5.36 / 7.18 GB for budgets of 512 / 1,024 / 2,048 tokens / none (4 records); TRL's best
    configuration took 76.5 s at 5.2 GB. 1,024 is as fast as any (within this machine's noise) at two thirds of
    the memory of 2,048. On a GPU, larger passes fill the device: no cap."""
    if setting >= 0:
        return setting
    return 1024 if device.type == "cpu" else 0


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> Any:
    """Linear warmup over ``warmup_ratio`` of the steps, then ``lr_schedule``.

    transformers' ``constant`` ignores warmup steps, so 'constant' maps to ``constant_with_warmup``:
    the help promises warmup for every schedule."""
    name = "constant_with_warmup" if cfg.lr_schedule == "constant" else cfg.lr_schedule
    return get_scheduler(name, optimizer, num_warmup_steps=round(cfg.warmup_ratio * total_steps),
                         num_training_steps=total_steps)


def count_gradient_syncs(model: torch.nn.Module) -> list[int]:
    """Count DDP's gradient all-reduces (one per bucket per synchronised backward) through a comm hook
    that wraps the default all-reduce; a one-element list, [0] forever on a single process.

    Logged per step as ``grad_syncs``, so a run shows that accumulation really skips the sync of all
    but the last micro-batch (issue 14.6: PyTorch's ``no_sync`` only works when the forward runs inside it).
    """
    from torch.nn.parallel import DistributedDataParallel

    calls = [0]
    if isinstance(model, DistributedDataParallel):
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def counting_allreduce(state, bucket):  # unannotated: DDP checks annotations against its own types
            calls[0] += 1
            return allreduce_hook(state, bucket)

        model.register_comm_hook(None, counting_allreduce)
    return calls


def optimise(accelerator: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             cfg: TrainConfig, steps: Iterable[Step], total_steps: int,
             micro_loss: Callable[[list[Item]], tuple[torch.Tensor, float, float]], *,
             run: Run, run_eval: Callable[[int], Any], save_model: Callable[..., None], started: float,
             resumed: Resumed | None = None, desc: str = "train", gather: Callable[[], Any] | None = None,
             before_step: Callable[[list[list[Item]]], None] | None = None) -> list[dict[str, Any]]:
    """The optimisation loop (shared by classifier RMs and ``rewardkit.judges.genrm``); returns the step log.

    ``steps`` is a plan of ``rewardkit.plan`` (in memory or streamed): per optimizer step, this process's
    records. ``micro_loss(items)`` returns the per-record losses of a micro-batch, the number of correctly
    ordered pairs and the summed best-minus-worst margin (for the log). The step's loss is the mean over
    its records on all processes, whatever the process count or accumulation. A resumed run replays the
    seeded plan and skips the steps already done, so it sees the same batches as the uninterrupted run. A
    step whose loss or gradient norm is not finite is skipped (no update) and logged with ``skipped``;
    ``max_bad_steps`` of them in a row stop the run. ``before_step(micros)``, if given, runs on every process
    with its micro-batches of each trained step before they train (ODIN's whole-batch statistics).
    """
    world = accelerator.num_processes
    device = accelerator.device
    history: list[dict[str, Any]] = list(resumed.history) if resumed else []
    start = resumed.step if resumed else 0
    bar = tqdm(total=total_steps, initial=start, disable=not accelerator.is_main_process, desc=desc, unit="step")
    step, bad = 0, 0
    syncs = count_gradient_syncs(model)
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    micro_tokens = micro_batch_token_budget(cfg.micro_batch_tokens, device)
    model.train()
    for planned in steps:
        epoch, shard = planned.epoch, planned.items
        # Every process's record count: the step's size (the loss is a mean over it) and its micro-batch count.
        step_started = time.perf_counter()
        micros = micro_batches(shard, cfg.micro_batch_size, micro_tokens)
        if world == 1:
            n_records, n_micro = len(shard), len(micros)
        else:  # every process runs as many micro-batches as the busiest one (zero-weight passes fill in)
            counts = accelerator.gather(torch.tensor([[len(shard), len(micros)]], device=device))
            n_records, n_micro = int(counts[:, 0].sum()), int(counts[:, 1].max())
        if not n_records:  # a streamed step whose records were all skipped as bad, on every process
            continue
        if step < start:  # done before the run was interrupted
            step += 1
            continue
        if before_step is not None:
            before_step(micros)
        stats = torch.zeros(4, device=device)  # loss sum, correct, margin sum, zero-weight passes
        for j in range(n_micro):
            micro = micros[j] if j < len(micros) else []
            # A process with no records left still runs a zero-weight pass so gradient sync lines up.
            weight = 1.0 if micro else 0.0
            # DDP decides in the forward whether the next backward all-reduces, so the forward must run
            # inside no_sync too: only the last micro-batch of a step synchronises gradients.
            last = j == n_micro - 1
            sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
            with sync:
                losses, correct, margin = micro_loss(micro or [planned.stand_in])
                losses = losses * weight
                if deepspeed:
                    # DeepSpeed steps its engine (clip, update, zero the gradients) inside backward at an
                    # accumulation boundary (accelerate's DeepSpeedEngineWrapper): only the step's last micro-batch
                    # is one. accelerate's own `accumulate` counts a fixed number of micro-batches; ours varies.
                    accelerator.gradient_state._set_sync_gradients(last)
                accelerator.backward(losses.sum() * world / n_records)
            stats += torch.tensor([losses.detach().sum().item(), correct * weight, margin * weight, 1.0 - weight],
                                  device=device)
        stats = accelerator.reduce(stats, "sum")
        loss, acc, margin = (stats[:3] / n_records).tolist()
        # (under DeepSpeed the engine has already clipped and stepped; this reads its gradient norm)
        grad_norm = (accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                     if cfg.max_grad_norm > 0 else torch.tensor(float("nan")))
        grad_norm = torch.tensor(float("nan")) if grad_norm is None else grad_norm
        finite = math.isfinite(loss) and (cfg.max_grad_norm <= 0 or math.isfinite(float(grad_norm)))
        lr = scheduler.get_last_lr()[0]  # the rate this step's update uses (read before the scheduler moves on)
        if finite:
            optimizer.step()
            scheduler.step()
            bad = 0
        else:
            bad += 1
        optimizer.zero_grad(set_to_none=True)
        step += 1
        record = {"step": step, "epoch": epoch, "split": "train", "loss": loss, "accuracy": acc,
                  "margin": margin, "lr": lr, "grad_norm": float(grad_norm), "records": n_records,
                  "step_s": round(time.perf_counter() - step_started, 3), "elapsed_s": round(time.time() - started, 2)}
        if world > 1:
            record["grad_syncs"], syncs[0] = syncs[0], 0
            record["empty_passes"] = int(stats[3])  # zero-weight passes of processes with no records left
        if not finite:
            record["skipped"] = True
        history.append(record)
        if step % cfg.log_every == 0 or step == total_steps or not finite:
            run.log(record)
        if bad >= cfg.max_bad_steps:
            from rewardkit.run import latest_checkpoint

            last = latest_checkpoint(run.dir)
            skipped = sum(1 for r in history if r.get("skipped"))
            raise TrainingDiverged(
                f"the loss or gradient was not finite for {bad} steps in a row (step {step}, epoch {epoch}; "
                f"{skipped} steps skipped in all, each logged in metrics.jsonl). Lower --learning-rate (now "
                f"{cfg.learning_rate}) or check the data for extreme inputs. "
                + (f"Last checkpoint written after a finite step: {last} (--resume {last}); one step can blow the "
                   "weights up and still be finite, so evaluate it before resuming from it." if last else
                   "No checkpoint was written (--save-every N writes them)."))
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.2f}")
        if cfg.eval_every and step % cfg.eval_every == 0 and step != total_steps:
            run_eval(step)
            model.train()
        if cfg.save_every and finite and (step % cfg.save_every == 0 or step == total_steps):
            run.save(step, save_model, optimizer, scheduler, gather=gather)
    bar.close()
    return history


def chosen_longer(ex: PreferenceExample) -> bool | None:
    """For a strict pair: is the chosen reply longer (characters) than the rejected? None for ties, rankings
    and equal lengths (``length_balance_weights`` leaves those at weight 1)."""
    if len(ex.completions) != 2 or ex.is_tie:
        return None
    a, b = (len(completion_text(c)) for c in (ex.chosen, ex.rejected))
    return None if a == b else a > b


def check_records(examples: list[PreferenceExample], cfg: TrainConfig) -> None:
    """Refuse, before any compute, records the chosen loss cannot train on (first offender named)."""
    for ex in examples:
        check_record(cfg.loss, len(ex.completions), any(t for _, _, t in ex.preference_pairs()), ex.margin, ex.source,
                     all_tied=ex.is_tie, unordered=bool(ex.unordered))


def completion_lengths(micro: list[Item], device: torch.device) -> torch.Tensor:
    """The lengths (characters) of a micro-batch's completions, in the order of its concatenated rewards."""
    return torch.tensor([n for it in micro for n in it.char_lengths], dtype=torch.float32, device=device)


def refit_gate(accelerator: Accelerator, model: Any, items: list[Item], aspects: list[str], cfg: TrainConfig,
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
            budget = micro_batch_token_budget(cfg.micro_batch_tokens, accelerator.device)
            for micro in micro_batches(items[rank::world], cfg.micro_batch_size, budget):
                captured.clear()
                rewards = group_rewards(model, [it.ids for it in micro], pad_id, shared=cfg.prefix_sharing,
                                        padding_side=cfg.padding_side, all_heads=True)
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


def records_loss(cfg: TrainConfig, records: list[PreferenceExample], pairs: list[list[tuple[int, int, bool]]],
                 rewards: list[torch.Tensor]) -> tuple[torch.Tensor, float, float]:
    """Per-record losses of the configured loss, plus (records ordered right, summed best-minus-worst margin)
    for the log; shared by the classifier RM and the GenRM training loops."""
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


def loss_floor(cfg: TrainConfig, records: list[PreferenceExample]) -> float | None:
    """The lowest mean loss the data allows, when the loss's chance level is log 2 (bt, bt_softplus, balanced);
    None for losses whose chance level is elsewhere (margin, Plackett-Luce).

    A record whose completions are all tied trains toward Δr = 0, where its loss is log 2; with label
    smoothing ε a strict pair's loss cannot go below the binary entropy H(ε). So a tie-heavy dataset
    cannot reach 0, and "not learning" must be judged against this floor, not against 0.
    """
    if cfg.loss not in ("bt", "bt_softplus", "balanced") or not records or cfg.length_debias == "odin":
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


def summary_lines(report: dict[str, Any]) -> str:
    lines = [f"run: {report['run_dir']}  steps: {report['steps']}  wall time: {report['wall_time_s']:.0f} s"]
    for label in ("before", "after"):
        m = report.get(label)
        if m:
            lines.append(f"held-out accuracy {label:>6}: {m['accuracy']:.4f}  (ece {m['ece']:.4f}, "
                         f"length baseline {m['length_baseline_accuracy']:.4f}, {m['pairs']} pairs)")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "–" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def render_report(report: dict[str, Any]) -> str:
    out = ["# rewardkit training report", "", "```", summary_lines(report), "```", "",
           f"- train data: {report['train_data']['source']} ({report['train_data']['loaded']} pairs loaded, "
           f"skipped: {report['train_data']['skipped'] or 'none'})",
           f"- truncated sequences: {report['train_truncation']}",
           f"- train loss: first step {report['first_train_loss']:.4f}, last step {report['last_train_loss']:.4f}",
           "", "| metric | before | after |", "|---|---|---|"]
    before, after = report.get("before") or {}, report.get("after") or {}
    for key in ("accuracy", "ties", "mean_margin", "ece", "brier", "length_baseline_accuracy", "reward_mean", "reward_std"):
        if key in after:
            out.append(f"| {key} | {_fmt(before.get(key))} | {_fmt(after.get(key))} |")
    return "\n".join(out) + "\n"
