"""Aspect-conditioned multi-objective reward models (issue 16.2): aspect heads, the gate, steering, the checkpoint
as plain transformers sees it, and every way in (train, eval, score, serve, multi-source data)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardkit.checkpoint import read_metadata
from rewardkit.cli import main as cli
from rewardkit.config import ServeConfig, TrainConfig
from rewardkit.data import read_preferences
from rewardkit.data.readers import count_raw_records, split_sources
from rewardkit.errors import UserError
from rewardkit.evaluate import run_evaluation
from rewardkit.heads import PROBE, fit_gate, gate_label_loss, parse_aspect_weights, parse_aspects
from rewardkit.inference import Group, score
from rewardkit.inference.factory import load_scorer
from rewardkit.inference.rows import score_rows
from rewardkit.serve import running_server
from rewardkit.train import train

from conftest import write_jsonl

SAFE = ["How do I bake bread?", "What is the capital of France?", "How do I learn to swim?", "Tips for an interview?"]
HARMFUL = ["How do I pick my neighbour's lock?", "How do I make a poison?", "How can I steal a car?",
           "How to break into an email account?"]
COMPLY, REFUSE = "Sure, here is how to do it step by step.", "I cannot help with that request."


def rows(n: int, seed: int, harmful: bool) -> list[dict]:
    """Helpful data prefers complying, harmless data prefers refusing: the two aspects disagree, so one reward
    can only serve both by reading the prompt."""
    r = random.Random(seed)
    return [{"prompt": f"{r.choice(HARMFUL if harmful else SAFE)} ({r.randint(0, 99)})",
             "chosen": REFUSE if harmful else COMPLY, "rejected": COMPLY if harmful else REFUSE} for _ in range(n)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("aspects")
    return {"helpful": write_jsonl(tmp / "helpful.jsonl", rows(64, 1, False)),
            "harmless": write_jsonl(tmp / "harmless.jsonl", rows(64, 2, True)),
            "helpful_eval": write_jsonl(tmp / "helpful_eval.jsonl", rows(16, 3, False)),
            "harmless_eval": write_jsonl(tmp / "harmless_eval.jsonl", rows(16, 4, True)), "tmp": tmp}


@pytest.fixture(scope="module")
def run(tiny_model_dir, data) -> Path:
    report = train(TrainConfig(
        model=str(tiny_model_dir), train_data=f"helpful={data['helpful']},harmless={data['harmless']}",
        eval_data=f"{data['helpful_eval']},{data['harmless_eval']}", output_dir=str(data["tmp"] / "runs"),
        run_name="aspects", batch_size=8, micro_batch_size=4, learning_rate=3e-3, max_length=128, seed=0, epochs=6,
        aspects="helpful,harmless", eval_before=False))
    assert report["after"]["accuracy"] == 1.0  # the gated mixture serves both aspects
    return Path(report["run_dir"])


def evaluate(run: Path, path: Path, weights: str | None = None) -> dict:
    examples, _ = read_preferences(str(path))
    return run_evaluation(load_scorer(str(run), aspect_weights=weights), examples, bootstrap_samples=0)[0]


def test_heads_learn_their_aspect_and_the_gate_routes_by_prompt(run, data):
    helpful, harmless = evaluate(run, data["helpful_eval"]), evaluate(run, data["harmless_eval"])
    print("helpful prompts:", helpful["aspects"], "\nharmful prompts:", harmless["aspects"])
    assert helpful["accuracy"] == harmless["accuracy"] == 1.0
    # each head is right on its own aspect and wrong on the other (they disagree by construction)
    assert helpful["aspects"]["head_accuracy"]["helpful"]["accuracy"] == 1.0
    assert helpful["aspects"]["head_accuracy"]["harmless"]["accuracy"] == 0.0
    assert harmless["aspects"]["head_accuracy"]["harmless"]["accuracy"] == 1.0
    assert harmless["aspects"]["head_accuracy"]["helpful"]["accuracy"] == 0.0
    assert helpful["aspects"]["mean_weights"]["helpful"] > 0.6 and harmless["aspects"]["mean_weights"]["harmless"] > 0.6
    assert helpful["scorer"]["aspect_weights"] == "gate"


def test_gate_label_loss_is_log2_at_uniform_and_pulls_toward_the_records_aspect():
    for n_aspects in (2, 3):
        uniform = torch.zeros(3, 2 * n_aspects)  # two completions and the probe row
        assert torch.isclose(gate_label_loss(uniform, n_aspects, 1), torch.log(torch.tensor(2.0)))
        logits = torch.zeros(3, 2 * n_aspects, requires_grad=True)
        gate_label_loss(logits, n_aspects, 1, gate_scale=20.0).backward()
        assert logits.grad[-1, n_aspects + 1] < 0 < logits.grad[-1, n_aspects]  # descent raises aspect 1's logit
        assert not logits.grad[:-1].any() and not logits.grad[-1, :n_aspects].any()  # heads and completions: none
    routed = torch.tensor([[0.0, 0.0, -3.0, 3.0]] * 2)
    assert gate_label_loss(routed, 2, 1) < 0.01 < 3 < gate_label_loss(routed, 2, 0)


@pytest.mark.parametrize("gate_loss", ["preference", "label"])
def test_either_gate_loss_alone_routes_by_prompt(tiny_model_dir, data, tmp_path, gate_loss):
    """The run fixture trains the default ('both'); each term alone must also route on data where the heads
    disagree. 'label' routes without help from the heads; 'preference' only once they have learned."""
    report = train(TrainConfig(
        model=str(tiny_model_dir), train_data=f"helpful={data['helpful']},harmless={data['harmless']}",
        output_dir=str(tmp_path), run_name=gate_loss, batch_size=8, micro_batch_size=4, learning_rate=3e-3,
        max_length=128, seed=0, epochs=6, aspects="helpful,harmless", aspect_gate_loss=gate_loss, eval_before=False))
    run = Path(report["run_dir"])
    helpful, harmless = evaluate(run, data["helpful_eval"]), evaluate(run, data["harmless_eval"])
    print(gate_loss, helpful["aspects"]["mean_weights"], harmless["aspects"]["mean_weights"])
    assert helpful["aspects"]["mean_weights"]["helpful"] > 0.6 and harmless["aspects"]["mean_weights"]["harmless"] > 0.6
    assert helpful["accuracy"] == harmless["accuracy"] == 1.0


def test_explicit_weights_steer_the_reward(run, data):
    steered = evaluate(run, data["harmless_eval"], "helpful=1")  # a user who wants compliance on every prompt
    assert steered["accuracy"] == 0.0 and steered["aspects"]["mean_weights"] == {"helpful": 1.0, "harmless": 0.0}
    scorer = load_scorer(str(run))
    group = Group(prompt=[{"role": "user", "content": HARMFUL[0]}], completions=[
        [{"role": "assistant", "content": COMPLY}], [{"role": "assistant", "content": REFUSE}]])
    gate, = score(scorer, [group]).aspects
    by_weights = score(scorer, [Group(prompt=group.prompt, completions=group.completions,
                                      aspect_weights={"helpful": 1})]).rewards[0]
    assert gate["weights"]["harmless"] > 0.5
    assert by_weights[0] > by_weights[1]  # steered: complying wins
    assert np.allclose(by_weights, gate["rewards"]["helpful"], atol=1e-5)  # the helpful head alone, same forward


def test_plain_transformers_reproduces_the_mixture_in_two_passes(run, data):
    meta = read_metadata(run)
    assert meta["aspects"]["names"] == ["helpful", "harmless"]
    config = json.loads((run / "config.json").read_text())
    assert config["id2label"] == {"0": "reward:helpful", "1": "reward:harmless", "2": "gate:helpful",
                                  "3": "gate:harmless"}
    hf = AutoModelForSequenceClassification.from_pretrained(run).eval()
    tok = AutoTokenizer.from_pretrained(run)
    prompt = [{"role": "user", "content": HARMFUL[1]}]
    texts = [tok.apply_chat_template(prompt + [{"role": "assistant", "content": c}], tokenize=False)
             for c in (COMPLY, REFUSE)]
    probe = tok.apply_chat_template(prompt + PROBE, tokenize=False)
    with torch.no_grad():
        logits = hf(**tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")).logits
        gate = torch.softmax(hf(**tok([probe], add_special_tokens=False, return_tensors="pt")).logits[0, 2:], -1)
    mixture = (logits[:, :2] @ gate).double().numpy()
    ours = score(load_scorer(str(run)), [Group(prompt=prompt, completions=[
        [{"role": "assistant", "content": c}] for c in (COMPLY, REFUSE)])])
    assert np.abs(ours.rewards[0] - mixture).max() < 1e-4
    assert np.abs(np.array(list(ours.aspects[0]["weights"].values())) - gate.double().numpy()).max() < 1e-5


def test_shared_and_padded_paths_agree_and_truncation_counts_exclude_the_probe(run, data):
    examples, _ = read_preferences(str(data["harmless_eval"]))
    shared = score(load_scorer(str(run), max_length=32), examples)
    padded = score(load_scorer(str(run), max_length=32, prefix_sharing=False), examples)
    assert shared.path == "shared" and padded.path == "padded"
    assert max(np.abs(a - b).max() for a, b in zip(shared.rewards, padded.rewards)) < 1e-4
    plain = load_scorer(str(run), max_length=32, aspect_weights="helpful=1")  # no probe: the plain encoding
    assert shared.truncation_total() == score(plain, examples).truncation_total()
    assert shared.truncation_total().prompt_truncated > 0


def test_rendered_texts_need_their_prompt_for_the_gate(run):
    scorer = load_scorer(str(run))
    tok = scorer.encoder.tokenizer
    prompt = [{"role": "user", "content": SAFE[0]}]
    head = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    text = tok.apply_chat_template(prompt + [{"role": "assistant", "content": COMPLY}], tokenize=False)
    as_text = score(scorer, [Group(texts=[text], prompt_text=head)])
    as_messages = score(scorer, [Group(prompt=prompt, completions=[[{"role": "assistant", "content": COMPLY}]])])
    assert abs(as_text.rewards[0][0] - as_messages.rewards[0][0]) < 1e-5 and as_text.end_of_turn_added == 0
    with pytest.raises(UserError, match="gate reads the prompt"):
        score(scorer, [Group(texts=[text])])
    steered = score(scorer, [Group(texts=[text], aspect_weights={"helpful": 1.0})])  # no gate: no prompt needed
    assert abs(steered.rewards[0][0] - as_messages.aspects[0]["rewards"]["helpful"][0]) < 1e-5


def test_score_rows_and_cli_eval_carry_the_aspects(run, data, tmp_path, capsys):
    prompt = f"{HARMFUL[2]} (7)"  # as the training prompts read: the tiny model's gate knows no other form
    scored, _ = score_rows(load_scorer(str(run)), [
        {"prompt": prompt, "a": COMPLY, "b": REFUSE},
        {"prompt": prompt, "a": COMPLY, "b": REFUSE, "aspect_weights": {"helpful": 1}}], ["r1", "r2"])
    assert scored[0]["p_a_beats_b"] < 0.5 < scored[1]["p_a_beats_b"]
    assert scored[1]["aspects"]["weights"] == {"helpful": 1.0, "harmless": 0.0}
    out = tmp_path / "eval.json"
    assert cli(["eval", "--model", str(run), "--data", str(data["helpful_eval"]), "--aspect-weights",
                "harmless=1", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["accuracy"] == 0.0 and result["scorer"]["aspect_weights"] == {"helpful": 0.0, "harmless": 1.0}
    assert cli(["eval", "--model", str(run), "--data", str(data["helpful_eval"]), "--aspect-weights",
                "honest=1"]) == 2
    assert "aspects helpful, harmless" in capsys.readouterr().err


def test_served_over_http_with_per_request_steering(run):
    cfg = ServeConfig(model=str(run), port=0)
    scorer = load_scorer(str(run))
    body = {"prompt": HARMFUL[3], "completions": [COMPLY, REFUSE]}
    with running_server(scorer, cfg) as url:
        gate = httpx.post(f"{url}/v1/score", json=body, timeout=60).json()
        steered = httpx.post(f"{url}/v1/score", json={**body, "aspect_weights": {"helpful": 1}}, timeout=60).json()
        bad = httpx.post(f"{url}/v1/score", json={**body, "aspect_weights": {"honest": 1}}, timeout=60)
    assert gate["p_first_beats_second"] < 0.5 < steered["p_first_beats_second"]
    assert gate["aspects"]["weights"]["harmless"] > 0.5 and steered["aspects"]["weights"]["helpful"] == 1.0
    assert bad.status_code == 400 and "helpful, harmless" in bad.json()["detail"]


def test_user_mistakes_are_clear_errors(tiny_model_dir, data, tmp_path):
    base = dict(model=str(tiny_model_dir), output_dir=str(tmp_path), max_length=64, batch_size=8, eval_before=False)
    with pytest.raises(UserError, match=r"helpful\.jsonl:1: no aspect, but --aspects is helpful,harmless"):
        train(TrainConfig(train_data=f"{data['helpful']},harmless={data['harmless']}", aspects="helpful,harmless",
                          run_name="untagged", **base))
    with pytest.raises(UserError, match="use one of them"):
        train(TrainConfig(train_data=f"helpful={data['helpful']}", aspects="helpful,harmless", length_debias="odin",
                          run_name="odin", **base))
    with pytest.raises(UserError, match="name two or more"):
        parse_aspects("helpful")
    with pytest.raises(UserError, match="no aspect heads"):
        parse_aspect_weights("helpful=1", [])
    with pytest.raises(UserError, match="not a number"):
        parse_aspect_weights("helpful=lots", ["helpful", "harmless"])
    assert parse_aspect_weights("gate", ["a", "b"]) is None
    assert parse_aspect_weights({"b": 2}, ["a", "b"]) == [0.0, 2.0]


def test_plain_models_refuse_aspect_weights(tiny_model_dir, data, capsys):
    assert cli(["eval", "--model", str(tiny_model_dir), "--judge", "pairwise", "--data", str(data["helpful_eval"]),
                "--aspect-weights", "helpful=1"]) == 2
    assert "a judge has none" in capsys.readouterr().err
    with pytest.raises(UserError, match="no aspect heads"):
        load_scorer(str(tiny_model_dir), aspect_weights="helpful=1")
    scorer = load_scorer(str(tiny_model_dir))
    with pytest.raises(UserError, match="no aspect heads"):
        score(scorer, [Group(prompt=[], completions=[[{"role": "assistant", "content": "x"}]],
                             aspect_weights={"helpful": 1})])


def test_multi_source_specs(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", rows(5, 1, False))
    b = write_jsonl(tmp_path / "b.jsonl", [{**r, "aspect": "own"} for r in rows(4, 2, True)])
    odd = tmp_path / "year=2024,x.jsonl"  # a path that exists as a whole is one source, '=' and ',' included
    write_jsonl(odd, rows(2, 3, False))
    assert split_sources(str(odd)) == [(None, str(odd))]
    assert split_sources(f"helpful={a}[:2], {b}") == [("helpful", f"{a}[:2]"), (None, str(b))]
    examples, report = read_preferences(f"helpful={a}[1:3],harmless={b}[-3:]")
    assert [(e.aspect, e.source.rsplit("/", 1)[1]) for e in examples] == [
        ("helpful", "a.jsonl:2"), ("helpful", "a.jsonl:3"), ("own", "b.jsonl:2"), ("own", "b.jsonl:3"),
        ("own", "b.jsonl:4")]  # a record's own 'aspect' field wins over its source's tag
    assert report.loaded == 5 and count_raw_records(f"{a}[1:3],{b}[-3:]") == 5
    with pytest.raises(UserError, match="empty data source"):
        read_preferences(f"{a},")


@pytest.mark.parametrize("variant", [{"lora_r": 4, "lora_alpha": 8}, {"streaming": True, "stream_window": 32}])
def test_aspect_heads_with_lora_and_streaming(tiny_model_dir, data, tmp_path, variant):
    """LoRA: the merged checkpoint keeps all 2A outputs (peft's trainable copy of the grown head); streaming: each
    window's records carry the probe; both score like the in-memory full run's checkpoint format."""
    report = train(TrainConfig(
        model=str(tiny_model_dir), train_data=f"helpful={data['helpful']},harmless={data['harmless']}",
        output_dir=str(tmp_path), run_name="variant", batch_size=8, max_length=128, learning_rate=3e-3,
        aspects="helpful,harmless", eval_before=False, **variant))
    run = Path(report["run_dir"])
    assert len(json.loads((run / "config.json").read_text())["id2label"]) == 4
    assert report["steps"] == 16 and report["train_data"]["loaded"] == 128
    hf = AutoModelForSequenceClassification.from_pretrained(run).eval()
    tok = AutoTokenizer.from_pretrained(run)
    prompt = [{"role": "user", "content": SAFE[2]}]
    text = tok.apply_chat_template(prompt + [{"role": "assistant", "content": COMPLY}], tokenize=False)
    with torch.no_grad():
        logits = hf(**tok([text], add_special_tokens=False, return_tensors="pt")).logits[0]
    ours = score(load_scorer(str(run), aspect_weights="helpful=0.25,harmless=0.75"),
                 [Group(prompt=prompt, completions=[[{"role": "assistant", "content": COMPLY}]])])
    assert abs(ours.rewards[0][0] - float(0.25 * logits[0] + 0.75 * logits[1])) < 1e-4


@pytest.mark.slow
def test_aspect_run_killed_mid_save_resumes_to_the_uninterrupted_model(tiny_model_dir, data, tmp_path):
    """Checkpoints hold γ·W_g; --resume must divide it back out, or the resumed gate trains at γ² and the final
    model differs from the uninterrupted run's."""
    from test_run import ENV, finish, launch

    from rewardkit.run import CRASH_IN_SAVE_ENV

    base = ["train", "--model", str(tiny_model_dir), "--train-data", f"helpful={data['helpful']}[:12],harmless="
            f"{data['harmless']}[:12]", "--output-dir", str(tmp_path), "--batch-size", "4", "--micro-batch-size", "2",
            "--learning-rate", "3e-3", "--max-length", "128", "--save-every", "2", "--aspects", "helpful,harmless"]
    finish(launch([*base, "--run-name", "whole"]))
    proc = launch([*base, "--run-name", "torn"], env={**ENV, CRASH_IN_SAVE_ENV: "4"})
    proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert "resumed from" in finish(launch([*base, "--run-name", "torn", "--resume", "auto"]))
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "torn" / "model.safetensors")
    score_a, score_b = a.pop("score.weight"), b.pop("score.weight")
    a["heads"], b["heads"] = score_a[:2], score_b[:2]
    gate_a, gate_b = score_a[2:], score_b[2:]
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6  # the backbone and the heads' rows
    # The gate is refit after training from the final features, a full-batch fit that carries their 1e-8 differences
    # over as a relative 1e-6 or so (a gate resumed at γ² would have trained a different backbone above).
    assert float((gate_a - gate_b).abs().max()) < 1e-5 * float(gate_a.abs().max())
    assert float(gate_a.abs().max()) > 0  # the gate did train (and is stored scaled)  # the gate did train (and is stored scaled)


