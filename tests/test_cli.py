"""The CLI over a trained tiny model: eval and score through real subprocesses, user mistakes as
one-line errors (exit 2, no traceback), a YAML config equal to flags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rewardkit.config import TrainConfig, load_config

from conftest import learnable_rows, write_jsonl


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rewardkit.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory) -> Path:
    from rewardkit.train import train

    tmp = tmp_path_factory.mktemp("cli")
    train_file = write_jsonl(tmp / "train.jsonl", learnable_rows(64, seed=1))
    eval_file = write_jsonl(tmp / "eval.jsonl", learnable_rows(16, seed=2))
    report = train(TrainConfig(model=str(tiny_model_dir), train_data=str(train_file), eval_data=str(eval_file),
                               output_dir=str(tmp), run_name="run", batch_size=8, learning_rate=2e-3, max_length=64))
    return Path(report["run_dir"])


def test_eval_cli_json_and_batch_invariance(run_dir, tmp_path):
    rows = learnable_rows(20, seed=5)
    for i, r in enumerate(rows):
        r["subset"] = "even" if i % 2 == 0 else "odd"
    data = write_jsonl(tmp_path / "heldout.jsonl", rows)
    out1, out2, out3 = tmp_path / "m1.json", tmp_path / "m2.json", tmp_path / "m3.json"
    a = cli("eval", "--model", str(run_dir), "--data", str(data), "--output", str(out1))
    assert a.returncode == 0, a.stderr
    from rewardkit.cli import main

    # --padding-side acts on the padded path: all 40 sequences (of different lengths) in one left-padded batch
    assert main(["eval", "--model", str(run_dir), "--data", str(data), "--output", str(out2), "--padding-side", "left",
                 "--no-prefix-sharing", "--bootstrap-samples", "0"]) == 0
    # the shared path in many small passes
    assert main(["eval", "--model", str(run_dir), "--data", str(data), "--output", str(out3), "--max-batch-tokens",
                 "40", "--bootstrap-samples", "0"]) == 0
    m1, m2, m3 = (json.loads(o.read_text()) for o in (out1, out2, out3))
    assert m1["pairs"] == 20 and set(m1["subsets"]) == {"even", "odd"}
    assert m1["subsets"]["even"]["pairs"] == 10
    for key in ("accuracy", "ece", "brier", "length_baseline_accuracy", "ties"):
        assert key in m1
    # each result says which path ran
    assert [m["scorer"]["scoring_path"] for m in (m1, m2, m3)] == ["shared", "padded", "shared"]
    assert m2["scorer"]["padding_side"] == "left" and m3["scorer"]["max_batch_tokens"] == 40
    rewards = [[r["rewards"] for r in _jsonl(o.with_name(o.stem + ".rewards.jsonl"))] for o in (out1, out2, out3)]
    for other in rewards[1:]:
        assert max(abs(x - y) for ra, rb in zip(rewards[0], other, strict=True) for x, y in zip(ra, rb)) < 1e-4
    assert m1["accuracy"] == m2["accuracy"] == m3["accuracy"]


def test_score_cli_completions_and_pairs(run_dir, tmp_path):
    rows = [{"prompt": "How was the answer?", "completion": "the answer is great"},
            {"prompt": "How was the answer?", "completion": "the answer is awful"},
            {"prompt": "How was the answer?", "a": "the answer is great", "b": "the answer is awful"},
            {"prompt": "How was the answer?", "a": "the answer is fine", "b": "the answer is fine"}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    res = cli("score", "--model", str(run_dir), "--input", str(inp))
    assert res.returncode == 0, res.stderr
    out = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(out) == 4
    assert out[0]["reward"] > out[1]["reward"]
    assert out[2]["reward_a"] == pytest.approx(out[0]["reward"], abs=1e-4)
    assert out[2]["p_a_beats_b"] > 0.5
    assert out[3]["p_a_beats_b"] == pytest.approx(0.5)
    meta = json.loads((run_dir / "rewardkit.json").read_text())
    assert out[0]["reward_normalized"] == pytest.approx((out[0]["reward"] - meta["reward_mean"]) / meta["reward_std"])


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "chosen": "a"\n', ":2: malformed JSON"),
    ('{"prompt": "q", "chosen": "a", "rejected": "a"}\n', ":1: 'chosen' and 'rejected' are identical"),
])
def test_bad_eval_data_is_one_clear_line(run_dir, tmp_path, content, message):
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    res = cli("eval", "--model", str(run_dir), "--data", str(data))
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr
    assert "--skip-bad-records" in res.stderr


def test_user_mistakes_exit_2_without_traceback(run_dir, tmp_path):
    for args, message in [
        (("eval", "--model", str(run_dir), "--data", str(tmp_path / "missing.jsonl")), "data file not found"),
        (("eval", "--model", str(tmp_path / "nope"), "--data", "x.jsonl"), "model path not found"),
        (("score", "--model", str(run_dir), "--input", str(write_jsonl(tmp_path / "s.jsonl", [{"prompt": "q"}]))),
         "s.jsonl:1"),
        (("train", "--model", "missing.gguf", "--output-dir", str(tmp_path / "runs")), "GGUF file not found"),
    ]:
        res = cli(*args)
        assert res.returncode == 2, (args, res.stderr[-2000:])
        assert not (tmp_path / "runs").exists()  # a run that never started leaves no folder behind
        assert message in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]


def test_yaml_config_and_flags_are_the_same_dataclass(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"learning_rate": 3e-5, "batch_size": 32, "group_by_length": False}))
    cfg = load_config(TrainConfig, path, batch_size=8)
    assert (cfg.learning_rate, cfg.batch_size, cfg.group_by_length) == (3e-5, 8, False)
    path.write_text(yaml.safe_dump({"learning_rat": 1.0}))
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        load_config(TrainConfig, path)
    with pytest.raises(ValueError, match="TrainConfig.batch_size must be int, got 'many'"):
        load_config(TrainConfig, None, batch_size="many")
    assert load_config(TrainConfig, None, learning_rate=1).learning_rate == 1.0
    path.write_text("learning_rate: [1e-5\n")
    res = cli("train", "--config", str(path))
    assert res.returncode == 2 and "not valid YAML" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("command", ["train", "eval", "score", "rerank", "serve", "report", "train-genrm"])
def test_every_command_prints_its_help(command, capsys):
    """Help strings go through argparse's %-formatting: a stray % in a field's help used to crash --help."""
    from rewardkit.cli import main

    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rewardkit " + command)
    if command in ("train", "train-genrm"):
        assert "~30% more compute" in out


# ------------------------------------------------------------------------------------- score, rerank in process

LONG_PROMPT = "Is the question fine? What is the answer? " * 12  # far over the run's max_length of 64


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_score_pair_over_max_length_matches_eval(run_dir, tmp_path):
    """A pair is truncated in `score` as in `eval`: the siblings keep the same prompt tokens, so
    P(a ≻ b) = σ(r_a − r_b) of eval's own per-example rewards."""
    from rewardkit.cli import main
    from rewardkit.losses import sigmoid

    pairs = [("the answer is great", "the answer is bad and the answer is awful, poor and not fine at all"),
             ("the answer is awful and the answer is poor, bad and not good at all", "the answer is fine")]
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": LONG_PROMPT, "chosen": a, "rejected": b} for a, b in pairs])
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": LONG_PROMPT, "a": a, "b": b} for a, b in pairs])
    out_eval, out_score = tmp_path / "eval.json", tmp_path / "scored.jsonl"
    assert main(["eval", "--model", str(run_dir), "--data", str(data), "--output", str(out_eval),
                 "--bootstrap-samples", "0"]) == 0
    assert main(["score", "--model", str(run_dir), "--input", str(rows), "--output", str(out_score)]) == 0
    result = json.loads(out_eval.read_text())
    assert result["truncation"]["prompt_truncated"] == 4 and result["truncation"]["sequences"] == 4
    per_example = _jsonl(out_eval.with_name("eval.rewards.jsonl"))
    scored = _jsonl(out_score)
    for ex, row in zip(per_example, scored, strict=True):
        assert ex["ranks"] == [0, 1]  # rewards in (chosen, rejected) = (a, b) order
        r_a, r_b = ex["rewards"]
        assert row["reward_a"] == pytest.approx(r_a, abs=1e-5) and row["reward_b"] == pytest.approx(r_b, abs=1e-5)
        assert row["p_a_beats_b"] == pytest.approx(sigmoid(r_a - r_b), abs=1e-6)
        assert row["truncated"] == {"prompt": 2, "completion": 0}
    # scored alone, each completion would keep more of the prompt: a different reward (why siblings go together)
    alone = tmp_path / "alone.jsonl"
    assert main(["score", "--model", str(run_dir), "--input",
                 str(write_jsonl(tmp_path / "one.jsonl", [{"prompt": LONG_PROMPT, "completion": pairs[0][0]}])),
                 "--output", str(alone)]) == 0
    assert abs(_jsonl(alone)[0]["reward"] - per_example[0]["rewards"][0]) > 1e-6


