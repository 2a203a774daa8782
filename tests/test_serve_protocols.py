"""Each RL framework's protocol as its own client sends it, against a real `rewardkit serve` (uvicorn, ephemeral port).

The clients are replayed from their source (docs/serving.md cites files and commits), since none of OpenRLHF, verl,
vLLM or SGLang is installed here: request bodies, timeouts and what the client does with the answer — OpenRLHF's
``update_samples_with_rewards`` (0.8.10 and 0.9.0: ``torch.cat`` over every server's ``extra_logs``) and its one-sample
executor (>= 0.9.1: ``torch.tensor([value])``) are reproduced line for line on the answers they get.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
import requests
import torch

from rewardkit.batching import Encoder
from rewardkit.checkpoint import save_checkpoint
from rewardkit.config import ServeConfig
from rewardkit.inference.factory import load_scorer
from rewardkit.model import load_reward_model
from rewardkit.serve import running_server

from conftest import saved_reward_model

PROMPTS = ["How was the answer?", "Is the question fine?", "What is the answer?", "Was it good?"]
REPLIES = ["the answer is good", "the answer is bad", "fine", "the question is fine and the answer is great",
           "poor", "awful answer", "good good good", "the answer"]


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return saved_reward_model(tiny_model_dir, tmp_path_factory.mktemp("protocols") / "run", seed=5, max_length=40,
                              mean=0.5, std=4.0)


@pytest.fixture(scope="module")
def scorer(run_dir):
    return load_scorer(str(run_dir))


def render(tok, prompt: str, reply: str) -> tuple[str, str]:
    p = [{"role": "user", "content": prompt}]
    return (tok.apply_chat_template(p + [{"role": "assistant", "content": reply}], tokenize=False),
            tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True))


# ------------------------------------------------------------------------------ per-sample determinism (item 2)


def test_a_samples_reward_does_not_depend_on_what_is_sent_beside_it(scorer):
    tok = scorer.encoder.tokenizer
    short, prompt = render(tok, PROMPTS[0], "fine")
    # 46 tokens: over max_length 40, so its prompt loses 6 tokens (its reply alone fits)
    long_sibling, _ = render(tok, PROMPTS[0], " ".join(["the answer is good"] * 3))
    others = [render(tok, p, r) for p, r in zip(PROMPTS[1:], REPLIES)]
    with running_server(scorer) as url, httpx.Client(base_url=url, timeout=60) as http:
        alone = http.post("/get_reward", json={"query": [short], "prompts": [prompt]}).json()
        beside = http.post("/get_reward", json={"query": [short, long_sibling], "prompts": [prompt, prompt]}).json()
        mixed = http.post("/get_reward", json={"query": [q for q, _ in others] + [short, long_sibling],
                                               "prompts": [p for _, p in others] + [prompt, prompt]}).json()
        classify = http.post("/classify", json={"input": [long_sibling, short], "activation": False}).json()
    r = alone["rewards"][0]
    # before: the long sibling's truncation cut the short sample's prompt too (-0.0304 alone vs -0.0341 beside it)
    assert abs(beside["rewards"][0] - r) <= 1e-5 and abs(mixed["rewards"][-2] - r) <= 1e-5
    assert abs(classify["data"][1]["probs"][0] - r) <= 1e-5
    assert beside["extra_logs"]["truncated_prompt"] == [0, 1]


def test_concurrent_one_sample_requests_get_the_rewards_of_one_big_request(scorer):
    tok = scorer.encoder.tokenizer
    items = [render(tok, p, r) for p in PROMPTS for r in REPLIES]

    async def one_each(url: str) -> list[float]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            answers = await asyncio.gather(*[http.post("/get_reward", json={"query": [q], "prompts": [p]})
                                             for q, p in items])
        return [a.json()["rewards"][0] for a in answers]

    with running_server(scorer) as url:
        single = asyncio.run(one_each(url))
        whole = httpx.post(f"{url}/get_reward", json={"query": [q for q, _ in items], "prompts": [p for _, p in items]},
                           timeout=60).json()["rewards"]
    assert np.max(np.abs(np.array(single) - np.array(whole))) <= 1e-5


# ------------------------------------------------------------------------------ OpenRLHF


def update_samples_with_rewards_090(rewards_info: list[dict], samples_len: list[int]) -> dict:
    """OpenRLHF v0.9.0 openrlhf/trainer/ppo_utils/experience_maker.py update_samples_with_rewards (06ab51e7), the
    merging part: every server's answer concatenated, then split per micro-batch of samples."""
    rewards_list = torch.cat([torch.as_tensor(info["rewards"]) for info in rewards_info], dim=0).split(samples_len)
    merged = {}
    if "extra_logs" in rewards_info[0]:
        merged = {key: torch.cat([torch.as_tensor(logs[key]) for logs in [info["extra_logs"] for info in rewards_info]],
                                 dim=0).split(samples_len)
                  for key in rewards_info[0]["extra_logs"].keys()}
    return {"rewards": rewards_list, **merged}