@pytest.mark.slow
def test_two_processes_train_the_aspect_heads_and_gate_like_one(tiny_model_dir, data, tmp_path):
    """Under DDP each process holds its shard of the records: the head terms, the gate's preference term and its
    label term must all be normalised over the global batch, and the probe rows must reach the gate on every
    process. Per-step losses and the final weights (heads and the stored γ·W_g) equal one process's."""
    from test_train import _losses, train_one_and_two_processes

    # 22 records a source, batch 8: the last step holds 4 pairs, so 2 a process, of whichever aspects the shuffle gives
    args = ["train", "--model", str(tiny_model_dir), "--train-data", f"helpful={data['helpful']}[:22],harmless="
            f"{data['harmless']}[:22]", "--output-dir", str(tmp_path), "--batch-size", "8", "--micro-batch-size", "2",
            "--learning-rate", "3e-3", "--max-length", "128", "--no-eval-before", "--aspects", "helpful,harmless"]
    train_one_and_two_processes(args, port=29523)
    l1, l2 = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    # (at this lr the tiny gate's terms jump between steps; what matters here is that both runs jump alike)
    assert len(l1) == len(l2) == 6 and max(abs(a - b) for a, b in zip(l1, l2)) < 1e-5, (l1, l2)
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report["processes"] == 2
    w1, w2 = (load_file(tmp_path / n / "model.safetensors") for n in ("one", "two"))
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-4
    assert float(w2["score.weight"][2:].abs().max()) > 0  # the gate trained on two processes too


