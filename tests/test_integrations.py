"""The shipped reward functions, each called the way its framework calls it, against a real server: TRL's GRPOTrainer
itself (a slow test: a tiny random policy trained a few steps with rewards from a live `rewardkit serve` process),
verl's custom_reward_function loading (a file path, a function name, reward_kwargs bound with functools.partial, as
verl/trainer/ppo/reward.py does) and OpenRLHF's `--remote_rm_url file.py` loading (importlib from the path, as
openrlhf/utils/agent.py does), with OpenRLHF's merging of the answer reproduced."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from rewardkit.batching import Encoder
from rewardkit.checkpoint import save_checkpoint
from rewardkit.inference.factory import load_scorer
from rewardkit.model import load_reward_model
from rewardkit.serve import running_server

from conftest import chat_rollout

PROMPTS = ["How was the answer?", "Is the question fine?"]
REPLIES = ["the answer is good", "the answer is bad"]


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory) -> Path:
    torch.manual_seed(6)
    model, tok = load_reward_model(str(tiny_model_dir))
    folder = tmp_path_factory.mktemp("integrations") / "run"
    save_checkpoint(folder, model, tok, Encoder(tok, max_length=128))
    return folder


@pytest.fixture(scope="module")
def served(run_dir):
    scorer = load_scorer(str(run_dir))
    with running_server(scorer) as url:
        yield url, scorer


def direct(url: str, prompt, completion) -> float:
    return httpx.post(f"{url}/v1/score", json={"prompt": prompt, "completions": [completion]},
                      timeout=60).json()["rewards"][0]


def load_file(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trl_reward_function_standard_and_conversational(served):
    from rewardkit.integrations.trl import AsyncRewardFunction, RewardFunction

    url, _ = served
    fn = RewardFunction(url)
    standard = fn(prompts=PROMPTS, completions=REPLIES, completion_ids=[[1], [2]], trainer_state=None)
    chat_prompts = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}] for p in PROMPTS]
    chat_completions = [[{"role": "assistant", "content": r}] for r in REPLIES]
    conversational = fn(prompts=chat_prompts, completions=chat_completions)
    tools = fn(prompts=chat_prompts[:1], completions=[[
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "id": "c1",
                                                              "function": {"name": "look", "arguments": "{}"}}]},
        {"role": "tool", "content": "good", "name": "look", "tool_call_id": "c1"},
        {"role": "assistant", "content": [{"type": "text", "text": "the answer is good"}]}]])
    async_fn = AsyncRewardFunction(url)
    from trl.trainer.utils import is_async_callable

    assert is_async_callable(async_fn) and not is_async_callable(fn)  # how TRL decides to await it
    awaited = asyncio.run(async_fn(prompts=chat_prompts, completions=chat_completions))
    assert fn.__name__ == "rewardkit"
    assert np.allclose(standard, [direct(url, p, r) for p, r in zip(PROMPTS, REPLIES)], atol=1e-6)
    assert np.allclose(conversational, [direct(url, p, c) for p, c in zip(chat_prompts, chat_completions)], atol=1e-6)
    assert np.allclose(awaited, conversational, atol=1e-6)
    assert len(tools) == 1 and isinstance(tools[0], float)


def test_verl_compute_score_loaded_as_verl_loads_it(served):
    import rewardkit.integrations.verl as module

    url, _ = served
    compute_score = partial(load_file(module.__file__, "custom_module").compute_score, url=url)
    with_prompt = compute_score(data_source="gsm8k", solution_str=REPLIES[0], ground_truth="4",
                                extra_info={"question": PROMPTS[0], "index": 3})
    without = compute_score(data_source="gsm8k", solution_str=REPLIES[0], ground_truth="4", extra_info={})
    assert with_prompt == pytest.approx(direct(url, PROMPTS[0], REPLIES[0]), abs=1e-6)
    assert without == pytest.approx(direct(url, None, REPLIES[0]), abs=1e-6)


def test_openrlhf_reward_func_file_loaded_as_openrlhf_loads_it(served, monkeypatch):
    import rewardkit.integrations.openrlhf as module

    url, scorer = served
    monkeypatch.setenv("REWARDKIT_URL", url)
    tok = scorer.encoder.tokenizer
    queries, prompts = chat_rollout(tok, PROMPTS, REPLIES)
    reward_func = load_file(module.__file__, "reward_func").reward_func
    batch = reward_func(queries, prompts, [""] * 4)  # 0.8.x-0.9.0: a micro-batch per call
    # update_samples_with_rewards of v0.8.10: torch.cat over the extra_logs as returned (tensors here)
    merged = {k: torch.cat([batch["extra_logs"][k]], dim=0).split([2, 2]) for k in batch["extra_logs"]}
    assert len(merged["rewardkit_reward"]) == 2
    one = reward_func(queries[:1], prompts[:1], [""])  # >= 0.9.1: one query per call, then torch.tensor([value])
    value = one["extra_logs"]["rewardkit_reward"].flatten()[0].item()
    assert torch.tensor([one["rewards"]]).numel() == 1 and torch.tensor([value]).numel() == 1
    expected = httpx.post(f"{url}/get_reward", json={"query": queries}, timeout=60).json()["rewards"]
    assert np.allclose(batch["rewards"].numpy(), expected, atol=1e-6)


@pytest.mark.slow
def test_trl_grpo_trainer_trains_with_rewards_from_a_live_server(run_dir, tiny_model_dir, tmp_path):
    """TRL's real GRPOTrainer on a tiny random policy, its only reward the shipped RewardFunction talking to a
    `rewardkit serve` process started from the command line."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rewardkit.integrations.trl import RewardFunction

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rewardkit.cli", "serve", str(run_dir), "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        url, deadline = None, time.time() + 120
        for line in proc.stderr:
            if " on http://" in line:
                url = line.split(" on ")[1].split()[0]
                break
            assert time.time() < deadline
        assert url
        reward = RewardFunction(url)
        calls: list[int] = []

        def counted(prompts, completions, **kwargs):
            calls.append(len(completions))
            return reward(prompts, completions, **kwargs)

        counted.__name__ = "rewardkit"
        tok = AutoTokenizer.from_pretrained(tiny_model_dir)
        policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS * 4])
        args = GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2,
                          max_completion_length=8, max_steps=3, learning_rate=1e-4, logging_steps=1,
                          report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0)
        trainer = GRPOTrainer(model=policy, reward_funcs=[counted], args=args, train_dataset=data,
                              processing_class=tok)
        before = [p.detach().clone() for p in policy.parameters()]
        trainer.train()
        logged = [h for h in trainer.state.log_history if "reward" in h]
        assert len(calls) >= 3 and all(n == 4 for n in calls)  # every step's completions were scored by the server
        assert len(logged) >= 3 and all(np.isfinite(h["reward"]) for h in logged)
        assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))  # the policy moved
        served = httpx.get(f"{url}/health", timeout=30).json()["served"]
        assert served["completions"] >= sum(calls)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
