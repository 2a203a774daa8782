import pytest
import torch

from rewardkit.model import ModelLoadError, RewardModel, load_reward_model, resolve_backbone


def test_local_folder_loads_with_a_fresh_scalar_head(tiny_model_dir):
    model, tok = load_reward_model(str(tiny_model_dir))
    assert isinstance(model, RewardModel)
    assert model.hf.score.out_features == 1
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.pad_token_id == tok.pad_token_id != tok.eos_token_id


@pytest.mark.parametrize("name, message", [
    ("missing.gguf", "GGUF file not found"),
    ("./no/such/folder", "model path not found"),
])
def test_missing_models_are_clear_errors(name, message):
    with pytest.raises(ModelLoadError, match=message):
        resolve_backbone(name)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_backbone(str(tmp_path))


def test_hub_id_passes_through_and_fails_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_backbone("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(ModelLoadError, match="could not load a tokenizer from 'some-org/not-a-model'"):
        load_reward_model("some-org/not-a-model")


def test_head_init_rules(tiny_model_dir):
    torch.manual_seed(0)
    default, _ = load_reward_model(str(tiny_model_dir))
    torch.manual_seed(0)
    normal, _ = load_reward_model(str(tiny_model_dir), head_init="normal")
    # "normal" is transformers' own draw, left as it is: the same seed gives the same head as before the option.
    assert torch.equal(default.hf.score.weight, normal.hf.score.weight)
    assert 0.01 < normal.hf.score.weight.std().item() < 0.03  # initializer_range 0.02
    zero, _ = load_reward_model(str(tiny_model_dir), head_init="zero")
    assert not zero.hf.score.weight.any()
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(zero(ids, torch.ones_like(ids)), torch.zeros(1))
    scaled, _ = load_reward_model(str(tiny_model_dir), head_init="scaled")
    w = scaled.hf.score.weight
    target = (w.shape[1] + 1) ** -0.5
    assert 0.7 * target < w.std().item() < 1.3 * target and target > 2 * 0.02


def test_head_init_keeps_a_trained_head(tiny_model_dir, tmp_path):
    torch.manual_seed(1)
    model, tok = load_reward_model(str(tiny_model_dir), head_init="scaled")
    model.hf.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    again, _ = load_reward_model(str(tmp_path / "ckpt"), head_init="zero")
    assert torch.equal(again.hf.score.weight, model.hf.score.weight)