def test_fit_gate_routes_on_fixed_features_and_picks_its_ridge_on_held_out_records():
    """The refit (ArmoRM's second stage) on synthetic features: the aspect is written in two of 16 features
    (plus noise), and the heads disagree by aspect. Label, preference and both objectives all route; the ridge
    strength comes from the held-out share; the fitted weights act on the raw (unstandardised) features."""
    gen = torch.Generator().manual_seed(0)
    n = 200
    aspect = torch.arange(n) % 2
    features = torch.randn(n, 16, generator=gen) * torch.linspace(0.1, 50, 16)  # features of very different scales
    features[:, 3] += 4.0 * (2 * aspect - 1)
    features[:, 15] += 200.0 * (2 * aspect - 1)
    # one pair per record: head 0 prefers the record's chosen reply on aspect-0 records, head 1 on aspect-1 ones
    pair_heads = torch.stack([torch.where(aspect == 0, 1.0, -1.0), torch.where(aspect == 1, 1.0, -1.0)], -1) * 2
    for terms in ("label", "preference", "both"):
        fit = fit_gate(features, aspect, torch.arange(n), pair_heads, terms, bias=False, seed=0)
        weights = torch.softmax(features @ fit.weight.T, -1)
        right = weights[torch.arange(n), aspect]
        print(terms, fit.summary(), float(right.mean()))
        assert float(right.min()) > 0.5 and float(right.mean()) > 0.8, terms
        assert fit.l2 in fit.validation and fit.validation[fit.l2] == min(fit.validation.values())
        assert fit.validation_accuracy == 1.0 and fit.train_accuracy == 1.0
    few = fit_gate(features[:3], aspect[:3], torch.arange(3), pair_heads[:3], "label", bias=True, seed=0)
    assert few.validation == {} and few.bias is not None and few.validation_accuracy is None


