"""Configs: dataclasses whose fields are the documentation. A YAML/JSON file and CLI flags are two
spellings of the same dataclass (``--learning-rate 1e-5`` == ``learning_rate: 1e-5``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rewardkit.errors import ConfigError

T = TypeVar("T")

# The training losses (rewardkit.losses implements them); here so the config can check --loss without torch.
LOSS_NAMES = ("bt", "bt_softplus", "margin", "balanced", "plackett_luce")
HEAD_INITS = ("normal", "scaled", "zero")  # rewardkit.model.init_head_rows
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # rewardkit.precision decides what each means on the hardware
ROUTES = ("auto", "flex", "segments", "padded")  # rewardkit.sharing
ROUTE_HELP = ("How forward passes run: 'auto' (prefix sharing on the device's fastest exact route — flex on CUDA, "
              "segments on CPU — or padded where the model cannot share, reported), 'flex' (FlexAttention, compiled "
              "on GPU; falls back to segments with a warning if compiling fails), 'segments' (attention per group "
              "and block) or 'padded' (plain padded batches: the same as --no-prefix-sharing).")
PRECISION_HELP = ("Number format: 'auto' (bf16 where the hardware computes it natively — a CUDA GPU with bf16, a CPU "
                  "with avx512_bf16 or AMX — else fp32), 'fp32', 'bf16' or 'fp16' (GPUs). Training keeps fp32 master "
                  "weights under autocast; inference loads bf16 weights; the score head always computes in fp32. "
                  "The choice and its reason are printed and recorded (rewardkit.precision).")
OBJECTIVES = ("pairwise", "orm", "prm")  # rewardkit.training.objectives
AGGREGATES = ("min", "prod", "last", "mean")  # rewardkit.inference.scoring.aggregate_steps
AGGREGATE_HELP = ("Process reward models: how the steps' scores p_i = P(step i is right) become one score per "
                  "solution: 'min' (the weakest step; Lightman et al. 2023), 'prod' (every step right, Π p_i), "
                  "'last' (the final step's), 'mean'. Default: the rule the checkpoint records ('min').")
STEP_MARKER_HELP = ("Process reward models: the text that ends every step, tokenised on its own and appended to each "
                    "separately tokenised step; the step's reward is read at its last token. Recorded in the "
                    "checkpoint; a completion given as text is split into steps at it.")
# Fields that were renamed: a config file using the old name is told the new one.
RENAMED = {"mixed_precision": "precision ('no' is now 'fp32'; 'auto' picks bf16 on hardware that has it)"}


def _f(default: Any, help: str = "", *, choices: tuple[str, ...] | None = None, within: str | None = None) -> Any:
    """A field with its help text and, where it has one, its allowed values: ``choices`` (strings) or
    ``within``, an interval such as ``"[0, 0.5)"`` or ``"[1, inf)"`` (checked by :func:`check_fields`)."""
    if within is not None:
        _interval(within)  # a malformed range is a bug here, caught at import
    return field(default=default, metadata={"help": help, "choices": choices, "within": within})


_INTERVAL = re.compile(r"^([\[(])\s*(-inf|[-+0-9.e]+)\s*,\s*(inf|[-+0-9.e]+)\s*([\])])$")


def _interval(spec: str) -> tuple[float, float, bool, bool]:
    m = _INTERVAL.match(spec)
    if not m:
        raise AssertionError(f"malformed range {spec!r}")
    return float(m[2]), float(m[3]), m[1] == "[", m[4] == "]"


class ConfigBase:
    """Every config checks its fields' ranges and choices when it is built: from Python, YAML or flags."""

    def __post_init__(self) -> None:
        check_fields(self)
        if getattr(self, "route", None) is not None and hasattr(self, "prefix_sharing"):
            if self.route == "padded":
                self.prefix_sharing = False
            elif not self.prefix_sharing and self.route != "auto":
                raise ConfigError(f"--route {self.route} is a prefix-sharing route, and --no-prefix-sharing turns "
                                  "sharing off; pass one of them (--route padded is --no-prefix-sharing)")


def check_fields(config: Any) -> None:
    """The one place where a config's values are checked against their fields' ``choices`` and ``within``;
    the error names the field (as flag and YAML key) and what it accepts."""
    for f in dataclasses.fields(config):
        value, meta = getattr(config, f.name), f.metadata
        if value is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(f"{flag} ({f.name}) must be one of {', '.join(map(repr, meta['choices']))}; "
                              f"got {value!r}")
        if meta.get("within"):
            lo, hi, lo_closed, hi_closed = _interval(meta["within"])
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (value >= lo if lo_closed else value > lo) and (value <= hi if hi_closed else value < hi)
            if not ok:
                raise ConfigError(f"{flag} ({f.name}) must be in {meta['within']}; got {value!r}")


