"""Training with every loss: pairs, K-wise rankings, ties, margins and the refusals around them."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from rewardkit.config import TrainConfig
from rewardkit.data.record import PreferenceExample
from rewardkit.data.transforms import drop_ties, flatten_rankings
from rewardkit.train import train

from conftest import learnable_rows, write_jsonl

LADDER = ["great", "good", "fine", "poor", "bad", "awful"]  # best first


def ranking_rows(n: int, seed: int, k_choices=(2, 3, 4)) -> list[dict]:
    """Rankings a tiny model can learn: completions ranked by a word's place on LADDER."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.sample(LADDER, rng.choice(k_choices))
        completions = [f"the answer is {w}" for w in words]
        rows.append({"prompt": rng.choice(["How was it?", "Rate the answer.", "Is it fine?"]),
                     "completions": completions, "ranks": [sorted(words, key=LADDER.index).index(w) for w in words]})
    return rows


def config(tiny_model_dir: Path, tmp_path: Path, train_rows: list[dict], **kw) -> TrainConfig:
    train_file = write_jsonl(tmp_path / "train.jsonl", train_rows)
    eval_file = write_jsonl(tmp_path / "eval.jsonl", learnable_rows(24, seed=7))
    defaults = dict(model=str(tiny_model_dir), train_data=str(train_file), eval_data=str(eval_file),
                    output_dir=str(tmp_path / "runs"), run_name=kw.get("loss", "bt"), batch_size=8,
                    micro_batch_size=4, learning_rate=2e-3, warmup_ratio=0.1, max_length=64, seed=0,
                    eval_before=False, overwrite=True, length_debias="none")  # the losses as such, unweighted
    return TrainConfig(**{**defaults, **kw})


def test_pairwise_losses_agree_on_strict_pairs(tiny_model_dir, tmp_path):
    """On strict pairs eq. 3, eq. 4, eq. 6 (K = 2) and Plackett-Luce (K = 2) are the same function."""
    rows = learnable_rows(32, seed=3)
    reports = {name: train(config(tiny_model_dir, tmp_path, rows, loss=name))
               for name in ("bt", "bt_softplus", "balanced", "plackett_luce")}
    base = reports["bt"]
    for name, rep in reports.items():
        assert rep["first_train_loss"] == pytest.approx(base["first_train_loss"], rel=1e-5), name
        assert rep["last_train_loss"] == pytest.approx(base["last_train_loss"], rel=1e-4), name
        assert rep["after"]["mean_margin"] == pytest.approx(base["after"]["mean_margin"], rel=1e-3), name
    assert base["first_train_loss"] == pytest.approx(math.log(2), abs=0.05)


def test_kwise_losses_learn_rankings(tiny_model_dir, tmp_path):
    rows = ranking_rows(96, seed=1)
    for loss in ("balanced", "plackett_luce"):
        rep = train(config(tiny_model_dir, tmp_path, rows, loss=loss))
        assert rep["after"]["accuracy"] >= 0.9, loss
        assert rep["last_train_loss"] < 0.6 * rep["first_train_loss"], loss


def test_flattened_rankings_become_all_pairs(tiny_model_dir, tmp_path):
    rows = ranking_rows(20, seed=2)
    expected = sum(math.comb(len(r["completions"]), 2) for r in rows)
    rep = train(config(tiny_model_dir, tmp_path, rows, loss="bt", flatten_rankings=True, batch_size=16))
    assert rep["record_changes"]["rankings_flattened"] == sum(len(r["completions"]) > 2 for r in rows)
    assert rep["steps"] == math.ceil(expected / 16)


def test_losses_that_need_pairs_or_strict_order_refuse_clearly(tiny_model_dir, tmp_path):
    rankings = ranking_rows(8, seed=4, k_choices=(3,))
    with pytest.raises(ValueError, match=r"train\.jsonl:1.*ranks 3 completions.*--loss balanced"):
        train(config(tiny_model_dir, tmp_path, rankings, loss="bt"))
    with pytest.raises(ValueError, match=r"needs a margin.*--margin-source"):
        train(config(tiny_model_dir, tmp_path, learnable_rows(8), loss="margin"))
    tied = learnable_rows(8) + [{"prompt": "Q?", "chosen": "the answer is good", "rejected": "the answer is fine",
                                 "tie": True}]
    with pytest.raises(ValueError, match=r"train\.jsonl:9.*tie.*--drop-ties"):
        train(config(tiny_model_dir, tmp_path, tied, loss="plackett_luce"))
    assert not (tmp_path / "runs" / "plackett_luce" / "metrics.jsonl").exists()