def update_samples_with_rewards_0810(rewards_info: list[dict], samples_len: list[int]) -> dict:
    """The same function in v0.8.10 / v0.8.11 (f8ec7ca6 / ac3689ec): extra_logs values go to torch.cat as they come
    from JSON, so any value there raises; only an empty extra_logs survives."""
    rewards_list = torch.cat([torch.as_tensor(info["rewards"]) for info in rewards_info], dim=0).split(samples_len)
    merged = {}
    if "extra_logs" in rewards_info[0]:
        merged = {key: torch.cat([logs[key] for logs in [info["extra_logs"] for info in rewards_info]], dim=0).split(
            samples_len) for key in rewards_info[0]["extra_logs"].keys()}
    return {"rewards": rewards_list, **merged}


def legacy_rollout(tok, n_prompts: int = 128, n_samples: int = 8) -> tuple[list[str], list[str], list[str]]:
    """A whole rollout as OpenRLHF 0.8.10-0.9.0 sends it: rollout_batch_size x n_samples_per_prompt queries (1,024 by
    the defaults), the samples of one prompt next to each other, with their prompts and labels."""
    queries, prompts = [], []
    for i in range(n_prompts):
        for j in range(n_samples):
            q, p = render(tok, f"{PROMPTS[i % 4]} ({i})", REPLIES[(i + j) % 8] + (" more" * (j % 3)))
            queries.append(q.removesuffix("\n"))  # decoded up to EOS: no template newline after <|im_end|>
            prompts.append(p)
    return queries, prompts, [""] * len(queries)


def test_legacy_openrlhf_sends_a_1024_query_rollout_in_one_request(scorer):
    tok = scorer.encoder.tokenizer
    queries, prompts, labels = legacy_rollout(tok)
    assert len(queries) == 1024
    with running_server(scorer) as url:
        # remote_rm_utils.request_api_wrapper (v0.8.10): requests.post(json=..., timeout=180), 5 tries on any error
        answer = requests.post(f"{url}/get_reward", json={"query": queries, "prompts": prompts, "labels": labels},
                               headers={"Content-Type": "application/json"}, timeout=180)
        with running_server(scorer, ServeConfig(port=0, extra_logs="none")) as bare:
            plain = requests.post(f"{bare}/get_reward", json={"query": queries, "prompts": prompts, "labels": labels},
                                  timeout=180)
        singles = [httpx.post(f"{url}/get_reward", json={"query": [q], "prompts": [p]}, timeout=60).json()["rewards"][0]
                   for q, p in zip(queries[:16], prompts[:16])]
    assert answer.status_code == 200, answer.text  # before: 413 (max_items=256)
    info = answer.json()
    samples_len = [64] * 16  # micro_rollout_batch_size samples per Experience
    merged = update_samples_with_rewards_090([info], samples_len)
    assert len(merged["rewards"]) == 16 and all(len(r) == 64 for r in merged["rewards"])
    assert set(merged) >= {"truncated_prompt", "truncated_completion", "end_of_turn_added"}
    assert int(torch.cat(merged["end_of_turn_added"]).sum()) == 1024
    with pytest.raises(TypeError):  # what 0.8.10 does with any extra_logs: hence --extra-logs none for 0.8.x
        update_samples_with_rewards_0810([info], samples_len)
    bare_info = plain.json()
    assert bare_info["extra_logs"] == {}
    merged = update_samples_with_rewards_0810([bare_info], samples_len)
    assert torch.allclose(torch.cat(merged["rewards"]), torch.tensor(info["rewards"]), atol=1e-6)
    assert np.allclose(info["rewards"][:16], singles, atol=1e-5)  # one sample per request: the same rewards


