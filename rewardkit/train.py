"""Train a classifier reward model: the recipe, top to bottom.

load the backbone → pick the objective (``rewardkit.training.objectives``: pairwise, ODIN or aspect heads) →
read and tokenize the records → run the loop (``rewardkit.training.loop``) on a :class:`rewardkit.run.Run` →
fit what is fitted after training → save a standard Hugging Face checkpoint → write the report.

A record is a pair or a K-wise ranking; its loss is one of ``rewardkit.losses`` (eq. 3–6, Plackett-Luce)
chosen by ``TrainConfig.loss``. How a step is taken (micro-batches, gradient sync, the non-finite policy) is
the loop's; what is shared with the GenRM recipe is in ``rewardkit.training.common``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed

from rewardkit.batching import Encoder
from rewardkit.checkpoint import METADATA_FILE, save_checkpoint
from rewardkit.config import TrainConfig, to_dict
from rewardkit.data import ReadReport
from rewardkit.data.readers import merge_reports
from rewardkit.errors import UserError
from rewardkit.heads import parse_aspects
from rewardkit.inference import RewardModelScorer
from rewardkit.lora import ADAPTER_DIR, apply_lora, load_adapter_weights
from rewardkit.model import fit_max_length, freeze_lower_layers, load_reward_model
from rewardkit.run import (
    Run,
    configure_deepspeed,
    full_state_dict,
    load_weights,
    shards_parameters,
)
from rewardkit.sharing import sharing_unsupported_reason
from rewardkit.training.common import (
    STATS_RECORDS,
    Records,
    base_report,
    changes_line,
    check_train_config,
    eval_spec,
    eval_stats,
    held_out,
    learning_warning,
    load_examples,
    loss_floor,
    make_optimizer,
    make_scheduler,
    memory_plan,
    prefix_sharing_summary,
    reward_statistics,
    start_accelerator,
    stream_plan,
    stream_window,
    streamed_total_steps,
    total_steps,
    write_eval_rewards,
    write_report,
)
from rewardkit.training.loop import TrainingDiverged, optimise
from rewardkit.training.objectives import Objective, classifier_objective

__all__ = ["TrainingDiverged", "train"]


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train a classifier reward model on a :class:`rewardkit.run.Run`; returns the report."""
    accelerator, precision = start_accelerator(cfg)
    say, rank, world = accelerator.print, accelerator.process_index, accelerator.num_processes
    set_seed(cfg.seed)
    check_train_config(cfg)
    aspects = parse_aspects(cfg.aspects)
    check_sharding(accelerator, cfg, aspects)
    run = Run.open(accelerator, cfg, "%Y%m%d-%H%M%S")
    started, clock = time.time(), run.clock

    # ---- model and objective
    with clock.phase("load_model"):
        model, tokenizer = load_reward_model(cfg.model, dtype=cfg.torch_dtype, head_init=cfg.head_init)
    objective = classifier_objective(cfg, tokenizer.pad_token_id, accelerator, aspects)
    objective.prepare_model(model)  # before LoRA, so peft's trainable copy of the head has every output
    lora = apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules) if cfg.lora_r else None
    n_trainable = (sum(p.numel() for p in model.parameters() if p.requires_grad) if lora
                   else freeze_lower_layers(model, cfg.trainable_layers))
    if cfg.gradient_checkpointing:
        model.hf.activation_checkpointing_enable({"use_reentrant": False})
    explicit = cfg.max_length != TrainConfig.max_length  # a length asked for is refused if too long, a default lowered
    encoder = Encoder(tokenizer, max_length=fit_max_length(model.hf, cfg.max_length, explicit=explicit, name=cfg.model),
                      template=cfg.template)

    # ---- data
    records = Records(cfg, objective, lambda examples, stats: objective.encode(encoder, examples, stats))
    eval_ex, eval_report, train_ex, train_report, items, steps = read_data(cfg, records, clock, say)
    if cfg.prefix_sharing:
        why_not = sharing_unsupported_reason(model)
        say(f"prefix sharing: {'off (' + why_not + ')' if why_not else 'on (each prompt computed once, groups packed)'}")
    say(f"trainable parameters: {n_trainable:,} of {sum(p.numel() for p in model.parameters()):,}")
    say(f"processes: {world} ({accelerator.distributed_type}), device: {accelerator.device}")
    run.begin(to_dict(cfg))

    # ---- optimisation
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps)
    configure_deepspeed(accelerator, cfg.micro_batch_size, cfg.max_grad_norm)
    model, optimizer = accelerator.prepare(model, optimizer)
    plain = accelerator.unwrap_model(model)
    resumed = run.resume(lambda folder: load_adapter_weights(lora, folder / ADAPTER_DIR) if lora else
                         load_weights(plain.hf, folder, transform=objective.load_transform(folder)), optimizer, scheduler)
    if resumed:
        say(f"resumed from {resumed.checkpoint} at step {resumed.step} of {steps}")
    eval_scorer = RewardModelScorer(plain, encoder, name=cfg.model, kind="training", progress=run.main,
                                    padding_side=cfg.padding_side, prefix_sharing=cfg.prefix_sharing, route=cfg.route,
                                    aspects=aspects, gate_scale=cfg.aspect_gate_scale,
                                    step_marker=cfg.step_marker if cfg.objective == "prm" else None,
                                    aggregate=cfg.aggregate)
    evaluate = held_out(accelerator, run, eval_scorer, eval_ex, cfg.seed, clock)
    first = None if resumed or not cfg.eval_before else evaluate(0)
    before = resumed.evals.get(0) if resumed else (first.result if first else None)

    def save(folder: Path, state: dict[str, torch.Tensor] | None, evaluation: Any, final: bool = False,
             **stats: Any) -> None:
        with clock.phase("save"):
            save_model(folder, cfg, plain, tokenizer, encoder, objective, lora, state, final,
                       **(stats or eval_stats(evaluation)))

    def gather() -> dict[str, torch.Tensor] | None:  # on every process: the whole model when ZeRO-3 / FSDP shard it
        with clock.phase("save"):
            return full_state_dict(accelerator, model)

    plan = stream_plan(cfg, records, train_report, rank, world) if cfg.streaming else memory_plan(cfg, items, rank, world)
    loop = optimise(accelerator, model, optimizer, scheduler, cfg, objective, plan, steps, run=run, evaluate=evaluate,
                    save=save, gather=gather, started=started, resumed=resumed, keep_rewards=STATS_RECORDS,
                    last_eval=first)
    changes, truncation = records.changes, records.truncation
    if cfg.streaming:  # every process read its own shard: add the counts up
        train_report = merge_reports(gather_object([train_report]))
        changes, truncation = records.gathered()
        say(train_report.summary())
        say(f"train: {truncation.summary()}")
    with clock.phase("gate_refit") if aspects else contextlib.nullcontext():
        fitted = objective.after_training(accelerator, plain, items)
    if fitted and "line" in fitted:
        say(fitted["line"])
    last = evaluate(loop.step)
    after, latest = (last.result if last else None), last or loop.last_eval or first

    # ---- reward statistics (for normalised scores), the checkpoint and the report
    if after:
        stats_source, reward_mean, reward_std = "eval", after["reward_mean"], after["reward_std"]
    else:
        with clock.phase("reward_stats"):
            stats_source, reward_mean, reward_std = reward_statistics(
                accelerator, cfg, eval_scorer, train_ex, [(s, r.float().cpu().numpy()) for s, r in loop.recent_rewards],
                loop.step, loop.records)
    warning = learning_warning(loop.history, before, after, loss_floor=loss_floor(cfg, train_ex or []))
    if warning:
        say(f"WARNING: {warning}")
    report = base_report(cfg, run, loop, warning=warning, wall=time.time() - started, processes=world,
                         train_data=train_report, changes=changes, eval_data=eval_report, truncation=truncation,
                         before=before, after=after, resumed=resumed, precision=precision)
    report.update({  # what ran, as the code reports it (not the flags)
        "prefix_sharing": prefix_sharing_summary(loop.paths),
        "eval_scoring_path": latest.path if latest else None,
        "gradient_checkpointing": bool(getattr(plain.hf, "is_activation_checkpointing", False)),
        "weights_dtype": str(next(plain.parameters()).dtype).removeprefix("torch."),
        "gate_refit": fitted["summary"] if fitted else None,
    })
    accelerator.wait_for_everyone()
    run.save_final(lambda folder, state: save(folder, state, None, final=True, reward_mean=reward_mean,
                                              reward_std=reward_std, reward_stats_source=stats_source),
                   METADATA_FILE, gather=gather)
    report["timings_s"] = clock.summary([r["step_s"] for r in loop.history if "step_s" in r])  # saving included
    if run.main and last:
        write_eval_rewards(run.dir, eval_ex, last.rewards)
    write_report(run, report)
    run.close()
    accelerator.wait_for_everyone()
    return report


