"""Automatic step labels (rewardkit.shepherd, Math-Shepherd): steps, the label rule, seeding, resume, bad records.

The policy is a real tiny random Llama causal LM with the trained-here BPE tokenizer (tests/conftest.py), run through
transformers ``generate``; the answer check is the real ``rewardkit.data.answers.is_correct``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from rewardkit.cli import main
from rewardkit.config import LabelStepsConfig
from rewardkit.data.answers import extract_answer, is_correct
from rewardkit.data.readers import ReadReport
from rewardkit.errors import ConfigError, DataError
from rewardkit.model import load_tokenizer
from rewardkit.shepherd import (
    Costs,
    Policy,
    gsm8k_steps,
    label_records,
    label_steps,
    read_step_records,
    sample_seed,
    split_steps,
)

from conftest import write_jsonl

GSM8K_ROW = {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
                         "May. How many clips did Natalia sell altogether in April and May?",
             "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
                       "altogether in April and May.\n#### 72"}


def step_rows(n: int) -> list[dict]:
    return [{"id": f"q{i}", "prompt": f"What is {i} plus {i}?",
             "completions": [f"We add {i} and {i}.", f"So {i} + {i} = {2 * i}.", f"The answer is {2 * i}."],
             "reference_answer": str(2 * i)} for i in range(n)]


@pytest.fixture(scope="module")
def policy_parts(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), load_tokenizer(str(tiny_model_dir))


def make_policy(policy_parts, batch_size: int = 32, max_new_tokens: int = 12) -> Policy:
    model, tok = policy_parts
    return Policy(model, tok, temperature=1.0, top_p=0.95, max_new_tokens=max_new_tokens, batch_size=batch_size,
                  instruction="Answer with '#### n'.")


def config(tmp_path: Path, **kw) -> LabelStepsConfig:
    base = dict(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "out.jsonl"), k=3,
                generate_solutions=False, max_new_tokens=12, temperature=1.0)
    return LabelStepsConfig(**{**base, **kw})


# ------------------------------------------------------------------------------------- steps


def test_gsm8k_steps_drop_annotations_and_join_the_answer_line():
    steps = gsm8k_steps(GSM8K_ROW["answer"])
    assert steps == ["Natalia sold 48/2 = 24 clips in May.",
                     "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"]
    kept = gsm8k_steps(GSM8K_ROW["answer"], keep_annotations=True)
    assert kept[0] == "Natalia sold 48/2 = <<48/2=24>>24 clips in May."
    assert split_steps("First.\n\n  Second.  \n#### 5\n") == ["First.", "Second.\n#### 5"]
    assert split_steps("#### 5") == ["#### 5"]
    assert split_steps("  \n ") == []


def test_records_of_both_forms_and_their_reference_answers(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [GSM8K_ROW, step_rows(1)[0] | {"reference_answer": 0},
                                              {"prompt": "Q?", "completions": ["a", "b"], "answer": "x\n#### 1,000"}])
    records, report = read_step_records(str(path))
    assert [r.reference_answer for r in records] == ["72", "0", "1,000"]
    assert records[0].id == "in.jsonl:1" and records[1].id == "q0"
    assert records[0].steps == gsm8k_steps(GSM8K_ROW["answer"])
    assert report.loaded == 3


@pytest.mark.parametrize("row, reason", [
    ({"prompt": "Q?", "completions": ["a", "  "], "reference_answer": "1"}, "empty step"),
    ({"prompt": "Q?", "completions": ["a", "b"]}, "no reference answer"),
    ({"question": "Q?", "answer": "no final answer line here\nat all"}, "no reference answer"),
    ({"prompt": "Q?", "completions": [], "reference_answer": "1"}, "no steps"),
    ({"question": "", "answer": "#### 1"}, "empty question"),
])
def test_bad_records_name_file_and_line_or_are_counted(tmp_path, row, reason):
    path = write_jsonl(tmp_path / "in.jsonl", [GSM8K_ROW, row, step_rows(1)[0]])
    with pytest.raises(DataError, match=r"in\.jsonl:2: .*--skip-bad-records"):
        read_step_records(str(path))
    records, report = read_step_records(str(path), skip_bad=True)
    assert len(records) == 2 and dict(report.skipped) == {reason: 1}
    assert report.skipped_at == [f"{path}:2"]


def test_duplicate_ids_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", step_rows(2) + [step_rows(1)[0]])
    with pytest.raises(DataError, match=r"in\.jsonl:3: id 'q0' was already used at .*in\.jsonl:1"):
        read_step_records(str(path))


def test_the_cli_reports_a_bad_record_in_one_line(tmp_path, capsys):
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "Q?", "completions": ["a"]}])
    assert main(["label-steps", "--input", str(path), "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "in.jsonl:1: no reference answer" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------- sampling


def test_a_sample_depends_on_its_seed_not_on_its_batch(policy_parts):
    prompts = [f"What is {i} plus {i}?" * (1 + i % 3) for i in range(6)]
    seeds = [sample_seed(7, f"r{i}", 0, 0) for i in range(6)]
    alone = [make_policy(policy_parts, batch_size=1).sample([p], [s])[0] for p, s in zip(prompts, seeds)]
    together = make_policy(policy_parts, batch_size=6).sample(prompts, seeds)
    shuffled = make_policy(policy_parts, batch_size=4).sample(prompts[::-1], seeds[::-1])[::-1]
    assert [a.text for a in alone] == [t.text for t in together] == [s.text for s in shuffled]
    assert [a.tokens for a in alone] == [t.tokens for t in together]
    assert len({a.text for a in alone}) > 1  # the samples differ, so equality above is not trivial
    other = make_policy(policy_parts).sample(prompts, [s + 1 for s in seeds])
    assert [o.text for o in other] != [a.text for a in alone]


# ------------------------------------------------------------------------------------- the label rule


def _records_with_reachable_answers(tmp_path, policy, k):
    """Step rows whose reference answer is what one of the policy's own rollouts (seed-determined) answers, so the
    real answer check finds some rollouts correct and others not."""
    rows = step_rows(3)
    records, _ = read_step_records(str(write_jsonl(tmp_path / "in.jsonl", rows)))
    for r in records:
        texts = [policy.sample([policy.prompt_text(r.question, r.steps[:1])], [sample_seed(42, r.id, 0, j)])[0].text
                 for j in range(k)]
        answers = [a for a in (extract_answer(t) for t in texts) if a is not None]
        if answers:
            r.reference_answer = answers[0]
    return records


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_labels_follow_the_rule_by_hand(tmp_path, policy_parts, mode):
    k = 4
    policy = make_policy(policy_parts)
    records = _records_with_reachable_answers(tmp_path, policy, k)
    cfg = config(tmp_path, k=k, label_mode=mode)
    rows = list(label_records(policy, records, cfg, Costs(), ReadReport("x")))
    assert [row["id"] for row in rows] == [r.id for r in records]
    positives = 0
    for row, r in zip(rows, records):
        assert row["completions"] == r.steps and row["k"] == k and row["reference_answer"] == r.reference_answer
        for i in range(len(r.steps) - 1):  # every step but the last: k rollouts from (question + steps[0..i])
            texts = [policy.sample([policy.prompt_text(r.question, r.steps[:i + 1])],
                                   [sample_seed(cfg.seed, r.id, i, j)])[0].text for j in range(k)]
            correct = sum(is_correct(t, r.reference_answer) for t in texts)
            positives += correct > 0
            assert row["rollouts_correct"][i] == correct
            assert row["labels"][i] == (correct > 0 if mode == "hard" else correct / k)
            assert isinstance(row["labels"][i], bool if mode == "hard" else float)
        # The last step is the whole solution: labelled by its own final answer, no rollouts.
        own = is_correct("\n".join(r.steps), r.reference_answer)
        assert row["rollouts_correct"][-1] is None
        assert row["labels"][-1] == (own if mode == "hard" else float(own))
    assert positives > 0, "no rollout reached an answer: the check above compared only zeros"


def test_the_last_step_is_labelled_by_the_solutions_own_answer(tmp_path, policy_parts):
    rows = [{"id": "right", "prompt": "What is 2 plus 2?", "completions": ["2 + 2 = 4.", "#### 4"],
             "reference_answer": "4"},
            {"id": "wrong", "prompt": "What is 2 plus 2?", "completions": ["2 + 2 = 5.", "#### 5"],
             "reference_answer": "4"}]
    records, _ = read_step_records(str(write_jsonl(tmp_path / "in.jsonl", rows)))
    out = list(label_records(make_policy(policy_parts), records, config(tmp_path), Costs(), ReadReport("x")))
    assert [row["labels"][-1] for row in out] == [True, False]


def test_labels_do_not_depend_on_batch_size(tmp_path, policy_parts):
    policy = make_policy(policy_parts)
    records = _records_with_reachable_answers(tmp_path, policy, 3)
    outs = []
    for batch_size in (1, 5, 64):
        cfg = config(tmp_path, batch_size=batch_size, label_mode="soft")
        outs.append(list(label_records(make_policy(policy_parts, batch_size=batch_size), records, cfg, Costs(),
                                       ReadReport("x"))))
    assert outs[0] == outs[1] == outs[2]


def test_early_exit_labels_later_steps_zero_without_sampling(tmp_path, policy_parts):
    # A reference no rollout of this random policy writes: every sampled step gets 0 of k.
    rows = [{"id": "a", "prompt": "What is 1 plus 1?", "completions": ["One.", "Two.", "Three.", "#### 123456789"],
             "reference_answer": "123456789"}]
    records, _ = read_step_records(str(write_jsonl(tmp_path / "in.jsonl", rows)))
    costs = Costs()
    row, = label_records(make_policy(policy_parts), records, config(tmp_path, early_exit=True), costs, ReadReport("x"))
    assert row["rollouts_correct"] == [0, None, None, None]
    assert row["labels"] == [False, False, False, True]  # the last step is still its own (correct) answer
    assert costs.per_step[0].samples == 3 and 1 not in costs.per_step
    assert costs.not_sampled["after a step with 0 of k (--early-exit)"] == 2
    costs = Costs()
    row, = label_records(make_policy(policy_parts), records, config(tmp_path), costs, ReadReport("x"))
    assert row["rollouts_correct"] == [0, 0, 0, None] and costs.per_step[2].samples == 3


def test_generated_solutions_are_split_by_lines_and_labelled(tmp_path, policy_parts):
    policy = make_policy(policy_parts, max_new_tokens=20)
    records, _ = read_step_records(str(write_jsonl(tmp_path / "in.jsonl", step_rows(3))))
    report = ReadReport("x")
    costs = Costs()
    rows = list(label_records(policy, records, config(tmp_path, generate_solutions=True), costs, report))
    assert costs.solutions.samples == 3
    for r in records:
        text = policy.sample([policy.prompt_text(r.question, [])], [sample_seed(42, r.id, -1, 0)])[0].text
        expected = split_steps(text)
        row = next((x for x in rows if x["id"] == r.id), None)
        if not expected:
            assert row is None
        else:
            assert row["completions"] == expected and row["solution_source"] == "policy"
    assert len(rows) + report.skipped["generated solution empty"] == 3


# ------------------------------------------------------------------------------------- the command, resume


def test_resume_skips_done_records_and_gives_the_same_file(tmp_path, tiny_model_dir, capsys):
    write_jsonl(tmp_path / "in.jsonl", step_rows(4))
    part = tmp_path / "part.jsonl"
    summary = label_steps(config(tmp_path, model=str(tiny_model_dir), output=str(part), batch_size=6))
    assert summary["records_written_now"] == 4 and summary["labels"]["steps"] == 12
    assert summary["cost"]["tokens_generated"] == sum(c["tokens"] for c in summary["cost"]["per_step"].values())
    assert json.loads((tmp_path / "part.summary.json").read_text())["finished"] is True
    expected = part.read_text()

    # The state a kill leaves: two rows written, the third cut off mid-line. Resumed with another batch size.
    lines = expected.splitlines(keepends=True)
    part.write_text(lines[0] + lines[1] + lines[2][:25])
    capsys.readouterr()
    resumed = label_steps(config(tmp_path, model=str(tiny_model_dir), output=str(part), batch_size=1))
    err = capsys.readouterr().err
    assert "2 of 4 records already labelled, skipped" in err and "cut-off last line" in err
    assert resumed["records_written_now"] == 2 and resumed["records_resumed_skipped"] == 2
    assert part.read_text() == expected
    assert [seg["records_written"] for seg in resumed["earlier_segments"]] == [4]

    # A longer slice of the same file continues the run: only the new rows are labelled.
    write_jsonl(tmp_path / "in.jsonl", step_rows(5))
    more = label_steps(config(tmp_path, model=str(tiny_model_dir), input=str(tmp_path / "in.jsonl") + "[:5]",
                              output=str(part)))
    assert more["records_resumed_skipped"] == 4 and more["records_written_now"] == 1
    assert part.read_text().startswith(expected) and len(part.read_text().splitlines()) == 5
    assert [seg["records_written"] for seg in more["earlier_segments"]] == [4, 2]

    with pytest.raises(ConfigError, match=r"k: 3 then, 2 now"):
        label_steps(config(tmp_path, model=str(tiny_model_dir), output=str(part), k=2))
    nosummary = tmp_path / "other.jsonl"
    nosummary.write_text(lines[0])
    with pytest.raises(ConfigError, match="summary"):
        label_steps(config(tmp_path, model=str(tiny_model_dir), output=str(nosummary)))


def test_the_config_is_strict_and_the_command_has_help(tmp_path, capsys):
    from rewardkit.config import load_config

    with pytest.raises(ConfigError, match=r"--k \(k\) must be in \[1, inf\)"):
        LabelStepsConfig(k=0)
    with pytest.raises(ConfigError, match=r"--label-mode \(label_mode\) must be one of 'hard', 'soft'"):
        LabelStepsConfig(label_mode="both")
    path = tmp_path / "c.yaml"
    path.write_text("k: 8\nlabel_mode: soft\nsamples: 3\n")
    with pytest.raises(ConfigError, match=r"unknown LabelStepsConfig field\(s\) \['samples'\]"):
        load_config(LabelStepsConfig, path)
    path.write_text("k: 8\nlabel_mode: soft\n")
    assert load_config(LabelStepsConfig, path, top_p=0.5) == LabelStepsConfig(k=8, label_mode="soft", top_p=0.5)
    with pytest.raises(SystemExit) as done:
        main(["label-steps", "--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: rewardkit label-steps")


def test_the_sampler_draws_from_the_nucleus_in_proportion():
    import torch

    from rewardkit.shepherd import _SeededSampler

    n = 4000
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    scores = probs.log().repeat(n, 1)
    out = _SeededSampler(list(range(n)), 1.0, 0.8, torch.device("cpu"))(torch.zeros((n, 1), dtype=torch.long), scores)
    picked = out.argmax(-1)
    assert bool((out.max(-1).values == 0).all()) and int((out == 0).sum()) == n  # one-hot
    counts = torch.bincount(picked, minlength=4)
    assert counts[2] == counts[3] == 0  # 0.5 + 0.3 already reach top_p = 0.8
    assert abs(counts[0] / n - 0.5 / 0.8) < 0.03
    # 300 equally likely tokens: the top 256 hold less than top_p, so the full sort decides (270 kept).
    flat = torch.zeros((n, 300))
    picked = _SeededSampler(list(range(n)), 1.0, 0.9, torch.device("cpu"))(torch.zeros((n, 1), dtype=torch.long),
                                                                           flat).argmax(-1)
    assert int(picked.max()) < 300 and len(set(picked.tolist())) > 256
    hot = torch.tensor([[0.0, 5.0, 0.0]]).repeat(n, 1)  # temperature sharpens; top_p = 1 samples the whole vocabulary
    cold = _SeededSampler(list(range(n)), 0.1, 1.0, torch.device("cpu"))(torch.zeros((n, 1), dtype=torch.long), hot)
    assert bool((cold.argmax(-1) == 1).all())
    warm = _SeededSampler(list(range(n)), 5.0, 1.0, torch.device("cpu"))(torch.zeros((n, 1), dtype=torch.long), hot)
    assert set(warm.argmax(-1).tolist()) == {0, 1, 2}


def test_generation_stops_after_a_finished_answer_line(policy_parts):
    import torch

    from rewardkit.shepherd import _AnswerLineStop

    _, tok = policy_parts
    prompt = tok("the question is", add_special_tokens=False)["input_ids"]
    texts = ["the answer is 5\n#### 5\n", "the answer is 5\n#### 5", "####\n", "no answer line\n"]
    rows = [prompt + tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    # Only a '####' line with an answer and its newline stops a row (a bare '####' or an unfinished line does not).
    assert _AnswerLineStop(tok, len(prompt))(ids, None).tolist() == [True, False, False, False]
