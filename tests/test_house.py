"""The training house (issue 32): objectives alone, and the defects that lived in the old trainer, each with a
test that failed before its fix.

* ``--overwrite`` cleared model files from a folder that was not a run;
* a resumed run with ``--log-every N > 1`` counted only logged steps (report ``steps``, the final evaluation's
  step, the reward statistics' step count);
* ``--flatten-rankings`` dropped ``aspect`` and ``id``;
* text completions that repeat the prompt kept it, and implicit prompt splits were not counted;
* ``plackett_luce`` + label smoothing was found only at the first micro-batch, after the run folder was made.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rewardkit.config import TrainConfig
from rewardkit.data import PreferenceExample, read_preferences
from rewardkit.data.transforms import flatten_rankings
from rewardkit.errors import ConfigError, UserError
from rewardkit.losses import bradley_terry_loss
from rewardkit.model import load_reward_model
from rewardkit.plan import Item
from rewardkit.train import train
from rewardkit.training.objectives import Aspects, Odin, Pairwise, odin_sums, odin_views

from conftest import learnable_rows, write_jsonl


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("house-data")
    return (write_jsonl(folder / "train.jsonl", learnable_rows(28, seed=1)),  # 7 steps of 4
            write_jsonl(folder / "eval.jsonl", learnable_rows(8, seed=2)))


def base(tiny_model_dir: Path, out: Path, **extra) -> TrainConfig:
    return TrainConfig(**{"model": str(tiny_model_dir), "output_dir": str(out), "batch_size": 4,
                          "micro_batch_size": 2, "learning_rate": 2e-3, "max_length": 64, "eval_before": False,
                          "seed": 3, **extra})


# ------------------------------------------------------------------------------ objectives, alone


def items_of(model, tokenizer, rows: list[dict]) -> list[Item]:
    from rewardkit.batching import Encoder, TruncationStats

    examples = [PreferenceExample.pair(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    ids = Encoder(tokenizer, max_length=64).encode_examples(examples, TruncationStats())
    return [Item(ex, i, ex.preference_pairs(), 1.0, tuple(len(c[0]["content"]) for c in ex.completions))
            for ex, i in zip(examples, ids)]


def test_pairwise_objective_is_the_bradley_terry_loss_of_the_models_rewards(tiny_model_dir):
    model, tokenizer = load_reward_model(str(tiny_model_dir))
    micro = items_of(model, tokenizer, learnable_rows(3, seed=5))
    cfg = TrainConfig(length_debias="none")
    out = Pairwise(cfg, tokenizer.pad_token_id).loss(model, micro, None)
    def reward(ids: list[int]) -> torch.Tensor:  # one sequence alone, padded nowhere
        return model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0]

    by_hand = torch.stack([bradley_terry_loss(reward(it.ids[0]), reward(it.ids[1])) for it in micro])
    assert torch.allclose(out.losses, by_hand, atol=1e-5)
    assert out.path == "shared" and len(out.rewards) == 3
    # a record's weight (the length-balance weights) scales its loss
    micro[0].weight = 2.0
    weighted = Pairwise(cfg, tokenizer.pad_token_id).loss(model, micro, None)
    assert torch.allclose(weighted.losses[0], 2 * out.losses[0]) and torch.allclose(weighted.losses[1:], out.losses[1:])


def test_odin_pre_pass_makes_two_micro_batches_one_step(tiny_model_dir):
    """ODIN's correlation terms are over the whole step: with the pre-pass's sums, the losses of a step cut into
    two micro-batches add up to the loss of the step taken as one micro-batch (what the loop relies on)."""
    from accelerate import Accelerator

    model, tokenizer = load_reward_model(str(tiny_model_dir))
    cfg = TrainConfig(length_debias="odin")
    objective = Odin(cfg, tokenizer.pad_token_id, Accelerator(cpu=True))
    objective.prepare_model(model)
    step = items_of(model, tokenizer, learnable_rows(4, seed=6))
    whole = objective.loss(model, step, objective.before_step(model, [step]))  # one micro-batch: context None
    assert objective.before_step(model, [step]) is None
    halves = [step[:2], step[2:]]
    context = objective.before_step(model, halves)
    with torch.no_grad():
        rewards = [model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long), all_heads=True)[0]
                   for it in step for s in it.ids]
    views = odin_views(step, [torch.stack(rewards[i:i + 2]) for i in range(0, 8, 2)], cfg.odin_correlation)
    assert torch.allclose(context[0], odin_sums(views).double(), atol=1e-4) and context[1] == 4
    parts = sum(objective.loss(model, half, context).losses.sum() for half in halves)
    assert math.isclose(float(parts), float(whole.losses.sum()), rel_tol=1e-5, abs_tol=1e-6)


def test_aspect_objective_stands_in_with_an_aspect_and_refuses_untagged_records():
    objective = Aspects(TrainConfig(aspects="a,b"), 0, ["a", "b"])
    assert objective.stand_in().aspect == "a"
    with pytest.raises(UserError, match="no aspect"):
        objective.check([PreferenceExample.pair("q", "x", "y")])


# ------------------------------------------------------------------------------ defects


def test_overwrite_refuses_a_folder_that_is_not_a_run(tiny_model_dir, data, tmp_path):
    model_folder = tmp_path / "my-model"
    model_folder.mkdir()
    for name in ("README.md", "config.json", "tokenizer.json", "vocab.json"):
        (model_folder / name).write_text("keep me")
    for overwrite in (True, False):
        with pytest.raises(UserError, match="not a rewardkit run folder"):
            train(base(tiny_model_dir, tmp_path, train_data=str(data[0]), run_name="my-model", overwrite=overwrite))
    assert sorted(p.name for p in model_folder.iterdir()) == ["README.md", "config.json", "tokenizer.json",
                                                              "vocab.json"]
    assert all(p.read_text() == "keep me" for p in model_folder.iterdir())
    (tmp_path / "empty").mkdir()  # an empty folder is fine to train into
    assert train(base(tiny_model_dir, tmp_path, train_data=str(data[0]), run_name="empty", max_steps=1))["steps"] == 1


def test_resume_with_log_every_counts_every_step(tiny_model_dir, data, tmp_path):
    """Resumed from step 4 of 7 with --log-every 3 (logged: 3, 6, 7): the report, the final evaluation and the
    reward statistics count all 7 steps, as the uninterrupted run does."""
    cfg = base(tiny_model_dir, tmp_path, train_data=str(data[0]), eval_data=str(data[1]), run_name="logged",
               log_every=3, save_every=2, keep_checkpoints=10)
    whole = train(cfg)
    assert whole["steps"] == 7
    run = Path(whole["run_dir"])
    evals = lambda: [json.loads(x)["step"] for x in (run / "metrics.jsonl").open() if '"split": "eval"' in x]  # noqa: E731
    assert evals() == [7]
    resumed = train(base(tiny_model_dir, tmp_path, train_data=str(data[0]), eval_data=str(data[1]), run_name="logged",
                         log_every=3, save_every=2, keep_checkpoints=10, resume=str(run / "checkpoints/step-000004")))
    assert resumed["steps"] == 7 and evals() == [7]
    assert resumed["after"]["accuracy"] == whole["after"]["accuracy"]
    # without held-out data the statistics come from the last steps' rewards: "steps a-b of 7"
    cfg = base(tiny_model_dir, tmp_path, train_data=str(data[0]), run_name="stats", log_every=3, save_every=2,
               keep_checkpoints=10, reward_stats="last-steps")
    train(cfg)
    stats_run = tmp_path / "stats"
    first = json.loads((stats_run / "rewardkit.json").read_text())["reward_stats_source"]
    train(base(tiny_model_dir, tmp_path, train_data=str(data[0]), run_name="stats", log_every=3, save_every=2,
               keep_checkpoints=10, reward_stats="last-steps", resume=str(stats_run / "checkpoints/step-000004")))
    again = json.loads((stats_run / "rewardkit.json").read_text())["reward_stats_source"]
    assert " of 7 " in first and " of 7 " in again, (first, again)
    assert json.loads((stats_run / "report.json").read_text())["steps"] == 7


def test_flattened_rankings_keep_aspect_and_id_and_train_aspect_heads(tiny_model_dir, tmp_path):
    ranking = PreferenceExample(prompt=[{"role": "user", "content": "q"}],
                                completions=[[{"role": "assistant", "content": t}] for t in ("a", "b", "c")],
                                ranking=[0, 1, 2], aspect="helpful", id="r1", source="f:1")
    pairs, n = flatten_rankings([ranking])
    assert n == 1 and len(pairs) == 3
    assert {(p.aspect, p.id) for p in pairs} == {("helpful", "r1")}
    good, bad = ["good", "great", "fine"], ["bad", "awful", "poor"]
    rows = [{"prompt": f"question {i}", "completions": [f"the answer is {good[i % 3]}", "the answer is so so",
                                                        f"the answer is {bad[i % 3]}"], "ranks": [0, 1, 2]}
            for i in range(8)]
    helpful, harmless = write_jsonl(tmp_path / "h.jsonl", rows), write_jsonl(tmp_path / "s.jsonl", rows)
    report = train(base(tiny_model_dir, tmp_path, train_data=f"helpful={helpful},harmless={harmless}",
                        aspects="helpful,harmless", flatten_rankings=True, run_name="flat", max_steps=2))
    assert report["record_changes"]["rankings_flattened"] == 16 and report["steps"] == 2


def test_text_completions_repeating_the_prompt_are_stripped_and_counted(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "What is 2+2?", "chosen": "What is 2+2? It is 4.", "rejected": "What is 2+2? It is 5."},
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."},
        {"chosen": "Q: hello\nA: hi there", "rejected": "Q: hello\nA: go away"}])
    examples, report = read_preferences(str(path))
    assert [m["content"] for c in examples[0].completions for m in c] == ["It is 4.", "It is 5."]
    assert [m["content"] for c in examples[1].completions for m in c] == ["Blue.", "Seven."]
    assert report.notes["completions that repeated the prompt (prompt removed)"] == 2
    assert report.notes["prompts found where chosen and rejected diverge (no 'prompt' field)"] == 1
    assert "2 completions that repeated the prompt" in report.summary()


def test_cross_field_rules_are_checked_when_the_config_is_built(tiny_model_dir, data, tmp_path):
    with pytest.raises(ConfigError, match="not for --loss plackett_luce"):
        TrainConfig(loss="plackett_luce", label_smoothing=0.1)
    with pytest.raises(ConfigError, match="use one of them"):
        TrainConfig(length_debias="odin", aspects="a,b")
    with pytest.raises(ConfigError, match="--lora-save merged"):
        TrainConfig(aspects="a,b", lora_r=4, lora_save="adapter")
    out = subprocess.run([sys.executable, "-m", "rewardkit.cli", "train", "--model", str(tiny_model_dir),
                          "--train-data", str(data[0]), "--output-dir", str(tmp_path), "--run-name", "pl",
                          "--loss", "plackett_luce", "--label-smoothing", "0.1"], capture_output=True, text=True)
    assert out.returncode == 2 and "not for --loss plackett_luce" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "pl").exists()  # no half-made run folder
