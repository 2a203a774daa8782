"""Outcome and process reward models train like the preference RM: streaming takes the in-memory steps, a resumed run
ends at the uninterrupted weights, LoRA, and two real processes (DDP, DeepSpeed ZeRO-2) match one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from rewardkit.config import TrainConfig
from rewardkit.train import train

from conftest import write_jsonl

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "1"}


def prm_rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        labels = [bool(rng.random() < 0.6) for _ in range(k)]
        soft = [float(round(rng.random(), 2)) if j == 0 and i % 3 == 0 else v for j, v in enumerate(labels)]
        rows.append({"prompt": f"question {i % 7}",
                     "completions": ["good great fine" if v else "bad awful poor" for v in labels],
                     "labels": soft})
    return rows


def config(tiny_model_dir: Path, tmp: Path, name: str, data: Path, objective: str = "prm", **kw) -> TrainConfig:
    return TrainConfig(**{**dict(model=str(tiny_model_dir), train_data=str(data), output_dir=str(tmp / "runs"),
                                 run_name=name, objective=objective, batch_size=8, micro_batch_size=4,
                                 learning_rate=2e-3, max_length=64, seed=0, eval_before=False), **kw})


def losses(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


def max_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.fixture(scope="module")
def prm_data(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("prm") / "prm.jsonl", prm_rows(44, seed=1))


def test_streamed_prm_takes_the_in_memory_steps(tiny_model_dir, tmp_path, prm_data):
    a = Path(train(config(tiny_model_dir, tmp_path, "memory", prm_data))["run_dir"])
    report = train(config(tiny_model_dir, tmp_path, "stream", prm_data, streaming=True))
    b = Path(report["run_dir"])
    assert report["streaming"] and report["steps"] == 6 and report["train_data"]["loaded"] == 44
    assert losses(a) == pytest.approx(losses(b), abs=1e-6)
    assert max_diff(a, b) < 1e-6


def test_resumed_prm_ends_at_the_uninterrupted_weights(tiny_model_dir, tmp_path, prm_data):
    """A run resumed from its step-2 checkpoint (the rest of the run folder removed) reaches the same weights."""
    whole = Path(train(config(tiny_model_dir, tmp_path, "whole", prm_data, save_every=2, keep_checkpoints=5))["run_dir"])
    part = tmp_path / "runs" / "part"
    shutil.copytree(whole, part)
    checkpoints = sorted((part / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-000002", "step-000004", "step-000006"]
    for later in [*checkpoints[1:], part / "model.safetensors", part / "report.json"]:
        shutil.rmtree(later) if later.is_dir() else later.unlink()
    rows = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    (part / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r.get("step", 0) <= 2))
    report = train(config(tiny_model_dir, tmp_path, "part", prm_data, save_every=2, keep_checkpoints=5, resume="auto"))
    assert report["steps"] == 6 and report["resumed_from"].endswith("step-000002")
    rows = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]  # steps 3-6 ran after resuming
    assert max_diff(whole, part) < 1e-6


def test_lora_prm_trains_and_saves_a_loadable_model(tiny_model_dir, tmp_path, prm_data):
    from rewardkit.inference import Group, load_classifier_scorer, score

    report = train(config(tiny_model_dir, tmp_path, "lora", prm_data, lora_r=4, lora_alpha=8, learning_rate=5e-3))
    scorer = load_classifier_scorer(report["run_dir"], precision="fp32")
    assert scorer.step_marker == "\n\n"
    result = score(scorer, [Group(prompt=[{"role": "user", "content": "question 1"}],
                                  completions=[[{"role": "assistant", "content": "good great fine\n\nbad awful poor"}]])])
    assert len(result.step_rewards[0][0]) == 2


def _launch(args: list[str], port: int, config_file: Path | None = None) -> subprocess.CompletedProcess:
    launcher = (["--config_file", str(config_file)] if config_file else ["--multi_gpu", "--num_processes", "2"])
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *launcher, "--main_process_port",
                           str(port), "-m", "rewardkit.cli", *args], env=ENV, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["ddp", "zero2"])
def test_two_processes_match_one_for_prm_and_orm(tiny_model_dir, tmp_path, launcher):
    if launcher == "zero2":
        pytest.importorskip("deepspeed")
    prm = write_jsonl(tmp_path / "prm.jsonl", prm_rows(41, seed=2))
    orm = write_jsonl(tmp_path / "orm.jsonl", [{"prompt": f"question {i % 5}",
                                                "completions": ["good great fine", "bad awful poor"],
                                                "correct": [True, i % 4 == 0]} for i in range(41)])
    for objective, data in (("prm", prm), ("orm", orm)):
        args = ["train", "--model", str(tiny_model_dir), "--train-data", str(data), "--objective", objective,
                "--output-dir", str(tmp_path / "runs"), "--batch-size", "8", "--micro-batch-size", "2",
                "--learning-rate", "2e-3", "--max-length", "64", "--no-eval-before"]
        one = subprocess.run([sys.executable, "-m", "rewardkit.cli", *args, "--run-name", f"{objective}-one"],
                             env=ENV, capture_output=True, text=True, timeout=600)
        assert one.returncode == 0, one.stderr[-3000:]
        two = _launch([*args, "--run-name", f"{objective}-two"], 29571 if launcher == "ddp" else 29575,
                      ROOT / "configs/accelerate/deepspeed_zero2.yaml" if launcher == "zero2" else None)
        assert two.returncode == 0, two.stderr[-3000:]
        a, b = tmp_path / "runs" / f"{objective}-one", tmp_path / "runs" / f"{objective}-two"
        assert json.loads((b / "report.json").read_text())["processes"] == 2
        assert losses(a) == pytest.approx(losses(b), abs=1e-5)
        # Adam divides by √v: a parameter whose gradients are near 0 moves by ~lr whatever their rounding, so the
        # all-reduce's summation order shows up as ~1e-5 at lr 2e-3 after 6 steps (seen: 1.3e-5); a wrong
        # reduction (a rank's records dropped or counted twice) moves weights by far more.
        assert max_diff(a, b) < 1e-4
