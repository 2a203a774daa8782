"""The client snippets of docs/serving.md run: every Python block there that talks to ``URL`` is executed against a
real server (the other blocks need a framework that is not installed here, and are replayed by
tests/test_integrations.py)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from rewardkit.batching import Encoder
from rewardkit.checkpoint import save_checkpoint
from rewardkit.inference.factory import load_scorer
from rewardkit.model import load_reward_model
from rewardkit.serve import running_server

DOC = Path(__file__).resolve().parents[1] / "docs" / "serving.md"


def test_the_client_snippets_in_docs_serving_run(tiny_model_dir, tmp_path, capsys):
    blocks = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if "(URL)" in b]
    assert len(blocks) >= 2
    torch.manual_seed(0)
    model, tok = load_reward_model(str(tiny_model_dir))
    save_checkpoint(tmp_path / "run", model, tok, Encoder(tok, max_length=64))
    with running_server(load_scorer(str(tmp_path / "run"))) as url:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), {"URL": url})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and printed[0].startswith("[") and 0 < float(printed[1]) < 1
