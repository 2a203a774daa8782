"""rewardkit.allocator: a CPU training process keeps freed large buffers for reuse (measured by the process's
own resident memory, in a fresh interpreter per case: the setting is once per process)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

PROBE = """
import json, os, sys
import torch
from rewardkit.allocator import allocator_setting, retain_freed_memory
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before_setting = allocator_setting()
setting = retain_freed_memory() if sys.argv[1] == "retain" else before_setting
x = torch.ones(64 * 2**20 // 4)  # a 64 MB buffer: above glibc's largest mmap threshold (32 MB)
held = rss()
del x
print(json.dumps({"setting": setting, "before": before_setting, "dropped_mb": held - rss(), "again": retain_freed_memory() if sys.argv[1] == "retain" else None}))
"""


def probe(mode: str, env: dict | None = None) -> dict:
    import os

    # The caller's own allocator settings would change what the probe sees.
    clean = {k: v for k, v in os.environ.items()
             if k not in ("LD_PRELOAD", "GLIBC_TUNABLES", "REWARDKIT_MALLOC") and not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**clean, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_large_buffers_stay_resident_only_when_retained():
    default = probe("default")
    assert default["setting"] == default["before"] == "system default"
    assert default["dropped_mb"] > 50  # glibc unmapped the 64 MB buffer on free
    retained = probe("retain")
    assert retained["setting"] == retained["again"] == "glibc, freed memory retained for reuse"
    assert retained["dropped_mb"] < 5  # kept in the heap for the next allocation
    off = probe("retain", {"REWARDKIT_MALLOC": "system"})
    assert off["setting"] == "system default (REWARDKIT_MALLOC=system)" and off["dropped_mb"] > 50


def test_a_cpu_training_run_records_its_allocator(tiny_model_dir, tmp_path):
    """``rewardkit train`` on CPU applies the setting and writes it into report.json."""
    import os

    from conftest import learnable_rows, write_jsonl

    data = write_jsonl(tmp_path / "train.jsonl", learnable_rows(8))
    env = {**os.environ, "REWARDKIT_CPU_BF16": "0", "ACCELERATE_USE_CPU": "1"}  # a CPU run, on a GPU host too
    done = subprocess.run([sys.executable, "-m", "rewardkit.cli", "train", "--model", str(tiny_model_dir), "--train-data",
                    str(data), "--output-dir", str(tmp_path / "runs"), "--run-name", "a", "--batch-size", "4",
                    "--no-eval-before", "--max-length", "64"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "runs" / "a" / "report.json").read_text())
    expected = "glibc, freed memory retained for reuse" if platform.libc_ver()[0] == "glibc" else "system default"
    assert report["allocator"].startswith(expected)
