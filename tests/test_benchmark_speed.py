"""The speed benchmark runs end to end on a tiny model (rewardkit configurations; TRL is a benchmark-only
install) and its configurations train the same thing: equal first-step losses where the loss is the same."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # six benchmark subprocesses
def test_speed_benchmark_smoke(tiny_model_dir):
    configs = "rk_plain,rk_packed,rk_shared,kwise_flat_plain,kwise_flat_shared,kwise_shared"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/speed.py"), "--model", str(tiny_model_dir),
                           "--threads", "1", "--pairs-per-step", "2", "--rankings-per-step", "2", "--repeats", "2",
                           "--flat-micro-pairs", "2", "--configs", configs],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = {line.split(":")[0].strip(): line.rsplit("first loss ", 1)[1].split()
             for line in proc.stderr.splitlines() if "first loss" in line}
    losses = {name: float(words[0]) for name, words in lines.items()}
    assert set(losses) == set(configs.split(","))
    # each configuration ran the path it is named for (as group_rewards reported it), so equal losses compare
    # the shared path with the padded one, not padded with padded
    paths = {name: words[words.index("path") + 1] for name, words in lines.items()}
    assert paths == {"rk_plain": "padded", "rk_packed": "shared", "rk_shared": "shared", "kwise_flat_plain": "padded",
                     "kwise_flat_shared": "shared", "kwise_shared": "shared"}, paths
    assert abs(losses["rk_plain"] - losses["rk_shared"]) < 1e-4
    assert abs(losses["rk_plain"] - losses["rk_packed"]) < 1e-4
    assert abs(losses["kwise_flat_plain"] - losses["kwise_flat_shared"]) < 1e-4
    assert "| rewardkit K-wise: one shared group per ranking |" in proc.stdout
    assert "(" in proc.stdout.split("rewardkit K-wise")[1].split("\n")[0]  # paired ratio with its range
