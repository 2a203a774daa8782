"""The ``rewardkit`` command: a thin layer over the Python API with the same names.

    rewardkit train [--config cfg.yaml] [--flags]   → rewardkit.train.train(TrainConfig)
    rewardkit eval  --model RUN --data FILE         → rewardkit.evaluate.run_evaluation
    rewardkit eval-verifier --model RUN --data FILE → rewardkit.verifiers.run_verifier_eval (ORM / PRM)
    rewardkit score --model RUN --input FILE.jsonl  → rewardkit.inference.rows.score_rows
    rewardkit rerank --model RUN --input FILE.jsonl → rewardkit.inference.rows.rerank_rows (best-of-N)
    rewardkit serve RUN [--host H --port P]         → rewardkit.serve (HTTP reward server)
    rewardkit report EVAL.json [EVAL2.json ...]     → rewardkit.report.write_report
    rewardkit eval/score --judge pairwise|pointwise|verifier --model CAUSAL_LM  → rewardkit.judges
    rewardkit train-genrm [--flags]                 → rewardkit.judges.genrm.train_genrm(GenRMConfig)
    rewardkit label-steps --input F --output O      → rewardkit.shepherd.label_steps(LabelStepsConfig)
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

from rewardkit.config import (
    EvalConfig,
    EvalVerifierConfig,
    LabelStepsConfig,
    ReportConfig,
    RerankConfig,
    ScoreConfig,
    ServeConfig,
    TrainConfig,
    add_arguments,
    load_config,
    to_dict,
)
from rewardkit.errors import UserError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rewardkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cls, help_text in (
        ("train", TrainConfig, "train a Bradley-Terry reward model (no arguments: the built-in demo)"),
        ("eval", EvalConfig, "evaluate a reward model on preference pairs"),
        ("eval-verifier", EvalVerifierConfig, "evaluate an outcome / process reward model (ProcessBench F1, step F1, "
                                              "best-of-N vs majority vote)"),
        ("score", ScoreConfig, "score completions or pairs from a JSONL file"),
        ("rerank", RerankConfig, "best-of-N: rank each prompt's candidates from a JSONL file"),
        ("serve", ServeConfig, "serve a reward model over HTTP (OpenRLHF-compatible /get_reward, /v1/score)"),
        ("report", ReportConfig, "plots and an HTML page from eval results"),
        ("train-genrm", None, "train a generative verifier: P(Yes) of a causal LM, with the Bradley-Terry loss"),
        ("label-steps", LabelStepsConfig, "automatic step labels (Math-Shepherd): k policy rollouts per step prefix"),
    ):
        if cls is None:
            from rewardkit.judges.genrm import GenRMConfig

            cls = GenRMConfig
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", help="YAML or JSON file with the same fields as the flags")
        add_arguments(p, cls)
        if cls is ReportConfig:
            p.add_argument("input_paths", nargs="*", metavar="EVAL_JSON_OR_FOLDER",
                           help="same as --inputs, as positional arguments")
        if cls is ServeConfig:
            p.add_argument("model_path", nargs="?", metavar="RUN", help="same as --model, as a positional argument")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    command, config_path = args.pop("command"), args.pop("config")
    from rewardkit.train import TrainingDiverged

    try:
        if command == "train":
            from rewardkit.train import train

            train(load_config(TrainConfig, config_path, **args))
        elif command == "train-genrm":
            from rewardkit.judges.genrm import GenRMConfig, train_genrm

            train_genrm(load_config(GenRMConfig, config_path, **args))
        elif command == "label-steps":
            from rewardkit.shepherd import label_steps

            summary = label_steps(load_config(LabelStepsConfig, config_path, **args))
            print(json.dumps({"labels": summary["labels"], "cost": {k: summary["cost"][k] for k in
                              ("wall_s", "tokens_generated", "per_solution")}}, indent=2))
        elif command == "eval":
            run_eval(load_config(EvalConfig, config_path, **args))
        elif command == "eval-verifier":
            from rewardkit.verifiers import run_verifier_eval, summary_lines

            out = run_verifier_eval(load_config(EvalVerifierConfig, config_path, **args))
            print("\n".join(summary_lines(out)))
        elif command == "report":
            positional = args.pop("input_paths")
            if positional:
                args["inputs"] = ",".join([*([args["inputs"]] if args.get("inputs") else []), *positional])
            run_report(load_config(ReportConfig, config_path, **args))
        elif command == "serve":
            positional = args.pop("model_path")
            if positional:
                args["model"] = positional
            from rewardkit.serve import serve

            serve(load_config(ServeConfig, config_path, **args))
        elif command == "rerank":
            run_score(load_config(RerankConfig, config_path, **args), rerank=True)
        else:
            run_score(load_config(ScoreConfig, config_path, **args))
    except (UserError, TrainingDiverged, OSError) as e:
        # A user's mistake (or a file the system refuses: missing, unreadable, a folder) gets one clear line.
        print(f"rewardkit {command}: error: {e}", file=sys.stderr)
        return 2
    except Exception:
        # Anything else is a bug in rewardkit: keep the traceback, and do not call it the user's fault.
        traceback.print_exc()
        print(f"rewardkit {command}: internal error (a bug in rewardkit, not in your input). Please report it with "
              "the command line and the traceback above.", file=sys.stderr)
        return 1
    finally:
        _end_distributed()
    return 0


def _end_distributed() -> None:
    """Tear the process group down before the interpreter exits. Left to interpreter teardown, the group's
    C++ threads are destroyed while joinable and a rank can abort with "terminate called without an active
    exception" (seen under DeepSpeed ZeRO-2 after a run that had finished and saved). Only the CLI does this:
    a Python caller may run several commands in one process and owns its process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()  # local, no barrier: a rank that failed must not leave the others waiting