def read_data(cfg: TrainConfig, records: Records, clock: Any, say: Any) -> tuple[Any, ...]:
    """(held-out records, their read report, training records, their report, training items, optimizer steps);
    with ``--streaming`` the training records and items are None (the plan reads them a window at a time)."""
    spec = eval_spec(cfg)
    with clock.phase("read_and_tokenize"):
        eval_ex, eval_report = load_examples(spec, cfg, "eval") if spec else ([], None)
    train_ex = items = None
    if cfg.streaming:
        train_report = ReadReport(source=cfg.train_data)
        steps, raw_count = streamed_total_steps(cfg)
        say(f"train: streamed from {cfg.train_data}, {stream_window(cfg)} raw records at a time"
            + (f" ({raw_count:,} raw records)" if raw_count is not None else ""))
    else:
        with clock.phase("read_and_tokenize"):
            train_ex, train_report = load_examples(cfg.train_data, cfg, "train")
            items = records.items(train_ex)
        steps = total_steps(cfg, len(items))
        say(train_report.summary())
        if records.changes:
            say(changes_line(records.changes, len(items)))
        say(f"train: {records.truncation.summary()}")
    if eval_report:
        say(eval_report.summary())
    return eval_ex, eval_report, train_ex, train_report, items, steps


def check_sharding(accelerator: Accelerator, cfg: TrainConfig, aspects: list[str]) -> None:
    """Refuse what cannot be saved when no process holds the whole model (ZeRO-3, FSDP)."""
    if shards_parameters(accelerator) and (cfg.lora_r or cfg.length_debias == "odin" or aspects):
        flag = "--lora-r" if cfg.lora_r else "--length-debias odin" if cfg.length_debias == "odin" else "--aspects"
        raise UserError(f"{flag} with sharded parameters ({accelerator.distributed_type}): saving merges or splits "
                        "the head from whole weights, which no process holds. Use DDP or DeepSpeed ZeRO-2 "
                        "(configs/accelerate/)")


def save_model(folder: Path, cfg: TrainConfig, model: Any, tokenizer: Any, encoder: Encoder, objective: Objective,
               lora: Any, state: dict[str, torch.Tensor] | None, final: bool, **stats: Any) -> None:
    """The checkpoint: the model as a standard HF folder with the objective's head layout and metadata. Periodic
    checkpoints of a LoRA run are always merged + adapter (loadable, and resumable from the adapter)."""
    lora_save = cfg.lora_save if final else "merged"
    lora_meta = ({"lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                           "target_modules": cfg.lora_target_modules, "saved": lora_save}} if lora else {})
    save_checkpoint(folder, model, tokenizer, encoder, state=state, lora_adapter=lora, lora_save=lora_save,
                    base_model=cfg.model, padding_side=cfg.padding_side, **objective.checkpoint_options(),
                    **lora_meta, **stats)