@dataclass
class TrainConfig(ConfigBase):
    model: str = _f("smollm2-135m", "Backbone: hub id, local folder, .gguf file, or built-in name 'smollm2-135m'.")
    train_data: str = _f("builtin:synthetic", "Training data: a file (.jsonl/.jsonl.gz/.json/.parquet/.csv, optionally sliced "
                         "like 'f.jsonl[:1000]'), a hub dataset id, or 'builtin:synthetic'.")
    eval_data: str | None = _f(None, "Held-out data (same forms). Default: the built-in held-out split when training on "
                               "builtin:synthetic, else none.")
    split: str = _f("train", "Split of --train-data when it is a hub dataset id or a saved dataset folder.")
    eval_split: str = _f("test,validation", "Split of --eval-data when it is a hub dataset id or a saved dataset "
                         "folder: the first of these comma-separated names that the dataset has.")
    max_length: int = _f(1024, within="[8, inf)", help="Tokens per sequence; longer ones lose prompt tokens from the left, never the completion's end.")
    template: str = _f("auto", choices=("auto", "chat", "raw"), help="'chat' (the tokenizer's chat template), 'raw' (Human:/Assistant: text) or 'auto'.")
    skip_bad_records: bool = _f(False, "Skip bad records (counted and reported) instead of stopping at the first one.")
    output_dir: str = _f("runs", "Runs are written to <output_dir>/<run_name>/.")
    run_name: str | None = _f(None, "Run folder name; default: a timestamp.")
    overwrite: bool = _f(False, "Replace an existing run folder of the same name (otherwise that is an error).")
    objective: str = _f("pairwise", choices=OBJECTIVES, help="What the model learns: 'pairwise' (a preference reward "
                        "model, --loss), 'orm' (an outcome reward model: P(solution is correct) at its last token, "
                        "pointwise BCE) or 'prm' (a process reward model: P(step is right) at every step's end, "
                        "per-step BCE). orm/prm read verifier data (docs/verifiers.md: TRL stepwise, ProcessBench, "
                        "PRMBench, outcome-labelled, GSM8K model solutions); --length-debias does not apply to them.")
    step_marker: str = _f("\n\n", STEP_MARKER_HELP)
    aggregate: str = _f("min", choices=AGGREGATES, help="With --objective prm: the aggregation rule the checkpoint "
                        "records for one score per solution (score, rerank, serve and eval can override it). "
                        + AGGREGATE_HELP.split(": ", 1)[1])
    prm_last_step_only: bool = _f(False, "With --objective prm: train on each solution's last labelled step only (an "
                                  "outcome label read at the final step) instead of every labelled step.")
    orm_ranking_coef: float = _f(0.0, within="[0, inf)", help="With --objective orm: add this times a within-problem "
                                 "ranking loss (eq. 6 over the pairs of a problem's solutions whose labels differ; "
                                 "V-STaR) to the pointwise BCE. Best-of-N ranks within a problem; BCE alone can learn "
                                 "which problems are hard instead (RESULTS.md, issue 34).")
    loss: str = _f("bt", choices=LOSS_NAMES, help="Training loss: 'bt' (eq. 3), 'bt_softplus' (eq. 4), 'margin' (eq. 5, needs margins), 'balanced' "
                   "(eq. 6: all C(K,2) pairs of a ranking weighted 1/C(K,2)) or 'plackett_luce' (K-wise).")
    label_smoothing: float = _f(0.0, within="[0, 0.5)", help="Label smoothing ε for noisy labels: pairwise target 1 − ε instead of 1 (bt, margin, balanced).")
    reward_center_coef: float = _f(0.0, within="[0, inf)", help="Reward centering c (Eisenstein et al. 2023): adds c·(r_w + r_l)² per pair.")
    reward_l2_coef: float = _f(0.0, within="[0, inf)", help="Per-score L2 β (Open-Assistant): adds β/2·(r_w² + r_l²) per pair.")
    margin_source: str = _f("none", choices=("none", "field", "scores"), help="Margins for eq. 5: 'none', 'field' (the record's 'margin': a number, or a Likert "
                            "category such as 'significantly better' mapped by likert_margins when read) or 'scores' "
                            "(margin_scale × score difference, e.g. UltraFeedback 1–10 ratings).")
    margin_scale: float = _f(1.0, within="(0, inf)", help="With margin_source=scores: margin = margin_scale × (score_w − score_l).")
    likert_margins: str = _f("llama2-large", "How Likert 'margin' categories become numbers: 'llama2-large' (3/2/1/0), "
                             "'llama2-small' (1, 2/3, 1/3, 0) or a mapping 'significantly better=3,better=2,...'.")
    flatten_rankings: bool = _f(False, "Train on each ranking's C(K,2) pairs as independent records (the unbalanced baseline).")
    drop_ties: bool = _f(False, "Skip records whose completions are all tied (counted and reported).")
    streaming: bool = _f(False, "Read, validate and tokenize the training data lazily, --stream-window records at a "
                         "time, so memory does not grow with the data (files line by line, saved datasets "
                         "memory-mapped, hub datasets streamed: those need --max-steps). Each process parses only "
                         "its share. Batches are length-grouped within a window.")
    stream_window: int = _f(0, within="[0, inf)", help="With --streaming: raw records held at a time (a multiple of "
                            "--batch-size); 0: 50 batches.")
    max_steps: int = _f(0, within="[0, inf)", help="Stop after exactly this many optimizer steps, passing over the "
                        "data as often as needed (the schedule spans them); 0: --epochs passes.")
    epochs: int = _f(1, within="[1, inf)", help="Passes over the data. One is the default; the literature finds more epochs overfit.")
    batch_size: int = _f(16, within="[1, inf)", help="Records (pairs or rankings) per optimizer step (global, across processes and accumulation).")
    micro_batch_size: int = _f(4, within="[1, inf)", help="Records per forward pass per process at most; a step's records are cut into micro-batches that accumulate.")
    micro_batch_tokens: int = _f(-1, within="[-1, inf)", help="Tokens per forward pass per process at most (the "
                                 "records' sequence lengths summed; a longer record runs alone), so activation memory "
                                 "stays bounded whatever the lengths. -1: auto (on CPU 1,024, or 2,048 under bf16; no cap on GPU); 0: no cap.")
    learning_rate: float = _f(2e-5, within="(0, inf)", help="Peak AdamW learning rate.")
    weight_decay: float = _f(0.0, within="[0, inf)", help="AdamW weight decay.")
    warmup_ratio: float = _f(0.05, within="[0, 1]", help="Fraction of steps spent warming up linearly from 0.")
    lr_schedule: str = _f("cosine", choices=("cosine", "linear", "constant"), help="Decay after warmup: 'cosine', 'linear' or 'constant'.")
    max_grad_norm: float = _f(1.0, within="[0, inf)", help="Gradient clipping norm (0 disables).")
    seed: int = _f(42, "Seed for head init, shuffling and everything random.")
    head_init: str = _f("normal", choices=HEAD_INITS, help="How a new score head starts: 'normal' "
                        "(transformers' N(0, initializer_range), 0.02 for SmolLM2), 'scaled' (N(0, 1/(d+1)) in "
                        "variance, Ziegler et al. 2019) or 'zero' (every reward starts at 0, the loss at ln 2). "
                        "A checkpoint's trained head is kept.")
    group_by_length: bool = _f(True, "Build batches from pairs of similar length (less padding); batch order stays random.")
    eval_every: int = _f(0, within="[0, inf)", help="Evaluate every N optimizer steps (0: only before and after training).")
    eval_before: bool = _f(True, "Evaluate the untrained model first, so the report shows before and after.")
    reward_stats: str = _f("auto", choices=("auto", "rescore", "last-steps"), help="How the checkpoint's reward "
                           "mean/std (for normalised scores) are measured when there is no --eval-data (with it: on "
                           "the held-out rewards, free). 'rescore': score up to 500 training records with the final "
                           "model (exact; one forward pass over them). 'last-steps': the rewards the last training "
                           "steps computed, up to 500 records (free; weights at most those steps old). 'auto': "
                           "rescore when that costs under 5 % of the training steps' time, else last-steps.")
    log_every: int = _f(1, within="[1, inf)", help="Write training metrics every N optimizer steps.")
    padding_side: str = _f("right", choices=("left", "right"), help="Padding side used in batches (results do not depend on it).")
    prefix_sharing: bool = _f(True, "Compute each prompt once for all its completions and pack records without padding "
                              "(exact; used when the model supports it). --no-prefix-sharing runs the plain padded batches.")
    torch_dtype: str = _f("float32", choices=("float32", "bfloat16", "float16"), help="Dtype the model's weights "
                          "are loaded and trained in. float32 (default) keeps full-precision master weights (the "
                          "compute format is --precision); bfloat16 halves weight memory, e.g. for LoRA on a large "
                          "model whose frozen weights need no fp32 copy.")
    precision: str = _f("auto", choices=PRECISIONS, help=PRECISION_HELP)
    route: str = _f("auto", choices=ROUTES, help=ROUTE_HELP)
    trainable_layers: int = _f(0, within="[0, inf)", help="Train only the top N transformer blocks (+ final norm and score head); 0 trains all. "
                               "Cuts the backward pass to those blocks: a cheaper partial fine-tune.")
    lora_r: int = _f(0, within="[0, inf)", help="LoRA rank (peft): train rank-r adapters on the blocks' linear layers "
                     "plus the whole score head, which is saved with them; 0 trains the model's own weights.")
    lora_alpha: float = _f(16.0, within="(0, inf)", help="LoRA α: the adapters' update is scaled by α / r.")
    lora_dropout: float = _f(0.0, within="[0, 1)", help="Dropout on the adapters' input. With 0, prefix-shared "
                             "training computes exactly what padded training computes.")
    lora_target_modules: str = _f("all-linear", help="Layers that get adapters: 'all-linear' (every linear layer of "
                                  "the blocks) or module names, e.g. 'q_proj,k_proj,v_proj,o_proj'.")
    lora_save: str = _f("merged", choices=("merged", "adapter"), help="How a LoRA run's model is saved: 'merged' (a "
                        "plain sequence-classification checkpoint that plain transformers loads, adapter beside it in "
                        "lora-adapter/) or 'adapter' (peft's adapter + head only, loaded onto --model).")
    length_debias: str = _f("balance", choices=("none", "odin", "balance"), help="Length debiasing: 'odin' (Chen et "
                            "al. 2024: a quality and a length head trained apart, the quality head is the reward), "
                            "'balance' (weight pairs so that chosen-longer and chosen-shorter pairs count equally) or "
                            "'none'. Default 'balance': on HH it beat 'none' by 4 points held-out (docs/length.md).")
    odin_length_coef: float = _f(1.0, within="[0, inf)", help="ODIN λ_L: weight of −corr(length head, length).")
    odin_quality_coef: float = _f(1.0, within="[0, inf)", help="ODIN λ_Q: weight of |corr(quality head, length)|.")
    odin_ortho_coef: float = _f(1.0, within="[0, inf)", help="ODIN λ_O: weight of |w_Q · w_L| (orthogonal heads).")
    odin_correlation: str = _f("completions", choices=("completions", "pairs", "both"), help="What ODIN's "
                               "correlations are over: 'completions' (each reply's reward with its length, across "
                               "the step's prompts: the paper's), 'pairs' (each pair's reward margin with its "
                               "length margin: the within-pair preference for the longer reply) or 'both' (the two "
                               "sets of terms added). Why 'pairs' exists: docs/length.md.")
    aspects: str = _f("", "Aspect-conditioned heads (ArmoRM-style, rewardkit.heads): comma-separated aspect names, "
                      "e.g. 'helpful,harmless'. Each head trains on its aspect's records (tag sources: --train-data "
                      "'helpful=a.jsonl,harmless=b.jsonl', or an 'aspect' field), a gate on the prompt mixes them. "
                      "'' (default): one reward head.")
    aspect_gate_scale: float = _f(20.0, within="(0, inf)", help="With --aspects: the gate's logits are γ·(W_g h) in "
                                  "training, so under Adam the gate moves γ× faster than the heads (it starts "
                                  "uniform; at 1 it barely moved in 50 SmolLM2 steps). Saved checkpoints hold γ·W_g.")
    aspect_gate_loss: str = _f("both", choices=("preference", "label", "both"), help="With --aspects, what trains the "
                               "gate: 'preference' (ArmoRM's: the mixture must rank the pair, heads held fixed), "
                               "'label' (the gate predicts the aspect the record was collected for) or 'both' (the "
                               "mean). Why 'both': see docs/aspects.md.")
    aspect_gate_refit: bool = _f(True, "With --aspects: after training, refit the gate on the final model's prompt "
                                 "features of every training record (the same gate terms, a full-batch fit, "
                                 "ridge strength picked on a held-out share; ArmoRM's second stage). Not with "
                                 "--streaming (the report says so). Why: docs/aspects.md.")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass: less memory, ~30% more compute.")
    save_every: int = _f(0, within="[0, inf)", help="Write a checkpoint every N optimizer steps (and at the last step) under "
                         "<run>/checkpoints/step-N, atomically; 0: only the final model.")
    keep_checkpoints: int = _f(2, within="[1, inf)", help="Keep the newest N checkpoints; older ones are deleted once a newer one is complete.")
    resume: str | None = _f(None, "Continue a run: 'auto' (the run named by --run-name, from its latest complete "
                            "checkpoint) or a checkpoint folder. The config must match the run's (bookkeeping "
                            "fields such as --save-every may change).")
    max_bad_steps: int = _f(3, within="[1, inf)", help="A step whose loss or gradient is NaN/inf is skipped and counted; this many in a row "
                            "stop the run (the checkpoints written before stay on disk; the error names the last one).")
    report_to: str = _f("none", choices=("none", "tensorboard", "wandb"), help="Also log the metrics to 'tensorboard' (<run>/tensorboard) or 'wandb' (offline unless "
                        "WANDB_MODE says otherwise), through accelerate's trackers; 'none' writes metrics.jsonl only.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_r and self.trainable_layers:
            raise ConfigError("--lora-r and --trainable-layers both choose what trains: LoRA trains adapters on every "
                              "block, --trainable-layers the top blocks' own weights; pass one of them")
        if self.streaming and self.flatten_rankings:
            raise ConfigError("--flatten-rankings with --streaming is not supported (a streamed step counts records "
                              "as read); flatten the rankings into a file first, or train without --streaming")
        if self.stream_window and self.stream_window % self.batch_size:
            raise ConfigError(f"--stream-window ({self.stream_window}) must be a multiple of --batch-size "
                              f"({self.batch_size})")
        odin_options = [f"--{name.replace('_', '-')}" for name in ("odin_length_coef", "odin_quality_coef",
                        "odin_ortho_coef", "odin_correlation") if getattr(self, name) != self.__dataclass_fields__[name].default]
        if self.length_debias != "odin" and odin_options:
            raise ConfigError(f"{', '.join(odin_options)} set without --length-debias odin, where it does nothing; "
                              "add --length-debias odin or drop it")
        if self.length_debias == "odin" and self.lora_r and self.lora_save == "adapter":
            raise ConfigError("--length-debias odin saves the quality head as the model; use --lora-save merged")
        # Every rule between fields is checked here, when the config is built, so no run folder is made for a
        # config that would fail at its first micro-batch.
        if self.objective != "pairwise":
            pairwise_only = [f"--{name.replace('_', '-')}" for name in (
                "loss", "label_smoothing", "reward_center_coef", "reward_l2_coef", "margin_source", "flatten_rankings",
                "drop_ties", "aspects") if getattr(self, name) != self.__dataclass_fields__[name].default]
            if self.length_debias == "odin":
                pairwise_only.append("--length-debias odin")
            if pairwise_only:
                raise ConfigError(f"{', '.join(pairwise_only)} apply to preference training, not to --objective "
                                  f"{self.objective}; drop them")
        if self.objective != "orm" and self.orm_ranking_coef:
            raise ConfigError("--orm-ranking-coef applies to --objective orm only (preference training ranks already)")
        if self.objective != "prm":
            prm_only = [f"--{name.replace('_', '-')}" for name in ("step_marker", "aggregate", "prm_last_step_only")
                        if getattr(self, name) != self.__dataclass_fields__[name].default]
            if prm_only:
                raise ConfigError(f"{', '.join(prm_only)} apply to --objective prm only")
        if not self.step_marker:
            raise ConfigError("--step-marker must not be empty: it is where each step's reward is read")
        if self.loss == "plackett_luce" and self.label_smoothing:
            raise ConfigError("--label-smoothing is defined for pairwise losses (bt, bt_softplus, margin, balanced), "
                              "not for --loss plackett_luce; drop one of them")
        if self.length_debias == "odin" and self.aspects.strip():
            raise ConfigError("--length-debias odin and --aspects both grow the score head; use one of them "
                              "(--length-debias balance works with --aspects)")
        if self.aspects.strip() and self.lora_r and self.lora_save == "adapter":
            raise ConfigError("--aspects with --lora-save adapter: the gate is saved scaled in the merged model only; "
                              "use --lora-save merged (the default; the adapter is saved beside it)")


ASPECT_WEIGHTS_HELP = ("Aspect models (trained with --aspects): how their aspect rewards are mixed: 'gate' or unset "
                       "(the model's gate, per prompt), or explicit weights such as 'helpful=1,harmless=0' (steering; "
                       "aspects not named weigh 0).")


@dataclass
class JudgeOptions(ConfigBase):
    """Flags shared by ``eval`` and ``score`` that turn a causal LM into an LLM judge (docs/judges.md)."""

    judge: str | None = _f(None, choices=("pairwise", "pointwise", "verifier"), help="Use the model as an LLM judge: 'pairwise' (A or B), 'pointwise' (1-10 rating) or "
                           "'verifier' (reward = logit P(Yes)). A trained GenRM run folder is a verifier by itself.")
    judge_template: str | None = _f(None, "Judge prompt: a file (.txt/.md = the user message; .yaml/.json = all "
                                    "template fields) or the text itself, with {prompt} and {response} (pointwise, "
                                    "verifier) or {response_a} {response_b} (pairwise). Default: built-in (docs/judges.md).")
    judge_system_prompt: str | None = _f(None, "Judge system prompt (file or text; '' for none). Default: the template's.")
    judge_mode: str = _f("probability", choices=("probability", "sample"), help="'probability': read verdict-token probabilities (deterministic, graded); "
                         "'sample': generate --judge-samples replies and vote (unparseable replies are counted).")
    judge_order: str = _f("both", choices=("both", "random", "as_given"), help="Pairwise: 'both' orders combined (mean log-odds), 'random' (one seeded order per "
                          "pair) or 'as_given' (first completion shown as A).")
    judge_samples: int = _f(5, within="[1, inf)", help="Sampling mode: replies per judge prompt.")
    judge_temperature: float = _f(1.0, within="(0, inf)", help="Sampling mode: temperature.")
    judge_max_new_tokens: int = _f(64, within="[1, inf)", help="Sampling mode: tokens generated per reply.")
    judge_max_length: int | None = _f(None, within="[32, inf)", help="Judge prompt token budget; longer prompts are cut and counted "
                                      "(default: --max-length, the GenRM's saved one, or 1024).")


@dataclass
class EvalConfig(JudgeOptions):
    model: str = _f("", "A rewardkit run folder, a Hugging Face reward model (*ForSequenceClassification, 1 label), "
                    "or any backbone (a new head seeded by --seed: the untrained baseline).")
    data: str = _f("", "Preference data to evaluate on (same forms as train_data).")
    split: str = _f("test,validation", "Split of --data when it is a hub dataset id or a saved dataset folder: the "
                    "first of these comma-separated names that the dataset has.")
    output: str | None = _f(None, "Write the metrics JSON here, and the per-example rewards beside it "
                            "(eval.json → eval.rewards.jsonl); default: print only.")
    max_length: int | None = _f(None, within="[8, inf)", help="Override the checkpoint's max_length (default: the one it was trained with).")
    template: str | None = _f(None, choices=("auto", "chat", "raw"), help="Override the checkpoint's template (default: the one it was trained with).")
    skip_bad_records: bool = _f(False, "Skip bad records (counted and reported) instead of stopping at the first one.")
    max_batch_tokens: int | None = _f(None, within="[1, inf)", help="Tokens per forward pass (real tokens with prefix sharing, padded otherwise; "
                                      "judges: padded). Default: 2048 on CPU (cache-friendly), 16384 on GPU.")
    seed: int = _f(42, "Seeds everything random: the new score head when --model is an untrained backbone, and the "
                   "bootstrap resamples. Recorded in the output.")
    padding_side: str = _f("right", choices=("left", "right"), help="Padding side used in batches (results do not depend on it).")
    sections: str | None = _f(None, "RewardBench sections: 'rewardbench-v1' (its subset map, math-prm up-weighted) or a "
                              "JSON/YAML file {sections: {name: [subsets]}, weights: {subset: multiplier}}. Overall "
                              "accuracy is then the mean of sections.")
    tie_threshold: float | None = _f(None, within="[0, 0.5]", help="The model calls a pair tied when |σ(Δr) − 0.5| < this. Default: rate-matched "
                                     "(as many model ties as annotator ties; see docs/decisions.md).")
    calibration_bins: int = _f(10, within="[1, inf)", help="Equal-width confidence bins on [0.5, 1] for ECE and the reliability diagram.")
    device: str = _f("auto", "Where the model runs: 'auto' (the first GPU if there is one, else the CPU), 'cpu', "
                     "'cuda' or 'cuda:N'.")
    prefix_sharing: bool = _f(True, "Score each prompt once for all its completions, packed without padding (exact; "
                              "used when the model supports it). --no-prefix-sharing scores padded sequences.")
    bootstrap_samples: int = _f(1000, within="[0, inf)", help="Bootstrap resamples (of prompts) for confidence intervals; 0 disables them.")
    report: str | None = _f(None, "After evaluating, write the visual report (PNGs + report.html) to this folder "
                            "(and the results to <folder>/eval.json unless --output is given).")
    aspect_weights: str | None = _f(None, ASPECT_WEIGHTS_HELP)
    precision: str = _f("auto", choices=PRECISIONS, help=PRECISION_HELP)
    route: str = _f("auto", choices=ROUTES, help=ROUTE_HELP)


@dataclass
class EvalVerifierConfig(ConfigBase):
    model: str = _f("", "An outcome or process reward model (a rewardkit run folder trained with --objective orm/prm, "
                    "or any classifier with --step-marker).")
    data: str = _f("", "Verifier data (docs/verifiers.md): ProcessBench / PRMBench / TRL stepwise files (step "
                   "metrics), GSM8K model solutions or outcome-labelled files (best-of-N, outcome metrics); "
                   "slices and comma-joined sources as for training.")
    split: str = _f("test,validation", "Split of --data when it is a hub dataset id or a saved dataset folder.")
    output: str | None = _f(None, "Write the metrics JSON here (and the per-solution scores beside it, .scores.jsonl).")
    threshold: float | None = _f(None, within="(0, 1)", help="A step is predicted wrong when P(right) < this "
                                 "(ProcessBench's first-error prediction, step F1); default 0.5.")
    threshold_data: str | None = _f(None, "Choose the threshold on these step-labelled solutions instead (the one "
                                    "with the best ProcessBench F1 there, on a 0.01 grid) and apply it to --data: "
                                    "the honest choice, e.g. PRMBench's test split or a held-out slice of the "
                                    "training data. Exclusive with --threshold.")
    aggregate: str | None = _f(None, choices=AGGREGATES, help=AGGREGATE_HELP + " Best-of-N is also reported under "
                               "every rule.")
    step_marker: str | None = _f(None, "Score a classifier as a process reward model with this step marker (default: "
                                 "the checkpoint's).")
    originals: bool = _f(False, "PRMBench: also score each record's original (all-correct) process. Off by default: "
                         "PRMBench's metrics are over the modified processes.")
    max_length: int | None = _f(None, within="[8, inf)", help="Override the checkpoint's max_length.")
    skip_bad_records: bool = _f(False, "Skip bad records (counted and reported) instead of stopping at the first one.")
    max_batch_tokens: int | None = _f(None, within="[1, inf)", help="Tokens per forward pass (default: 2048 on CPU, "
                                      "16384 on GPU).")
    seed: int = _f(42, "Seeds the bootstrap resamples (and a new head when --model is an untrained backbone).")
    bootstrap_samples: int = _f(1000, within="[0, inf)", help="Bootstrap resamples (of problems) for confidence intervals.")
    device: str = _f("auto", "Where the model runs: 'auto', 'cpu', 'cuda' or 'cuda:N'.")
    precision: str = _f("auto", choices=PRECISIONS, help=PRECISION_HELP)
    route: str = _f("auto", choices=ROUTES, help=ROUTE_HELP)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.threshold_data and self.threshold is not None:
            raise ConfigError("--threshold and --threshold-data both set the step threshold; pass one of them")


@dataclass
class ReportConfig(ConfigBase):
    inputs: str = _f("", "Eval results JSON file(s) written by `rewardkit eval --output` (their .rewards.jsonl beside "
                     "them), or folders holding one; several, comma-separated, are shown side by side.")
    output_dir: str | None = _f(None, "Folder for the PNGs and report.html (default: <first input's folder>/report).")


@dataclass
class ScoringOptions(JudgeOptions):
    """How inputs are turned into rewards: the flags ``score``, ``rerank`` and ``serve`` share."""

    max_length: int | None = _f(None, within="[8, inf)", help="Override the checkpoint's max_length (default: the one it was trained with).")
    template: str | None = _f(None, choices=("auto", "chat", "raw"), help="Override the checkpoint's template (default: the one it was trained with).")
    prefix_sharing: bool = _f(True, "Score each prompt once for all its completions, packed without padding (exact).")
    complete_turn: bool = _f(True, "Rendered text inputs ('text' rows, /get_reward queries): append the template's "
                             "end-of-turn marker when it is missing, so the reward is read where training read it. "
                             "--no-complete-turn scores the text exactly as sent.")
    seed: int = _f(42, "Seed of the new head when --model is an untrained backbone, and of judge sampling.")
    aspect_weights: str | None = _f(None, ASPECT_WEIGHTS_HELP)
    device: str = _f("auto", "Where the model runs: 'auto' (the first GPU if there is one, else the CPU), 'cpu', "
                     "'cuda' or 'cuda:N'.")
    precision: str = _f("auto", choices=PRECISIONS, help=PRECISION_HELP)
    route: str = _f("auto", choices=ROUTES, help=ROUTE_HELP)
    aggregate: str | None = _f(None, choices=AGGREGATES, help=AGGREGATE_HELP)
    step_marker: str | None = _f(None, "Score any classifier as a process reward model with this step marker "
                                 "(default: the one a PRM checkpoint records). " + STEP_MARKER_HELP)


@dataclass
class ScoreConfig(ScoringOptions):
    model: str = _f("", "A trained rewardkit run folder / checkpoint, a Hugging Face reward model, or with --judge any "
                    "causal LM (or a GenRM run).")
    input: str = _f("", "JSONL: {prompt, completion} rows get a reward; {prompt, a, b} or {prompt, chosen, rejected} "
                    "rows get rewards and P(a ≻ b); {prompt, completions: [...]} rows get rewards; {text} rows "
                    "(an already-rendered conversation) get a reward.")
    output: str | None = _f(None, "Write JSONL here (default: standard output).")
    max_batch_tokens: int | None = _f(None, within="[1, inf)", help="Tokens per forward pass (real tokens with prefix sharing, padded otherwise; "
                                      "judges: padded). Default: 2048 on CPU (cache-friendly), 16384 on GPU.")


@dataclass
class RerankConfig(ScoreConfig):
    input: str = _f("", "JSONL of {prompt, completions: [candidate, ...]} rows (text or chat messages).")
    output: str | None = _f(None, "Write JSONL here (default: standard output): each row with rewards, ranking (indices "
                            "best first), best_index and best.")


@dataclass
class ServeConfig(ScoringOptions):
    model: str = _f("", "What to serve: a rewardkit run folder, a Hugging Face reward model, or with --judge a causal "
                    "LM (a GenRM run folder is a judge by itself).")
    host: str = _f("127.0.0.1", "Interface to listen on (0.0.0.0 for every interface).")
    port: int = _f(8000, within="[0, 65535]", help="TCP port (0: any free port; the chosen one is printed).")
    dynamic_batch_tokens: int = _f(16384, within="[1, inf)", help="Token budget of one dynamic batch: waiting "
                                   "requests are scored together up to it (in forward passes of --max-batch-tokens).")
    max_batch_tokens: int | None = _f(None, within="[1, inf)", help="Tokens per forward pass (as in eval and score), "
                                      "also inside a dynamic batch. Default: 2048 on CPU, 16384 on GPU.")
    max_wait_ms: float = _f(5.0, within="[0, inf)", help="Dynamic batching: how long the first waiting request may wait for others to join.")
    dynamic_batching: bool = _f(True, "Batch concurrent requests into shared forward passes. --no-dynamic-batching "
                                "runs one request per forward pass (the measurement baseline).")
    # The limits fit OpenRLHF 0.8.10-0.9.0, which sends a whole rollout in one request (1,024 queries by default:
    # rollout_batch_size x n_samples_per_prompt) with a 180 s timeout per try: 4,096 queries of 1,024 tokens
    # (4,194,304 tokens) is 4x that rollout; 64 MiB holds 4,096 queries of ~4 kB of text sent with their prompts,
    # JSON-escaped; 170 s answers 504 before the client's 180 s run out, so it does not re-send a request still queued.
    max_request_bytes: int = _f(67_108_864, within="[1, inf)", help="Largest request body accepted (413 above).")
    max_items: int = _f(4096, within="[1, inf)", help="Most completions (or queries) in one request (413 above).")
    max_request_tokens: int = _f(4_194_304, within="[1, inf)", help="Most tokens one request may cost after "
                                 "truncation (413 above).")
    max_queue: int = _f(1024, within="[1, inf)", help="Most requests waiting for the model; above it requests get 503 with Retry-After.")
    request_timeout_s: float = _f(170.0, within="(0, inf)", help="A request not scored within this many seconds gets "
                                  "504 (below OpenRLHF's 180 s client timeout).")
    normalize_reward: bool = _f(False, "/get_reward: send (r - mean) / std with the checkpoint's reward statistics "
                                "(as OpenRLHF's serve_rm --normalize_reward); the raw reward goes to extra_logs.")
    extra_logs: str = _f("per_query", choices=("per_query", "none"), help="/get_reward's extra_logs: 'per_query' (one "
                         "value per query: what OpenRLHF >= 0.9.0 logs) or 'none' ({}: OpenRLHF 0.8.x, whose client "
                         "cannot merge any extra_logs sent as JSON).")
    strip_pad_eos: bool = _f(False, "/get_reward and /classify: remove runs of the tokenizer's pad and EOS text at the "
                             "start and end of each query before scoring (OpenRLHF's serve_rm up to 0.8.0).")
    threads: int = _f(0, within="[0, inf)", help="torch CPU threads for the model (0: torch's default).")


LABEL_STEPS_INSTRUCTION = ("Solve the problem step by step, one step per line. Write the final answer on its own "
                           "last line as '#### <number>'.")


@dataclass
class LabelStepsConfig(ConfigBase):
    """``rewardkit label-steps``: automatic step labels by rollouts (Math-Shepherd; rewardkit.shepherd)."""

    input: str = _f("", "Solutions to label, JSON lines (sliceable, e.g. 'train.jsonl[:50]'): GSM8K rows {question, "
                    "answer} (steps = the answer's lines, the reference = its '#### n'), or step rows {prompt, "
                    "completions: [step, ...]} with a reference answer field (see --answer-field). With "
                    "--generate-solutions only the question and the reference answer are read.")
    output: str = _f("", "Labelled rows are appended here as JSON lines in TRL's stepwise form {prompt, completions, "
                     "labels, id, reference_answer, rollouts_correct, k}; an existing file is resumed (its ids are "
                     "skipped).")
    summary: str | None = _f(None, "Summary JSON (config, costs per step, label distribution, skips). Default: "
                             "<output without .jsonl>.summary.json.")
    model: str = _f("smollm2-135m", "Policy that completes the step prefixes: any causal LM (hub id, folder, "
                    ".gguf, or the built-in 'smollm2-135m').")
    k: int = _f(4, within="[1, inf)", help="Completions sampled from each step prefix.")
    label_mode: str = _f("hard", choices=("hard", "soft"), help="'hard': a step is good (true) when any of its k "
                         "completions reaches the reference answer (Math-Shepherd's HE); 'soft': the fraction that do "
                         "(SE), a float.")
    generate_solutions: bool = _f(True, "Label solutions the policy writes (one sampled per question, split into "
                                  "steps by lines) instead of the input's steps. Default on: reference solutions "
                                  "are correct, so their labels hold no real wrong step (only steps this policy "
                                  "could not finish; with a capable policy, mostly positives). "
                                  "--no-generate-solutions labels the given steps.")
    early_exit: bool = _f(False, "Once a step gets 0 correct of k, label the later steps 0 without sampling "
                          "(Math-Shepherd's monotonicity shortcut; the last step is still checked). Off by default: "
                          "with small k, 0 of k is often bad luck, and the shortcut repeats it down the solution.")
    temperature: float = _f(0.7, within="(0, inf)", help="Sampling temperature of solutions and completions.")
    top_p: float = _f(0.95, within="(0, 1]", help="Nucleus sampling: sample from the smallest set of tokens with this "
                      "much probability.")
    max_new_tokens: int = _f(256, within="[1, inf)", help="Most tokens per generated solution or completion; "
                             "generation also stops at the end of the turn and after a '#### <answer>' line.")
    batch_size: int = _f(32, within="[1, inf)", help="Sequences per generate call (step prefixes × k, left-padded). "
                         "Results do not depend on it: every sample has its own seed.")
    seed: int = _f(42, "Seeds every sample: sample j of step i of record r uses a seed derived from (seed, r's id, "
                   "i, j), so results do not depend on batch size or order.")
    max_steps: int = _f(0, within="[0, inf)", help="Skip (counted) solutions with more steps than this; 0: no limit. "
                        "A cost cap for rambling generated solutions.")
    keep_annotations: bool = _f(False, "Keep GSM8K's calculator annotations '<<48/2=24>>' in the steps. Default: "
                                "removed, because policies do not write them, so the labelled steps look like the "
                                "solutions a PRM will score.")
    answer_field: str = _f("auto", "Field of a step row holding its reference answer (a bare answer or a solution "
                           "with '#### n'); 'auto': reference_answer, answer, ground_truth or final_answer, the first "
                           "present.")
    instruction: str = _f(LABEL_STEPS_INSTRUCTION, "Appended to each question in the policy's user turn.")
    skip_bad_records: bool = _f(False, "Skip bad records (counted and reported) instead of stopping at the first one.")
    device: str = _f("auto", "Where the policy runs: 'auto' (the first GPU if there is one, else the CPU), 'cpu', "
                     "'cuda' or 'cuda:N'.")
    threads: int = _f(0, within="[0, inf)", help="torch CPU threads (0: torch's default). On a CPU shared with other "
                      "jobs, 1 can be much faster: waiting threads spin (docs/math_shepherd.md).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.instruction.strip():
            raise ConfigError("--instruction must not be empty: the policy needs to be told to end with '#### <answer>'")


def load_config(cls: type[T], path: str | Path | None = None, **overrides: Any) -> T:
    """Build a config from a YAML/JSON file and keyword overrides; unknown keys are an error."""
    values: dict[str, Any] = {}
    if path:
        text = Path(path).read_text()
        try:
            loaded = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: not valid {'JSON' if str(path).endswith('.json') else 'YAML'}: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config fields")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    renamed = [f"{k} was renamed to {RENAMED[k]}" for k in unknown if k in RENAMED and RENAMED[k].split()[0] in names]
    if renamed:
        raise ConfigError(f"{path or cls.__name__}: " + "; ".join(renamed))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        kind = _base_type(hints[key])
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok, values[key] = True, float(value)
        if value is None and hints[key] is not kind:  # Optional field
            ok = True
        if not ok:
            raise ConfigError(f"{cls.__name__}.{key} must be {kind.__name__}, got {value!r}")
    return cls(**values)


def _base_type(annotation: Any) -> type:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--flag`` per dataclass field, typed from its annotation, with the field's help."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        # argparse %-formats help strings: a literal % ("~30% more compute") must be doubled
        allowed = f"; range {f.metadata['within']}" if f.metadata.get("within") else ""
        help_text = f"{f.metadata.get('help', '')} (default: {f.default}{allowed})".replace("%", "%%")
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text,
                                choices=f.metadata.get("choices"))


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