def test_rerank_cli_ranks_by_the_score_rewards(run_dir, tmp_path, capsys):
    from rewardkit.cli import main

    rows = [{"id": "r0", "prompt": "How was the answer?",
             "completions": ["the answer is great", "the answer is awful", "the answer is fine"]},
            {"id": "r1", "prompt": [{"role": "user", "content": "Is the question fine?"}],
             "completions": ["the answer is poor", "the answer is good", "the answer is bad", "the answer is great"]},
            {"id": "r2", "prompt": LONG_PROMPT,
             "completions": ["the answer is bad", "the answer is fine and good", "the answer is awful"]}]
    inp = write_jsonl(tmp_path / "cands.jsonl", rows)
    reranked, scored = tmp_path / "reranked.jsonl", tmp_path / "scored.jsonl"
    assert main(["rerank", "--model", str(run_dir), "--input", str(inp), "--output", str(reranked)]) == 0
    assert main(["score", "--model", str(run_dir), "--input", str(inp), "--output", str(scored)]) == 0
    out, ref = _jsonl(reranked), _jsonl(scored)
    assert len(out) == len(rows)
    for row, r, s in zip(rows, out, ref, strict=True):
        assert r["id"] == row["id"] and r["completions"] == row["completions"]  # everything else passed through
        assert r["rewards"] == pytest.approx(s["rewards"], abs=1e-6) and len(r["rewards"]) == len(row["completions"])
        assert sorted(r["ranking"]) == list(range(len(row["completions"])))
        ranked = [r["rewards"][i] for i in r["ranking"]]
        assert ranked == sorted(r["rewards"], reverse=True)
        assert r["best_index"] == r["ranking"][0] and r["best"] == row["completions"][r["ranking"][0]]
        assert r["rewards"][r["best_index"]] == max(r["rewards"])
    assert out[2]["truncated"]["prompt"] == 3  # the over-length prompt is cut for all candidates alike

    bad = write_jsonl(tmp_path / "bad.jsonl", [rows[0], {"prompt": "q", "completion": "only one"}])
    capsys.readouterr()
    assert main(["rerank", "--model", str(run_dir), "--input", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and "completions" in err and "Traceback" not in err


@pytest.mark.parametrize("field, value, shown", [
    ("label_smoothing", -0.1, "[0, 0.5)"),   # ε < 0: the loss is unbounded below
    ("label_smoothing", 0.5, "[0, 0.5)"),    # ε ≥ 0.5: the preference is inverted
    ("warmup_ratio", 1.5, "[0, 1]"),
    ("learning_rate", 0.0, "(0, inf)"),
    ("micro_batch_size", 0, "[1, inf)"),
    ("lr_schedule", "step", "'cosine', 'linear', 'constant'"),
])
def test_config_ranges_are_checked_when_the_config_is_built(field, value, shown, tmp_path):
    """Issue 14.3: one check, at config time, from Python, YAML and flags alike; the message names the field."""
    from rewardkit.errors import ConfigError

    for build in (lambda: TrainConfig(**{field: value}), lambda: load_config(TrainConfig, None, **{field: value})):
        with pytest.raises(ConfigError, match=rf"--{field.replace('_', '-')} \({field}\) must be .*{_re(shown)}"):
            build()
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({field: value}))
    with pytest.raises(ConfigError, match=field):
        load_config(TrainConfig, path)


def _re(text: str) -> str:
    import re

    return re.escape(text)


def test_every_default_is_inside_its_own_range_and_loss_names_agree():
    from rewardkit.config import LOSS_NAMES, EvalConfig, ReportConfig, RerankConfig, ScoreConfig, ServeConfig
    from rewardkit.judges.genrm import GenRMConfig
    from rewardkit.losses import LOSS_NAMES as LOSSES

    assert LOSS_NAMES == LOSSES
    for cls in (TrainConfig, GenRMConfig, EvalConfig, ScoreConfig, RerankConfig, ServeConfig, ReportConfig):
        cls()  # raises if a default broke its own range


def test_label_smoothing_out_of_range_is_one_line_on_the_command_line(tmp_path):
    res = cli("train", "--label-smoothing", "0.6", "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--label-smoothing (label_smoothing) must be in [0, 0.5); got 0.6" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_internal_errors_keep_their_traceback_and_user_errors_do_not(monkeypatch, capsys):
    """Issue 14.7: a ValueError from inside rewardkit is a bug (traceback, exit 1), not 'bad input' (one line, 2)."""
    import rewardkit.cli as cli_module
    from rewardkit.errors import UserError

    def bug(cfg):
        raise ValueError("operands could not be broadcast together")  # what a numpy bug looks like

    monkeypatch.setattr(cli_module, "run_report", bug)
    assert cli_module.main(["report", "x.json"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "operands could not be broadcast" in err and "internal error" in err

    def mistake(cfg):
        raise UserError("x.json holds no eval results")

    monkeypatch.setattr(cli_module, "run_report", mistake)
    assert cli_module.main(["report", "x.json"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip() == "rewardkit report: error: x.json holds no eval results"


def test_os_errors_other_than_not_found_are_one_line(run_dir, tmp_path):
    folder = tmp_path / "a-folder.jsonl"
    folder.mkdir()
    res = cli("score", "--model", str(run_dir), "--input", str(folder))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "a-folder.jsonl" in res.stderr


def test_missing_inputs_and_refused_options_are_one_line(tiny_model_dir, tmp_path, capsys):
    """The CLI's own checks (in process: the same main() as the command), each exit 2 with one line."""
    from rewardkit.cli import main

    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "q", "completion": "a"}])
    (tmp_path / "empty").mkdir()
    model = str(tiny_model_dir)
    runs = tmp_path / "runs"
    for args, message in [
        (["eval", "--data", str(rows)], "eval needs --model and --data"),
        (["eval", "--model", model], "eval needs --model and --data"),
        (["score", "--model", model], "score needs --model and --input"),
        (["rerank", "--input", str(rows)], "rerank needs --model and --input"),
        (["report"], "report needs an eval results JSON"),
        (["report", str(tmp_path / "empty")], "holds no eval results"),
        # an OSError other than "not found": a path through a file
        (["score", "--model", model, "--input", f"{rows}/x.jsonl"], "Not a directory"),
        (["train-genrm", "--model", model, "--lora-r", "4", "--output-dir", str(runs)],
         "--lora-r is not implemented for GenRM"),
        (["train-genrm", "--model", model, "--template", "raw", "--output-dir", str(runs)], "set --judge-template"),
        (["train-genrm", "--model", str(tmp_path / "nope"), "--output-dir", str(runs)], "model path not found"),
    ]:
        capsys.readouterr()
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err[-2000:])
        assert err.strip().startswith(f"rewardkit {args[0]}: error: ") and len(err.strip().splitlines()) == 1, err
        assert not runs.exists()  # refused before a run folder was made


def test_a_diverging_run_stops_with_one_line_naming_its_checkpoint(tiny_model_dir, tmp_path, capsys):
    """A real divergence (lr 1e30: the second step's loss is NaN) through the CLI: TrainingDiverged after
    --max-bad-steps skipped steps, one line naming the last checkpoint, which loads."""
    import numpy as np

    from rewardkit.cli import main
    from rewardkit.data.record import PreferenceExample
    from rewardkit.inference import score
    from rewardkit.inference.factory import load_scorer

    data = write_jsonl(tmp_path / "t.jsonl", learnable_rows(24, seed=1))
    rc = main(["train", "--model", str(tiny_model_dir), "--train-data", str(data), "--output-dir", str(tmp_path),
               "--run-name", "div", "--batch-size", "4", "--learning-rate", "1e30", "--max-bad-steps", "2",
               "--save-every", "1", "--no-eval-before", "--max-length", "64"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    checkpoint = tmp_path / "div" / "checkpoints" / "step-000001"
    assert ("rewardkit train: error: the loss or gradient was not finite for 2 steps in a row (step 3"
            in err) and f"--resume {checkpoint}" in err
    rows = _jsonl(tmp_path / "div" / "metrics.jsonl")
    assert [(r["step"], bool(r.get("skipped"))) for r in rows] == [(1, False), (2, True), (3, True)]
    assert not (tmp_path / "div" / "rewardkit.json").exists()  # the run did not finish
    # The named checkpoint loads and scores. Its weights are those after step 1's update with lr 1e30, so they
    # already give NaN: the error says it is the last one written after a finite step and to evaluate it first.
    assert "evaluate it before resuming" in err
    scored = score(load_scorer(str(checkpoint)), [PreferenceExample.pair("q", "good", "bad")])
    assert scored.path == "shared" and np.isnan(scored.rewards[0]).all()