def test_ties_train_with_bt_and_are_dropped_on_request(tiny_model_dir, tmp_path):
    tied = learnable_rows(15) + [{"prompt": "Q?", "chosen": "the answer is good", "rejected": "the answer is fine",
                                  "tie": True}]
    rep = train(config(tiny_model_dir, tmp_path, tied, loss="bt", batch_size=16))
    assert rep["steps"] == 1 and math.isfinite(rep["first_train_loss"])
    rep = train(config(tiny_model_dir, tmp_path, tied, loss="bt", drop_ties=True, batch_size=16))
    assert rep["record_changes"]["ties_dropped"] == 1


def test_margin_loss_trains_from_scores(tiny_model_dir, tmp_path):
    rows = [{**r, "score_chosen": 8, "score_rejected": 3} for r in learnable_rows(32, seed=5)]
    plain = train(config(tiny_model_dir, tmp_path, rows, loss="bt"))
    with_margin = train(config(tiny_model_dir, tmp_path, rows, loss="margin", margin_source="scores", margin_scale=0.2))
    # A margin of 1 (= 0.2 × 5) makes the first-step loss −log σ(Δr − 1) > −log σ(Δr).
    assert with_margin["first_train_loss"] > plain["first_train_loss"] + 0.2
    metrics = [json.loads(x) for x in (Path(with_margin["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["split"] == "eval" and metrics[-1]["accuracy"] >= 0.9


def test_transforms_count_what_they_change():
    ex = PreferenceExample(prompt=[], completions=[[{"role": "assistant", "content": str(i)}] for i in range(4)],
                           ranking=[3, 1, 0, 2], ties=[[0, 2]], scores=[1.0, 2.0, 1.0, 3.0], source="f:1")
    pair = PreferenceExample.pair("q", "a", "b")
    tie = PreferenceExample.pair("q", "a", "b", ties=[[0, 1]])
    flat, n = flatten_rankings([ex, pair, tie])
    assert n == 1 and len(flat) == 6 + 2
    assert [(f.completions[0][0]["content"], f.completions[1][0]["content"], f.is_tie) for f in flat[:6]] == [
        ("3", "1", False), ("3", "0", False), ("3", "2", False), ("1", "0", False), ("1", "2", False), ("0", "2", True)]
    assert flat[0].scores == [3.0, 2.0]
    kept, dropped = drop_ties([ex, pair, tie])
    assert dropped == 1 and kept == [ex, pair]


def test_trainable_layers_freezes_the_lower_blocks(tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    rep = train(config(tiny_model_dir, tmp_path, learnable_rows(32, seed=6), trainable_layers=1))
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(Path(rep["run_dir"]) / "model.safetensors"))
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"][: len(before["model.embed_tokens.weight"])])
    assert torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])
    assert not torch.equal(before["model.layers.1.mlp.up_proj.weight"], after["model.layers.1.mlp.up_proj.weight"])
    assert rep["last_train_loss"] < rep["first_train_loss"]
    with pytest.raises(ValueError, match="only 2 blocks"):
        train(config(tiny_model_dir, tmp_path, learnable_rows(8), trainable_layers=3))


@pytest.mark.parametrize("loss", ["bt", "plackett_luce"])
def test_prefix_sharing_trains_exactly_like_padded_batches(tiny_model_dir, tmp_path, loss):
    rows = ranking_rows(48, seed=8) if loss == "plackett_luce" else learnable_rows(48, seed=8)
    shared = train(config(tiny_model_dir, tmp_path, rows, loss=loss, max_length=24, run_name="s"))
    plain = train(config(tiny_model_dir, tmp_path, rows, loss=loss, max_length=24, run_name="p", prefix_sharing=False))
    # each run records the path its training passes and its held-out scoring really took
    assert (shared["prefix_sharing"], shared["eval_scoring_path"]) == ("on", "shared")
    assert (plain["prefix_sharing"], plain["eval_scoring_path"]) == ("off (--no-prefix-sharing)", "padded")
    assert shared["first_train_loss"] == pytest.approx(plain["first_train_loss"], rel=1e-5)
    assert shared["last_train_loss"] == pytest.approx(plain["last_train_loss"], rel=1e-4)
    assert shared["after"]["mean_margin"] == pytest.approx(plain["after"]["mean_margin"], rel=1e-3)
    assert shared["train_truncation"]["prompt_truncated"] > 0  # siblings truncated together still share
