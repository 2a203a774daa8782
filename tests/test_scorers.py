"""The scorer interface: rewardkit checkpoints, plain Hugging Face reward models and untrained backbones
are scored by one code path; rewards do not depend on batch size, padding side or thread count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlamaForSequenceClassification

from rewardkit.data.record import PreferenceExample
from rewardkit.data.synthetic import synthetic_pairs
from rewardkit.inference import Group, Prepared, RewardModelScorer, Scorer, ScoreResult, score
from rewardkit.inference.factory import load_scorer
from rewardkit.model import ModelLoadError

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

    examples, _ = read_preferences(f"{SHARED / 'data' / 'hh-rlhf' / 'helpful-base.jsonl.gz'}[:4]")
    examples = examples[:3]
    scorer = load_scorer("smollm2-135m", max_length=128, seed=0)
    threads = torch.get_num_threads()
    results, paths = {}, {}
    try:
        for name, tokens, side, n_threads, shared in (
                ("base", 16384, "right", 1, False), ("one per batch", 128, "right", 1, False),
                ("left", 300, "left", 1, False), ("two threads", 16384, "left", 2, False),
                ("prefix-shared, packed", 16384, "right", 1, True), ("prefix-shared, one per batch", 128, "right", 2, True)):
            torch.set_num_threads(n_threads)
            scorer.max_batch_tokens, scorer.padding_side, scorer.prefix_sharing = tokens, side, shared
            scored = score(scorer, examples)
            results[name] = np.concatenate(scored.rewards)
            paths[name] = (scored.path, scored.forward_passes)
    finally:
        torch.set_num_threads(threads)
    for name, r in results.items():
        assert abs(r - results["base"]).max() < 1e-4, name
    assert results["base"].std() > 0  # not a degenerate constant
    # each variant ran the path it names (as the result says), in one pass or one per sequence / pair
    assert paths == {"base": ("padded", 1), "one per batch": ("padded", 6), "left": ("padded", paths["left"][1]),
                     "two threads": ("padded", 1), "prefix-shared, packed": ("shared", 1),
                     "prefix-shared, one per batch": ("shared", 3)}, paths
    assert 1 < paths["left"][1] < 6  # 300 tokens: a few left-padded batches


def test_scorer_protocol_is_all_evaluation_needs():
    """Any object with name / prepare / run / describe is evaluated, e.g. a length-only "reward"."""
    from rewardkit.batching import TruncationStats
    from rewardkit.data.record import completion_text
    from rewardkit.evaluate import run_evaluation

    class LengthScorer:
        name = "length"

        def prepare(self, groups: list) -> Prepared:
            groups = [Group.of(g) for g in groups]
            return Prepared(groups=groups, tokens=0, truncation=[TruncationStats() for _ in groups])

        def run(self, prepared: list[Prepared]) -> list[ScoreResult]:
            return [ScoreResult(rewards=[np.array([float(len(completion_text(c))) for c in g.completions])
                                         for g in p.groups], truncation=p.truncation, path="length")
                    for p in prepared]

        def describe(self) -> dict:
            return {"type": "length"}

    examples = [PreferenceExample.pair(f"q{i}", "long answer" * (i % 3 + 1), "short") for i in range(6)]
    result, rewards = run_evaluation(LengthScorer(), examples, bootstrap_samples=0)
    assert isinstance(LengthScorer(), Scorer)
    assert result["model"] == "length" and result["scorer"] == {"type": "length", "scoring_path": "length"}
    assert result["truncation"] == {"sequences": 0, "prompt_truncated": 0, "completion_truncated": 0}
    assert result["pairwise_accuracy"] == result["length"]["length_baseline_accuracy"] == 1.0


# ------------------------------------------------------------------------------------- rendered texts


@pytest.fixture(scope="module")
def random_head(tiny_model_dir):
    from rewardkit.model import load_reward_model

    model, tok = load_reward_model(str(tiny_model_dir))
    torch.manual_seed(0)
    torch.nn.init.normal_(model.hf.score.weight, std=1.0)  # a random head makes rewards differ visibly
    return model.eval(), tok


PROMPT = [{"role": "user", "content": "How was the answer?"}]
REPLY = [{"role": "assistant", "content": "the answer is great"}]


def test_rendered_chat_text_scores_like_its_messages(random_head):
    from rewardkit.batching import Encoder

    model, tok = random_head
    encoder = Encoder(tok, max_length=512)
    assert encoder.template == "chat" and encoder.end_of_turn() == "<|im_end|>\n"
    scorer = RewardModelScorer(model, encoder, name="tiny", kind="test")
    text = tok.apply_chat_template(PROMPT + REPLY, tokenize=False)
    assert text.endswith("the answer is great<|im_end|>\n")
    messages = score(scorer, [Group(prompt=PROMPT, completions=[REPLY])])
    (r_messages,) = messages.rewards[0]
    # the text as the chat template renders it, without the final "\n", and without the whole end-of-turn marker
    stripped = [text[:-len("\n")], text[:-len("<|im_end|>\n")]]
    rendered = score(scorer, [Group(texts=[text])] + [Group(texts=[t]) for t in stripped])
    assert rendered.end_of_turn_added == 2 and messages.end_of_turn_added == 0
    for r in rendered.rewards:
        assert abs(r[0] - r_messages) <= 1e-5
    assert score(scorer, [Group(texts=[text])]).end_of_turn_added == 0  # a complete turn is left as it is
    # with the rendered prompt marked, the same again (one group, three siblings)
    head = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    siblings = score(scorer, [Group(texts=[text, *stripped], prompt_text=head)])
    assert siblings.end_of_turn_added == 2 and np.abs(siblings.rewards[0] - r_messages).max() <= 1e-5

    # --no-complete-turn: the text is scored exactly as sent, so a reward read elsewhere differs
    exact = RewardModelScorer(model, encoder, name="tiny", kind="test", complete_turn=False)
    as_sent = score(exact, [Group(texts=[text])] + [Group(texts=[t]) for t in stripped])
    assert as_sent.end_of_turn_added == 0
    assert abs(as_sent.rewards[0][0] - r_messages) <= 1e-5
    for r in as_sent.rewards[1:]:
        assert abs(r[0] - r_messages) > 1e-4


def test_rendered_raw_text_scores_like_its_messages(random_head):
    from rewardkit.batching import Encoder

    model, tok = random_head
    encoder = Encoder(tok, max_length=512, template="raw")
    assert encoder.end_of_turn() == "" and encoder.complete_turn("x") == ("x", False)
    head, text = encoder.render(PROMPT, REPLY)
    assert text == "\n\nHuman: How was the answer?\n\nAssistant: the answer is great"
    for complete in (True, False):
        scorer = RewardModelScorer(model, encoder, name="tiny", kind="test", complete_turn=complete)
        (r_messages,) = score(scorer, [Group(prompt=PROMPT, completions=[REPLY])]).rewards[0]
        rendered = score(scorer, [Group(texts=[text]), Group(texts=[text], prompt_text=head)])
        assert rendered.end_of_turn_added == 0  # raw text has no end-of-turn marker to complete
        for r in rendered.rewards:
            assert abs(r[0] - r_messages) <= 1e-5


# ------------------------------------------------------------------------------------- per-call values


def test_truncation_counts_belong_to_their_call(random_head):
    """One scorer, several calls (as a server makes them): each result holds its own truncation counts."""
    from concurrent.futures import ThreadPoolExecutor

    from rewardkit.batching import Encoder

    model, tok = random_head
    scorer = RewardModelScorer(model, Encoder(tok, max_length=32), name="tiny", kind="test")
    long = PreferenceExample.pair("Is the question fine? " * 20, "the answer is great", "the answer is bad")
    short = PreferenceExample.pair("How was the answer?", "the answer is great", "the answer is bad")

    first = score(scorer, [long])
    second = score(scorer, [short])
    assert first.truncation_total().to_dict() == {"sequences": 2, "prompt_truncated": 2, "completion_truncated": 0}
    assert second.truncation_total().to_dict() == {"sequences": 2, "prompt_truncated": 0, "completion_truncated": 0}
    assert score(scorer, [long]).truncation_total() == first.truncation_total()  # nothing accumulates

    # concurrent requests, prepared on threads and run in one dynamic batch, keep their own counts
    inputs = [[long] if k % 2 == 0 else [short, short] for k in range(8)]
    with ThreadPoolExecutor(4) as pool:
        prepared = list(pool.map(scorer.prepare, inputs))
    results = scorer.run(prepared)
    for k, res in enumerate(results):
        t = res.truncation_total()
        assert (t.sequences, t.prompt_truncated) == ((2, 2) if k % 2 == 0 else (4, 0)), k
        assert len(res.rewards) == len(inputs[k])
    np.testing.assert_allclose(results[0].rewards[0], first.rewards[0], atol=1e-5)
    np.testing.assert_allclose(results[1].rewards[1], second.rewards[0], atol=1e-5)


def test_score_rows_survive_a_huge_reward_difference():
    """A judge's log-odds can be huge: P(a ≻ b) = σ(Δ) is then exactly 1 or 0, with no overflow."""
    import warnings

    from rewardkit.batching import TruncationStats
    from rewardkit.inference.rows import score_rows

    class Huge:
        name = "huge"

        def prepare(self, groups: list) -> Prepared:
            groups = [Group.of(g) for g in groups]
            return Prepared(groups=groups, tokens=0, truncation=[TruncationStats() for _ in groups])

        def run(self, prepared: list[Prepared]) -> list[ScoreResult]:
            deltas = iter([800.0, -800.0, 1e6, -1e6])
            return [ScoreResult(rewards=[np.array([d, 0.0]) for d, _ in zip(deltas, p.groups)],
                                truncation=p.truncation, path="judge:probability") for p in prepared]

        def describe(self) -> dict:
            return {"type": "judge"}

    rows = [{"prompt": "q", "a": "x", "b": f"y{i}"} for i in range(4)]
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        out, _ = score_rows(Huge(), rows)
    assert [r["p_a_beats_b"] for r in out] == [1.0, 0.0, 1.0, 0.0]
    json.dumps(out)
