"""LLM judges on a tiny random Llama: templates, verdict-token probabilities against a hand-computed forward
pass, both-order combination, the free-text parser, sampling, truncation, the CLI glue."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rewardkit.cli import main as judge_cli
from rewardkit.data.record import PreferenceExample
from rewardkit.inference import ScoreResult, score
from rewardkit.judges import (
    JudgeScorer,
    evaluate_judge,
    load_judge,
    load_template,
    parse_verdict,
    resolve_verdict_tokens,
)
from rewardkit.judges.judge import JudgeStats, _allocate
from rewardkit.judges.parse import majority, vote
from rewardkit.judges.templates import JudgeTemplate, render_chat

from conftest import learnable_rows, write_jsonl

SHORT = {
    "pairwise": "Q: {prompt}\nA: {response_a}\nB: {response_b}\nWhich is better?",
    "pointwise": "Q: {prompt}\nA: {response}\nRate it.",
    "verifier": "Q: {prompt}\nA: {response}\nIs it good?",
}


def pairs(n: int = 4, seed: int = 0) -> list[PreferenceExample]:
    return [PreferenceExample.pair(r["prompt"], r["chosen"], r["rejected"], source=f"row {i}")
            for i, r in enumerate(learnable_rows(n, seed))]


@pytest.fixture(scope="module")
def judges(tiny_model_dir):
    return {kind: load_judge(str(tiny_model_dir), kind=kind, template=SHORT[kind], system_prompt="")
            for kind in SHORT}


# ------------------------------------------------------------------------------------- templates


def test_templates_render_with_and_without_system_prompt(judges):
    tok = judges["verifier"].tokenizer
    plain = load_template("verifier", SHORT["verifier"], system_prompt="")
    with_system = load_template("verifier", SHORT["verifier"], system_prompt="You grade answers.")
    user = plain.fill(prompt="Why?", response="Because.")
    assert user == "Q: Why?\nA: Because.\nIs it good?"
    text = render_chat(tok, plain, user)
    assert text == "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n"
    text = render_chat(tok, with_system, user)
    assert text == ("<|im_start|>system\nYou grade answers.<|im_end|>\n<|im_start|>user\n" + user
                    + "<|im_end|>\n<|im_start|>assistant\n")
    # the answer prefix starts the judge's reply in probability mode only
    pairwise = load_template("pairwise")
    assert pairwise.system and render_chat(tok, pairwise, "x").endswith("<|im_start|>assistant\n[[")
    assert render_chat(tok, pairwise, "x", with_answer_prefix=False).endswith("<|im_start|>assistant\n")


def test_fields_are_substituted_once_and_other_braces_stay():
    t = load_template("pointwise", 'Rate {response} for {prompt}. Reply as JSON {"rating": n}.')
    filled = t.fill(prompt="{response}", response="{prompt} a {b}")
    assert filled == 'Rate {prompt} a {b} for {response}. Reply as JSON {"rating": n}.'


def test_template_from_files_and_errors(tmp_path):
    txt = tmp_path / "judge.txt"
    txt.write_text("Question: {prompt}\nAnswer: {response}\nCorrect?")
    t = load_template("verifier", str(txt))
    assert t.user.startswith("Question:") and t.system == load_template("verifier").system and t.source == str(txt)
    system = tmp_path / "system.txt"
    system.write_text("Be strict.")
    assert load_template("verifier", str(txt), str(system)).system == "Be strict."
    yml = tmp_path / "judge.yaml"
    yml.write_text("user: 'Q {prompt} R {response}'\nsystem: null\nanswer_prefix: 'Verdict: '\n"
                   "verdicts: {'Yes': ['Yes', 'yes'], 'No': ['No', 'no']}\n")
    t = load_template("verifier", str(yml))
    assert t.system is None and t.answer_prefix == "Verdict: " and t.verdicts["Yes"] == ["Yes", "yes"]
    with pytest.raises(ValueError, match=r"must contain \{response_a\}, \{response_b\}"):
        load_template("pairwise", "Which is better: {response}?")
    with pytest.raises(ValueError, match="cannot be used in a verifier template"):
        load_template("verifier", "{prompt} {response} {response_a}")
    with pytest.raises(ValueError, match="file not found"):
        load_template("verifier", str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("user: '{prompt} {response}'\nanswer_prefx: 'x'\n")
    with pytest.raises(ValueError, match="unknown template field"):
        load_template("verifier", str(bad))
    with pytest.raises(ValueError, match="must be 'Yes' and 'No'"):
        JudgeTemplate("verifier", "{response}", verdicts={"Good": ["Good"], "Bad": ["Bad"]})


# ------------------------------------------------------------------------------------- verdict tokens


def test_ratings_1_and_10_are_distinct_token_sequences(judges):
    v = judges["pointwise"].verdicts
    one, ten = v.candidates[v.labels.index("1")], v.candidates[v.labels.index("10")]
    assert one != ten and one[0] == ten[0] and len(one) == len(ten) == 2  # told apart by the token after "1"
    assert all(len(c) == 1 for label, c in zip(v.labels, v.candidates) if label not in ("1", "10"))
    no_suffix = JudgeTemplate("pointwise", SHORT["pointwise"], answer_prefix="Rating: [[", verdict_suffix="")
    with pytest.raises(ValueError, match="verdicts '1' and '10' are not distinguishable"):
        resolve_verdict_tokens(judges["pointwise"].tokenizer, no_suffix)
    trailing_space = JudgeTemplate("pointwise", SHORT["pointwise"], answer_prefix="Rating: ", verdict_suffix="]]")
    with pytest.raises(ValueError, match="merges with the end of the judge prompt"):
        resolve_verdict_tokens(judges["pointwise"].tokenizer, trailing_space)
    spaced = JudgeTemplate("pointwise", SHORT["pointwise"], answer_prefix="Rating:", verdict_suffix="]]",
                           verdicts={str(k): [f" {k}"] for k in range(1, 11)})
    assert len(resolve_verdict_tokens(judges["pointwise"].tokenizer, spaced).candidates) == 10


def _hand_label_probs(model, seq: list[int], verdicts) -> np.ndarray:
    """P(label) computed independently: one unpadded forward pass per candidate, softmax, pick the ids."""
    mass = np.zeros(len(verdicts.labels))
    for cand, owner in zip(verdicts.candidates, verdicts.owners):
        with torch.no_grad():
            logits = model(torch.tensor([seq + list(cand)])).logits[0]
        probs = torch.softmax(logits.double(), -1)
        p = 1.0
        for k, token in enumerate(cand):
            p *= float(probs[len(seq) - 1 + k, token])
        mass[owner] += p
    return mass


@pytest.mark.parametrize("kind", ["pointwise", "pairwise", "verifier"])
def test_verdict_probabilities_match_a_hand_computed_forward_pass(judges, kind):
    judge = judges[kind]
    queries = [{"prompt": "What is the answer?", "response": "the answer is good", "response_a": "the answer is good",
                "response_b": "bad"},
               {"prompt": "Is the question fine? " * 4, "response": "awful", "response_a": "poor",
                "response_b": "the answer is fine " * 3},
               {"prompt": "How?", "response": "fine", "response_a": "great", "response_b": "great"}]
    seqs = judge.encode_queries(queries)
    assert len({len(s) for s in seqs}) == 3  # different lengths: the batch is padded
    logp, mass = judge.label_logprobs(seqs, max_batch_tokens=10_000)
    for row, seq in enumerate(seqs):
        hand = _hand_label_probs(judge.model, seq, judge.verdicts)
        np.testing.assert_allclose(mass[row], hand.sum(), rtol=1e-4)
        np.testing.assert_allclose(np.exp(logp[row]), hand / hand.sum(), rtol=1e-4, atol=1e-7)
    # batch composition does not matter
    single = np.concatenate([judge.label_logprobs([s])[0] for s in seqs])
    np.testing.assert_allclose(single, logp, atol=1e-5)


def test_spellings_of_one_verdict_are_summed(tiny_model_dir):
    judge = load_judge(str(tiny_model_dir), kind="verifier", system_prompt="", template=SHORT["verifier"])
    tpl = JudgeTemplate("verifier", SHORT["verifier"], verdicts={"Yes": ["Yes", "yes"], "No": ["No", "no"]})
    v = resolve_verdict_tokens(judge.tokenizer, tpl)
    assert len(v.candidates) == 4 and v.owners.count(0) == 2
    seq = judge.encode_queries([{"prompt": "q", "response": "r"}])[0]
    from rewardkit.judges.judge import verdict_logprobs

    logp, _ = verdict_logprobs(judge.model, torch.tensor([seq]), torch.ones(1, len(seq), dtype=torch.long), v)
    hand = _hand_label_probs(judge.model, seq, v)
    np.testing.assert_allclose(logp.exp()[0].detach().numpy(), hand / hand.sum(), rtol=1e-4)


# ------------------------------------------------------------------------------------- both orders


def _res(p_a: float) -> dict:
    return {"logp": {"A": math.log(p_a), "B": math.log(1 - p_a)}, "mass": 0.5}


def test_both_orders_combine_as_mean_log_odds_and_count_flips(judges):
    scorer, stats = JudgeScorer(judges["pairwise"]), JudgeStats()
    # i shown as A: P(A) = 0.8 → log-odds for i: log 4. i shown as B: P(A) = 0.6 → log-odds for i: −log 1.5.
    info = scorer._combine({True: _res(0.8), False: _res(0.6)}, stats)
    assert info["log_odds"] == pytest.approx((math.log(4) - math.log(1.5)) / 2)
    assert info["flip"] is True  # i wins when first, loses when second: the judge just prefers "A"
    info = scorer._combine({True: _res(0.7), False: _res(0.1)}, stats)
    assert info["log_odds"] == pytest.approx((math.log(0.7 / 0.3) + math.log(0.9 / 0.1)) / 2)
    assert info["flip"] is False
    assert stats.flips == 1 and stats.pairs_both_orders == 2
    assert stats.to_dict()["flip_rate"] == 0.5
    assert stats.to_dict()["position_a_rate"] == 0.75  # 3 of 4 verdicts were "A"
    # a constant position bias b on the log-odds of "A" cancels exactly
    s, b = 0.9, 2.5
    p = lambda lo: 1 / (1 + math.exp(-lo))  # noqa: E731
    assert scorer._combine({True: _res(p(s + b)), False: _res(p(-s + b))}, JudgeStats())["log_odds"] == pytest.approx(s)


def test_pairwise_scorer_rewards_and_single_orders(judges):
    judge = judges["pairwise"]
    examples = pairs(5)
    examples[1] = PreferenceExample(prompt=examples[1].prompt, completions=examples[1].completions[::-1],
                                    ranking=[1, 0])  # chosen second in the record
    scorer = JudgeScorer(judge, order="both")
    result = evaluate_judge(scorer, examples)
    scored = score(scorer, examples)
    rewards, details = scored.rewards, scored.details
    assert scored.path == "judge:probability" and scored.stats["flip_rate"] == result["judge"]["stats"]["flip_rate"]
    flips = 0
    for ex, r, d in zip(examples, rewards, details):
        c0, c1 = (ex.completions[k][0]["content"] for k in (0, 1))
        x = ex.prompt[0]["content"]
        lp, _ = judge.label_logprobs(judge.encode_queries([{"prompt": x, "response_a": c0, "response_b": c1},
                                                           {"prompt": x, "response_a": c1, "response_b": c0}]))
        lo_first, lo_second = lp[0, 0] - lp[0, 1], lp[1, 0] - lp[1, 1]
        combined = (lo_first - lo_second) / 2
        assert r[0] - r[1] == pytest.approx(combined, abs=1e-5) and r[0] == pytest.approx(-r[1])
        flips += (lo_first > 0) != (-lo_second > 0)
        assert d["pairs"][0]["log_odds_a_i_first"] == pytest.approx(lo_first, abs=1e-5)
    assert result["judge"]["stats"]["flip_rate"] == pytest.approx(flips / len(examples))
    # single orders come from the same passes: "chosen first" uses the log-odds where the chosen was A
    first = result["single_order"]["chosen_first"]
    ex1 = details[1]["pairs"][0]  # record 1 has the chosen at index 1: chosen first = j first
    assert first["pairs"] == 5 and ex1["i"] == 0
    margins = []
    for ex, d in zip(examples, details):
        p = d["pairs"][0]
        chosen_is_i = ex.ranking[0] == p["i"]
        lo_chosen_first = p["log_odds_a_i_first"] if chosen_is_i else p["log_odds_a_j_first"]
        margins.append(lo_chosen_first)
    assert first["mean_margin"] == pytest.approx(np.mean(margins), abs=1e-6)
    assert result["seconds_per_pair"] > 0 and result["undecided_examples"] == 0
    # "as_given" and "random" run one query per pair, and each equals one of the two orders
    for order in ("as_given", "random"):
        one = JudgeScorer(judge, order=order)
        one_scored = score(one, examples)
        r1 = one_scored.rewards
        assert one_scored.stats["queries"] == 5 and one_scored.stats["pairs_both_orders"] == 0
        for r, d in zip(r1, details):
            p = d["pairs"][0]
            assert any(r[0] - r[1] == pytest.approx(lo, abs=1e-5)
                       for lo in (p["log_odds_a_i_first"], -p["log_odds_a_j_first"]))


def test_k_completions_get_the_least_squares_bradley_terry_rewards(judges):
    ex = PreferenceExample(prompt=[{"role": "user", "content": "How was the answer?"}],
                           completions=[[{"role": "assistant", "content": t}] for t in ("good", "bad", "fine")],
                           ranking=[0, 2, 1])
    scorer = JudgeScorer(judges["pairwise"])
    scored = score(scorer, [ex])
    (r,) = scored.rewards
    L = {(p["i"], p["j"]): p["log_odds"] for p in scored.details[0]["pairs"]}
    assert set(L) == {(0, 1), (0, 2), (1, 2)}
    assert r[0] == pytest.approx((L[0, 1] + L[0, 2]) / 3) and r[2] == pytest.approx((-L[0, 2] - L[1, 2]) / 3)
    single = PreferenceExample(prompt=ex.prompt, completions=ex.completions[:1], ranking=[0], source="f.jsonl:3")
    with pytest.raises(ValueError, match="f.jsonl:3: a pairwise judge needs at least two completions"):
        scorer.score_examples([single])


def test_pointwise_and_verifier_rewards(judges):
    examples = pairs(3)
    point = JudgeScorer(judges["pointwise"])
    scored = score(point, examples)
    for r, d in zip(scored.rewards, scored.details):
        for reward, c in zip(r, d["completions"]):
            expected = sum(float(k) * math.exp(v) for k, v in c["logp"].items())
            assert reward == pytest.approx(expected) and 1 <= reward <= 10
    ver = JudgeScorer(judges["verifier"])
    ver_scored = score(ver, examples)
    for r, d in zip(ver_scored.rewards, ver_scored.details):
        for reward, c in zip(r, d["completions"]):
            assert reward == pytest.approx(c["logp"]["Yes"] - c["logp"]["No"])
            assert math.exp(c["logp"]["Yes"]) + math.exp(c["logp"]["No"]) == pytest.approx(1)
    assert 0 < ver_scored.stats["mean_verdict_mass"] <= 1


# ------------------------------------------------------------------------------------- parser, sampling


@pytest.mark.parametrize("text, labels, status, verdict", [
    ("[[A]]", "AB", "ok", "A"),
    ("After careful thought, [[B]].", "AB", "ok", "B"),
    ("Verdict: B", "AB", "ok", "B"),
    ("**Final verdict:** A", "AB", "ok", "A"),
    ("[[A]] is my verdict. Again: [[A]]", "AB", "ok", "A"),
    ("[[a]]", "AB", "ok", "A"),
    ("Both answers are fine.", "AB", "unparseable", None),
    ("", "AB", "unparseable", None),
    ("Assistant A is better.", "AB", "unparseable", None),  # prose is not a marker: never guessed
    ("[[A]] or maybe [[B]]", "AB", "ambiguous", None),
    ("Verdict: A\n[[B]]", "AB", "ambiguous", None),
    ("[[C]]", "AB", "invalid", None),
    ("[[tie]]", "AB", "invalid", None),
    ("B", "AB", "ok", "B"),
    ("Yes.", ("Yes", "No"), "ok", "Yes"),
    ("Answer: no", ("Yes", "No"), "ok", "No"),
    ("Rating: 7/10", [str(k) for k in range(1, 11)], "ok", "7"),
    ("[[7]]", [str(k) for k in range(1, 11)], "ok", "7"),
    ("Rating: [[10]]", [str(k) for k in range(1, 11)], "ok", "10"),
    ("Score = 8.0", [str(k) for k in range(1, 11)], "ok", "8"),
    ("Rating: [[11]]", [str(k) for k in range(1, 11)], "invalid", None),
    ("[[7]] ... actually [[8]]", [str(k) for k in range(1, 11)], "ambiguous", None),
])
def test_parser_on_adversarial_outputs(text, labels, status, verdict):
    parsed = parse_verdict(text, list(labels))
    assert (parsed.status, parsed.verdict) == (status, verdict)


def test_votes_and_majority():
    parsed = [parse_verdict(t, ["A", "B"]) for t in ("[[A]]", "[[B]]", "[[A]]", "[[C]]", "nothing", "[[A]][[B]]")]
    votes, statuses = vote(parsed)
    assert votes == {"A": 2, "B": 1}
    assert statuses == {"ok": 3, "invalid": 1, "unparseable": 1, "ambiguous": 1}
    assert majority(votes) == "A" and majority(vote(parsed[:2])[0]) is None and majority(vote([])[0]) is None


def test_sampling_is_seeded_counts_every_outcome_and_never_guesses(judges):
    examples = pairs(2)
    runs, stats = [], []
    for _ in range(2):
        scorer = JudgeScorer(judges["pairwise"], mode="sample", samples=3, max_new_tokens=6, seed=7)
        scored = score(scorer, examples)
        runs.append([d["pairs"][0] for d in scored.details])
        stats.append({k: v for k, v in scored.stats.items() if k != "seconds"})
    result = evaluate_judge(scorer, examples)  # the same seed again: the same samples
    assert runs[0] == runs[1] and stats[0] == stats[1]  # same seed, same samples
    assert {k: v for k, v in result["judge"]["stats"].items() if k != "seconds"} == stats[0]
    samples = result["judge"]["stats"]["samples"]
    assert sum(samples.values()) == 2 * 2 * 3  # pairs × orders × samples, each counted once
    # a random tiny model does not write "[[A]]": no valid votes, so no reward is invented
    undecided = sum(1 for p in runs[0] if p["log_odds"] is None or math.isnan(p["log_odds"]))
    assert undecided == 2 and samples["ok"] == 0  # seeded, so this is what this model writes every time
    assert result["undecided_examples"] == 2 and result["accuracy"] == 0.0 and result["ties"] == 2


@pytest.fixture(scope="module")
def always_a_judge(tiny_model_dir, tmp_path_factory):
    """A judge with pure position bias: whatever it is shown, it answers "A" (a real Llama whose residual stream
    is its embeddings, each with a large constant component, read by an untied head that only knows "A")."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir)
    (a_id,) = tok("A", add_special_tokens=False)["input_ids"]
    model.config.tie_word_embeddings = False
    with torch.no_grad():
        model.lm_head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
        model.lm_head.weight.zero_()
        model.lm_head.weight[a_id, 0] = 10.0
        model.model.embed_tokens.weight[:, 0] = 100.0
        for layer in model.model.layers:  # no block writes to the residual stream
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
    out = tmp_path_factory.mktemp("judge") / "always-a"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return load_judge(str(out), kind="pairwise", template=SHORT["pairwise"], system_prompt="")


