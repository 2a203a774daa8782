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