def test_openrlhf_one_sample_executor_takes_the_answer(scorer):
    """OpenRLHF >= 0.9.1 (openrlhf/utils/agent.py SingleTurnAgentExecutor, 3c3be623): one query per POST with its
    prompt and label, 180 s timeout, 5 tries; reward = answer["rewards"], each extra_logs value -> torch.tensor([v])."""
    tok = scorer.encoder.tokenizer
    q, p = render(tok, PROMPTS[1], REPLIES[2])

    async def execute(url: str) -> dict:
        async with httpx.AsyncClient(timeout=180) as http:  # the real client uses aiohttp, not installed here
            response = await http.post(f"{url}/get_reward", json={"query": [q], "prompts": [p], "labels": ["x"]})
            response.raise_for_status()
            return response.json()

    with running_server(scorer) as url:
        info = asyncio.run(execute(url))
    reward_val = info.get("rewards")
    score_val = info.get("scores") if info.get("scores") is not None else reward_val
    experience_info = {"reward": torch.tensor([reward_val]), "score": torch.tensor([score_val])}
    for key, value in (info.get("extra_logs") or {}).items():
        if isinstance(value, torch.Tensor):
            value = value.flatten()[0].item()
        experience_info[key] = torch.tensor([value])
    assert experience_info["reward"].numel() == 1 and experience_info["truncated_prompt"].numel() == 1


def test_pad_and_eos_are_stripped_when_asked(scorer):
    tok = scorer.encoder.tokenizer
    q, p = render(tok, PROMPTS[0], REPLIES[0])
    padded = tok.pad_token * 3 + q.removesuffix("\n") + tok.eos_token * 4  # left padding and repeated EOS as decoded
    with running_server(scorer, ServeConfig(port=0, strip_pad_eos=True)) as url:
        stripped = httpx.post(f"{url}/get_reward", json={"query": [padded], "prompts": [tok.pad_token * 3 + p]},
                              timeout=60).json()
        clean = httpx.post(f"{url}/get_reward", json={"query": [q], "prompts": [p]}, timeout=60).json()
    with running_server(scorer) as url:
        as_sent = httpx.post(f"{url}/get_reward", json={"query": [padded]}, timeout=60).json()
    assert stripped["rewards"][0] == pytest.approx(clean["rewards"][0], abs=1e-6)
    assert abs(as_sent["rewards"][0] - clean["rewards"][0]) > 1e-4  # without the flag the pads are scored as tokens


def test_judges_and_genrms_are_served_at_get_reward(tiny_model_dir):
    from rewardkit.config import JudgeOptions

    judge = load_scorer(str(tiny_model_dir), JudgeOptions(judge="verifier"))
    tok = judge.judge.tokenizer
    items = [(PROMPTS[0], REPLIES[0]), (PROMPTS[1], REPLIES[1])]
    rendered = [render(tok, p, r) for p, r in items]
    with running_server(judge) as url, httpx.Client(base_url=url, timeout=120) as http:
        got = http.post("/get_reward", json={"query": [q.removesuffix("\n") for q, _ in rendered],
                                             "prompts": [p for _, p in rendered]})
        direct = [http.post("/v1/score", json={"prompt": p, "completions": [r]}).json()["rewards"][0] for p, r in items]
        no_prompts = http.post("/get_reward", json={"query": [q for q, _ in rendered]})
    assert got.status_code == 200, got.text  # before: 400 for any judge
    assert np.allclose(got.json()["rewards"], direct, atol=1e-6)
    assert got.json()["extra_logs"]["undecided"] == [0, 0]
    assert no_prompts.status_code == 400 and "prompts" in no_prompts.json()["detail"]


