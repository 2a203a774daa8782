"""Training on data read lazily (issue 15.2): the same steps as in memory, bounded windows, bad records still
reported with file:line, --max-steps for a stream, uneven shards over two real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from rewardkit.config import TrainConfig
from rewardkit.data import DataError
from rewardkit.errors import ConfigError
from rewardkit.train import train

from conftest import learnable_rows, write_jsonl


def losses(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


def config(tiny_model_dir: Path, tmp: Path, name: str, data: Path, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(model=str(tiny_model_dir), train_data=str(data), output_dir=str(tmp / "runs"),
                                 run_name=name, batch_size=8, micro_batch_size=4, learning_rate=2e-3, max_length=64,
                                 seed=0, eval_before=False), **kw})


def test_streamed_training_takes_the_in_memory_steps(tiny_model_dir, tmp_path):
    """A window at least as large as the data cuts the same batches from the same generator: same losses, same
    weights."""
    data = write_jsonl(tmp_path / "t.jsonl", learnable_rows(44, seed=1))  # 6 steps, the last of 4 pairs
    a = Path(train(config(tiny_model_dir, tmp_path, "memory", data))["run_dir"])
    report = train(config(tiny_model_dir, tmp_path, "stream", data, streaming=True))
    b = Path(report["run_dir"])
    assert report["streaming"] and report["steps"] == 6 and report["train_data"]["loaded"] == 44
    assert losses(a) == pytest.approx(losses(b), abs=1e-6)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-6


def test_small_windows_cover_every_record_and_report_bad_ones(tiny_model_dir, tmp_path):
    rows = [json.dumps(r) for r in learnable_rows(40, seed=2)]
    rows[5], rows[17], rows[30] = "{not json", json.dumps({"prompt": "q", "chosen": "x", "rejected": "x"}), "[]"
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=rf"{data}:6: "):
        train(config(tiny_model_dir, tmp_path, "strict", data, streaming=True, stream_window=8))
    report = train(config(tiny_model_dir, tmp_path, "skip", data, streaming=True, stream_window=8,
                          skip_bad_records=True, run_name="skip", overwrite=True))
    read = report["train_data"]
    assert read["loaded"] == 37 and sum(read["skipped"].values()) == 3
    assert read["skipped_at"] == [f"{data}:6", f"{data}:18", f"{data}:31"]
    assert report["steps"] == 5  # 40 raw records, 8 per step; the pairs of the skipped lines are simply absent
    trained = sum(r["records"] for r in [json.loads(x) for x in (Path(report["run_dir"]) / "metrics.jsonl")
                                         .read_text().splitlines()] if r["split"] == "train")
    assert trained == 37  # every valid record once


def test_max_steps_passes_over_a_stream_as_often_as_needed(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", learnable_rows(16, seed=3))
    report = train(config(tiny_model_dir, tmp_path, "steps", data, streaming=True, max_steps=5))
    rows = [json.loads(x) for x in (Path(report["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in rows if r["split"] == "train"]
    assert report["steps"] == 5 and epochs == [0, 0, 1, 1, 2]


def test_streaming_refuses_what_needs_the_whole_data(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", learnable_rows(16, seed=3))
    with pytest.raises(DataError, match="slice from the end"):
        train(config(tiny_model_dir, tmp_path, "neg", Path(f"{data}[-8:]"), streaming=True))
    with pytest.raises(ConfigError, match="--flatten-rankings"):
        TrainConfig(streaming=True, flatten_rankings=True)
    with pytest.raises(ConfigError, match="multiple of --batch-size"):
        TrainConfig(streaming=True, stream_window=10, batch_size=4)


@pytest.mark.slow
def test_two_processes_stream_uneven_shards_without_hanging(tiny_model_dir, tmp_path):
    """Raw record i goes to process i mod 2; every bad record is process 1's, so its shares are smaller (some
    steps it runs a zero-weight pass), yet both take every step and every valid record is trained once."""
    rows = [json.dumps(r) for r in learnable_rows(36, seed=4)]
    for i in (1, 3, 5, 7, 9, 11, 13):  # odd lines → process 1
        rows[i] = "{bad"
    data = tmp_path / "uneven.jsonl"
    data.write_text("\n".join(rows) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    out = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--main_process_port", "29561", "-m", "rewardkit.cli", "train", "--model",
                          str(tiny_model_dir), "--train-data", str(data), "--output-dir", str(tmp_path), "--run-name",
                          "two", "--batch-size", "8", "--micro-batch-size", "2", "--max-length", "64", "--streaming",
                          "--stream-window", "8", "--skip-bad-records", "--no-eval-before"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report["processes"] == 2 and report["steps"] == 5
    assert report["train_data"]["loaded"] == 29 and sum(report["train_data"]["skipped"].values()) == 7
    rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["records"] for r in rows if r["split"] == "train") == 29