def test_sampled_votes_of_the_second_order_count_for_the_response_shown_as_a(always_a_judge):
    """Sample mode, both orders: the second order shows j as A, so its "A" votes are votes for j. A judge that
    always says "A" then gives every pair log-odds exactly 0 and flips on every pair; shown once, it looks sure."""
    examples = pairs(4)
    examples[1] = PreferenceExample(prompt=examples[1].prompt, completions=examples[1].completions[::-1],
                                    ranking=[1, 0])  # chosen second in the record
    both = score(JudgeScorer(always_a_judge, mode="sample", samples=3, max_new_tokens=1, seed=7), examples)
    assert both.stats["samples"] == {"ok": 4 * 2 * 3, "unparseable": 0, "ambiguous": 0, "invalid": 0}
    assert both.stats["position_a_rate"] == 1.0 and both.stats["flips"] == 4 and both.stats["undecided"] == 0
    for r, d in zip(both.rewards, both.details):
        (p,) = d["pairs"]
        assert p["votes_i_first"] == {"A": 3, "B": 0} and p["votes_j_first"] == {"A": 3, "B": 0}  # what it said
        assert p["log_odds"] == 0.0 and p["flip"] is True
        np.testing.assert_array_equal(r, [0.0, 0.0])
    result = evaluate_judge(JudgeScorer(always_a_judge, mode="sample", samples=3, max_new_tokens=1, seed=7), examples)
    assert result["ties"] == 4 and result["accuracy"] == 0.0  # a pure position bias earns nothing
    # one order only: 3 votes for whoever was shown as A, log((3 + ½) / ½), for i as given
    one = score(JudgeScorer(always_a_judge, mode="sample", samples=3, max_new_tokens=1, seed=7, order="as_given"),
                examples)
    for r, d in zip(one.rewards, one.details):
        assert d["pairs"][0]["log_odds"] == pytest.approx(math.log(7.0))
        np.testing.assert_allclose(r, [math.log(7.0) / 2, -math.log(7.0) / 2])


