"""Length debiasing (issue 16.1): ODIN's quality and length heads, and the length-balanced baseline."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardkit.checkpoint import load_checkpoint, read_metadata
from rewardkit.config import TrainConfig
from rewardkit.errors import ConfigError
from rewardkit.heads import LENGTH_HEAD_FILE, length_balance_weights
from rewardkit.inference import score_token_ids
from rewardkit.losses import (
    correlation_sums,
    odin_disentangle_loss,
    odin_disentangle_share,
    pearson,
    symmetric_pair_differences,
)
from rewardkit.train import train

from conftest import write_jsonl


def length_biased_rows(n: int, seed: int, chosen_longer: float) -> list[dict]:
    """The chosen reply is the positive one; it is also the longer one in a ``chosen_longer`` share of pairs."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        good, bad = f"the answer is {rng.choice(['good', 'great', 'fine'])}", f"the answer is {rng.choice(['bad', 'awful', 'poor'])}"
        filler = " and so on" * rng.randint(2, 6)
        if rng.random() < chosen_longer:
            good += filler
        else:
            bad += filler
        rows.append({"prompt": rng.choice(["How was it?", "Is it fine?", "What is it?"]), "chosen": good, "rejected": bad})
    return rows


def test_odin_terms_by_hand():
    r_q = torch.tensor([1.0, 2.0, 3.0, 4.0])
    r_l = torch.tensor([4.0, 3.0, 2.0, 1.0])
    length = torch.tensor([10.0, 20.0, 30.0, 40.0])
    w_q, w_l = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.5, 3.0, -1.0])
    assert pearson(r_q, length).item() == pytest.approx(1.0) and pearson(r_l, length).item() == pytest.approx(-1.0)
    # λ_L·(−ρ_L) + λ_Q·|ρ_Q| + λ_O·|w_Q·w_L| = 2·(+1) + 3·1 + 0.5·|0.5 − 2| = 5.75
    loss = odin_disentangle_loss(r_q, r_l, length, w_q, w_l, length_coef=2.0, quality_coef=3.0, ortho_coef=0.5)
    assert loss.item() == pytest.approx(5.75, rel=1e-6)
    assert pearson(torch.ones(4), length).item() == 0.0  # a constant head has no correlation, not NaN


def test_odin_shares_of_micro_batches_add_up_to_the_whole_batch_loss():
    """Gradient accumulation cuts a step into micro-batches (and DDP into processes): the shares computed from
    the step's correlation sums add up to the whole batch's ODIN terms, in value and in every gradient."""
    gen = torch.Generator().manual_seed(0)
    r_q, r_l = torch.randn(30, generator=gen, requires_grad=True), torch.randn(30, generator=gen, requires_grad=True)
    length = torch.randint(5, 3000, (30,), generator=gen).float()
    whole = odin_disentangle_loss(r_q, r_l, length, torch.zeros(2), torch.zeros(2), length_coef=0.7, quality_coef=1.3)
    g_q, g_l = torch.autograd.grad(whole, (r_q, r_l))
    chunks = [slice(0, 2), slice(2, 9), slice(9, 30)]  # one pair alone, then uneven micro-batches
    population = sum(torch.stack([correlation_sums(r_q[c], length[c]), correlation_sums(r_l[c], length[c])])
                     for c in chunks)
    parts = sum(odin_disentangle_share(r_q[c], r_l[c], length[c], population, length_coef=0.7, quality_coef=1.3)
                for c in chunks)
    s_q, s_l = torch.autograd.grad(parts, (r_q, r_l))
    assert parts.item() == pytest.approx(whole.item(), abs=1e-6)
    assert float((s_q - g_q).abs().max()) < 1e-6 and float((s_l - g_l).abs().max()) < 1e-6
    assert float(g_q.abs().max()) > 1e-3  # a real gradient, not two zeros
    # Over one pair alone the correlation is ±1 whatever the heads do, and its gradient vanishes: the reason the
    # shares exist (the per-micro-batch terms never trained the heads apart with a micro-batch of one pair).
    one = odin_disentangle_loss(r_q[:2], r_l[:2], length[:2], torch.zeros(2), torch.zeros(2))
    assert all(float(g.abs().max()) < 1e-4 for g in torch.autograd.grad(one, (r_q, r_l)))


