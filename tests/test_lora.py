"""LoRA reward models (issue 15.1): the score head trained and saved with the adapter, a merged checkpoint that plain
transformers scores identically, adapter-only checkpoints, prefix sharing kept exact, resume after a real SIGKILL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_run import ENV, finish, launch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardkit.checkpoint import load_checkpoint, read_metadata
from rewardkit.config import TrainConfig
from rewardkit.errors import ConfigError
from rewardkit.inference import score
from rewardkit.inference.factory import load_scorer
from rewardkit.lora import ADAPTER_DIR, apply_lora, merged_state_dict
from rewardkit.model import load_reward_model
from rewardkit.sharing import group_rewards, sharing_unsupported_reason
from rewardkit.train import train

from conftest import learnable_rows, write_jsonl

LORA = dict(lora_r=4, lora_alpha=8.0)


def config(tiny_model_dir: Path, tmp: Path, name: str, **kw) -> TrainConfig:
    train_file = write_jsonl(tmp / "train.jsonl", learnable_rows(48, seed=1))
    eval_file = write_jsonl(tmp / "eval.jsonl", learnable_rows(16, seed=2))
    return TrainConfig(**{**dict(model=str(tiny_model_dir), train_data=str(train_file), eval_data=str(eval_file),
                                 output_dir=str(tmp / "runs"), run_name=name, batch_size=8, micro_batch_size=4,
                                 learning_rate=5e-3, max_length=64, seed=0, **LORA), **kw})


@pytest.fixture(scope="module")
def merged_run(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    report = train(config(tiny_model_dir, tmp, "merged"))
    return Path(report["run_dir"]), report, tmp


def texts_and_ids(run: Path):
    model, encoder, _ = load_checkpoint(str(run))
    rows = learnable_rows(6, seed=3)
    ids = encoder.encode_many([([{"role": "user", "content": r["prompt"]}], [{"role": "assistant", "content": r[k]}])
                               for r in rows for k in ("chosen", "rejected")])
    return model, encoder, ids


def test_merged_lora_checkpoint_scores_identically_in_plain_transformers(merged_run, tiny_model_dir):
    run, report, _ = merged_run
    assert report["after"]["accuracy"] > report["before"]["accuracy"]  # it learned
    assert report["prefix_sharing"] == "on"  # the adapters kept training on the shared path
    meta = read_metadata(run)
    assert meta["lora"] == {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": "all-linear", "saved": "merged"}
    saved = load_file(run / "model.safetensors")
    assert not [k for k in saved if "lora_" in k or "base_layer" in k or "modules_to_save" in k]
    base = load_file(tiny_model_dir / "model.safetensors")
    assert not torch.equal(saved["model.layers.0.self_attn.q_proj.weight"],
                           base["model.layers.0.self_attn.q_proj.weight"])  # the adapter was merged in
    assert (run / ADAPTER_DIR / "adapter_model.safetensors").is_file()

    model, encoder, ids = texts_and_ids(run)
    from rewardkit.inference import score_token_ids

    ours = score_token_ids(model, ids, encoder.tokenizer.pad_token_id)
    hf = AutoModelForSequenceClassification.from_pretrained(run).eval()
    tok = AutoTokenizer.from_pretrained(run)
    batch = tok([tok.decode(x) for x in ids], add_special_tokens=False, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = hf(**batch).logits.squeeze(-1).double().numpy()
    assert abs(ours - theirs).max() < 1e-4
    # The held-out rewards the run itself computed are the reloaded model's (saved = trained).
    rows = [json.loads(x) for x in (run / "eval_rewards.jsonl").read_text().splitlines()]
    from rewardkit.data import read_preferences

    examples, _ = read_preferences(str(Path(report["config"]["eval_data"])))
    reloaded = score(load_scorer(str(run)), examples).rewards
    assert max(abs(a - b) for r, new in zip(rows, reloaded) for a, b in zip(r["rewards"], new)) < 1e-4


def test_the_score_head_is_trained_and_saved_with_the_adapter(merged_run, tiny_model_dir):
    run, _, _ = merged_run
    adapter = load_file(run / ADAPTER_DIR / "adapter_model.safetensors")
    head = [k for k in adapter if "score" in k]
    assert head, sorted(adapter)[:10]  # peft's modules_to_save: the head travels with the adapter
    merged_head = load_file(run / "model.safetensors")["score.weight"]
    assert torch.equal(adapter[head[0]], merged_head)
    fresh, _ = load_reward_model(str(tiny_model_dir))  # the head a base model would get
    assert not torch.allclose(fresh.hf.score.weight, merged_head)


def test_adapter_only_checkpoint_loads_onto_its_base_with_the_same_rewards(merged_run, tiny_model_dir):
    run, _, tmp = merged_run
    report = train(config(tiny_model_dir, tmp, "adapter", lora_save="adapter"))
    folder = Path(report["run_dir"])
    assert (folder / "adapter_config.json").is_file() and not (folder / "model.safetensors").exists()
    assert read_metadata(folder)["lora"]["saved"] == "adapter"
    _, encoder, ids = texts_and_ids(run)
    from rewardkit.inference import score_token_ids

    ours_merged = score_token_ids(load_checkpoint(str(run))[0], ids, encoder.tokenizer.pad_token_id)
    ours_adapter = score_token_ids(load_checkpoint(str(folder))[0], ids, encoder.tokenizer.pad_token_id)
    assert abs(ours_merged - ours_adapter).max() < 1e-5  # same seed, same data: the same training
    # peft's own loader onto the base model gives the same rewards (the head included).
    from peft import PeftModel

    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1, pad_token_id=encoder.tokenizer.pad_token_id)
    peft_model = PeftModel.from_pretrained(base, folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok([tok.decode(x) for x in ids], add_special_tokens=False, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = peft_model(**batch).logits.squeeze(-1).double().numpy()
    assert abs(ours_adapter - theirs).max() < 1e-4


def test_shared_and_padded_lora_training_give_the_same_gradients(tiny_model_dir):
    from test_sharing import random_groups

    model, _ = load_reward_model(str(tiny_model_dir))
    apply_lora(model, 4, 8.0, 0.0, "all-linear")
    torch.manual_seed(0)
    for name, p in model.named_parameters():  # B starts at 0: give it values so the adapter matters
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    assert sharing_unsupported_reason(model) is None  # LoRA keeps the shared path available
    groups, pad_id = random_groups([(12, [5, 9]), (20, [3, 7, 4, 11]), (6, [8, 2])]), 0
    grads = {}
    for shared in (True, False):
        model.zero_grad(set_to_none=True)
        rewards = group_rewards(model, groups, pad_id, shared=shared)
        assert rewards.path == ("shared" if shared else "padded")  # what ran, as group_rewards reports it
        torch.cat(rewards).pow(2).sum().backward()
        grads[shared] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    for name in trainable:
        assert torch.allclose(grads[True][name], grads[False][name], atol=1e-5, rtol=1e-4), name


def test_lora_and_trainable_layers_are_exclusive():
    with pytest.raises(ConfigError, match="--lora-r and --trainable-layers"):
        TrainConfig(lora_r=8, trainable_layers=2)


@pytest.mark.slow  # three training processes
def test_lora_run_killed_mid_save_resumes_to_the_uninterrupted_weights(tiny_model_dir, tmp_path):
    from rewardkit.run import CRASH_IN_SAVE_ENV

    data = (write_jsonl(tmp_path / "t.jsonl", learnable_rows(24, seed=1)), write_jsonl(tmp_path / "e.jsonl",
                                                                                      learnable_rows(8, seed=2)))
    base = ["train", "--model", str(tiny_model_dir), "--train-data", str(data[0]), "--eval-data", str(data[1]),
            "--output-dir", str(tmp_path), "--batch-size", "4", "--micro-batch-size", "2", "--learning-rate", "5e-3",
            "--max-length", "64", "--save-every", "2", "--lora-r", "4", "--lora-alpha", "8"]
    finish(launch([*base, "--run-name", "whole"]))
    proc = launch([*base, "--run-name", "torn"], env={**ENV, CRASH_IN_SAVE_ENV: "4"})
    proc.communicate(timeout=600)
    assert proc.returncode != 0 and not (tmp_path / "torn" / "rewardkit.json").exists()
    out = finish(launch([*base, "--run-name", "torn", "--resume", "auto"]))
    assert "resumed from" in out and "step-000002" in out
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "torn" / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_merged_state_dict_leaves_training_state_untouched(tiny_model_dir):
    model, _ = load_reward_model(str(tiny_model_dir))
    apply_lora(model, 4, 8.0, 0.0, "q_proj,v_proj")
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.fill_(0.01)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merged = merged_state_dict(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "model.layers.0.self_attn.q_proj.weight" in merged and "model.layers.0.mlp.up_proj.weight" in merged
    layer = model.hf.model.layers[0].self_attn.q_proj
    expected = layer.base_layer.weight + (8.0 / 4) * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    assert torch.allclose(merged["model.layers.0.self_attn.q_proj.weight"], expected, atol=1e-7)