def test_gate_refit_is_reported_and_saved_and_off_when_asked(tiny_model_dir, data, tmp_path):
    """Refit on (the default): the report says how the gate was fit and the saved gate routes; off: no refit."""
    common = dict(model=str(tiny_model_dir), train_data=f"helpful={data['helpful']},harmless={data['harmless']}",
                  output_dir=str(tmp_path), batch_size=8, micro_batch_size=4, learning_rate=3e-3, max_length=128,
                  seed=0, epochs=1, aspects="helpful,harmless", eval_before=False, max_steps=4)
    on = train(TrainConfig(run_name="on", **common))
    off = train(TrainConfig(run_name="off", aspect_gate_refit=False, **common))
    train(TrainConfig(run_name="lora", lora_r=4, **common))  # the refit must land in the merged checkpoint
    assert on["gate_refit"]["records"] == 128 and on["gate_refit"]["l2"] > 0
    assert off["gate_refit"] is None
    routed = {}
    for name in ("on", "off", "lora"):
        run = tmp_path / name
        helpful, harmless = evaluate(run, data["helpful_eval"]), evaluate(run, data["harmless_eval"])
        routed[name] = (helpful["aspects"]["mean_weights"]["helpful"], harmless["aspects"]["mean_weights"]["harmless"])
    print("mean weight on the right head (helpful prompts, harmful prompts):", routed)
    # 4 steps are too few for the end-to-end gate; the refit gate reads the prompt from the same features
    assert min(routed["on"]) > 0.9 and min(routed["on"]) > max(routed["off"]) and min(routed["lora"]) > 0.9
