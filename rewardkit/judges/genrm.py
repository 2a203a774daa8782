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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed

from rewardkit.config import TrainConfig, to_dict
from rewardkit.errors import UserError
from rewardkit.judges.judge import JUDGE_METADATA_FILE, Judge, JudgeScorer, load_judge
from rewardkit.judges.templates import _UNSET
from rewardkit.model import freeze_lower_layers
from rewardkit.run import Run, configure_deepspeed, load_weights, shards_parameters
from rewardkit.training.common import (
    Records,
    base_report,
    changes_line,
    check_train_config,
    eval_spec,
    held_out,
    learning_warning,
    load_examples,
    loss_floor,
    make_optimizer,
    make_scheduler,
    memory_plan,
    start_accelerator,
    total_steps,
    write_report,
)
from rewardkit.training.loop import optimise
from rewardkit.training.objectives import Verifier, genrm_rewards

__all__ = ["GenRMConfig", "genrm_rewards", "save_genrm", "train_genrm"]


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

    def __post_init__(self) -> None:
        super().__post_init__()
        for flag, unsupported in (
                ("--aspects", "is implemented for classifier reward models (rewardkit train), not GenRMs"
                 if self.aspects else None),
                ("--streaming", "is implemented for classifier reward models (rewardkit train), not GenRMs; GenRM "
                 "training reads its data into memory" if self.streaming else None),
                ("--lora-r", "is not implemented for GenRM training yet (the LM head would need the adapter too); "
                 "train a GenRM with --trainable-layers N for a cheaper partial fine-tune" if self.lora_r else None),
                ("--template", "does not apply: a GenRM is rendered with its judge template; set --judge-template, "
                 "not --template" if self.template != "auto" else None),
                ("--route", "does not apply: a GenRM reads its verdict from padded batches (left padding, last column)"
                 if self.route not in ("auto", "padded") else None)):
            if unsupported:
                raise UserError(f"{flag} {unsupported}")


def train_genrm(cfg: GenRMConfig) -> dict[str, Any]:
    """Fine-tune a causal LM so that its verifier P(Yes) ranks chosen above rejected (eq. 3 on logit P(Yes)).

    The recipe of ``rewardkit.train`` with the :class:`rewardkit.training.objectives.Verifier` objective: the
    same records, loop, run folder, checkpoints and resume; the model stays a plain causal LM."""
    accelerator, precision = start_accelerator(cfg)
    say, world = accelerator.print, accelerator.num_processes
    set_seed(cfg.seed)
    check_train_config(cfg)
    if shards_parameters(accelerator):
        raise UserError(f"GenRM training under {accelerator.distributed_type} with sharded parameters is not supported "
                        "(its checkpoint is written from whole weights): use DDP or DeepSpeed ZeRO-2")
    run = Run.open(accelerator, cfg, "genrm-%Y%m%d-%H%M%S")
    started = time.time()

    # ---- model, objective and data
    system = _UNSET if cfg.judge_system_prompt is None else cfg.judge_system_prompt
    judge = load_judge(cfg.model, kind="verifier", template=cfg.judge_template, system_prompt=system,
                       max_length=cfg.max_length, dtype=cfg.torch_dtype)
    model, tokenizer = judge.model, judge.tokenizer
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    objective = Verifier(cfg, tokenizer.pad_token_id, judge.verdicts, accelerator.device)
    train_ex, train_report = load_examples(cfg.train_data, cfg, "train")
    spec = eval_spec(cfg)
    eval_ex, eval_report = load_examples(spec, cfg, "eval") if spec else ([], None)
    n_trainable = freeze_lower_layers(model, cfg.trainable_layers)
    records = Records(cfg, objective, lambda examples, stats: verifier_prompts(judge, examples, stats, cfg.seed))
    items = records.items(train_ex)  # one verifier prompt per completion, as eval and serve render them
    say(train_report.summary())
    if records.changes:
        say(changes_line(records.changes, len(items)))
    if eval_report:
        say(eval_report.summary())
    say(f"train: {records.truncation.summary()} (judge prompts)")
    say(f"verdict tokens: {judge.verdicts.to_dict()}")
    say(f"trainable parameters: {n_trainable:,} of {sum(p.numel() for p in model.parameters()):,}")
    say(f"processes: {world} ({accelerator.distributed_type}), device: {accelerator.device}")
    run.begin(to_dict(cfg))

    # ---- optimisation
    steps = total_steps(cfg, len(items))
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps)
    configure_deepspeed(accelerator, cfg.micro_batch_size, cfg.max_grad_norm)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    eval_judge = Judge(accelerator.unwrap_model(wrapped), tokenizer, judge.template, judge.max_length, cfg.model)
    resumed = run.resume(lambda folder: load_weights(eval_judge.model, folder), optimizer, scheduler)
    if resumed:
        say(f"resumed from {resumed.checkpoint} at step {resumed.step} of {steps}")
    evaluate = held_out(accelerator, run, JudgeScorer(eval_judge, seed=cfg.seed), eval_ex, cfg.seed)
    first = None if resumed or not cfg.eval_before else evaluate(0)
    before = resumed.evals.get(0) if resumed else (first.result if first else None)

    def save(folder: Path, state: Any, evaluation: Any) -> None:
        r = evaluation.result if evaluation else {}
        save_genrm(folder, eval_judge, base_model=cfg.model, reward_mean=r.get("reward_mean"),
                   reward_std=r.get("reward_std"))

    loop = optimise(accelerator, wrapped, optimizer, scheduler, cfg, objective,
                    memory_plan(cfg, items, accelerator.process_index, world), steps, run=run, evaluate=evaluate,
                    save=save, started=started, resumed=resumed, desc="train genrm", last_eval=first)
    last = evaluate(loop.step)
    after = last.result if last else None

    # ---- the checkpoint and the report
    warning = learning_warning(loop.history, before, after, loss_floor=loss_floor(cfg, train_ex))
    if warning:
        say(f"WARNING: {warning}")
    report = base_report(cfg, run, loop, warning=warning, wall=time.time() - started, processes=world,
                         train_data=train_report, changes=records.changes, eval_data=eval_report,
                         truncation=records.truncation, before=before, after=after, resumed=resumed,
                         precision=precision)
    accelerator.wait_for_everyone()
    run.save_final(lambda folder: save(folder, None, last or loop.last_eval or first), JUDGE_METADATA_FILE)
    write_report(run, report, title="rewardkit GenRM training report")
    run.close()
    accelerator.wait_for_everyone()
    return report


def verifier_prompts(judge: Judge, examples: list[Any], stats: Any, seed: int) -> list[list[list[int]]]:
    """Each record's verifier prompts (one per completion), rendered as ``eval`` and ``serve`` render them."""
    prepared = JudgeScorer(judge, seed=seed).prepare(examples)
    for t in prepared.truncation:
        stats.merge(t)
    flat = iter(prepared.payload["ids"])
    return [[next(flat) for _ in ex.completions] for ex in examples]


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
