"""The HTTP reward server over real HTTP: a real uvicorn on an ephemeral port, real httpx clients.

Served rewards are compared with `rewardkit score`, `rewardkit eval` and plain
AutoModelForSequenceClassification; every error status is provoked; concurrency is real (threads of
the server, 32 asyncio clients). Where a test must hold the model busy (queue full, timeout, a request
that fails inside the model), it wraps the real scorer in a gate that waits or raises before delegating
to it: the server, batcher and HTTP layer under test are the real ones.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from rewardkit.cli import main as cli
from rewardkit.config import ServeConfig
from rewardkit.inference import Group, score
from rewardkit.inference.factory import load_scorer
from rewardkit.serve import running_server

from conftest import saved_reward_model, write_jsonl

LONG = " ".join(["the question is about the answer"] * 30)  # over the checkpoint's max_length of 64 tokens


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A rewardkit checkpoint (max length 64) with recorded reward statistics."""
    return saved_reward_model(tiny_model_dir, tmp_path_factory.mktemp("serve") / "run", seed=3, max_length=64,
                              mean=0.25, std=2.0)


@pytest.fixture(scope="module")
def scorer(run_dir):
    return load_scorer(str(run_dir))


class Gate:
    """Delegates to a real scorer; ``run`` first waits for ``open`` and raises for inputs containing BOOM."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.open = threading.Event()
        self.calls: list[int] = []  # requests per run call
        self.failed_calls: list[int] = []  # requests in each call that raised

    def prepare(self, groups):
        return self.inner.prepare(groups)

    def describe(self):
        return self.inner.describe()

    def run(self, prepared):
        self.open.wait(30)
        self.calls.append(len(prepared))
        if any("BOOM" in json.dumps(g.completions) for p in prepared for g in p.groups):
            self.failed_calls.append(len(prepared))
            raise RuntimeError("the model failed on this input")
        return self.inner.run(prepared)


def plain_hf_rewards(run_dir: Path, prompt: str, completions: list[str]) -> list[float]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run_dir)
    hf = AutoModelForSequenceClassification.from_pretrained(run_dir).eval()
    out = []
    for c in completions:
        text = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": c}],
                                       tokenize=False)
        with torch.no_grad():
            out.append(float(hf(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0]))
    return out


def rendered(tok, prompt: str, completion: str) -> tuple[str, str]:
    p = [{"role": "user", "content": prompt}]
    return (tok.apply_chat_template(p + [{"role": "assistant", "content": completion}], tokenize=False),
            tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True))


# ------------------------------------------------------------------------------------------ endpoints


def test_endpoints_and_equality_with_score_eval_and_transformers(run_dir, scorer, tmp_path):
    prompt, completions = "How was the answer?", ["the answer is good", "the answer is bad", "fine"]
    with running_server(scorer) as url, httpx.Client(base_url=url, timeout=60) as http:
        health = http.get("/health").json()
        assert health["status"] == "ok" and health["model"] == str(run_dir)
        info = http.get("/v1/model").json()
        assert info["template"] == "chat" and info["pooling"] == "last_real_token" and info["max_length"] == 64
        assert info["reward_mean"] == 0.25 and info["reward_std"] == 2.0 and "(r - 0.25) / 2" in info["normalization"]
        assert info["end_of_turn"] == "<|im_end|>\n" and info["limits"]["max_items"] == 4096
        # the precision the model was loaded in, and why (conftest pins REWARDKIT_CPU_BF16=0: fp32 on any CPU)
        assert info["precision"]["compute"] == "fp32" and "REWARDKIT_CPU_BF16" in info["precision"]["reason"]
        assert info["route"] == "auto"
        assert http.get("/docs").status_code == 200
        assert {"/get_reward", "/v1/score", "/health", "/v1/model"} <= set(http.get("/openapi.json").json()["paths"])

        body = http.post("/v1/score", json={"prompt": prompt, "completions": completions}).json()
        as_messages = http.post("/v1/score", json={"prompt": [{"role": "user", "content": prompt}],
                                                   "completions": [[{"role": "assistant", "content": c}]
                                                                   for c in completions]}).json()
        pair = http.post("/v1/score", json={"prompt": prompt, "completions": completions[:2]}).json()
    served = np.array(body["rewards"])
    assert np.allclose(served, as_messages["rewards"], atol=1e-6)
    assert np.allclose(body["rewards_normalized"], (served - 0.25) / 2.0, atol=1e-9)
    for i in range(3):
        for j in range(3):
            assert body["pairwise"][i][j] == pytest.approx(1 / (1 + math.exp(-(served[i] - served[j]))), abs=1e-12)
    assert pair["p_first_beats_second"] == pytest.approx(1 / (1 + math.exp(-(pair["rewards"][0] - pair["rewards"][1]))))
    assert body["truncated"] == {"prompt": 0, "completion": 0}

    # plain transformers on the same folder
    assert np.allclose(served, plain_hf_rewards(run_dir, prompt, completions), atol=1e-5)
    # `rewardkit score` (one completion per row, and the pair row)
    rows = [{"prompt": prompt, "completion": c} for c in completions] + [{"prompt": prompt, "a": completions[0],
                                                                            "b": completions[1]}]
    inp, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    assert cli(["score", "--model", str(run_dir), "--input", str(inp), "--output", str(out)]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert np.allclose([r["reward"] for r in scored[:3]], served, atol=1e-5)
    assert scored[3]["p_a_beats_b"] == pytest.approx(pair["p_first_beats_second"], abs=1e-6)
    # `rewardkit eval` on the pair
    data = write_jsonl(tmp_path / "pair.jsonl", [{"prompt": prompt, "chosen": completions[0], "rejected": completions[1]}])
    assert cli(["eval", "--model", str(run_dir), "--data", str(data), "--output", str(tmp_path / "e.json"),
                "--bootstrap-samples", "0"]) == 0
    eval_rewards = json.loads((tmp_path / "e.rewards.jsonl").read_text())["rewards"]
    assert np.allclose(eval_rewards, pair["rewards"], atol=1e-5)


def test_get_reward_is_openrlhf_compatible_and_equals_messages(scorer):
    tok = scorer.encoder.tokenizer
    items = [("How was the answer?", "the answer is good"), ("How was the answer?", "the answer is bad"),
             ("Is the question fine?", "the question is fine")]
    queries, prompts = zip(*(rendered(tok, p, c) for p, c in items))
    with running_server(scorer) as url, httpx.Client(base_url=url, timeout=60) as http:
        got = http.post("/get_reward", json={"query": list(queries), "prompts": list(prompts), "labels": ["", "", ""]})
        assert got.status_code == 200
        got = got.json()
        no_prompts = http.post("/get_reward", json={"query": list(queries)}).json()
        # what OpenRLHF sends for a reply that ended at EOS: the text without the template's trailing newline
        cut = http.post("/get_reward", json={"query": [q.removesuffix("\n") for q in queries]}).json()
        msgs = [http.post("/v1/score", json={"prompt": p, "completions": [c]}).json()["rewards"][0] for p, c in items]
        bad = http.post("/get_reward", json={"query": list(queries), "prompts": list(prompts[:2])})
        empty = http.post("/get_reward", json={"query": []}).json()
    assert set(got) >= {"rewards", "scores", "extra_logs"} and got["rewards"] == got["scores"]
    assert np.allclose(got["rewards"], msgs, atol=1e-5)
    assert np.allclose(no_prompts["rewards"], msgs, atol=1e-5)
    assert np.allclose(cut["rewards"], msgs, atol=1e-5) and cut["extra_logs"]["end_of_turn_added"] == [1, 1, 1]
    assert got["extra_logs"]["end_of_turn_added"] == [0, 0, 0]
    assert bad.status_code == 422 and "prompts" in bad.json()["detail"]
    assert empty == {"rewards": [], "scores": [], "extra_logs": {}}


def test_over_length_input_is_truncated_like_eval_and_reported(run_dir, scorer, tmp_path):
    prompt, completions = LONG, ["the answer is good", "the answer is bad"]
    with running_server(scorer) as url, httpx.Client(base_url=url, timeout=60) as http:
        body = http.post("/v1/score", json={"prompt": prompt, "completions": completions}).json()
        text, head = rendered(scorer.encoder.tokenizer, prompt, completions[0])
        as_text = http.post("/v1/score", json={"texts": [text], "prompt_text": head}).json()
    assert body["truncated"] == {"prompt": 2, "completion": 0} and len(body["rewards"]) == 2
    assert as_text["truncated"] == {"prompt": 1, "completion": 0}
    assert as_text["rewards"][0] == pytest.approx(body["rewards"][0], abs=1e-5)
    data = write_jsonl(tmp_path / "long.jsonl", [{"prompt": prompt, "chosen": completions[0], "rejected": completions[1]}])
    assert cli(["eval", "--model", str(run_dir), "--data", str(data), "--output", str(tmp_path / "e.json"),
                "--bootstrap-samples", "0"]) == 0
    assert np.allclose(json.loads((tmp_path / "e.rewards.jsonl").read_text())["rewards"], body["rewards"], atol=1e-5)


# ------------------------------------------------------------------------------------------ errors


def test_limits_and_malformed_requests(scorer):
    cfg = ServeConfig(port=0, max_items=4, max_request_bytes=4000, max_request_tokens=120)
    with running_server(scorer, cfg) as url, httpx.Client(base_url=url, timeout=60) as http:
        r = http.post("/v1/score", json={"completions": ["x"] * 5})
        assert r.status_code == 413 and "max_items=4" in r.json()["detail"]
        r = http.post("/v1/score", json={"completions": ["word " * 1000]})
        assert r.status_code == 413 and "max_request_bytes=4000" in r.json()["detail"]
        r = http.post("/v1/score", content=b'{"completions": ["' + b"y" * 5000 + b'"]}',
                      headers={"content-type": "application/json", "transfer-encoding": "chunked"})
        assert r.status_code == 413 and "max_request_bytes" in r.json()["detail"]
        r = http.post("/v1/score", json={"prompt": "question " * 50, "completions": [f"{w} " * 30 for w in ("good", "bad", "fine", "poor")]})
        assert r.status_code == 413 and "max_request_tokens=120" in r.json()["detail"]
        r = http.post("/v1/score", json={"prompt": 3, "completions": ["a"]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "prompt"]
        r = http.post("/v1/score", json={"prompt": "q", "completions": [[{"role": "robot", "content": "a"}]]})
        assert r.status_code == 422 and "role" in json.dumps(r.json()["detail"])
        r = http.post("/v1/score", json={"prompt": "q", "completion": "a"})  # misspelt field
        assert r.status_code == 422 and "completion" in json.dumps(r.json()["detail"])
        r = http.post("/v1/score", json={"prompt": "q"})
        assert r.status_code == 422 and "completions" in r.json()["detail"]
        r = http.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422
        r = http.post("/get_reward", json={"prompts": ["x"]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "query"]
        assert http.post("/v1/score", json={"prompt": "q", "completions": ["a"]}).status_code == 200  # still serving


def test_queue_full_timeout_and_failing_request_do_not_stop_the_worker(scorer):
    gate = Gate(scorer)
    cfg = ServeConfig(port=0, max_queue=1, request_timeout_s=1.0, max_wait_ms=0)
    with running_server(gate, cfg) as url:

        async def scenario():
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                body = {"prompt": "q", "completions": ["the answer is good"]}
                first = asyncio.create_task(http.post("/v1/score", json=body))  # taken by the worker, held at the gate
                await asyncio.sleep(0.3)
                second = asyncio.create_task(http.post("/v1/score", json=body))  # waits in the queue (max_queue=1)
                await asyncio.sleep(0.3)
                third = await http.post("/v1/score", json=body)  # queue full
                done = await asyncio.gather(first, second)  # both time out (504) while the gate is shut
                gate.open.set()
                boom = await http.post("/v1/score", json={"prompt": "q", "completions": ["BOOM"]})
                after = await http.post("/v1/score", json=body)
                return third, done, boom, after

        third, (first, second), boom, after = asyncio.run(scenario())
        assert third.status_code == 503 and third.headers["retry-after"] == "1" and "max_queue=1" in third.json()["detail"]
        assert first.status_code == 504 and "request_timeout_s=1.0" in first.json()["detail"]
        assert second.status_code == 504
        assert boom.status_code == 500 and "the model failed on this input" in boom.json()["detail"]
        assert after.status_code == 200 and len(after.json()["rewards"]) == 1
        health = httpx.get(f"{url}/health").json()
        assert health["served"]["errors"] == 1


def test_a_failing_request_does_not_fail_the_requests_batched_with_it(scorer):
    gate = Gate(scorer)
    with running_server(gate, ServeConfig(port=0, max_wait_ms=0)) as url:

        async def scenario():
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                tasks = []
                for c in ["first", "the answer is good", "BOOM", "the answer is bad"]:
                    tasks.append(asyncio.create_task(http.post("/v1/score", json={"prompt": "q", "completions": [c]})))
                    await asyncio.sleep(0.3 if c == "first" else 0.05)  # "first" holds the worker at the gate
                await asyncio.sleep(0.3)  # the other three wait in the queue, to be taken as one batch
                gate.open.set()
                return await asyncio.gather(*tasks)

        codes = [r.status_code for r in asyncio.run(scenario())]
    assert codes == [200, 200, 500, 200]
    # BOOM first failed inside a batch with other requests, which were then answered from their retries alone
    assert gate.failed_calls == [3, 1] and gate.calls == [1, 3, 1, 1, 1]


# ------------------------------------------------------------------------------------- concurrency


def _requests(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    words = ["good", "bad", "fine", "awful", "great", "poor", "the answer", "is", "question"]
    out = []
    for i in range(n):
        k = int(rng.integers(1, 9))
        out.append({"prompt": f"Question {i % 5}: how was {' '.join(rng.choice(words, 3))}?",
                    "completions": [" ".join(rng.choice(words, int(rng.integers(1, 12)))) for _ in range(k)]})
    return out


@pytest.mark.parametrize("dynamic", [True, False])
def test_32_concurrent_clients_get_their_own_offline_rewards(scorer, dynamic):
    requests = _requests(96)
    gate = Gate(scorer)
    cfg = ServeConfig(port=0, dynamic_batching=dynamic, max_wait_ms=20)
    with running_server(gate, cfg) as url:

        async def client(http, mine):
            return [(i, await http.post("/v1/score", json=requests[i])) for i in mine]

        async def scenario():
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
                tasks = [asyncio.create_task(client(http, list(range(c, len(requests), 32)))) for c in range(32)]
                await asyncio.sleep(0.5)  # let the first wave queue up behind the gate
                gate.open.set()
                return [x for t in await asyncio.gather(*tasks) for x in t]

        responses = asyncio.run(scenario())
        served = httpx.get(f"{url}/health").json()["served"]
    assert all(r.status_code == 200 for _, r in responses)
    offline = score(scorer, [Group(prompt=[{"role": "user", "content": r["prompt"]}],
                                   completions=[[{"role": "assistant", "content": c}] for c in r["completions"]])
                             for r in requests]).rewards
    for i, r in responses:
        assert np.allclose(r.json()["rewards"], offline[i], atol=1e-5), i
    assert served["requests"] == 96 and served["errors"] == 0
    if dynamic:
        assert served["max_requests_per_call"] > 8 and max(gate.calls) > 8  # requests really shared forward passes
    else:
        assert served["max_requests_per_call"] == 1 and max(gate.calls) == 1


# ------------------------------------------------------------------------------------------ judges


def test_a_judge_is_served_the_same_way(tiny_model_dir):
    from rewardkit.judges.judge import JudgeScorer, load_judge

    judge = JudgeScorer(load_judge(str(tiny_model_dir), kind="verifier", max_length=256))
    prompt, completions = "How was the answer?", ["the answer is good", "the answer is bad"]
    offline = score(judge, [Group(prompt=[{"role": "user", "content": prompt}],
                                  completions=[[{"role": "assistant", "content": c}] for c in completions])])
    with running_server(judge) as url, httpx.Client(base_url=url, timeout=60) as http:
        body = http.post("/v1/score", json={"prompt": prompt, "completions": completions}).json()
        info = http.get("/v1/model").json()
        text = http.post("/v1/score", json={"texts": ["<|im_start|>user\nq<|im_end|>\n"]})
    assert np.allclose(body["rewards"], offline.rewards[0], atol=1e-5)
    assert body["judge"][0]["completions"][0]["logp"].keys() == {"Yes", "No"}
    assert info["type"] == "judge" and info["kind"] == "verifier" and body["rewards_normalized"] is None
    assert text.status_code == 400 and "judge needs the prompt and completions" in text.json()["detail"]


# --------------------------------------------------------------------------------------------- CLI


def test_cli_serve_starts_answers_and_shuts_down_cleanly(run_dir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rewardkit.cli", "serve", str(run_dir), "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = None
        deadline = time.time() + 120
        for line in proc.stderr:
            if " on http://" in line:
                url = line.split(" on ")[1].split()[0]
                break
            assert time.time() < deadline
        assert url, "the server did not print its address"
        assert httpx.get(f"{url}/health", timeout=30).json()["status"] == "ok"
        r = httpx.post(f"{url}/v1/score", json={"prompt": "q", "completions": ["a", "b"]}, timeout=30)
        assert r.status_code == 200 and len(r.json()["rewards"]) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_serve_user_errors_are_one_line(tmp_path, capsys):
    assert cli(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "rewardkit serve: error:" in err and "not found" in err
    assert cli(["serve"]) == 2
    assert "serve needs a model" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without a GPU")
def test_asking_for_a_gpu_that_is_not_there_is_a_clear_error(run_dir, tmp_path, capsys):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "q", "completion": "a"}])
    assert cli(["score", "--model", str(run_dir), "--input", str(inp), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert cli(["score", "--model", str(run_dir), "--input", str(inp), "--device", "cpu",
                "--output", str(tmp_path / "o.jsonl")]) == 0