# ------------------------------------------------------------------------------ vLLM, SGLang, verl


def test_vllm_classify_pooling_models_and_rerank(scorer, run_dir):
    tok = scorer.encoder.tokenizer
    q, _ = render(tok, PROMPTS[2], REPLIES[3])
    with running_server(scorer) as url, httpx.Client(base_url=url, timeout=60) as http:
        reward = http.post("/v1/score", json={"prompt": PROMPTS[2], "completions": [REPLIES[3]]}).json()["rewards"][0]
        # verl's reward loop (verl/experimental/reward_loop/reward_loop.py, b178a3cd) for a vLLM reward model:
        verl = http.post("/classify", json={"model": str(run_dir), "input": q, "activation": False}).json()
        default = http.post("/v1/classify", json={"model": "whatever", "input": [q, q]}).json()
        chat = http.post("/classify", json={"messages": [{"role": "user", "content": PROMPTS[2]},
                                                         {"role": "assistant", "content": REPLIES[3]}],
                                            "use_activation": False}).json()
        pooled = http.post("/pooling", json={"input": [q]}).json()
        models = http.get("/v1/models").json()
        ranked = http.post("/rerank", json={"query": PROMPTS[2], "documents": REPLIES[:4], "top_n": 2}).json()
        token_ids = http.post("/classify", json={"input": [1, 2, 3]})
        sglang = http.post("/classify", json={"text": [q]}).json()
    assert verl["data"][-1]["probs"][-1] == pytest.approx(reward, abs=1e-5)
    assert verl["object"] == "list" and verl["usage"]["prompt_tokens"] > 0 and verl["data"][0]["num_classes"] == 1
    assert default["data"][1]["probs"][0] == pytest.approx(1 / (1 + np.exp(-reward)), abs=1e-5)  # σ(r) by default
    assert chat["data"][0]["probs"][0] == pytest.approx(reward, abs=1e-5)
    assert pooled["data"][0]["object"] == "pooling" and pooled["data"][0]["data"] == [pytest.approx(reward, abs=1e-5)]
    assert models["object"] == "list" and models["data"][0]["id"] == str(run_dir)
    assert models["data"][0]["max_model_len"] == 40
    scores = [r["relevance_score"] for r in ranked["results"]]
    assert len(scores) == 2 and scores[0] >= scores[1] and ranked["results"][0]["document"]["text"] in REPLIES
    assert token_ids.status_code == 422 and "token ids" in token_ids.text
    assert sglang[0]["embedding"][0] == pytest.approx(reward, abs=1e-5)


def test_other_servers_score_bodies_get_a_4xx_that_names_the_route(scorer):
    with running_server(scorer) as url, httpx.Client(base_url=url, timeout=60) as http:
        vllm = http.post("/v1/score", json={"model": "m", "text_1": "a question", "text_2": ["an answer"]})
        sglang = http.post("/v1/score", json={"query": "q", "items": ["a"], "label_token_ids": [1, 2]})
    for answer, who in ((vllm, "vLLM"), (sglang, "SGLang")):
        assert answer.status_code == 422
        text = answer.text
        assert who in text and "/classify" in text and "completions" in text  # before: a bare 'extra fields' 422


