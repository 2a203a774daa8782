"""The trained generative verifier (GenRM-style): it learns on tiny data, saves a plain causal-LM folder whose
P(Yes) is the reward, and reloads to the same rewards."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rewardkit.cli import main as judge_cli
from rewardkit.data import read_preferences
from rewardkit.inference import score
from rewardkit.judges import JudgeScorer, evaluate_judge, load_judge
from rewardkit.judges.genrm import GenRMConfig, train_genrm
from rewardkit.judges.templates import render_chat

from conftest import learnable_rows, write_jsonl

TEMPLATE = "Q: {prompt}\nA: {response}\nIs it good?"


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("genrm")
    train_file = write_jsonl(tmp / "train.jsonl", learnable_rows(96, seed=1))
    eval_file = write_jsonl(tmp / "eval.jsonl", learnable_rows(32, seed=2))
    cfg = GenRMConfig(model=str(tiny_model_dir), train_data=str(train_file), eval_data=str(eval_file),
                      output_dir=str(tmp / "runs"), run_name="genrm", batch_size=8, micro_batch_size=4,
                      learning_rate=2e-3, warmup_ratio=0.1, max_length=96, seed=0, judge_template=TEMPLATE,
                      judge_system_prompt="")
    return train_genrm(cfg), eval_file


def test_genrm_learns(trained):
    report, _ = trained
    assert report["steps"] == 12
    assert report["before"]["accuracy"] < 0.8
    assert report["after"]["accuracy"] >= 0.95
    assert report["last_train_loss"] < 0.5 * report["first_train_loss"]
    t = report["train_truncation"]
    assert t["sequences"] == 192 and t["prompt_truncated"] == t["completion_truncated"] == 0


def test_checkpoint_is_a_causal_lm_whose_p_yes_is_the_reward(trained):
    report, eval_file = trained
    run = Path(report["run_dir"])
    for name in ("config.json", "model.safetensors", "tokenizer.json", "rewardkit_judge.json", "metrics.jsonl",
                 "train_config.json", "report.json", "report.md"):
        assert (run / name).exists(), name
    meta = json.loads((run / "rewardkit_judge.json").read_text())
    assert meta["kind"] == "verifier" and meta["template"]["user"] == TEMPLATE and meta["template"]["system"] is None
    assert meta["max_length"] == 96 and meta["verdict_tokens"]["labels"] == ["Yes", "No"]

    # plain transformers: render the prompt, one forward pass, read P(Yes) and P(No) by hand
    hf = AutoModelForCausalLM.from_pretrained(run).eval()
    tok = AutoTokenizer.from_pretrained(run)
    judge = load_judge(str(run))
    assert judge.template.kind == "verifier" and judge.template.user == TEMPLATE
    yes, no = (meta["verdict_tokens"]["candidates"][meta["verdict_tokens"]["labels"].index(x)] for x in ("Yes", "No"))
    assert len(yes) == len(no) == 1
    text = render_chat(tok, judge.template, judge.template.fill(prompt="How was the answer?",
                                                                  response="the answer is great"))
    with torch.no_grad():
        logits = hf(**tok(text, add_special_tokens=False, return_tensors="pt")).logits[0, -1].double()
    by_hand = float(logits.log_softmax(-1)[yes[0]] - logits.log_softmax(-1)[no[0]])
    examples, _ = read_preferences(str(eval_file))
    scorer = JudgeScorer(judge)
    scored = score(scorer, [ex for ex in examples if ex.prompt[0]["content"] == "How was the answer?"
                            and ex.chosen[0]["content"] == "the answer is great"][:1])
    (r,) = scored.rewards
    assert r[0] == pytest.approx(by_hand, abs=1e-4)
    assert scored.details[0]["completions"][0]["logp"]["Yes"] == pytest.approx(
        math.log(1 / (1 + math.exp(-by_hand))), abs=1e-4)

    # reloaded, the held-out metrics are the ones training reported
    result = evaluate_judge(JudgeScorer(load_judge(str(run))), examples)
    assert result["accuracy"] == report["after"]["accuracy"]
    assert result["mean_margin"] == pytest.approx(report["after"]["mean_margin"], abs=1e-4)
    with pytest.raises(ValueError, match="trained as a verifier judge"):
        load_judge(str(run), kind="pairwise")


def test_cli_evaluates_a_genrm_folder_without_flags(trained, tmp_path):
    report, eval_file = trained
    out = tmp_path / "eval.json"
    assert judge_cli(["eval", "--model", report["run_dir"], "--data", str(eval_file), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["scorer"]["kind"] == "verifier" and result["accuracy"] == report["after"]["accuracy"]


def test_existing_run_folder_is_refused(trained):
    report, eval_file = trained
    cfg = GenRMConfig(model="unused", train_data=str(eval_file), output_dir=str(Path(report["run_dir"]).parent),
                      run_name="genrm")
    with pytest.raises(ValueError, match="already holds a run"):
        train_genrm(cfg)
    with pytest.raises(ValueError, match="--judge-template, not --template"):
        train_genrm(GenRMConfig(model="unused", train_data=str(eval_file), template="raw",
                                output_dir=str(Path(report["run_dir"]).parent), run_name="other"))


def test_rankings_with_any_loss_and_a_partial_fine_tune(tiny_model_dir, tmp_path):
    """K-wise records train a GenRM with the Plackett-Luce loss; --trainable-layers freezes the rest.

    The first step's logged loss is checked against a hand computation: the untrained judge's logit P(Yes)
    per completion, Plackett-Luce over each record's ranking, averaged over the records of the step."""
    import random

    from rewardkit.batching import pad_batch
    from rewardkit.judges.genrm import genrm_rewards
    from rewardkit.losses import plackett_luce_loss

    rng = random.Random(0)
    rows = [{"prompt": f"question {i}", "completions": [f"answer {rng.randint(0, 99)} {'ok ' * j}" for j in range(3)],
             "ranks": rng.sample(range(3), 3)} for i in range(6)]
    data = write_jsonl(tmp_path / "rank.jsonl", rows)
    cfg = GenRMConfig(model=str(tiny_model_dir), train_data=str(data), output_dir=str(tmp_path / "runs"),
                      run_name="pl", loss="plackett_luce", trainable_layers=1, batch_size=6, micro_batch_size=4,
                      learning_rate=1e-2, warmup_ratio=0.0, max_length=96, seed=0, judge_template=TEMPLATE,
                      judge_system_prompt="")
    report = train_genrm(cfg)
    assert report["steps"] == 1

    judge = load_judge(str(tiny_model_dir), kind="verifier", template=TEMPLATE, system_prompt="", max_length=96)
    examples, _ = read_preferences(str(data))
    losses = []
    with torch.no_grad():
        for ex in examples:
            ids, mask = pad_batch(judge.encode_queries([{"prompt": ex.prompt[-1]["content"], "response": c[-1]["content"]}
                                                        for c in ex.completions]), judge.tokenizer.pad_token_id, "left")
            r = genrm_rewards(judge.model, ids, mask, judge.verdicts)
            losses.append(float(plackett_luce_loss(r[list(ex.ranking)])))
    first = json.loads((Path(report["run_dir"]) / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)

    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    after = AutoModelForCausalLM.from_pretrained(report["run_dir"])
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    assert torch.equal(b["model.embed_tokens.weight"], a["model.embed_tokens.weight"])
    assert all(torch.equal(b[n], a[n]) for n in b if n.startswith("model.layers.0."))
    assert not torch.equal(b["model.layers.1.mlp.up_proj.weight"], a["model.layers.1.mlp.up_proj.weight"])
