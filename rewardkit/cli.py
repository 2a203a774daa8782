"""The ``rewardkit`` command: a thin layer over the Python API with the same names.

    rewardkit train [--config cfg.yaml] [--flags]   → rewardkit.train.train(TrainConfig)
    rewardkit eval  --model RUN --data FILE         → rewardkit.evaluate.evaluate
    rewardkit score --model RUN --input FILE.jsonl  → rewardkit.score.score_rows
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rewardkit.config import EvalConfig, ScoreConfig, TrainConfig, add_arguments, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rewardkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cls, help_text in (
        ("train", TrainConfig, "train a Bradley-Terry reward model (no arguments: the built-in demo)"),
        ("eval", EvalConfig, "evaluate a reward model on preference pairs"),
        ("score", ScoreConfig, "score completions or pairs from a JSONL file"),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", help="YAML or JSON file with the same fields as the flags")
        add_arguments(p, cls)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    command, config_path = args.pop("command"), args.pop("config")
    from rewardkit.data import DataError
    from rewardkit.model import ModelLoadError
    from rewardkit.train import TrainingDiverged

    try:
        if command == "train":
            from rewardkit.train import train

            train(load_config(TrainConfig, config_path, **args))
        elif command == "eval":
            run_eval(load_config(EvalConfig, config_path, **args))
        else:
            run_score(load_config(ScoreConfig, config_path, **args))
    except (DataError, ModelLoadError, TrainingDiverged, ValueError, FileNotFoundError) as e:
        # User mistakes get one clear line, not a stack trace.
        print(f"rewardkit {command}: error: {e}", file=sys.stderr)
        return 2
    return 0


def run_eval(cfg: EvalConfig) -> dict:
    from rewardkit.checkpoint import load_checkpoint
    from rewardkit.data import read_preferences
    from rewardkit.evaluate import evaluate

    if not cfg.model or not cfg.data:
        raise ValueError("eval needs --model and --data")
    from accelerate.utils import set_seed

    set_seed(cfg.seed)  # same head init as `rewardkit train --seed` for an untrained backbone
    model, encoder, _ = load_checkpoint(cfg.model, cfg.max_length, cfg.template)
    examples, report = read_preferences(cfg.data, skip_bad=cfg.skip_bad_records, split=cfg.split)
    print(report.summary(), file=sys.stderr)
    result = {"model": cfg.model, "data": report.to_dict(),
              **evaluate(model, encoder, examples, max_batch_tokens=cfg.max_batch_tokens,
                         padding_side=cfg.padding_side, progress=True)}
    text = json.dumps(result, indent=2)
    if cfg.output:
        Path(cfg.output).write_text(text + "\n")
    print(text)
    return result


def run_score(cfg: ScoreConfig) -> None:
    from rewardkit.checkpoint import load_checkpoint
    from rewardkit.score import read_jsonl, score_rows

    if not cfg.model or not cfg.input:
        raise ValueError("score needs --model and --input")
    model, encoder, meta = load_checkpoint(cfg.model)
    rows, locations = read_jsonl(cfg.input)
    scored = score_rows(model, encoder, rows, meta, locations, max_batch_tokens=cfg.max_batch_tokens)
    out = open(cfg.output, "w") if cfg.output else sys.stdout
    for row in scored:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    if cfg.output:
        out.close()


if __name__ == "__main__":
    sys.exit(main())