def test_sampling_reads_verdicts_from_generated_text(judges):
    """A judge whose answer prefix is given in the user text still parses what it generates; here we check the
    wiring by parsing the replies the scorer stored against the votes it counted."""
    scorer = JudgeScorer(judges["verifier"], mode="sample", samples=4, max_new_tokens=4, seed=1)
    ids = scorer.judge.encode_queries([{"prompt": "q", "response": "r"}], with_answer_prefix=False)
    results = scorer._verdicts(ids)
    replies = results[0]["replies"]
    assert len(replies) == 4
    votes, statuses = vote([parse_verdict(t, ["Yes", "No"]) for t in replies])
    assert results[0]["statuses"] == dict(statuses)
    assert results[0]["votes"] == {"Yes": votes.get("Yes", 0), "No": votes.get("No", 0)}


# ------------------------------------------------------------------------------------- truncation


def test_over_length_prompts_are_cut_by_field_and_counted(tiny_model_dir):
    judge = load_judge(str(tiny_model_dir), kind="pairwise", template=SHORT["pairwise"], system_prompt="",
                       max_length=64)
    long_prompt = "Is the question fine? " * 40
    queries = [{"prompt": long_prompt, "response_a": "good", "response_b": "bad"},
               {"prompt": "How?", "response_a": "the answer is great " * 30, "response_b": "fine"},
               {"prompt": "How?", "response_a": "good", "response_b": "bad"},
               {"prompt": long_prompt, "response_a": "the answer is great " * 30, "response_b": "bad"}]
    ids, cuts = judge.encode_queries_cut(queries)
    assert ids == judge.encode_queries(queries)
    assert all(len(s) <= 64 for s in ids)
    assert cuts == [(True, False), (False, True), (False, False), (True, True)]
    text = judge.tokenizer.decode(ids[0])
    assert "[…]" in text and text.endswith("[[") and "A: good" in text  # responses kept whole
    text = judge.tokenizer.decode(ids[1])
    assert "B: fine" in text and "[…]\nB:" in text  # the long response cut at its end, the short one whole
    # the scorer's prepared queries count them per group, once each (a response cut, with or without the
    # conversation cut, counts as a completion cut)
    groups = [PreferenceExample(prompt=[{"role": "user", "content": q["prompt"]}],
                                completions=[[{"role": "assistant", "content": q[f]}] for f in ("response_a", "response_b")],
                                ranking=[0, 1]) for q in queries]
    prepared = JudgeScorer(judge, order="as_given").prepare(groups)
    assert prepared.payload["ids"] == ids
    assert [(t.sequences, t.prompt_truncated, t.completion_truncated) for t in prepared.truncation] == [
        (1, 1, 0), (1, 0, 1), (1, 0, 0), (1, 0, 1)]
    total = ScoreResult(rewards=[], truncation=prepared.truncation, path="judge:probability").truncation_total()
    assert "3 of 4 sequences truncated" in total.summary()
    tiny = load_judge(str(tiny_model_dir), kind="pairwise", template=SHORT["pairwise"] + " x" * 60,
                      system_prompt="", max_length=40)
    with pytest.raises(ValueError, match="template alone takes"):
        tiny.encode_queries(queries[:1])