def test_tool_calls_content_parts_and_reasoning_are_rendered_by_the_template(tiny_model_dir, tmp_path):
    """TRL hands chat completions with tool calls (and reasoning) to reward functions; they are scored as the
    template renders them, not refused."""
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m.get('reasoning_content') %}<think>{{ m['reasoning_content'] }}</think>{% endif %}"
        "{{ m['content'] }}"
        "{% for t in m.get('tool_calls') or [] %}<tool_call>{{ t['function']['name'] }}"
        "{{ t['function']['arguments'] }}</tool_call>{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    torch.manual_seed(2)
    model, tok = load_reward_model(str(tiny_model_dir))
    tok.chat_template = template
    folder = tmp_path / "tools"
    save_checkpoint(folder, model, tok, Encoder(tok, max_length=128))
    scorer = load_scorer(str(folder))
    prompt = [{"role": "user", "content": "What is the answer?"}]
    call = {"role": "assistant", "content": None, "reasoning_content": "the question is fine",
            "tool_calls": [{"type": "function", "function": {"name": "answer", "arguments": '{"x": 1}'}}]}
    tool = {"role": "tool", "name": "answer", "content": "good"}
    final = {"role": "assistant", "content": [{"type": "text", "text": "the answer"}, {"type": "text", "text": "is good"}]}
    as_text = tok.apply_chat_template(prompt + [{**call, "content": ""}, {"role": "tool", "content": "good"},
                                                {"role": "assistant", "content": "the answer\nis good"}], tokenize=False)
    with running_server(scorer) as url, httpx.Client(base_url=url, timeout=60) as http:
        got = http.post("/v1/score", json={"prompt": prompt, "completions": [[call, tool, final],
                                                                             [{**call, "tool_calls": None}, tool, final]]})
        texts = http.post("/v1/score", json={"texts": [as_text]}).json()
        image = http.post("/v1/score", json={"prompt": prompt, "completions": [[{"role": "assistant", "content": [
            {"type": "image_url", "image_url": {"url": "x"}}]}]]})
    assert got.status_code == 200, got.text  # before: 422 for tool_calls, content lists and reasoning fields
    with_call, without_call = got.json()["rewards"]
    assert with_call == pytest.approx(texts["rewards"][0], abs=1e-5)  # exactly the template's rendering
    assert abs(with_call - without_call) > 1e-6  # the tool call is part of what was scored
    assert image.status_code == 422 and "image_url" in image.text


def test_the_default_limits_take_a_1024_query_rollout_of_1000_token_samples(run_dir):
    """The numbers ServeConfig's limits were sized by: OpenRLHF's default rollout (1,024 queries, 8 per prompt) of
    samples of about 1,000 tokens, sent with their prompts and labels, is within every limit (tokenized here, not
    scored: on a 2-core CPU scoring a million tokens takes longer than the test should)."""
    import json
    import random

    from rewardkit.serve.app import prepare_queries

    scorer = load_scorer(str(run_dir), max_length=2048)
    tok = scorer.encoder.tokenizer
    rng, words = random.Random(0), "the answer is good bad fine question about what how was it".split()
    queries, prompts = [], []
    for i in range(128):
        m = [{"role": "user", "content": f"({i}) " + " ".join(rng.choices(words, k=60))}]
        prompt = tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
        for _ in range(8):
            reply = " ".join(rng.choices(words, k=320))
            queries.append(tok.apply_chat_template(m + [{"role": "assistant", "content": reply}], tokenize=False))
            prompts.append(prompt)
    lengths = [len(tok(q)["input_ids"]) for q in queries[:16]]
    assert 900 <= np.mean(lengths) <= 1200  # about 1,000-token samples
    cfg = ServeConfig()
    body = json.dumps({"query": queries, "prompts": prompts, "labels": [""] * 1024}).encode()
    prepared, _ = prepare_queries(scorer, queries, prompts)
    assert len(queries) <= cfg.max_items and len(body) <= cfg.max_request_bytes
    assert prepared.tokens <= cfg.max_request_tokens and sum(t.prompt_truncated for t in prepared.truncation) == 0
    assert cfg.request_timeout_s < 180  # OpenRLHF's client timeout: the server answers 504 before it gives up