def test_pair_margins_correlate_with_length_margins_whichever_way_a_pair_is_written():
    """ODIN over pairs: a reward that always prefers the longer reply by the same amount is fully correlated with
    length at the pair level (a plain correlation of margins would subtract that constant as the mean), and
    writing a pair the other way round changes nothing."""
    lengths = [torch.tensor([100.0, 40.0]), torch.tensor([30.0, 90.0]), torch.tensor([50.0, 20.0, 70.0])]
    longer_wins = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.0, 1.0])]
    pairs = [[(0, 1, False)], [(0, 1, False)], [(0, 1, False), (0, 2, False), (1, 2, False)]]
    rho = pearson(symmetric_pair_differences(longer_wins, pairs), symmetric_pair_differences(lengths, pairs))
    assert rho.item() > 0.9
    flipped = [[(1, 0, False)], [(0, 1, False)], [(2, 0, False), (0, 1, False), (2, 1, False)]]
    again = pearson(symmetric_pair_differences(longer_wins, flipped), symmetric_pair_differences(lengths, flipped))
    assert again.item() == pytest.approx(rho.item(), abs=1e-6)
    # Rewards that ignore length: margins that do not follow the length margins.
    blind = [torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0, 0.0])]
    assert abs(pearson(symmetric_pair_differences(blind, pairs), symmetric_pair_differences(lengths, pairs))) < 0.1
    # Both heads at once: rows of (k, 2) rewards give (pairs × 2, 2) margins.
    assert symmetric_pair_differences([torch.randn(2, 2), torch.randn(3, 2)], pairs[1:]).shape == (8, 2)


def test_odin_options_without_odin_are_refused():
    with pytest.raises(ConfigError, match="--odin-correlation set without --length-debias odin"):
        TrainConfig(odin_correlation="pairs")
    assert TrainConfig(odin_correlation="pairs", length_debias="odin").odin_correlation == "pairs"


def test_length_balance_weights():
    flags = [True, True, True, False, None]
    w = length_balance_weights(flags)
    assert sum(x for x, f in zip(w, flags) if f is True) == pytest.approx(sum(x for x, f in zip(w, flags) if f is False))
    assert w[-1] == 1.0 and np.mean(w[:4]) == pytest.approx(1.0)
    assert length_balance_weights([True, True, None]) == [1.0, 1.0, 1.0]  # nothing to balance against


