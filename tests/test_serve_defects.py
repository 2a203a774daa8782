"""Defects on the scoring and serving path (issue 35, item 5), each over the real path: real uvicorn on an ephemeral
port, the real `rewardkit score` command, real judges on a tiny random causal LM."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from rewardkit.cli import main as cli
from rewardkit.config import ServeConfig
from rewardkit.errors import UserError
from rewardkit.inference import Group, score
from rewardkit.inference.factory import load_scorer
from rewardkit.inference.rows import score_rows
from rewardkit.serve import running_server

from conftest import saved_reward_model, write_jsonl


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return saved_reward_model(tiny_model_dir, tmp_path_factory.mktemp("defects") / "run", seed=3, max_length=64,
                              mean=0.25, std=2.0)


@pytest.fixture(scope="module")
def scorer(run_dir):
    return load_scorer(str(run_dir))


def test_empty_and_user_turn_completions_are_refused_like_the_readers_do(scorer, run_dir, tmp_path, capsys):
    bad = [[[]], [[{"role": "assistant", "content": "   "}]], [[{"role": "user", "content": "and another question"}]],
           ["   "]]
    with running_server(scorer) as url, httpx.Client(base_url=url, timeout=60) as http:
        answers = [http.post("/v1/score", json={"prompt": "q", "completions": c}) for c in bad]
        no_prompt = http.post("/v1/score", json={"completions": [[]]})
        fine = http.post("/v1/score", json={"prompt": "q", "completions": ["the answer is good"]})
    # before: the first was a 500 without a prompt (the chat template fails on no messages), and every one of them
    # got 200 and a reward with a prompt
    assert no_prompt.status_code == 422 and "empty" in no_prompt.json()["detail"]
    assert [a.status_code for a in answers] == [422, 422, 422, 422], [a.text for a in answers]
    assert "empty" in answers[0].json()["detail"] and "empty" in answers[1].json()["detail"]
    assert "user turn, not an assistant reply" in answers[2].json()["detail"]
    assert fine.status_code == 200
    # `rewardkit score` refuses the same rows with file:line, before the model loads
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "q", "completion": "fine"},
                                              {"prompt": "q", "completion": [{"role": "user", "content": "hi"}]}])
    assert cli(["score", "--model", str(run_dir), "--input", str(inp)]) == 2
    assert f"{inp}:2" in capsys.readouterr().err


def test_score_writes_best_of_n_rows_with_more_than_two_replies(run_dir, tmp_path):
    prompt, chosen, rejected = "How was the answer?", ["the answer is good", "the answer is fine"], ["bad", "awful"]
    inp = write_jsonl(tmp_path / "bon.jsonl", [{"prompt": prompt, "chosen": chosen, "rejected": rejected},
                                               {"prompt": prompt, "completions": chosen + rejected}])
    out = tmp_path / "out.jsonl"
    assert cli(["score", "--model", str(run_dir), "--input", str(inp), "--output", str(out)]) == 0  # before: exit 1
    bon, listed = [json.loads(line) for line in out.read_text().splitlines()]
    assert np.allclose(bon["rewards_chosen"] + bon["rewards_rejected"], listed["rewards"], atol=1e-5)
    assert np.allclose(bon["rewards_chosen_normalized"], (np.array(bon["rewards_chosen"]) - 0.25) / 2.0)


def test_complete_turn_keeps_a_replys_own_trailing_angle_bracket(scorer):
    enc = scorer.encoder
    # before: "x <" was taken for the start of "<|im_end|>" and became "x <|im_end|>\n"
    assert enc.complete_turn("the answer is x <") == ("the answer is x <<|im_end|>\n", True)
    assert enc.complete_turn("a <|") == ("a <|<|im_end|>\n", True)
    assert enc.complete_turn("done<|im_end|>") == ("done<|im_end|>\n", True)  # stopped at EOS: only "\n" is missing
    assert enc.complete_turn("done<|im_end|>\n") == ("done<|im_end|>\n", False)


def test_judge_sampling_leaves_the_global_rng_alone_and_ignores_batch_mates(tiny_model_dir):
    from rewardkit.judges.judge import JudgeScorer, load_judge

    scorer = JudgeScorer(load_judge(str(tiny_model_dir), kind="verifier"), mode="sample", samples=3, max_new_tokens=5,
                         seed=11)
    mine = Group(prompt=[{"role": "user", "content": "Is the answer good?"}],
                 completions=[[{"role": "assistant", "content": "the answer is good"}]])
    other = Group(prompt=[{"role": "user", "content": "What is the question about? " * 4}],
                  completions=[[{"role": "assistant", "content": c}] for c in ("bad", "awful answer", "poor")])
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    score(scorer, [mine])
    assert torch.equal(torch.random.get_rng_state(), before)  # before: reseeded to the judge's seed
    a = scorer.prepare([mine]).payload["ids"][0]
    others = scorer.prepare([other]).payload["ids"]
    judge = scorer.judge
    alone = judge.sample([a], 3, max_new_tokens=8, seed=11)[0]
    with_mates = judge.sample([others[0], a, *others[1:]], 3, max_new_tokens=8, seed=11)[1]
    small_batches = judge.sample([a, *others], 3, max_new_tokens=8, seed=11, max_batch_tokens=64)[0]
    # before: one stream for the whole batch, so the replies changed with what else was sampled beside them
    assert alone == with_mates == small_batches
    assert len(set(alone)) > 1  # still sampling: the replies to one prompt differ from each other
    assert judge.sample([a], 3, max_new_tokens=8, seed=12)[0] != alone  # and the seed matters


def test_score_streams_its_input(scorer):
    # new: before, score and rerank read the whole file first
    from rewardkit.inference.rows import score_stream

    rows = [{"prompt": "How was the answer?", "completion": c} for c in ("good", "bad", "fine", "poor", "great")]
    consumed = []

    def lazily():
        for i, row in enumerate(rows):
            consumed.append(i)
            yield row, f"row {i}"

    chunks = score_stream(scorer, lazily(), chunk_rows=2)
    first, _ = next(chunks)
    assert len(first) == 2 and len(consumed) == 2  # scored before the rest was read
    rest = [row for scored, _ in chunks for row in scored]
    together, _ = score_rows(scorer, rows)
    assert np.allclose([r["reward"] for r in first + rest], [r["reward"] for r in together], atol=1e-5)


def test_get_reward_normalises_when_asked(scorer, tiny_model_dir):
    tok = scorer.encoder.tokenizer
    query = tok.apply_chat_template([{"role": "user", "content": "How was the answer?"},
                                     {"role": "assistant", "content": "good"}], tokenize=False)
    with running_server(scorer) as url:
        raw = httpx.post(f"{url}/get_reward", json={"query": [query]}, timeout=60).json()
    with running_server(scorer, ServeConfig(port=0, normalize_reward=True)) as url:
        normed = httpx.post(f"{url}/get_reward", json={"query": [query]}, timeout=60).json()
    assert normed["rewards"][0] == pytest.approx((raw["rewards"][0] - 0.25) / 2.0)
    assert normed["extra_logs"]["raw_reward"] == raw["rewards"]
    untrained = load_scorer(str(tiny_model_dir))  # a backbone with a new head records no statistics
    with pytest.raises(UserError, match="cannot be normalised"):
        with running_server(untrained, ServeConfig(port=0, normalize_reward=True)):
            pass


def test_steered_aspect_rewards_are_not_normalised_with_the_gates_statistics(tiny_model_dir, tmp_path):
    from test_aspects import COMPLY, HARMFUL, REFUSE
    from test_aspects import rows as aspect_rows

    from rewardkit.config import TrainConfig
    from rewardkit.train import train

    files = {k: write_jsonl(tmp_path / f"{k}.jsonl", aspect_rows(n, seed, harmful)) for k, n, seed, harmful in
             (("helpful", 32, 1, False), ("harmless", 32, 2, True), ("he", 8, 3, False), ("ha", 8, 4, True))}
    report = train(TrainConfig(model=str(tiny_model_dir), train_data=f"helpful={files['helpful']},"
                               f"harmless={files['harmless']}", eval_data=f"{files['he']},{files['ha']}",
                               output_dir=str(tmp_path / "runs"), run_name="aspects", batch_size=8, micro_batch_size=8,
                               max_length=128, seed=0, epochs=1, aspects="helpful,harmless", eval_before=False))
    run = report["run_dir"]
    aspect_scorer = load_scorer(run)
    assert aspect_scorer.describe()["reward_std"]  # statistics recorded for the gate's mixture
    body = {"prompt": HARMFUL[3], "completions": [COMPLY, REFUSE]}
    with running_server(aspect_scorer) as url:
        gate = httpx.post(f"{url}/v1/score", json=body, timeout=60).json()
        steered = httpx.post(f"{url}/v1/score", json={**body, "aspect_weights": {"helpful": 1}}, timeout=60).json()
    assert gate["rewards_normalized"] is not None
    # before: the steered rewards were normalised with the gate mixture's mean and std
    assert steered["rewards_normalized"] is None and "steered" in steered["normalization"]
    scored, _ = score_rows(aspect_scorer, [{**body, "aspect_weights": {"helpful": 1}}, body])
    assert "rewards_normalized" not in scored[0] and "rewards_normalized" in scored[1]
    fixed = load_scorer(run, aspect_weights="helpful=1,harmless=0")  # the server's --aspect-weights steer too
    assert "rewards_normalized" not in score_rows(fixed, [body])[0][0]
