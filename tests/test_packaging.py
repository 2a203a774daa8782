"""The package declares what it needs as ranges; the exact CPU wheel is pinned only where we install it."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_torch_is_a_range_in_the_package_and_pinned_in_setup():
    """Issue 14.12: `torch==2.13.0` in pyproject blocked installing rewardkit next to a CUDA build of torch."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_spec = next(d for d in deps if re.match(r"torch\b", d))
    assert "==" not in torch_spec and ">=" in torch_spec, torch_spec
    assert not [d for d in deps if "==" in d], "the package pins exact versions; use ranges"
    assert "pip install -q torch==2.13.0" in (ROOT / "setup.sh").read_text()