@pytest.fixture(scope="module")
def odin_runs(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("odin")
    train_file = write_jsonl(tmp / "train.jsonl", length_biased_rows(96, seed=1, chosen_longer=0.9))
    eval_file = write_jsonl(tmp / "eval.jsonl", length_biased_rows(32, seed=2, chosen_longer=0.5))
    base = dict(model=str(tiny_model_dir), train_data=str(train_file), eval_data=str(eval_file),
                output_dir=str(tmp / "runs"), batch_size=8, micro_batch_size=4, learning_rate=3e-3, max_length=64,
                seed=0, epochs=2)
    options = {"none": {}, "odin": {}, "balance": {}, "odin-pairs": {"odin_correlation": "pairs"}}
    return {name: Path(train(TrainConfig(run_name=name, length_debias=name.split("-")[0], **extra, **base))["run_dir"])
            for name, extra in options.items()}


def test_odin_checkpoint_is_the_quality_head_in_plain_transformers(odin_runs):
    run = odin_runs["odin"]
    meta = read_metadata(run)
    assert meta["length_debias"]["method"] == "odin" and (run / LENGTH_HEAD_FILE).is_file()
    assert load_file(run / "model.safetensors")["score.weight"].shape[0] == 1
    assert json.loads((run / "config.json").read_text()).get("num_labels", 1) == 1
    model, encoder, _ = load_checkpoint(str(run))
    rows = length_biased_rows(4, seed=3, chosen_longer=0.5)
    ids = encoder.encode_many([([{"role": "user", "content": r["prompt"]}], [{"role": "assistant", "content": r[k]}])
                               for r in rows for k in ("chosen", "rejected")])
    ours = score_token_ids(model, ids, encoder.tokenizer.pad_token_id)
    hf = AutoModelForSequenceClassification.from_pretrained(run).eval()
    tok = AutoTokenizer.from_pretrained(run)
    batch = tok([tok.decode(x) for x in ids], add_special_tokens=False, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert abs(hf(**batch).logits.squeeze(-1).double().numpy() - ours).max() < 1e-4


def test_odin_moves_length_into_its_length_head(odin_runs):
    """On training data where the chosen reply is longer 90 % of the time, the length head ends up correlated
    with length and the reward (quality head) much less so."""
    run = odin_runs["odin"]
    model, encoder, _ = load_checkpoint(str(run))
    length_head = load_file(run / LENGTH_HEAD_FILE)
    rows = length_biased_rows(48, seed=4, chosen_longer=0.5)
    texts = [r[k] for r in rows for k in ("chosen", "rejected")]
    ids = encoder.encode_many([([{"role": "user", "content": r["prompt"]}], [{"role": "assistant", "content": r[k]}])
                               for r in rows for k in ("chosen", "rejected")])
    quality = score_token_ids(model, ids, encoder.tokenizer.pad_token_id)
    model.hf.score.weight.data = length_head["weight"]
    if "bias" in length_head:
        model.hf.score.bias.data = length_head["bias"]
    length_r = score_token_ids(model, ids, encoder.tokenizer.pad_token_id)
    lengths = np.array([len(t) for t in texts], dtype=float)
    rho_q, rho_l = np.corrcoef(quality, lengths)[0, 1], np.corrcoef(length_r, lengths)[0, 1]
    print(f"corr(quality head, length) = {rho_q:+.3f}, corr(length head, length) = {rho_l:+.3f}")
    assert rho_l > 0.5 and abs(rho_q) < rho_l


def test_debiased_runs_record_their_method_and_still_learn(odin_runs):
    acc = {}
    for name, run in odin_runs.items():
        report = json.loads((run / "report.json").read_text())
        acc[name] = (report["after"]["accuracy"], report["after"]["length"]["model_prefers_longer"])
        assert (read_metadata(run).get("length_debias") or {}).get("method", "none") == name.split("-")[0]
    print("held-out accuracy, share preferring the longer reply:", acc)
    # Length is a shortcut in training (chosen longer in 90 % of pairs) but not in held-out (50 %): the plain
    # RM takes it (prefers the longer reply almost always), ODIN's reward does not and ranks better.
    # Seen: none (0.47, 1.00), odin (0.72, 0.19), balance (0.53, 0.94), odin-pairs (0.53, 0.38) (ODIN over each
    # micro-batch: 0.66, 0.31).
    assert acc["none"][1] >= 0.9
    assert acc["odin"][1] <= 0.6 and acc["odin"][0] >= acc["none"][0] + 0.1
    assert acc["odin-pairs"][1] <= 0.6
    assert not math.isnan(json.loads((odin_runs["balance"] / "report.json").read_text())["first_train_loss"])


@pytest.mark.slow  # three training processes
def test_odin_run_killed_mid_save_resumes_to_the_uninterrupted_heads(tiny_model_dir, tmp_path):
    from test_run import ENV, finish, launch

    from rewardkit.run import CRASH_IN_SAVE_ENV

    data = write_jsonl(tmp_path / "t.jsonl", length_biased_rows(24, seed=1, chosen_longer=0.8))
    base = ["train", "--model", str(tiny_model_dir), "--train-data", str(data), "--output-dir", str(tmp_path),
            "--batch-size", "4", "--micro-batch-size", "2", "--learning-rate", "3e-3", "--max-length", "64",
            "--save-every", "2", "--length-debias", "odin"]
    finish(launch([*base, "--run-name", "whole"]))
    proc = launch([*base, "--run-name", "torn"], env={**ENV, CRASH_IN_SAVE_ENV: "4"})
    proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert "resumed from" in finish(launch([*base, "--run-name", "torn", "--resume", "auto"]))
    for name in ("model.safetensors", LENGTH_HEAD_FILE):
        a, b = load_file(tmp_path / "whole" / name), load_file(tmp_path / "torn" / name)
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6, name


@pytest.mark.parametrize("over", ["completions", "both"])
def test_odin_step_is_the_same_whatever_the_micro_batch_size(tiny_model_dir, tmp_path, over):
    """ODIN's correlations are over the whole step (its pre-pass), so accumulating 8 micro-batches of one pair
    trains exactly as one micro-batch of 8 pairs: same per-step losses, same quality and length heads. (With the
    correlations over each micro-batch, as before, one pair's ρ is ±1 and the heads never separate.)"""
    from test_train import _losses

    data = write_jsonl(tmp_path / "t.jsonl", length_biased_rows(24, seed=1, chosen_longer=0.8))
    runs = {}
    for micro in (1, 8):
        runs[micro] = Path(train(TrainConfig(model=str(tiny_model_dir), train_data=str(data), output_dir=str(tmp_path),
                                             run_name=f"m{micro}", batch_size=8, micro_batch_size=micro,
                                             learning_rate=3e-3, max_length=64, seed=0, length_debias="odin",
                                             odin_correlation=over, eval_before=False))["run_dir"])
    l1, l8 = _losses(runs[1]), _losses(runs[8])
    assert len(l1) == 3 and max(abs(a - b) for a, b in zip(l1, l8)) < 1e-5, (l1, l8)
    for name in ("model.safetensors", LENGTH_HEAD_FILE):
        a, b = load_file(runs[1] / name), load_file(runs[8] / name)
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4, name


@pytest.mark.slow  # two training commands, one of them 2 processes
def test_two_processes_train_odin_like_one(tiny_model_dir, tmp_path):
    """Under DDP each process holds part of the step's completions: the pre-pass's correlation sums are
    all-reduced, so 2 gloo processes train ODIN's heads as 1 process does."""
    from test_train import _losses, train_one_and_two_processes

    data = write_jsonl(tmp_path / "t.jsonl", length_biased_rows(28, seed=1, chosen_longer=0.8))  # last step: 4 pairs
    train_one_and_two_processes(["train", "--model", str(tiny_model_dir), "--train-data", str(data), "--output-dir",
                                 str(tmp_path), "--batch-size", "8", "--micro-batch-size", "2", "--learning-rate",
                                 "3e-3", "--max-length", "64", "--no-eval-before", "--length-debias", "odin"],
                                port=29527)
    l1, l2 = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(l1) == len(l2) == 4 and max(abs(a - b) for a, b in zip(l1, l2)) < 1e-5, (l1, l2)
    for name in ("model.safetensors", LENGTH_HEAD_FILE):
        a, b = load_file(tmp_path / "one" / name), load_file(tmp_path / "two" / name)
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4, name


def test_odin_with_lora_saves_a_plain_quality_head_and_its_length_head(tiny_model_dir, tmp_path):
    """The real-data ODIN runs are LoRA runs: the pre-pass runs through the peft model, the merged checkpoint
    is the 1-label quality head that plain transformers loads, the length head is saved beside it."""
    data = write_jsonl(tmp_path / "t.jsonl", length_biased_rows(16, seed=1, chosen_longer=0.8))
    run = Path(train(TrainConfig(model=str(tiny_model_dir), train_data=str(data), output_dir=str(tmp_path),
                                 run_name="lora-odin", batch_size=8, micro_batch_size=2, learning_rate=3e-3,
                                 max_length=64, seed=0, length_debias="odin", lora_r=4, eval_before=False))["run_dir"])
    assert read_metadata(run)["length_debias"]["method"] == "odin"
    assert load_file(run / "model.safetensors")["score.weight"].shape[0] == 1
    assert load_file(run / LENGTH_HEAD_FILE)["weight"].shape[0] == 1
    hf = AutoModelForSequenceClassification.from_pretrained(run)
    assert hf.config.num_labels == 1