def test_allocate_water_fills():
    assert _allocate({"prompt": 10, "response_a": 5, "response_b": 5}, 100) == {"prompt": 10, "response_a": 5,
                                                                                 "response_b": 5}
    keep = _allocate({"prompt": 100, "response_a": 10, "response_b": 200}, 100)
    assert keep == {"prompt": 25, "response_a": 10, "response_b": 65}
    keep = _allocate({"response": 300}, 50)
    assert keep == {"response": 50}


# ------------------------------------------------------------------------------------- CLI glue


def test_cli_eval_and_score(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", learnable_rows(3))
    out = tmp_path / "eval.json"
    template = tmp_path / "pairwise.txt"
    template.write_text(SHORT["pairwise"])
    rc = judge_cli(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--judge", "pairwise",
                    "--judge-template", str(template), "--judge-system-prompt", "", "--output", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["pairs"] == 3 and 0 <= result["judge_metrics"]["flip_rate"] <= 1
    assert set(result["judge_metrics"]["single_order"]) == {"chosen_first", "chosen_second", "random"}
    assert result["scorer"]["template"]["source"] == str(template)
    assert (tmp_path / (out.name.removesuffix(".json") + ".rewards.jsonl")).exists()

    rows = tmp_path / "rows.jsonl"
    write_jsonl(rows, [{"prompt": "How?", "completion": "good"}, {"prompt": "How?", "a": "good", "b": "bad"}])
    capsys.readouterr()
    rc = judge_cli(["score", "--model", str(tiny_model_dir), "--input", str(rows), "--judge", "verifier",
                    "--judge-template", SHORT["verifier"]])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert isinstance(lines[0]["reward"], float)
    assert lines[1]["p_a_beats_b"] == pytest.approx(1 / (1 + math.exp(lines[1]["reward_b"] - lines[1]["reward_a"])))
    assert "logp" in lines[0]["judge"]["completions"][0]
    rc = judge_cli(["score", "--model", str(tiny_model_dir), "--input", str(rows), "--judge", "pairwise"])
    assert rc == 2
    assert "needs at least two completions" in capsys.readouterr().err
    rc = judge_cli(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--judge", "pairwise",
                    "--judge-template", "Which? {response_a}"])
    assert rc == 2 and "must contain {response_b}" in capsys.readouterr().err


def test_real_folder_paths_are_accepted(tiny_model_dir, tmp_path):
    with pytest.raises(Exception, match="not found"):
        load_judge(str(tmp_path / "no-such-model"))
    assert Path(load_judge(str(tiny_model_dir), kind="verifier").name) == tiny_model_dir


def test_multi_token_verdict_gradients_match_the_plain_forward_pass(tiny_model_dir):
    """GenRM training backpropagates through the cached continuation; its gradient equals that of scoring the
    full verdict sequence in one ordinary forward pass."""
    from rewardkit.judges.judge import verdict_logprobs

    judge = load_judge(str(tiny_model_dir), kind="pointwise", template=SHORT["pointwise"], system_prompt="")
    v, model = judge.verdicts, judge.model
    seq = judge.encode_queries([{"prompt": "How?", "response": "fine"}])[0]
    ten = v.labels.index("10")
    weight = model.model.layers[0].self_attn.q_proj.weight
    logp, _ = verdict_logprobs(model, torch.tensor([seq]), torch.ones(1, len(seq), dtype=torch.long), v)
    (grad_cached,) = torch.autograd.grad(logp[0, ten], weight)
    masses = []
    for cand in v.candidates:
        lp = model(torch.tensor([seq + list(cand)])).logits[0].log_softmax(-1)
        masses.append(sum(lp[len(seq) - 1 + k, t] for k, t in enumerate(cand)))
    masses = torch.stack(masses)
    (grad_plain,) = torch.autograd.grad(masses[ten] - masses.logsumexp(0), weight)
    assert grad_cached.abs().max() > 0
    torch.testing.assert_close(grad_cached, grad_plain, atol=1e-5, rtol=1e-4)
