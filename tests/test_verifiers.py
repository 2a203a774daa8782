"""Outcome and process reward models: data, step positions, one forward = each prefix alone, training, metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rewardkit.batching import Encoder, TruncationStats, encode_steps
from rewardkit.data.readers import DataError
from rewardkit.data.steps import VerifierExample, parse_verifier_record, read_verifier_examples
from rewardkit.errors import RecordError
from rewardkit.inference import Group, RewardModelScorer, score
from rewardkit.inference.scoring import aggregate_steps, split_steps
from rewardkit.model import load_reward_model
from rewardkit.sharing import group_rewards
from rewardkit.verifiers import (
    auroc,
    best_of_n,
    choose_threshold,
    majority_value,
    predicted_first_error,
    processbench_f1,
    processbench_metrics,
    step_f1,
    vote_weights,
    weighted_vote_value,
    within_problem_order,
)

from conftest import SHARED, write_jsonl

MARKER = "\n\n"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    torch.manual_seed(0)
    model, tok = load_reward_model(str(tiny_model_dir))
    with torch.no_grad():
        model.hf.score.weight.mul_(30)  # O(1) rewards, so tolerances mean something
    return model, tok


# ------------------------------------------------------------------------------ data


def test_trl_stepwise_soft_labels_are_kept_as_given() -> None:
    ex = parse_verifier_record({"prompt": "2+2?", "completions": ["2+2 is 4.", "So 4."], "labels": [True, 0.7]})
    assert ex.steps == [["2+2 is 4.", "So 4."]] and ex.step_labels == [[1.0, 0.7]]


@pytest.mark.parametrize("record, reason", [
    ({"prompt": "q", "completions": ["a", "b"], "labels": [True]}, "labels ≠ steps"),
    ({"prompt": "q", "completions": ["a", " "], "labels": [True, False]}, "empty step"),
    ({"prompt": "q", "completions": ["a"], "labels": [1.5]}, "label outside [0, 1]"),
    ({"problem": "q", "steps": ["a", "b"], "label": 2}, "label past the last step"),
    ({"question": "q", "modified_process": ["a", "b"], "error_steps": [3]}, "error step past the last step"),
    ({"question": "q", "modified_process": ["a", "b"], "error_steps": [0]}, "error step past the last step"),
    ({"prompt": "q", "completion": "a"}, "no label"),
])
def test_bad_records_say_why(record: dict, reason: str) -> None:
    with pytest.raises(RecordError) as e:
        parse_verifier_record(record)
    assert e.value.reason == reason


def test_processbench_labels_stop_at_the_first_error() -> None:
    ex = parse_verifier_record({"id": "gsm8k-3", "problem": "q", "steps": ["a", "b", "c"], "label": 1,
                                "final_answer_correct": False})
    assert ex.step_labels == [[1.0, 0.0, None]] and ex.correct == [0.0] and ex.subset == "gsm8k"
    assert ex.first_error(0) == 1
    ok = parse_verifier_record({"id": "math-1", "problem": "q", "steps": ["a", "b"], "label": -1})
    assert ok.step_labels == [[1.0, 1.0]] and ok.first_error(0) == -1


def test_prmbench_error_steps_are_one_based() -> None:
    ex = parse_verifier_record({"question": "q", "modified_process": ["a", "b", "c"], "error_steps": [2],
                                "original_process": ["a", "x"], "classification": "circular"})
    assert ex.step_labels == [[1.0, 0.0, 1.0], [1.0, 1.0]] and ex.correct == [0.0, 1.0] and ex.subset == "circular"
    alone = parse_verifier_record({"question": "q", "modified_process": ["a", "b"], "error_steps": [1],
                                   "original_process": ["a"]}, originals=False)
    assert len(alone.steps) == 1


def test_bad_record_names_file_and_line_or_is_counted(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "steps.jsonl", [
        {"prompt": "q", "completions": ["a", "b"], "labels": [True, False]},
        {"prompt": "q", "completions": ["a", "b"], "labels": [True]},
    ])
    with pytest.raises(DataError, match=r"steps.jsonl:2: .*2 steps"):
        read_verifier_examples(str(path))
    examples, report = read_verifier_examples(str(path), skip_bad=True)
    assert len(examples) == 1 and report.skipped == {"labels ≠ steps": 1} and "SKIPPED 1" in report.summary()


@pytest.mark.skipif(not (SHARED / "data" / "prmbench").exists(), reason="needs ../shared/data/prmbench")
def test_released_prmbench_has_indices_past_the_last_step_and_they_are_counted() -> None:
    spec = str(SHARED / "data" / "prmbench" / "train" / "prm800k_train_p1_first400_4o_circular.jsonl")
    examples, report = read_verifier_examples(spec, skip_bad=True)
    assert report.skipped["error step past the last step"] >= 1
    assert report.loaded + sum(report.skipped.values()) == report.records == 401


# ------------------------------------------------------------------------------ step positions


@pytest.fixture(scope="module")
def smol_tokenizer():
    from rewardkit.model import load_tokenizer, resolve_backbone

    return load_tokenizer(resolve_backbone("smollm2-135m"))


def test_step_positions_are_exact_where_retokenising_the_joined_text_moves_them(smol_tokenizer) -> None:
    """SmolLM2's tokenizer: a step that ends in a newline, then the "\n\n" marker. Tokenised on their own the pieces
    are "Ċ" + "ĊĊ" and the marker's last token is the step's end; the joined text tokenises as "ĊĊ" + "Ċ", so
    positions taken from re-tokenising the joined text (TRL's PRMTrainer) read the reward one token off,
    inside the marker. encode_steps must give the separately tokenised ids with reads at each marker's end."""
    tok = smol_tokenizer
    enc = Encoder(tok, max_length=512)
    prompt = [{"role": "user", "content": "What is 2+2?"}]
    steps = ["So 2+2 = 4.\n", "Thus the answer is 4"]
    encoded = encode_steps(enc, prompt, [steps], MARKER)
    ids, reads = encoded.ids[0], encoded.reads[0]
    marker_ids = tok(MARKER, add_special_tokens=False)["input_ids"]
    pieces = [tok(s, add_special_tokens=False)["input_ids"] + marker_ids for s in steps]
    body = sum(pieces, [])
    assert ids[-len(body):] == body
    start = len(ids) - len(body)
    assert reads == [start + len(pieces[0]) - 1, start + len(body) - 1]
    joined = tok(MARKER.join(steps) + MARKER, add_special_tokens=False)["input_ids"]
    assert joined != body and len(joined) == len(body)  # same length, different tokens: a silent shift
    # the prompt part is the template's prompt with its generation cue, as plain transformers renders it
    cue = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    assert ids[:start] == tok(cue, add_special_tokens=False)["input_ids"]


def test_truncation_keeps_the_first_steps_and_counts_the_rest(tiny) -> None:
    _, tok = tiny
    stats = TruncationStats()
    encoded = encode_steps(Encoder(tok, max_length=24), [{"role": "user", "content": "good " * 30}],
                           [["good great"] * 6, ["fine"]], MARKER, stats)
    assert all(len(s) <= 24 for s in encoded.ids)
    assert encoded.dropped_steps > 0 and len(encoded.reads[1]) == 1
    assert stats.sequences == 2 and stats.completion_truncated >= 1


def test_one_forward_equals_each_prefix_scored_alone(tiny) -> None:
    """A step's reward read in one pass over the whole solution = the reward of the sequence cut after that step's
    marker (causal attention), on the shared (segments) and the padded route."""
    model, tok = tiny
    enc = Encoder(tok, max_length=512)
    prompt = [{"role": "user", "content": "Is the answer good?"}]
    solutions = [["the answer is good", "great"], ["bad", "awful poor", "fine"], ["the question"]]
    encoded = encode_steps(enc, prompt, solutions, MARKER)
    alone = []
    with torch.no_grad():
        for seq, reads in zip(encoded.ids, encoded.reads):
            for r in reads:
                alone.append(float(model(torch.tensor([seq[:r + 1]]), torch.ones(1, r + 1, dtype=torch.long))[0]))
        for shared in (True, False):
            for side in ("right", "left"):
                flat = group_rewards(model, [encoded.ids], tok.pad_token_id, shared=shared, padding_side=side,
                                     reads=[encoded.reads])[0]
                assert flat.shape == (len(alone),)
                np.testing.assert_allclose(flat.numpy(), alone, rtol=1e-4, atol=1e-4)


def test_shared_step_gradients_equal_padded(tiny) -> None:
    model, tok = tiny
    enc = Encoder(tok, max_length=512)
    groups = [encode_steps(enc, [{"role": "user", "content": q}], sols, MARKER) for q, sols in (
        ("Is it good?", [["good", "great"], ["bad"]]), ("The question?", [["fine", "poor", "a"]]))]
    grads = []
    for shared in (True, False):
        model.zero_grad()
        out = group_rewards(model, [g.ids for g in groups], tok.pad_token_id, shared=shared,
                            reads=[g.reads for g in groups])
        torch.cat(list(out)).pow(2).sum().backward()
        grads.append(model.hf.score.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4)


def test_prm_scorer_step_rewards_and_aggregates(tiny) -> None:
    model, tok = tiny
    scorer = RewardModelScorer(model, Encoder(tok, max_length=512), name="tiny-prm", kind="test", step_marker=MARKER,
                               aggregate="min")
    group = Group(prompt=[{"role": "user", "content": "Is it good?"}],
                  completions=[[{"role": "assistant", "content": "good\n\ngreat"}],
                               [{"role": "assistant", "content": "bad"}]])
    result = score(scorer, [group])
    steps = result.step_rewards[0]
    assert [len(s) for s in steps] == [2, 1]
    assert all(0 < p < 1 for s in steps for p in s)
    np.testing.assert_allclose(result.rewards[0], [min(steps[0]), steps[1][0]])
    # the same steps given explicitly give the same numbers
    given = score(scorer, [Group(prompt=group.prompt, completions=group.completions, steps=[["good", "great"], ["bad"]])])
    np.testing.assert_allclose(np.concatenate(given.step_rewards[0]), np.concatenate(steps), rtol=1e-6)


def test_aggregation_rules_by_hand() -> None:
    p = np.array([0.9, 0.5, 0.8])
    assert aggregate_steps(p, "min") == 0.5
    assert aggregate_steps(p, "prod") == pytest.approx(0.9 * 0.5 * 0.8)
    assert aggregate_steps(p, "last") == 0.8
    assert aggregate_steps(p, "mean") == pytest.approx(2.2 / 3)
    assert aggregate_steps(np.array([0.9, np.nan]), "last") == 0.9  # a step past max_length is left out
    assert math.isnan(aggregate_steps(np.array([np.nan]), "min"))
    assert split_steps("a\n\n b \n\n\n\nc", "\n\n") == ["a", "b", "c"]


# ------------------------------------------------------------------------------ metrics


def test_processbench_f1_by_hand() -> None:
    # 3 erroneous (labels 1, 0, 2) and 2 correct; predictions: right, wrong, right | right, wrong
    m = processbench_f1([1, 0, 2, -1, -1], [1, 2, 2, -1, 0])
    assert m["error_accuracy"] == pytest.approx(2 / 3) and m["correct_accuracy"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert processbench_f1([1, -1], [-1, -1])["f1"] == 0.0  # always "correct": no erroneous one is right
    assert predicted_first_error(np.array([0.9, 0.4, 0.1]), 0.5) == 1
    assert predicted_first_error(np.array([0.9, np.nan]), 0.5) == -1


def test_processbench_metrics_per_subset() -> None:
    exs = [parse_verifier_record({"id": f"gsm8k-{i}", "problem": "q", "steps": ["a", "b"], "label": lab})
           for i, lab in enumerate([0, -1])]
    out = processbench_metrics(exs, [[np.array([0.2, 0.9])], [np.array([0.9, 0.9])]])
    assert out["subsets"]["gsm8k"]["f1"] == 1.0
    assert out["subsets"]["gsm8k"]["baselines"]["always_correct"]["f1"] == 0.0


def test_threshold_is_chosen_by_hand_and_refuses_one_class_data() -> None:
    def ex(labels: list[float]) -> VerifierExample:
        return VerifierExample([{"role": "user", "content": "q"}], [["a", "b"]], [labels], [None])

    wrong_at_1, right = ex([1.0, 0.0]), ex([1.0, 1.0])
    # wrong_at_1 is found iff 0.6 < t <= 0.9, right stays right iff t <= 0.8: F1 1 on (0.6, 0.8], nearest 0.5: 0.61
    chosen = choose_threshold([wrong_at_1, right], [[np.array([0.9, 0.6])], [np.array([0.9, 0.8])]])
    assert chosen["threshold"] == 0.61 and chosen["f1"] == 1.0 and chosen["erroneous"] == 1
    with pytest.raises(ValueError, match="both with and without"):
        choose_threshold([right], [[np.array([0.9, 0.8])]])


def test_step_f1_by_hand() -> None:
    ex = parse_verifier_record({"question": "q", "modified_process": ["a", "b", "c", "d"], "error_steps": [2, 3],
                                "classification": "circular"}, originals=False)
    # predicted wrong: steps 2 and 4 → tp 1 (step 2), fp 1 (step 4), fn 1 (step 3), tn 1 (step 1)
    out = step_f1([ex], [[np.array([0.9, 0.1, 0.8, 0.2])]])
    assert out["subsets"]["circular"]["f1_wrong_steps"] == pytest.approx(0.5)
    assert out["subsets"]["circular"]["f1_right_steps"] == pytest.approx(0.5)


def test_best_of_n_and_baselines_by_hand() -> None:
    ex1 = VerifierExample([{"role": "user", "content": "q"}], [["#### 3"], ["#### 3"], ["#### 4"]], [None] * 3,
                          [1.0, 1.0, 0.0])
    ex2 = VerifierExample([{"role": "user", "content": "q"}], [["#### 1"], ["#### 2"]], [None] * 2, [0.0, 1.0])
    out = best_of_n([ex1, ex2], [np.array([0.1, 0.2, 0.9]), np.array([0.3, 0.3])], samples=50)
    assert out["problems"] == 2
    assert out["scorer"]["accuracy"] == pytest.approx((0 + 0.5) / 2)  # ex2's tie shares the pick
    assert out["random"]["accuracy"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert out["majority_vote"]["accuracy"] == pytest.approx((1 + 0.5) / 2)
    assert out["oracle"]["accuracy"] == 1.0
    assert majority_value(["3", "3", "4"], np.array([1.0, 1.0, 0.0])) == 1.0
    # weighted vote with the scores as P(correct): ex1 answer 3 weighs 0.3 < answer 4's 0.9 (wrong); ex2 tie
    out = best_of_n([ex1, ex2], [np.array([0.1, 0.2, 0.9]), np.array([0.3, 0.3])], probabilities=True, samples=50)
    assert out["weighted_vote"]["accuracy"] == pytest.approx((0 + 0.5) / 2)
    assert out["weighted_vote_minus_majority_vote"]["difference"] == pytest.approx(-0.5)
    # positions: 0 is right in ex1 only, 1 in both; position 2 (ex1 only) is listed but cannot be the paired best
    assert out["positions"]["position 0"]["accuracy"] == 0.5 and out["positions"]["position 2"]["problems"] == 1
    assert out["best_position"]["name"] == "position 1" and out["best_position"]["accuracy"] == 1.0
    assert out["scorer_minus_best_position"]["difference"] == pytest.approx(0.25 - 1.0)
    # within-problem order: ex1 puts its incorrect solution (0.9) above both correct ones (0.1, 0.2): 0 of 2; ex2 ties
    assert out["pairs_ordered"]["accuracy"] == pytest.approx((0.0 + 0.5) / 2) and out["pairs_ordered"]["problems"] == 2
    assert within_problem_order(np.array([0.3, 0.1, 0.2]), np.array([1.0, 0.0, 0.0])) == 1.0
    assert within_problem_order(np.array([0.3, 0.1]), np.array([1.0, 1.0])) is None
    # where the verifier's weight overturns a wrong majority, and logits are turned into P(correct) by σ
    ex3 = VerifierExample([{"role": "user", "content": "q"}], [["#### 5"], ["#### 5"], ["#### 6"]], [None] * 3,
                          [0.0, 0.0, 1.0])
    logits = np.log(np.array([0.1, 0.1, 0.9]) / (1 - np.array([0.1, 0.1, 0.9])))
    out = best_of_n([ex3], [logits], samples=0)
    assert out["weighted_vote"]["accuracy"] == 1.0 and out["majority_vote"]["accuracy"] == 0.0
    assert weighted_vote_value(["5", "5", "6"], np.array([0.5, 0.5, 0.9]), np.array([0.0, 0.0, 1.0])) == 0.0
    # a preference RM's rewards are defined up to a shift: softmax weights within the problem
    np.testing.assert_allclose(vote_weights(np.array([0.0, np.log(3), np.nan]), "softmax"), [0.25, 0.75, np.nan])
    np.testing.assert_allclose(vote_weights(np.array([100.0, 100.0 + np.log(3)]), "softmax"), [0.25, 0.75])
    assert best_of_n([ex3], [logits + 50], weights="softmax", samples=0)["weighted_vote"]["accuracy"] == 1.0
    assert auroc(np.array([0.1, 0.9, 0.8]), np.array([False, True, False])) == 1.0


# ------------------------------------------------------------------------------ training


def _train(tmp_path: Path, tiny_model_dir: Path, objective: str, data: Path, **extra) -> dict:
    from rewardkit.config import TrainConfig
    from rewardkit.train import train

    cfg = TrainConfig(model=str(tiny_model_dir), train_data=str(data), objective=objective, batch_size=4,
                      learning_rate=1e-3, epochs=2, output_dir=str(tmp_path), run_name=objective, eval_before=False,
                      max_length=128, seed=0, **extra)
    return train(cfg)


def _prm_rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        steps, labels = [], []
        for _ in range(3):
            good = bool(rng.random() < 0.6)
            steps.append("good great fine" if good else "bad awful poor")
            labels.append(good)
        rows.append({"prompt": f"question {i % 5}", "completions": steps, "labels": labels})
    return rows


def test_prm_learns_step_labels_and_plain_transformers_reads_the_same_step_rewards(tmp_path, tiny_model_dir) -> None:
    data = write_jsonl(tmp_path / "prm.jsonl", _prm_rows(32))
    report = _train(tmp_path, tiny_model_dir, "prm", data)
    assert report["steps"] > 0
    folder = tmp_path / "prm"
    meta = json.loads((folder / "rewardkit.json").read_text())
    assert meta["verifier"]["kind"] == "prm" and meta["verifier"]["step_marker"] == MARKER
    # reward statistics from the last steps' own aggregated P(right) (no rescoring pass), in the scorer's units
    assert "computed during training" in meta["reward_stats_source"] and 0 < meta["reward_mean"] < 1
    from rewardkit.inference import load_classifier_scorer

    scorer = load_classifier_scorer(str(folder), precision="fp32")
    assert scorer.step_marker == MARKER
    group = Group(prompt=[{"role": "user", "content": "question 1"}],
                  completions=[[{"role": "assistant", "content": "good great fine\n\nbad awful poor"}]])
    result = score(scorer, [group])
    p_good, p_bad = result.step_rewards[0][0]
    assert p_good > 0.5 > p_bad  # it learned the steps

    # plain transformers: the documented recipe reads the same step rewards
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    prompt_text = tok.apply_chat_template([{"role": "user", "content": "question 1"}], tokenize=False,
                                          add_generation_prompt=True)
    ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
    marker = tok(meta["verifier"]["step_marker"], add_special_tokens=False)["input_ids"]
    positions = []
    for step in ("good great fine", "bad awful poor"):
        ids += tok(step, add_special_tokens=False)["input_ids"] + marker
        positions.append(len(ids) - 1)
    with torch.no_grad():
        hidden = hf.base_model(torch.tensor([ids])).last_hidden_state
        step_logits = hf.score(hidden)[0, positions, 0]
    np.testing.assert_allclose(torch.sigmoid(step_logits).numpy(), [p_good, p_bad], rtol=1e-4, atol=1e-5)

    # eval-verifier with the threshold chosen on other labelled data, then applied to the evaluated set
    from rewardkit.config import ConfigError, EvalVerifierConfig
    from rewardkit.verifiers import run_verifier_eval, summary_lines

    calib = write_jsonl(tmp_path / "calib.jsonl", _prm_rows(12, seed=7))  # rows the model did not train on
    pb = [{"id": f"pb{i}", "problem": f"question {i % 5}", "steps": ["good great fine", "bad awful poor"], "label": 1}
          for i in range(3)] + [{"id": "ok", "problem": "question 2", "steps": ["good great fine"], "label": -1}]
    test = tmp_path / "gsm8k.json"
    test.write_text(json.dumps(pb))
    out = run_verifier_eval(EvalVerifierConfig(model=str(folder), data=str(test), threshold_data=str(calib),
                                               bootstrap_samples=0, precision="fp32"), scorer)
    choice = out["threshold_choice"]
    assert choice["data"] == str(calib) and choice["solutions"] == 12 and 0 < choice["threshold"] < 1
    assert out["processbench"]["threshold"] == choice["threshold"]
    assert any("chosen on" in line for line in summary_lines(out))
    with pytest.raises(ConfigError, match="pass one of them"):
        EvalVerifierConfig(model=str(folder), data=str(test), threshold_data=str(calib), threshold=0.5)
    from rewardkit.errors import UserError

    with pytest.raises(UserError, match="optimistic"):
        run_verifier_eval(EvalVerifierConfig(model=str(folder), data=str(test), threshold_data=str(test)), scorer)


def test_orm_learns_outcomes_and_is_a_plain_reward_model(tmp_path, tiny_model_dir) -> None:
    rows = [{"prompt": f"question {i % 4}", "completions": ["good great fine", "bad awful poor"],
             "correct": [True, False]} for i in range(24)]
    data = write_jsonl(tmp_path / "orm.jsonl", rows)
    _train(tmp_path, tiny_model_dir, "orm", data)
    from rewardkit.inference import load_classifier_scorer

    scorer = load_classifier_scorer(str(tmp_path / "orm"), precision="fp32")
    assert scorer.step_marker is None and scorer.describe()["verifier"]["kind"] == "orm"
    r = score(scorer, [Group(prompt=[{"role": "user", "content": "question 9"}],
                             completions=[[{"role": "assistant", "content": "good great fine"}],
                                          [{"role": "assistant", "content": "bad awful poor"}]])]).rewards[0]
    assert r[0] > 0 > r[1]
    from rewardkit.config import EvalVerifierConfig
    from rewardkit.errors import UserError
    from rewardkit.verifiers import run_verifier_eval

    with pytest.raises(UserError, match="needs a process reward model"):
        run_verifier_eval(EvalVerifierConfig(model=str(tmp_path / "orm"), data=str(data), threshold_data="x.jsonl"),
                          scorer)


def test_orm_ranking_term_is_added_and_recorded(tmp_path, tiny_model_dir) -> None:
    """Same init, same first batch: the first step's loss with the ranking term is the BCE plus a positive term."""
    rows = [{"prompt": f"question {i % 4}", "completions": ["good great fine", "bad awful poor", "good fine"],
             "correct": [True, False, True]} for i in range(8)]
    data = write_jsonl(tmp_path / "orm.jsonl", rows)

    def first_loss(name: str, **extra) -> float:
        _train(tmp_path / name, tiny_model_dir, "orm", data, **extra)
        line = (tmp_path / name / "orm" / "metrics.jsonl").read_text().splitlines()[0]
        return json.loads(line)["loss"]

    plain, ranked = first_loss("plain"), first_loss("ranked", orm_ranking_coef=1.0)
    assert ranked > plain + 0.1  # ≈ BCE + log 2 at a near-zero head (untrained: rewards close together)
    meta = json.loads((tmp_path / "ranked" / "orm" / "rewardkit.json").read_text())
    assert meta["verifier"]["ranking_coef"] == 1.0


def test_soft_labels_reach_the_loss_unchanged(tiny) -> None:
    """The PRM objective's loss on one record equals step_bce_loss on the labels as given (0.7 stays 0.7)."""
    from rewardkit.config import TrainConfig
    from rewardkit.losses import step_bce_loss
    from rewardkit.plan import Item
    from rewardkit.training.objectives import Process

    model, tok = tiny
    cfg = TrainConfig(model="x", train_data="x", objective="prm", max_length=128)
    ex = parse_verifier_record({"prompt": "q", "completions": ["good", "bad", "fine"], "labels": [0.7, 0.2, None]})
    encoded = Process(cfg, tok.pad_token_id).encode(Encoder(tok, max_length=128), [ex], TruncationStats())[0]
    item = Item(ex, encoded.ids, [], 1.0, reads=encoded.reads)
    out = Process(cfg, tok.pad_token_id).loss(model, [item], None)
    logits = group_rewards(model, [encoded.ids], tok.pad_token_id, reads=[encoded.reads])[0]
    expected = step_bce_loss(logits, torch.tensor([0.7, 0.2, float("nan")]))
    torch.testing.assert_close(out.losses[0], expected)
    rounded = step_bce_loss(logits, torch.tensor([1.0, 0.0, float("nan")]))
    assert not torch.isclose(out.losses[0], rounded)


def test_verifier_objectives_refuse_pairwise_flags() -> None:
    from rewardkit.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="--loss"):
        TrainConfig(model="x", train_data="x", objective="prm", loss="margin")
    with pytest.raises(ConfigError, match="--step-marker"):
        TrainConfig(model="x", train_data="x", objective="orm", step_marker="\n")
    with pytest.raises(ConfigError, match="--orm-ranking-coef"):
        TrainConfig(model="x", train_data="x", objective="prm", orm_ranking_coef=1.0)


def test_prm_scores_rendered_texts_with_their_prompt_like_messages(tiny) -> None:
    """OpenRLHF's /get_reward sends rendered query + prompt: the steps after the prompt get the same scores as the
    same reply sent as messages; without the prompt a PRM cannot find the reply and says so."""
    from rewardkit.errors import UserError

    model, tok = tiny
    enc = Encoder(tok, max_length=512)
    scorer = RewardModelScorer(model, enc, name="tiny-prm", kind="test", step_marker=MARKER)
    prompt = [{"role": "user", "content": "Is it good?"}]
    reply = [{"role": "assistant", "content": "good\n\ngreat"}]
    as_messages = score(scorer, [Group(prompt=prompt, completions=[reply])]).step_rewards[0][0]
    head, full = enc.render(prompt, reply)
    as_text = score(scorer, [Group(prompt_text=head, texts=[full])]).step_rewards[0][0]
    np.testing.assert_allclose(as_text, as_messages, rtol=1e-5)
    with pytest.raises(UserError, match="rendered prompt"):
        score(scorer, [Group(texts=[full])])


def test_prm_served_over_http_and_scored_from_rows(tiny, tmp_path) -> None:
    """A PRM checkpoint over real HTTP: /v1/score returns each completion's step scores and their aggregate (explicit
    steps = text split at the marker), /get_reward the aggregate of rendered queries, `rewardkit score` rows the same."""
    import httpx

    from rewardkit.checkpoint import save_checkpoint
    from rewardkit.cli import main as cli
    from rewardkit.inference.factory import load_scorer
    from rewardkit.serve import running_server

    model, tok = tiny
    enc = Encoder(tok, max_length=256)
    folder = tmp_path / "prm"
    save_checkpoint(folder, model, tok, enc, verifier={"kind": "prm", "step_marker": MARKER, "aggregate": "min"})
    scorer = load_scorer(str(folder), precision="fp32")
    prompt, replies = "Is it good?", ["good\n\ngreat", "bad\n\nawful poor\n\nfine"]
    offline = score(scorer, [Group(prompt=[{"role": "user", "content": prompt}],
                                   completions=[[{"role": "assistant", "content": r}] for r in replies])])
    with running_server(scorer) as url, httpx.Client(base_url=url, timeout=60) as http:
        got = http.post("/v1/score", json={"prompt": prompt, "completions": replies}).json()
        explicit = http.post("/v1/score", json={"prompt": prompt, "completions": replies,
                                                "steps": [r.split(MARKER) for r in replies]}).json()
        heads = [enc.render([{"role": "user", "content": prompt}], [{"role": "assistant", "content": r}])
                 for r in replies]
        legacy = http.post("/get_reward", json={"query": [f for _, f in heads], "prompts": [h for h, _ in heads]})
        no_prompt = http.post("/get_reward", json={"query": [f for _, f in heads]})
    assert got["aggregate"] == "min" and [len(s) for s in got["step_rewards"]] == [2, 3]
    np.testing.assert_allclose(np.concatenate(got["step_rewards"]), np.concatenate(offline.step_rewards[0]), rtol=1e-5)
    np.testing.assert_allclose(got["rewards"], [min(s) for s in got["step_rewards"]], rtol=1e-6)
    np.testing.assert_allclose(np.concatenate(explicit["step_rewards"]), np.concatenate(got["step_rewards"]), rtol=1e-5)
    assert legacy.status_code == 200
    np.testing.assert_allclose(legacy.json()["rewards"], got["rewards"], rtol=1e-5)
    assert no_prompt.status_code == 400 and "prompt" in no_prompt.json()["detail"]
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": prompt, "completions": replies},
                                                 {"prompt": prompt, "completion": replies[0]}])
    assert cli(["score", "--model", str(folder), "--input", str(rows), "--output", str(tmp_path / "out.jsonl"),
                "--aggregate", "last", "--precision", "fp32"]) == 0
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out[0]["aggregate"] == "last" and out[0]["rewards"] == pytest.approx([s[-1] for s in out[0]["step_rewards"]])
    assert out[1]["step_reward"] == pytest.approx(out[0]["step_rewards"][0], rel=1e-5)
