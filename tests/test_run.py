"""Runs that survive: real SIGKILLs of real training processes, resume, atomic checkpoints, non-finite steps.

Every training here runs as `python -m rewardkit.cli train` in its own process (1 thread, so the
uninterrupted and the resumed runs do the same arithmetic), on the tiny random Llama of conftest.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rewardkit.config import TrainConfig
from rewardkit.run import CRASH_IN_SAVE_ENV

from conftest import learnable_rows, write_jsonl

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("run-data")
    return (write_jsonl(folder / "train.jsonl", learnable_rows(44, seed=1)),  # 11 steps of 4
            write_jsonl(folder / "eval.jsonl", learnable_rows(8, seed=2)))


def args(tiny_model_dir: Path, data: tuple[Path, Path], out: Path, name: str, *extra: str) -> list[str]:
    return ["train", "--model", str(tiny_model_dir), "--train-data", str(data[0]), "--eval-data", str(data[1]),
            "--output-dir", str(out), "--run-name", name, "--batch-size", "4", "--micro-batch-size", "2",
            "--learning-rate", "2e-3", "--max-length", "64", "--eval-every", "4", "--save-every", "1",
            "--keep-checkpoints", "3", *extra]


def launch(argv: list[str], processes: int = 1, port: int = 29531, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rewardkit.cli", *argv]
    if processes > 1:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--main_process_port", str(port), "-m", "rewardkit.cli", *argv]
    return subprocess.Popen(cmd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out + err


def kill_at_step(proc: subprocess.Popen, metrics: Path, step: int) -> None:
    """SIGKILL the whole process group as soon as ``metrics.jsonl`` shows ``step``."""
    deadline = time.time() + 600
    while time.time() < deadline:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if any(json.loads(line).get("step") == step and json.loads(line).get("split") == "train"
               for line in lines if line.endswith("}")):
            kill_run(proc, metrics.parent)
            return
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.02)
    raise AssertionError("the run never reached the step")


def kill_run(proc: subprocess.Popen, run_dir: Path) -> None:
    """SIGKILL every process of the run at once — the launcher and, under torchrun, the workers, which run in
    sessions of their own — as a crashed node would lose them."""
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(run_dir.parent) in cmdline and f"\0{run_dir.name}\0" in cmdline + "\0":
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
    proc.wait(60)
    time.sleep(0.5)  # let the kernel reap the workers before the resumed run starts


def lines_without_time(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in ("elapsed_s", "step_s")}  # wall-clock timings
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    finish(launch(args(tiny_model_dir, data, out, "whole")))
    return out / "whole"


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_run(tiny_model_dir, data, uninterrupted, tmp_path):
    k = random.Random().randint(2, 9)
    print("killed at step", k)
    proc = launch(args(tiny_model_dir, data, tmp_path, "killed"))
    kill_at_step(proc, tmp_path / "killed" / "metrics.jsonl", k)
    run = tmp_path / "killed"
    assert not (run / "rewardkit.json").exists()
    from rewardkit.inference.factory import load_scorer
    from rewardkit.model import ModelLoadError

    with pytest.raises(ModelLoadError, match="did not finish"):
        load_scorer(str(run))
    err = finish(launch(args(tiny_model_dir, data, tmp_path, "killed", "--resume", "auto")))
    assert "resumed from" in err
    report = json.loads((run / "report.json").read_text())
    assert report["resumed_from"].startswith(str(run / "checkpoints" / "step-"))
    resumed_at = int(report["resumed_from"].rsplit("-", 1)[1])
    assert resumed_at in (k - 1, k)
    assert max_weight_diff(run, uninterrupted) <= 1e-6
    assert lines_without_time(run) == lines_without_time(uninterrupted)  # every step and eval line, after the kill too
    assert len(sorted((run / "checkpoints").glob("step-*"))) == 3  # --keep-checkpoints 3


@pytest.mark.slow
def test_sigkill_of_two_processes_then_resume(tiny_model_dir, data, tmp_path):
    finish(launch(args(tiny_model_dir, data, tmp_path, "whole2"), processes=2, port=29541))
    proc = launch(args(tiny_model_dir, data, tmp_path, "killed2"), processes=2, port=29542)
    kill_at_step(proc, tmp_path / "killed2" / "metrics.jsonl", 5)
    finish(launch(args(tiny_model_dir, data, tmp_path, "killed2", "--resume", "auto"), processes=2, port=29543))
    whole, run = tmp_path / "whole2", tmp_path / "killed2"
    assert json.loads((run / "report.json").read_text())["processes"] == 2
    assert max_weight_diff(run, whole) <= 1e-6
    assert lines_without_time(run) == lines_without_time(whole)


@pytest.mark.slow
def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tiny_model_dir, data, uninterrupted, tmp_path):
    proc = launch(args(tiny_model_dir, data, tmp_path, "torn"), env={**ENV, CRASH_IN_SAVE_ENV: "6"})
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    run = tmp_path / "torn"
    ckpts = run / "checkpoints"
    assert (ckpts / ".tmp-step-000006" / "model.safetensors").exists()  # written, never renamed
    assert not (ckpts / "step-000006").exists()
    assert (ckpts / "step-000005" / "trainer_state.pt").exists()
    from rewardkit.inference.factory import load_scorer

    scorer = load_scorer(str(ckpts / "step-000005"))  # a checkpoint loads and scores on its own
    assert scorer.kind == "rewardkit-checkpoint"
    finish(launch(args(tiny_model_dir, data, tmp_path, "torn", "--resume", "auto")))
    assert json.loads((run / "report.json").read_text())["resumed_from"].endswith("step-000005")
    assert not (ckpts / ".tmp-step-000006").exists()
    assert max_weight_diff(run, uninterrupted) <= 1e-6


@pytest.mark.slow  # its fixture runs a whole training process
def test_resume_refuses_a_different_config_and_checks_its_inputs(tiny_model_dir, data, uninterrupted, capsys):
    from rewardkit.cli import main as cli

    base = args(tiny_model_dir, data, uninterrupted.parent, "whole")
    assert cli([*base, "--resume", "auto", "--learning-rate", "1e-3", "--batch-size", "8"]) == 2
    err = capsys.readouterr().err
    assert "learning_rate: 0.002 (run) vs 0.001 (now)" in err and "batch_size" in err
    assert cli([*base]) == 2
    assert "--resume auto" in capsys.readouterr().err  # an existing run is never silently overwritten
    assert cli([*base, "--resume", "auto", "--overwrite"]) == 2
    assert cli([*args(tiny_model_dir, data, uninterrupted.parent, "nothing-here"), "--resume", "auto"]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    assert cli([*base, "--resume", str(uninterrupted)]) == 2
    assert "not a complete rewardkit checkpoint" in capsys.readouterr().err


def _train_with_nan(tiny_model_dir, data, tmp_path, monkeypatch, nan_calls, **kw):
    """Train in-process with a forward hook that makes the reward NaN on the given forward calls."""
    import importlib

    train_module = importlib.import_module("rewardkit.train")  # the module (rewardkit.train is also the function)
    original, calls = train_module.load_reward_model, {"n": 0}

    def load_with_fault(name, **kw):
        model, tok = original(name, **kw)

        def hook(module, inputs, output):
            calls["n"] += 1
            return output * float("nan") if calls["n"] in nan_calls(calls["n"]) else output

        model.hf.score.register_forward_hook(hook)
        return model, tok

    monkeypatch.setattr(train_module, "load_reward_model", load_with_fault)
    cfg = TrainConfig(model=str(tiny_model_dir), train_data=str(data[0]), eval_data=None, output_dir=str(tmp_path),
                      run_name="nan", batch_size=4, micro_batch_size=4, learning_rate=2e-3, max_length=64,
                      eval_before=False, save_every=1, **kw)
    return train_module.train(cfg)


def test_a_non_finite_step_is_skipped_and_counted(tiny_model_dir, data, tmp_path, monkeypatch):
    report = _train_with_nan(tiny_model_dir, data, tmp_path, monkeypatch, lambda n: {3})
    lines = [json.loads(line) for line in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    skipped = [r for r in lines if r.get("skipped")]
    assert report["skipped_steps"] == 1 and [r["step"] for r in skipped] == [3]
    assert report["steps"] == 11 and all(r["loss"] == r["loss"] for r in lines if not r.get("skipped"))
    w = load_file(tmp_path / "nan" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in w.values())


def test_non_finite_steps_in_a_row_stop_the_run_with_a_usable_checkpoint(tiny_model_dir, data, tmp_path, monkeypatch):
    from rewardkit.train import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="2 steps in a row") as err:
        _train_with_nan(tiny_model_dir, data, tmp_path, monkeypatch, lambda n: set(range(4, 100)), max_bad_steps=2)
    assert "step-000003" in str(err.value) and "--resume" in str(err.value)
    from rewardkit.inference import score
    from rewardkit.inference.factory import load_scorer

    scorer = load_scorer(str(tmp_path / "nan" / "checkpoints" / "step-000003"))
    from rewardkit.data import read_preferences

    examples, _ = read_preferences(str(data[1]))
    assert all(torch.isfinite(torch.as_tensor(r)).all() for r in score(scorer, examples).rewards)


def test_report_to_tensorboard_logs_the_metrics_scalars(tiny_model_dir, data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rewardkit.train import train

    cfg = TrainConfig(model=str(tiny_model_dir), train_data=str(data[0]), eval_data=str(data[1]), output_dir=str(tmp_path),
                      run_name="tb", batch_size=4, micro_batch_size=4, max_length=64, report_to="tensorboard")
    train(cfg)
    events = list((tmp_path / "tb" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    losses = [e.value for e in acc.Scalars("train/loss")]
    logged = [json.loads(line) for line in (tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()]
    assert losses == pytest.approx([r["loss"] for r in logged if r["split"] == "train"], rel=1e-6)
    assert [e.step for e in acc.Scalars("eval/accuracy")] == [0, 11]


def test_overwrite_removes_the_old_run(tiny_model_dir, data, tmp_path):
    from rewardkit.train import train

    cfg = TrainConfig(model=str(tiny_model_dir), train_data=str(data[0]), eval_data=None, output_dir=str(tmp_path),
                      run_name="o", batch_size=4, micro_batch_size=4, max_length=64, eval_before=False, save_every=5)
    train(cfg)
    (tmp_path / "o" / "notes.md").write_text("mine")
    assert sorted(p.name for p in (tmp_path / "o" / "checkpoints").iterdir()) == ["step-000010", "step-000011"]
    cfg.save_every, cfg.overwrite = 0, True
    train(cfg)
    assert not (tmp_path / "o" / "checkpoints").exists()  # the old run's checkpoints went with it
    assert (tmp_path / "o" / "notes.md").read_text() == "mine" and (tmp_path / "o" / "rewardkit.json").exists()


def test_not_learning_is_judged_against_the_data_floor():
    from rewardkit.data.record import PreferenceExample
    from rewardkit.training.common import learning_warning, loss_floor

    strict = PreferenceExample(prompt=[], completions=[[{"role": "assistant", "content": "a"}]] * 2)
    tie = PreferenceExample(prompt=[], completions=strict.completions, ties=[[0, 1]])
    cfg = TrainConfig(loss="bt")
    assert loss_floor(cfg, [strict] * 4) == 0.0
    floor = loss_floor(cfg, [tie] * 9 + [strict])  # 90 % ties: the best possible mean loss is 0.9 log 2
    assert floor == pytest.approx(0.9 * 0.6931, abs=1e-3)
    # 0.66 is far below chance for clean data but is at the floor for this tie-heavy data: it learned.
    assert learning_warning([{"loss": 0.66}] * 8, None, None, loss_floor=floor) is None
    assert "chance" in learning_warning([{"loss": 0.692}] * 8, None, None, loss_floor=floor)
    assert "chance" in learning_warning([{"loss": 0.68}] * 8, None, None, loss_floor=0.0)
    assert loss_floor(TrainConfig(loss="plackett_luce"), [strict]) is None
    assert loss_floor(TrainConfig(loss="bt", label_smoothing=0.1), [strict]) == pytest.approx(0.3251, abs=1e-4)


@pytest.mark.slow
def test_genrm_runs_survive_the_same_way(tiny_model_dir, data, tmp_path):
    """The GenRM trainer runs on the same Run: a kill while saving, then --resume auto, equals the whole run."""
    base = ["train-genrm", "--model", str(tiny_model_dir), "--train-data", str(data[0]), "--output-dir", str(tmp_path),
            "--batch-size", "4", "--micro-batch-size", "4", "--learning-rate", "1e-3", "--max-length", "256",
            "--save-every", "2", "--no-eval-before"]
    finish(launch([*base, "--run-name", "whole"]))
    proc = launch([*base, "--run-name", "torn"], env={**ENV, CRASH_IN_SAVE_ENV: "6"})
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    from rewardkit.judges.judge import load_judge
    from rewardkit.model import ModelLoadError

    with pytest.raises(ModelLoadError, match="did not finish"):
        load_judge(str(tmp_path / "torn"))
    finish(launch([*base, "--run-name", "torn", "--resume", "auto"]))
    report = json.loads((tmp_path / "torn" / "report.json").read_text())
    assert report["resumed_from"].endswith("step-000004")
    assert max_weight_diff(tmp_path / "torn", tmp_path / "whole") <= 1e-6
    assert lines_without_time(tmp_path / "torn") == lines_without_time(tmp_path / "whole")
