"""Load on `rewardkit serve` as OpenRLHF's clients send it: 64 concurrent clients, one sample per request (OpenRLHF
>= 0.9.1) and whole rollouts per request (0.8.10-0.9.0), plus one 1,024-query legacy rollout sent alone (its samples
are short by default so that it is answered within OpenRLHF's 180 s on a 2-core CPU; `--big-reply-words 520` makes
them about 1,000 tokens, which needs a GPU to finish in that time).

    python benchmarks/serve_load.py --write        # results into BENCHMARKS.md (section "Serving under RL load")

The server is a real `rewardkit serve` process started from the command line; the time from starting it to its
first healthy `GET /health` is the start-up time. Clients are asyncio tasks on one httpx connection pool each, as
OpenRLHF's executors are (aiohttp there, not installed here), with OpenRLHF's 180 s timeout. Per style: errors (any
status but 200, or a reply of the wrong length), queries/s, tokens/s (the server's own count of tokens scored),
p50 / p99 request latency, the server's peak RSS (VmHWM) after that style.

Model: by default a tiny random Llama (2 layers, hidden 64, the test suite's BPE tokenizer with a ChatML template) —
this measures the server (HTTP, JSON, tokenizing, queueing, batching), not a model; `--model smollm2-135m` serves the
real SmolLM2-135M with a seeded head (slow on a CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from common import http_load, peak_rss_mb, write_section  # noqa: E402

WORDS = ("the answer is good bad fine great poor awful question about what how was it and so on then because we "
         "think this that").split()


def make_model(a: argparse.Namespace, folder: Path) -> Path:
    from rewardkit.batching import Encoder
    from rewardkit.checkpoint import save_checkpoint
    from rewardkit.model import load_reward_model

    if (folder / "rewardkit.json").exists():
        return folder
    import torch

    torch.manual_seed(0)
    if a.model == "tiny":
        from conftest import build_tiny_model

        source = str(build_tiny_model(folder.parent / "tiny-llama"))
    else:
        source = a.model
    model, tok = load_reward_model(source)
    save_checkpoint(folder, model, tok, Encoder(tok, max_length=a.max_length))
    return folder


def samples(tok, n_prompts: int, n_per_prompt: int, prompt_words: int, reply_words: int, seed: int
            ) -> list[tuple[str, str]]:
    """(query, prompt) as OpenRLHF decodes them: the chat-rendered prompt and reply, the reply ending at EOS."""
    rng = random.Random(seed)
    out = []
    for i in range(n_prompts):
        m = [{"role": "user", "content": f"({i}) " + " ".join(rng.choices(WORDS, k=prompt_words))}]
        prompt = tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
        for _ in range(n_per_prompt):
            reply = " ".join(rng.choices(WORDS, k=rng.randint(reply_words // 2, reply_words)))
            query = tok.apply_chat_template(m + [{"role": "assistant", "content": reply}], tokenize=False)
            out.append((query.removesuffix("\n"), prompt))
    return out


def start(folder: Path, a: argparse.Namespace) -> tuple[subprocess.Popen, str, float]:
    import httpx

    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "rewardkit.cli", "serve", str(folder), "--port", "0", "--device", a.device]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = None
    for line in proc.stderr:
        if m := re.search(r"on (http://\S+) ", line):
            url = m.group(1)
            break
    if url is None:
        raise RuntimeError(f"server did not start (exit {proc.wait()})")
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return proc, url, time.perf_counter() - t0
        except httpx.HTTPError:
            time.sleep(0.01)


async def load(url: str, bodies: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """bodies[c]: what client c sends to /get_reward, one request after another; all clients at once."""
    r = await http_load(url, "/get_reward", bodies, "query", timeout=180)
    return {"wall_s": r["wall_s"], "requests": r["requests"], "errors": r["errors"], "queries": r["items"],
            "queries_per_s": r["items"] / r["wall_s"], "p50_s": r["p50_s"], "p99_s": r["p99_s"]}


def body(items: list[tuple[str, str]]) -> dict[str, Any]:
    return {"query": [q for q, _ in items], "prompts": [p for _, p in items], "labels": [""] * len(items)}


def run(a: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from rewardkit.inference.factory import load_scorer

    folder = make_model(a, Path(a.workdir) / "run")
    tok = load_scorer(str(folder)).encoder.tokenizer
    results: dict[str, Any] = {"load_before": os.getloadavg()}
    proc, url, startup = start(folder, a)
    results["startup_s"] = startup
    try:
        httpx.post(f"{url}/get_reward", json=body(samples(tok, 1, 1, 8, 8, 0)), timeout=180)  # warm-up
        tokens_before = httpx.get(f"{url}/health").json()["served"]["tokens"]
        # OpenRLHF >= 0.9.1: every sample its own POST; 64 clients (one per rollout worker's executor)
        one = samples(tok, a.clients * a.requests // 4, 4, a.prompt_words, a.reply_words, 1)
        per_client = [[body([one[i]]) for i in range(c, len(one), a.clients)] for c in range(a.clients)]
        r = asyncio.run(load(url, per_client))
        tokens = httpx.get(f"{url}/health").json()["served"]["tokens"]
        r["tokens_per_s"] = (tokens - tokens_before) / r["wall_s"]
        r["peak_rss_mb"] = peak_rss_mb(proc.pid)
        results["one_sample"] = r
        print(f"one sample per request: {r}", file=sys.stderr)
        # OpenRLHF 0.8.10-0.9.0: whole rollouts (n_samples_per_prompt samples of each prompt together)
        tokens_before = tokens
        roll = samples(tok, a.clients * a.rollout_queries // 8, 8, a.prompt_words, a.reply_words, 2)
        per_client = [[body(roll[c * a.rollout_queries:(c + 1) * a.rollout_queries])] for c in range(a.clients)]
        r = asyncio.run(load(url, per_client))
        tokens = httpx.get(f"{url}/health").json()["served"]["tokens"]
        r["tokens_per_s"] = (tokens - tokens_before) / r["wall_s"]
        r["peak_rss_mb"] = peak_rss_mb(proc.pid)
        results["rollouts"] = r
        print(f"whole rollouts: {r}", file=sys.stderr)
        # one full-size legacy rollout alone: 1,024 queries of about 1,000 tokens in one request
        big = samples(tok, 128, 8, a.big_prompt_words, a.big_reply_words, 3)
        size = len(__import__("json").dumps(body(big)).encode())
        tokens_before = tokens
        r = asyncio.run(load(url, [[body(big)]]))
        tokens = httpx.get(f"{url}/health").json()["served"]["tokens"]
        r.update(body_mb=size / 2**20, tokens=tokens - tokens_before, peak_rss_mb=peak_rss_mb(proc.pid))
        results["full_rollout"] = r
        print(f"full rollout: {r}", file=sys.stderr)
        results["served"] = httpx.get(f"{url}/health").json()["served"]
        results["load_after"] = os.getloadavg()
    finally:
        proc.terminate()
        results["exit_code"] = proc.wait(120)
    return results


def machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__}, "
            f"`torch.cpu._is_avx512_bf16_supported()` = {torch.cpu._is_avx512_bf16_supported()}")


def render(a: argparse.Namespace, r: dict[str, Any], wall: float) -> str:
    one, roll, big = r["one_sample"], r["rollouts"], r["full_rollout"]

    def row(name: str, x: dict[str, Any]) -> str:
        errors = sum(x["errors"].values())
        return (f"| {name} | {x['requests']} | {x['queries']} | {errors} | {x['queries_per_s']:.1f} | "
                f"{x.get('tokens_per_s', x.get('tokens', 0) / x['wall_s']):,.0f} | {x['p50_s']:.2f} | {x['p99_s']:.2f} | "
                f"{x['peak_rss_mb']:.0f} |")

    model = ("a tiny random Llama (2 layers, hidden 64; the test suite's tokenizer)" if a.model == "tiny"
             else f"`{a.model}` with a seeded head")
    return "\n".join([
        f"## Serving under RL load (issue 35) — {datetime.date.today().isoformat()}",
        "",
        f"`{' '.join(['python', 'benchmarks/serve_load.py', *sys.argv[1:]])}` (wall time {wall / 60:.1f} min). "
        f"{machine()}; {a.cpu_note + ' ' if a.cpu_note else ''}1-minute load average "
        f"{r['load_before'][0]:.1f} before the run and {r['load_after'][0]:.1f} at its end, on {os.cpu_count()} "
        f"cores (other work on the CPU makes the figures a floor, not a capacity). Model: {model}, "
        f"max_length {a.max_length}, fp32, `rewardkit serve` defaults "
        f"(dynamic batching, max_wait_ms 5), {'torch default threads' if not a.threads else f'{a.threads} threads'}.",
        "",
        f"**Start-up** (process start to the first healthy `GET /health`): {r['startup_s']:.1f} s.",
        "",
        f"{a.clients} concurrent asyncio clients, OpenRLHF's body (`query`, `prompts`, `labels`) to `/get_reward`, "
        "180 s timeout, ChatML-rendered queries ending at EOS. Latency is per request; tokens/s is the server's own "
        "count (`/health` → `served.tokens`, after truncation, a shared prompt once).",
        "",
        "| style | requests | queries | errors | queries/s | tokens/s | p50 (s) | p99 (s) | server peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
        row(f"OpenRLHF ≥ 0.9.1: one sample per request, {a.clients} clients", one),
        row(f"OpenRLHF 0.8.10–0.9.0: whole rollouts of {a.rollout_queries} queries, {a.clients} clients", roll),
        row("one legacy rollout of 1,024 queries alone", big),
        "",
        f"- The 1,024-query rollout: {big['tokens']:,} tokens scored (about {big['tokens'] / 1024:.0f} per query, a "
        f"shared prompt once), a {big['body_mb']:.1f} MiB body, answered in {big['wall_s']:.1f} s (OpenRLHF's client "
        "gives up at 180 s; before this issue the server refused any rollout over 256 queries with 413). A rollout of "
        "1,024 samples of about 1,000 tokens (1M tokens) fits the default limits (checked by "
        "tests/test_serve_protocols.py) but at this CPU's rate it would take far longer than 180 s.",
        f"- The server over the whole run: {r['served']['requests']} requests in {r['served']['calls']} scoring calls "
        f"(mean {r['served']['mean_requests_per_call']:.1f} requests per call, at most "
        f"{r['served']['max_requests_per_call']}), {r['served']['errors']} errors; it exited with code "
        f"{r['exit_code']} on SIGTERM.",
    ]) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="'tiny' (default) or a model name/path, e.g. smollm2-135m")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=4, help="one-sample style: requests per client")
    p.add_argument("--rollout-queries", type=int, default=8, help="whole-rollout style: queries per client's rollout")
    p.add_argument("--prompt-words", type=int, default=20)
    p.add_argument("--reply-words", type=int, default=80)
    p.add_argument("--big-prompt-words", type=int, default=20, help="the 1,024-query rollout: words per prompt")
    p.add_argument("--big-reply-words", type=int, default=40, help="the 1,024-query rollout: most words per reply "
                   "(520: about 1,000 tokens per query with the prompt, on the tiny tokenizer)")
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workdir", default="/tmp/rewardkit-serve-load")
    p.add_argument("--cpu-note", default="", help="what else ran on the CPU, written into the section as given "
                   "(e.g. 'the CPU was shared with a training run')")
    p.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    a = p.parse_args()
    t0 = time.perf_counter()
    results = run(a)
    text = render(a, results, time.perf_counter() - t0)
    print(text)
    if a.write:
        write_section(text)


if __name__ == "__main__":
    main()
