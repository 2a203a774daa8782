"""A trained generative verifier (GenRM-style): the LM's own P(Yes) is the reward, trained with Bradley-Terry.

The model stays a plain causal LM. For (x, y) it reads the verifier template (``rewardkit.judges.templates``)
and the reward is r(x, y) = log P(Yes) − log P(No), the logit of P(Yes) renormalised over {Yes, No}, read
from the next-token distribution after the generation prompt (``verdict_logprobs``). Training minimises the
Bradley-Terry loss (eq. 3) on r(x, y_w) − r(x, y_l): the same data, loss, batching and schedule as the
classifier RM (``rewardkit.train``), and no new head. Every loss of ``rewardkit.losses`` applies (``--loss``;
eq. 3 by default), pairs or K-wise rankings, and ``--trainable-layers`` gives the same partial fine-tune.

Why this and not a critique-then-score model: HH-style data has preferences, not critiques, so a critique
model would need critiques we do not have (or ones we generate ourselves, untested), and generating a
critique per response makes every score cost a decode on CPU. Why Bradley-Terry on logit P(Yes) and not
the next-token loss of Zhang et al. 2024 ("Generative Verifiers", chosen → "Yes", rejected → "No"): the
rejected reply of a pair is often fine in absolute terms, so labelling it "No" teaches the wrong thing;
the pairwise loss only asks that the chosen reply get the higher P(Yes), exactly what the classifier RM
is asked, so the two are comparable. The price: BT is invariant to shifting both rewards, so absolute
P(Yes) is not anchored (it is whatever the pretrained judge said, moved by training); report it, do not
threshold it.

The run folder is ``<output_dir>/<run_name>/`` with ``train_config.json``, ``metrics.jsonl``,
``report.json``/``report.md``, and the checkpoint: a standard Hugging Face causal-LM folder
(``AutoModelForCausalLM.from_pretrained(run)`` loads it) plus ``rewardkit_judge.json`` recording the
template, the verdict tokens and max_length, so ``load_judge(run)`` scores exactly as in training.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed

from rewardkit.batching import TruncationStats, pad_batch
from rewardkit.config import TrainConfig, to_dict
from rewardkit.errors import UserError
from rewardkit.evaluate import metrics_from_rewards
from rewardkit.judges.judge import (
    JUDGE_METADATA_FILE,
    Judge,
    JudgeScorer,
    VerdictTokens,
    load_judge,
    verdict_logprobs,
)
from rewardkit.judges.templates import _UNSET
from rewardkit.model import freeze_lower_layers
from rewardkit.plan import Item, memory_steps
from rewardkit.run import Run, configure_deepspeed, load_weights, make_accelerator, shards_parameters
from rewardkit.train import (
    check_records,
    check_train_config,
    learning_warning,
    load_examples,
    loss_floor,
    make_optimizer,
    make_scheduler,
    optimise,
    prepare_records,
    records_loss,
    render_report,
    sharded_rewards,
    summary_lines,
)


@dataclass
class GenRMConfig(TrainConfig):
    """``TrainConfig`` (same data, schedule and run folder) plus the verifier template.

    ``template`` must stay ``auto`` (the judge template is used instead) and batches are always padded on
    the left (the verdict is read at the last column); ``padding_side`` does not apply.
    """

    judge_template: str | None = field(default=None, metadata={"help": "Verifier template: a file (.txt = the user "
                                       "message; .yaml/.json = all fields) or the text itself, with {prompt} and "
                                       "{response}. Default: the built-in verifier template (docs/judges.md)."})
    judge_system_prompt: str | None = field(default=None, metadata={"help": "System prompt for the judge (file or "
                                            "text; '' for none). Default: the template's."})
    length_debias: str = field(default="none", metadata={"help": "Length debiasing is implemented for classifier "
                               "reward models (rewardkit train, default 'balance'), not GenRMs: 'none' only.",
                               "choices": ("none",), "within": None})


def genrm_rewards(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, verdicts: VerdictTokens) -> torch.Tensor:
    """r = log P(Yes) − log P(No) for left-padded verifier prompts (differentiable)."""
    logp, _ = verdict_logprobs(model, ids, mask, verdicts)
    return logp[:, verdicts.labels.index("Yes")] - logp[:, verdicts.labels.index("No")]


def train_genrm(cfg: GenRMConfig) -> dict[str, Any]:
    """Fine-tune a causal LM so that its verifier P(Yes) ranks chosen above rejected (eq. 3 on logit P(Yes)).

    The same recipe as ``rewardkit.train.train`` on the same :class:`rewardkit.run.Run` (checkpoints,
    resume, trackers, non-finite steps); what differs is the model, the encoding and the reward."""
    accelerator = make_accelerator(cfg.mixed_precision)
    main, say = accelerator.is_main_process, accelerator.print
    set_seed(cfg.seed)
    check_train_config(cfg)
    if shards_parameters(accelerator):
        raise UserError(f"GenRM training under {accelerator.distributed_type} with sharded parameters is not supported "
                        "(its checkpoint is written from whole weights): use DDP or DeepSpeed ZeRO-2")
    if cfg.length_debias != "none" or cfg.aspects:
        raise UserError(f"{'--aspects' if cfg.aspects else '--length-debias'} is implemented for classifier reward "
                        "models (rewardkit train), not GenRMs")
    if cfg.streaming:
        raise UserError("--streaming is implemented for classifier reward models (rewardkit train), not GenRMs; "
                        "GenRM training reads its data into memory")
    if cfg.lora_r:
        raise UserError("--lora-r is not implemented for GenRM training yet (the LM head would need the adapter "
                        "too); train a GenRM with --trainable-layers N for a cheaper partial fine-tune")
    if cfg.template != "auto":
        raise UserError("a GenRM is rendered with its judge template; set --judge-template, not --template")
    run = Run.open(accelerator, cfg, "genrm-%Y%m%d-%H%M%S")
    started = time.time()

    # ---- model and data
    system = _UNSET if cfg.judge_system_prompt is None else cfg.judge_system_prompt
    judge = load_judge(cfg.model, kind="verifier", template=cfg.judge_template, system_prompt=system,
                       max_length=cfg.max_length)
    model, tokenizer = judge.model, judge.tokenizer
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    train_ex, train_report = load_examples(cfg.train_data, cfg, "train")
    eval_spec = cfg.eval_data or (cfg.train_data if cfg.train_data.startswith("builtin:") else None)
    eval_ex, eval_report = load_examples(eval_spec, cfg, "eval") if eval_spec else ([], None)
    n_trainable = freeze_lower_layers(model, cfg.trainable_layers)
    train_ex, changes = prepare_records(train_ex, cfg)
    check_records(train_ex, cfg)
    prepared = JudgeScorer(judge, seed=cfg.seed).prepare(train_ex)  # the verifier prompts eval and serve use
    flat = iter(prepared.payload["ids"])
    train_truncation = TruncationStats()
    for t in prepared.truncation:
        train_truncation.merge(t)
    encoded = [[next(flat) for _ in ex.completions] for ex in train_ex]  # one verifier prompt per completion
    pairs = [ex.preference_pairs() for ex in train_ex]
    say(train_report.summary())
    if changes:
        say("records: " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in changes.items()) + f" → {len(train_ex)} records")
    if eval_report:
        say(eval_report.summary())
    say(f"train: {train_truncation.summary()} (judge prompts)")
    say(f"verdict tokens: {judge.verdicts.to_dict()}")
    say(f"trainable parameters: {n_trainable:,} of {sum(p.numel() for p in model.parameters()):,}")
    say(f"processes: {accelerator.num_processes} ({accelerator.distributed_type}), device: {accelerator.device}")
    run.begin(to_dict(cfg))

    # ---- optimisation (the loop of rewardkit.train, with r = logit P(Yes) instead of a scalar head)
    items = [Item(ex, ids, p) for ex, ids, p in zip(train_ex, encoded, pairs)]
    total_steps = cfg.max_steps or math.ceil(len(items) / cfg.batch_size) * cfg.epochs
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, total_steps)
    configure_deepspeed(accelerator, cfg.micro_batch_size, cfg.max_grad_norm)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    device, pad_id = accelerator.device, tokenizer.pad_token_id
    world = accelerator.num_processes
    eval_judge = Judge(accelerator.unwrap_model(wrapped), tokenizer, judge.template, judge.max_length, cfg.model)
    scorer = JudgeScorer(eval_judge, seed=cfg.seed)
    resumed = run.resume(lambda folder: load_weights(eval_judge.model, folder), optimizer, scheduler)
    if resumed:
        say(f"resumed from {resumed.checkpoint} at step {resumed.step} of {total_steps}")
    last_eval: dict[str, Any] = {}

    def run_eval(step: int) -> dict[str, Any] | None:
        if not eval_ex:
            return None
        result = metrics_from_rewards(eval_ex, sharded_rewards(accelerator, scorer, eval_ex)[0], seed=cfg.seed)
        last_eval.update(step=step, result=result)
        run.log({"step": step, "split": "eval", **result})
        say(f"[eval step {step}] accuracy {result['accuracy']:.4f}  ece {result['ece']:.4f}  "
            f"margin {result['mean_margin']:+.3f}  (length baseline {result['length_baseline_accuracy']:.4f})")
        return result

    def save_model(folder: Path) -> None:
        r = last_eval.get("result") or {}
        save_genrm(folder, eval_judge, base_model=cfg.model, reward_mean=r.get("reward_mean"),
                   reward_std=r.get("reward_std"))

    before = resumed.evals.get(0) if resumed else (run_eval(0) if cfg.eval_before else None)
    def micro_loss(micro: list[Item]) -> tuple[torch.Tensor, float, float]:
        ids, mask = pad_batch([q for it in micro for q in it.ids], pad_id, "left")
        flat_rewards = genrm_rewards(wrapped, ids.to(device), mask.to(device), judge.verdicts)
        rewards = flat_rewards.split([len(it.ids) for it in micro])
        return records_loss(cfg, [it.example for it in micro], [it.pairs for it in micro], rewards)

    steps = memory_steps(items, cfg.batch_size, np.random.default_rng(cfg.seed), cfg.group_by_length,
                         accelerator.process_index, world, cfg.epochs, cfg.max_steps)
    history = optimise(accelerator, wrapped, optimizer, scheduler, cfg, steps, total_steps, micro_loss, run=run,
                       run_eval=run_eval, save_model=save_model, started=started, resumed=resumed, desc="train genrm")
    step = len(history)
    after = run_eval(step)

    wall = time.time() - started
    warning = learning_warning(history, before, after, loss_floor=loss_floor(cfg, train_ex))
    if warning:
        say(f"WARNING: {warning}")
    report = {
        "warning": warning, "run_dir": str(run.dir), "config": to_dict(cfg), "steps": step,
        "wall_time_s": round(wall, 1), "processes": world, "train_data": train_report.to_dict(),
        "record_changes": changes, "eval_data": eval_report.to_dict() if eval_report else None, "train_truncation": train_truncation.to_dict(), "before": before, "after": after,
        "first_train_loss": history[0]["loss"] if history else None,
        "last_train_loss": history[-1]["loss"] if history else None,
        "skipped_steps": sum(1 for r in history if r.get("skipped")),
        "resumed_from": str(resumed.checkpoint) if resumed else None,
    }
    accelerator.wait_for_everyone()
    run.save_final(save_model, JUDGE_METADATA_FILE)
    if main:
        (run.dir / "report.json").write_text(json.dumps(report, indent=2))
        (run.dir / "report.md").write_text(render_report(report).replace("# rewardkit training report",
                                                                         "# rewardkit GenRM training report"))
        say(summary_lines(report))
    run.close()
    accelerator.wait_for_everyone()
    return report


def save_genrm(folder: str | Path, judge: Judge, **metadata: Any) -> Path:
    """A standard causal-LM folder + ``rewardkit_judge.json`` (kind, template, verdict tokens, max_length)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    judge.model.config.pad_token_id = judge.tokenizer.pad_token_id
    judge.model.save_pretrained(folder)
    judge.tokenizer.save_pretrained(folder)
    template = judge.template.to_dict()
    template.pop("source")
    meta = {"kind": judge.template.kind, "reward": "log P(Yes) - log P(No) over {Yes, No} after the template",
            "template": template, "verdict_tokens": judge.verdicts.to_dict(), "max_length": judge.max_length,
            **metadata}
    (folder / JUDGE_METADATA_FILE).write_text(json.dumps(meta, indent=2))
    return folder
