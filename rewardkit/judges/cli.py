"""Command-line glue for judges, ready to be wired into ``rewardkit eval`` / ``rewardkit score``.

``JudgeConfig`` holds the judge flags (to be merged into ``EvalConfig`` and ``ScoreConfig``);
``run_judge_eval`` and ``run_judge_score`` do what ``rewardkit eval`` / ``score`` do, with a judge as
the reward model. Until the main CLI is wired, the same commands run as

    python -m rewardkit.judges.cli eval  --model smollm2-135m --judge pairwise --data FILE [--flags]
    python -m rewardkit.judges.cli score --model smollm2-135m --judge verifier --input FILE.jsonl
    python -m rewardkit.judges.cli train-genrm [TrainConfig flags] [--judge-template ...]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardkit.config import EvalConfig, ScoreConfig, add_arguments, load_config, to_dict
from rewardkit.data.record import PreferenceExample


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class JudgeConfig:
    judge: str | None = _f(None, "Use the model as an LLM judge: 'pairwise' (A or B), 'pointwise' (1-10 rating) or "
                           "'verifier' (reward = logit P(Yes)). A trained GenRM run folder is a verifier by itself.")
    judge_template: str | None = _f(None, "Judge prompt: a file (.txt/.md = the user message; .yaml/.json = all "
                                    "template fields) or the text itself, with {prompt} and {response} (pointwise, "
                                    "verifier) or {response_a} {response_b} (pairwise). Default: built-in (docs/judges.md).")
    judge_system_prompt: str | None = _f(None, "Judge system prompt (file or text; '' for none). Default: the template's.")
    judge_mode: str = _f("probability", "'probability': read verdict-token probabilities (deterministic, graded); "
                         "'sample': generate --judge-samples replies and vote (unparseable replies are counted).")
    judge_order: str = _f("both", "Pairwise: 'both' orders combined (mean log-odds), 'random' (one seeded order per "
                          "pair) or 'as_given' (first completion shown as A).")
    judge_samples: int = _f(5, "Sampling mode: replies per judge prompt.")
    judge_temperature: float = _f(1.0, "Sampling mode: temperature.")
    judge_max_new_tokens: int = _f(64, "Sampling mode: tokens generated per reply.")
    judge_max_length: int | None = _f(None, "Judge prompt token budget; longer prompts are cut and counted "
                                      "(default: --max-length, the GenRM's saved one, or 1024).")


def is_judge_checkpoint(model: str) -> bool:
    """True for a trained GenRM folder (it carries ``rewardkit_judge.json``)."""
    from rewardkit.judges.judge import JUDGE_METADATA_FILE

    return (Path(model).expanduser() / JUDGE_METADATA_FILE).is_file()


def build_scorer(model: str, jc: JudgeConfig, *, seed: int = 42, max_batch_tokens: int = 16384,
                 max_length: int | None = None, progress: bool = False):
    """A ``JudgeScorer`` from the flags."""
    from rewardkit.judges.judge import JudgeScorer, load_judge
    from rewardkit.judges.templates import _UNSET

    system = _UNSET if jc.judge_system_prompt is None else jc.judge_system_prompt
    judge = load_judge(model, kind=jc.judge, template=jc.judge_template, system_prompt=system,
                       max_length=jc.judge_max_length or max_length)
    return JudgeScorer(judge, mode=jc.judge_mode, order=jc.judge_order, samples=jc.judge_samples,
                       temperature=jc.judge_temperature, max_new_tokens=jc.judge_max_new_tokens, seed=seed,
                       max_batch_tokens=max_batch_tokens, progress=progress)


def run_judge_eval(cfg: EvalConfig, jc: JudgeConfig) -> dict[str, Any]:
    """``rewardkit eval`` with a judge: the classifier metrics plus flip rate, verdict mass, wall time per pair."""
    from rewardkit.data import read_preferences
    from rewardkit.judges.judge import evaluate_judge

    if not cfg.model or not cfg.data:
        raise ValueError("eval needs --model and --data")
    scorer = build_scorer(cfg.model, jc, seed=cfg.seed, max_batch_tokens=cfg.max_batch_tokens,
                          max_length=cfg.max_length, progress=True)
    examples, report = read_preferences(cfg.data, skip_bad=cfg.skip_bad_records, split=cfg.split)
    print(report.summary(), file=sys.stderr)
    result = {"model": cfg.model, "data": report.to_dict(), **evaluate_judge(scorer, examples)}
    print(scorer.judge.truncation.summary(), file=sys.stderr)
    text = json.dumps(result, indent=2)
    if cfg.output:
        Path(cfg.output).write_text(text + "\n")
    print(text)
    return result


def score_rows_with_judge(scorer: Any, rows: list[dict[str, Any]], locations: list[str]) -> list[dict[str, Any]]:
    """``rewardkit score`` rows with a judge: ``reward`` (one completion) or ``reward_a``/``reward_b`` and
    ``p_a_beats_b`` = σ(r_a − r_b); plus what the judge said (``judge``). No verdict → null rewards."""
    from rewardkit.score import parse_score_row

    examples = []
    for row, loc in zip(rows, locations):
        prompt, completions = parse_score_row(row, loc)
        examples.append(PreferenceExample(prompt=prompt, completions=completions,
                                          ranking=list(range(len(completions))), source=loc))
    rewards = scorer.score_examples(examples)
    out = []
    for row, r, detail in zip(rows, rewards, scorer.details):
        res = dict(row)
        values = [None if math.isnan(v) else float(v) for v in r]
        if len(values) == 1:
            res["reward"] = values[0]
        else:
            res["reward_a"], res["reward_b"] = values[0], values[1]
            res["p_a_beats_b"] = None if None in values[:2] else 1.0 / (1.0 + math.exp(-(values[0] - values[1])))
        res["judge"] = _jsonable(detail)
        out.append(res)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k != "replies"}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def run_judge_score(cfg: ScoreConfig, jc: JudgeConfig) -> None:
    from rewardkit.score import read_jsonl

    if not cfg.model or not cfg.input:
        raise ValueError("score needs --model and --input")
    scorer = build_scorer(cfg.model, jc, max_batch_tokens=cfg.max_batch_tokens)
    rows, locations = read_jsonl(cfg.input)
    scored = score_rows_with_judge(scorer, rows, locations)
    out = open(cfg.output, "w") if cfg.output else sys.stdout
    for row in scored:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    if cfg.output:
        out.close()


def _split(args: dict[str, Any], cls: type) -> dict[str, Any]:
    names = set(to_dict(cls()))
    return {k: args.pop(k) for k in list(args) if k in names}


def main(argv: list[str] | None = None) -> int:
    from rewardkit.judges.genrm import GenRMConfig

    parser = argparse.ArgumentParser(prog="python -m rewardkit.judges.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, classes in (("eval", (EvalConfig, JudgeConfig)), ("score", (ScoreConfig, JudgeConfig)),
                          ("train-genrm", (GenRMConfig,))):
        p = sub.add_parser(name)
        p.add_argument("--config", help="YAML or JSON file with the same fields as the flags")
        for cls in classes:
            add_arguments(p, cls)
    args = vars(parser.parse_args(argv))
    command, config_path = args.pop("command"), args.pop("config")
    from rewardkit.data import DataError
    from rewardkit.model import ModelLoadError
    from rewardkit.train import TrainingDiverged

    try:
        if command == "train-genrm":
            from rewardkit.judges.genrm import train_genrm

            train_genrm(load_config(GenRMConfig, config_path, **args))
            return 0
        judge_args = _split(args, JudgeConfig)
        jc = load_config(JudgeConfig, None, **judge_args)
        if command == "eval":
            run_judge_eval(load_config(EvalConfig, config_path, **args), jc)
        else:
            run_judge_score(load_config(ScoreConfig, config_path, **args), jc)
    except (DataError, ModelLoadError, TrainingDiverged, ValueError, FileNotFoundError) as e:
        print(f"rewardkit {command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