def run_eval(cfg: EvalConfig) -> dict:
    from rewardkit.data import read_preferences
    from rewardkit.evaluate import emit_eval, run_evaluation
    from rewardkit.inference.factory import is_judge_checkpoint, load_scorer, say_precision
    from rewardkit.judges.evaluation import run_judge_eval
    from rewardkit.rewardbench import load_section_map

    if cfg.judge or (cfg.model and is_judge_checkpoint(cfg.model)):
        if cfg.aspect_weights:
            raise UserError("--aspect-weights mixes the heads of an aspect reward model; a judge has none")
        return run_judge_eval(cfg)
    if not cfg.model or not cfg.data:
        raise UserError("eval needs --model and --data")
    section_map = load_section_map(cfg.sections) if cfg.sections else None  # a bad map fails before loading
    scorer = load_scorer(cfg.model, max_length=cfg.max_length, template=cfg.template,
                         max_batch_tokens=cfg.max_batch_tokens, padding_side=cfg.padding_side, seed=cfg.seed,
                         progress=True, prefix_sharing=cfg.prefix_sharing, device=cfg.device,
                         aspect_weights=cfg.aspect_weights, precision=cfg.precision, route=cfg.route)
    say_precision(scorer, "eval")
    examples, report = read_preferences(cfg.data, skip_bad=cfg.skip_bad_records, split=cfg.split)
    print(report.summary(), file=sys.stderr)
    result, rewards = run_evaluation(scorer, examples, section_map=section_map, tie_threshold=cfg.tie_threshold,
                                     calibration_bins=cfg.calibration_bins,
                                     bootstrap_samples=cfg.bootstrap_samples, seed=cfg.seed)
    result = {**result, "data": report.to_dict(), "eval_config": to_dict(cfg)}
    emit_eval(cfg, result, examples, rewards)
    return result


def run_report(cfg: ReportConfig) -> None:
    from rewardkit.report import write_report

    inputs = [s.strip() for s in cfg.inputs.split(",") if s.strip()]
    if not inputs:
        raise UserError("report needs an eval results JSON (or a folder holding one): rewardkit report EVAL.json")
    html = write_report(inputs, cfg.output_dir)
    print(f"report: {html}")


def run_score(cfg: ScoreConfig, rerank: bool = False) -> None:
    from rewardkit.batching import TruncationStats
    from rewardkit.inference.factory import load_scorer, say_precision
    from rewardkit.inference.rows import check_rerank_row, iter_jsonl, parse_score_row, score_stream

    command = "rerank" if rerank else "score"
    if not cfg.model or not cfg.input:
        raise UserError(f"{command} needs --model and --input")
    # A bad row fails before the model loads: one pass that parses every row and keeps none (the file is then
    # streamed, so its size never has to fit in memory).
    for row, location in iter_jsonl(cfg.input):
        if rerank:
            check_rerank_row(row, location)
        parse_score_row(row, location)
    scorer = load_scorer(cfg.model, cfg, max_length=cfg.max_length, template=cfg.template,
                         max_batch_tokens=cfg.max_batch_tokens, seed=cfg.seed, prefix_sharing=cfg.prefix_sharing,
                         complete_turn=cfg.complete_turn, device=cfg.device, aspect_weights=cfg.aspect_weights,
                         precision=cfg.precision, route=cfg.route, aggregate=cfg.aggregate,
                         step_marker=cfg.step_marker)
    say_precision(scorer, command)
    info = scorer.describe()
    if info.get("type") == "reward_model" and not info.get("reward_std"):
        print(f"rewardkit {command}: {cfg.model} records no reward statistics (mean/std); normalised rewards "
              "are not written", file=sys.stderr)
    truncation, end_of_turn_added = TruncationStats(), 0
    out = open(cfg.output, "w") if cfg.output else sys.stdout
    try:
        for scored, result in score_stream(scorer, iter_jsonl(cfg.input), rerank=rerank):
            truncation = truncation.add(result.truncation_total())
            end_of_turn_added += result.end_of_turn_added
            for row in scored:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
    finally:
        if cfg.output:
            out.close()
    if truncation.prompt_truncated or truncation.completion_truncated:
        print(f"rewardkit {command}: {truncation.summary()}", file=sys.stderr)
    if end_of_turn_added:
        print(f"rewardkit {command}: end-of-turn marker appended to {end_of_turn_added} rendered text(s)",
              file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
