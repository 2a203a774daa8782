"""The scorer interface: rewardkit checkpoints, plain Hugging Face reward models and untrained backbones
are scored by one code path; rewards do not depend on batch size, padding side or thread count."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlamaForSequenceClassification

from rewardkit.data.record import PreferenceExample
from rewardkit.data.synthetic import synthetic_pairs
from rewardkit.model import ModelLoadError
from rewardkit.scorers import RewardModelScorer, Scorer, load_scorer

from conftest import SHARED, build_tiny_model


@pytest.fixture(scope="module")
def hf_reward_model_dir(tmp_path_factory) -> Path:
    """A plain transformers reward model folder (LlamaForSequenceClassification, one label, no rewardkit.json)."""
    base = build_tiny_model(tmp_path_factory.mktemp("base") / "lm", pad_equals_eos=False, seed=3)
    torch.manual_seed(5)
    model = LlamaForSequenceClassification.from_pretrained(base, num_labels=1)
    torch.nn.init.normal_(model.score.weight, std=0.5)  # a "trained" head, not zeros
    out = tmp_path_factory.mktemp("hfrm") / "rm"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def test_plain_hf_reward_model_scores_like_transformers_itself(hf_reward_model_dir):
    scorer = load_scorer(str(hf_reward_model_dir))
    assert isinstance(scorer, Scorer) and isinstance(scorer, RewardModelScorer)
    info = scorer.describe()
    assert info["kind"] == "hf-sequence-classification" and "head_init_seed" not in info
    assert info["pooling"] == "last_real_token" and info["template"] == "chat"
    assert not (hf_reward_model_dir / "rewardkit.json").exists()

    examples = synthetic_pairs("eval", n=6)
    ours = np.concatenate(scorer.score_examples(examples))
    # transformers' own pooling (rightmost non-pad token) is right here because this tokenizer has pad != eos.
    hf = LlamaForSequenceClassification.from_pretrained(hf_reward_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(hf_reward_model_dir)
    ids = [x for ex in scorer.encoder.encode_examples(examples) for x in ex]
    batch = tok.pad({"input_ids": ids}, return_tensors="pt")
    with torch.no_grad():
        theirs = hf(**batch).logits.squeeze(-1).double().numpy()
    assert abs(ours - theirs).max() < 1e-5
    # The head is the saved one: loading with another seed changes nothing.
    again = np.concatenate(load_scorer(str(hf_reward_model_dir), seed=999).score_examples(examples))
    np.testing.assert_array_equal(ours, again)


def test_untrained_backbone_gets_a_seeded_recorded_head(tiny_model_dir):
    examples = synthetic_pairs("eval", n=4)
    a = load_scorer(str(tiny_model_dir), seed=1)
    b = load_scorer(str(tiny_model_dir), seed=1)
    c = load_scorer(str(tiny_model_dir), seed=2)
    assert a.describe()["kind"] == "backbone (untrained head)" and a.describe()["head_init_seed"] == 1
    ra, rb, rc = (np.concatenate(s.score_examples(examples)) for s in (a, b, c))
    np.testing.assert_array_equal(ra, rb)
    assert abs(ra - rc).max() > 1e-4


def test_a_multi_label_classifier_is_refused(tmp_path, tiny_model_dir):
    model = LlamaForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3)
    model.save_pretrained(tmp_path / "clf")
    with pytest.raises(ModelLoadError, match="3 labels"):
        load_scorer(str(tmp_path / "clf"))


def test_rewardkit_checkpoint_metadata_reaches_the_results(tiny_model_dir, tmp_path):
    from rewardkit.batching import Encoder
    from rewardkit.checkpoint import save_checkpoint
    from rewardkit.model import load_reward_model

    model, tok = load_reward_model(str(tiny_model_dir))
    save_checkpoint(tmp_path / "run", model, tok, Encoder(tok, max_length=77, template="raw"),
                    reward_mean=0.5, reward_std=2.0)
    scorer = load_scorer(str(tmp_path / "run"))
    info = scorer.describe()
    assert info["kind"] == "rewardkit-checkpoint"
    assert (info["max_length"], info["template"], info["reward_mean"], info["reward_std"]) == (77, "raw", 0.5, 2.0)
    json.dumps(info)  # JSON-ready


@pytest.mark.slow
def test_smollm2_rewards_do_not_depend_on_batching_padding_or_threads():
    """The real model on real HH pairs: every way of batching gives the same rewards to 1e-4."""
    from rewardkit.data import read_preferences

    start = time.time()
    examples, _ = read_preferences(f"{SHARED / 'data' / 'hh-rlhf' / 'helpful-base.jsonl.gz'}[:4]")
    examples = examples[:3]
    scorer = load_scorer("smollm2-135m", max_length=128, seed=0)
    threads = torch.get_num_threads()
    results = {}
    try:
        for name, tokens, side, n_threads, shared in (
                ("base", 16384, "right", 1, False), ("one per batch", 128, "right", 1, False),
                ("left", 300, "left", 1, False), ("two threads", 16384, "left", 2, False),
                ("prefix-shared, packed", 16384, "right", 1, True), ("prefix-shared, one per batch", 128, "right", 2, True)):
            torch.set_num_threads(n_threads)
            scorer.max_batch_tokens, scorer.padding_side, scorer.prefix_sharing = tokens, side, shared
            results[name] = np.concatenate(scorer.score_examples(examples))
    finally:
        torch.set_num_threads(threads)
    for name, r in results.items():
        assert abs(r - results["base"]).max() < 1e-4, name
    assert results["base"].std() > 0  # not a degenerate constant
    assert time.time() - start < 90


def test_scorer_protocol_is_all_evaluation_needs():
    """Any object with name / score_examples / describe is evaluated, e.g. a length-only "reward"."""
    from rewardkit.data.record import completion_text
    from rewardkit.evaluate import run_evaluation

    class LengthScorer:
        name = "length"

        def score_examples(self, examples: list[PreferenceExample]) -> list[np.ndarray]:
            return [np.array([float(len(completion_text(c))) for c in ex.completions]) for ex in examples]

        def describe(self) -> dict:
            return {"type": "length"}

    examples = [PreferenceExample.pair(f"q{i}", "long answer" * (i % 3 + 1), "short") for i in range(6)]
    result, rewards = run_evaluation(LengthScorer(), examples, bootstrap_samples=0)
    assert isinstance(LengthScorer(), Scorer)
    assert result["model"] == "length" and result["scorer"] == {"type": "length"}
    assert result["pairwise_accuracy"] == result["length"]["length_baseline_accuracy"] == 1.0
