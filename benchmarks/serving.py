"""Inference and serving speed: rewardkit vs plain transformers scoring, and the server with/without dynamic batching.

    python benchmarks/serving.py --write          # both parts, results into BENCHMARKS.md

Part 1 — offline scoring of the same HH completions (default: the last 500 helpful-base pairs = 1,000
completions) with the same checkpoint (SmolLM2-135M-Instruct with a seeded score head, saved as a standard
HF sequence-classification folder):
  * baseline: the usual transformers loop — ``AutoModelForSequenceClassification`` + ``AutoTokenizer``,
    conversations rendered with the tokenizer's chat template, batches of B in input order padded to
    their longest, ``inference_mode``. B is swept first on a sample and the fastest is the baseline
    ("at its best"); the other B are kept for context;
  * rewardkit: ``rewardkit.inference.score`` on the pairs (each prompt computed once, groups packed).
  Timed alternately, ``--repeats`` times; ratios are medians of per-repeat ratios. Both the scoring time
  (tokenized input → rewards) and the end-to-end time (load model + tokenizer, render and tokenize,
  score) are reported, and the largest reward difference between the two.

Part 2 — the server under load on loopback: ``rewardkit serve`` (a real uvicorn process) and
``--clients`` concurrent clients, each sending ``--requests`` ``POST /v1/score`` requests of 1–8
completions of one HH prompt, with dynamic batching on and off (``--no-dynamic-batching``: one request
per forward pass). Errors, throughput (completions/s), p50/p99 latency and the server's peak RSS.

Every run uses ``--threads`` torch threads (2 = this machine's cores) and the same data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import http_load, peak_rss_mb, write_section  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "hh-rlhf" / "helpful-base.jsonl.gz"


# ------------------------------------------------------------------------------------------ setup


def checkpoint(model: str, folder: Path, seed: int = 0) -> Path:
    """A reward-model checkpoint of ``model`` with a seeded head (the rewards' values do not matter here)."""
    if (folder / "rewardkit.json").exists():
        return folder
    from accelerate.utils import set_seed

    from rewardkit.batching import Encoder
    from rewardkit.checkpoint import save_checkpoint
    from rewardkit.model import load_reward_model

    set_seed(seed)
    rm, tok = load_reward_model(model)
    save_checkpoint(folder, rm, tok, Encoder(tok, max_length=4096))
    return folder


def hh_examples(spec: str, limit: int | None = None) -> list[Any]:
    from rewardkit.data import read_preferences

    examples, report = read_preferences(spec, skip_bad=True)
    print(report.summary(), file=sys.stderr)
    return examples[:limit] if limit else examples


# ------------------------------------------------------------------------------------ part 1: offline


def plain_transformers(folder: Path, examples: list[Any], batch: int, threads: int, device: str) -> dict[str, Any]:
    """The usual loop: render, tokenize per batch (padding=True), forward, read logits."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval().to(device)
    t1 = time.perf_counter()
    texts = [tok.apply_chat_template(ex.prompt + c, tokenize=False) for ex in examples for c in ex.completions]
    rewards, tokenize_s, tokens, padded = [], 0.0, 0, 0
    t2 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            ts = time.perf_counter()
            enc = tok(texts[i:i + batch], padding=True, return_tensors="pt", add_special_tokens=False)
            tokenize_s += time.perf_counter() - ts
            tokens += int(enc["attention_mask"].sum())
            padded += enc["input_ids"].numel()
            rewards += model(**enc.to(device)).logits[:, 0].tolist()
    t3 = time.perf_counter()
    return {"load_s": t1 - t0, "score_s": t3 - t2 - tokenize_s, "tokenize_s": tokenize_s + (t2 - t1),
            "total_s": t3 - t0, "rewards": rewards, "tokens": tokens, "padded_tokens": padded}


def rewardkit_scoring(folder: Path, examples: list[Any], threads: int, max_batch_tokens: int | None,
                      device: str) -> dict[str, Any]:
    import torch

    from rewardkit.inference.factory import load_scorer

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    scorer = load_scorer(str(folder), max_batch_tokens=max_batch_tokens, device=device)
    t1 = time.perf_counter()
    prepared = scorer.prepare(examples)
    t2 = time.perf_counter()
    (result,) = scorer.run([prepared])
    t3 = time.perf_counter()
    return {"load_s": t1 - t0, "tokenize_s": t2 - t1, "score_s": t3 - t2, "total_s": t3 - t0,
            "rewards": [float(v) for r in result.rewards for v in r], "tokens": prepared.tokens, "path": result.path,
            "truncated": result.truncation_total().to_dict()}


def in_subprocess(fn: str, **kw: Any) -> dict[str, Any]:
    """Run one measurement in a fresh process (no warm caches shared between sides; its own peak RSS)."""
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps({"fn": fn, **kw})],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"{fn} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker(spec: dict[str, Any]) -> None:
    import resource

    examples = hh_examples(spec["data"], spec.get("limit"))
    if spec["fn"] == "hf":
        res = plain_transformers(Path(spec["folder"]), examples, spec["batch"], spec["threads"], spec["device"])
    else:
        res = rewardkit_scoring(Path(spec["folder"]), examples, spec["threads"], spec["max_batch_tokens"], spec["device"])
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))


def offline(a: argparse.Namespace, folder: Path) -> dict[str, Any]:
    data = f"{a.data}[-{a.pairs}:]"
    common = {"folder": str(folder), "data": data, "threads": a.threads, "device": a.device}
    sweep = {}
    for b in [int(x) for x in a.sweep.split(",")]:
        r = in_subprocess("hf", batch=b, limit=a.sweep_pairs, **common)
        sweep[b] = r
        print(f"sweep: batch {b}: {r['score_s']:.1f} s scoring for {a.sweep_pairs} pairs "
              f"(padding {r['padded_tokens'] / r['tokens']:.2f}x)", file=sys.stderr)
    best = min(sweep, key=lambda b: sweep[b]["score_s"])
    runs: dict[str, list[dict[str, Any]]] = {"hf": [], "rk": []}
    for k in range(a.repeats):
        for side in (("hf", "rk") if k % 2 == 0 else ("rk", "hf")):
            r = (in_subprocess("hf", batch=best, **common) if side == "hf" else
                 in_subprocess("rk", max_batch_tokens=a.max_batch_tokens, **common))
            runs[side].append(r)
            print(f"repeat {k}: {side}: scoring {r['score_s']:.1f} s, end to end {r['total_s']:.1f} s", file=sys.stderr)
    diff = max(abs(x - y) for x, y in zip(runs["hf"][0]["rewards"], runs["rk"][0]["rewards"]))
    return {"best_batch": best, "sweep": {b: {k: v for k, v in r.items() if k != "rewards"} for b, r in sweep.items()},
            "runs": {s: [{k: v for k, v in r.items() if k != "rewards"} for r in rs] for s, rs in runs.items()},
            "max_abs_reward_diff": diff, "completions": len(runs["hf"][0]["rewards"])}


# ------------------------------------------------------------------------------------- part 2: server


def load_requests(a: argparse.Namespace) -> list[dict[str, Any]]:
    """Requests of 1–8 completions for one HH prompt: the pair's own replies plus replies of other prompts."""
    from rewardkit.data.record import completion_text

    examples = hh_examples(f"{a.data}[:{a.server_pool}]")
    replies = [completion_text(c)[:a.completion_chars] for ex in examples for c in ex.completions]
    rng = random.Random(a.seed)
    out = []
    for _ in range(a.clients * a.requests):
        ex = rng.choice(examples)
        k = rng.randint(1, 8)
        own = [completion_text(c)[:a.completion_chars] for c in ex.completions]
        completions = (own + rng.sample(replies, 8))[:k]
        prompt = [dict(m, content=m["content"][-a.prompt_chars:]) for m in ex.prompt[-1:]]
        out.append({"prompt": prompt, "completions": completions})
    return out


def start_server(folder: Path, a: argparse.Namespace, dynamic: bool) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "rewardkit.cli", "serve", str(folder), "--port", "0", "--threads", str(a.threads),
           "--max-batch-tokens", str(a.server_batch_tokens), "--max-wait-ms", str(a.max_wait_ms),
           "--max-queue", "100000", "--request-timeout-s", "3600", "--device", a.device]
    if not dynamic:
        cmd.append("--no-dynamic-batching")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stderr:
        m = re.search(r"on (http://\S+) ", line)
        if m:
            return proc, m.group(1)
    raise RuntimeError(f"server did not start (exit {proc.wait()})")


async def load_test(url: str, requests: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    r = await http_load(url, "/v1/score", [requests[i::clients] for i in range(clients)], "completions", timeout=3600)
    return {"wall_s": r["wall_s"], "requests": r["requests"], "errors": r["errors"], "completions": r["items"],
            "completions_per_s": r["items"] / r["wall_s"], "requests_per_s": r["answered"] / r["wall_s"],
            "p50_s": r["p50_s"], "p99_s": r["p99_s"]}


def server_part(a: argparse.Namespace, folder: Path) -> dict[str, Any]:
    import httpx

    requests = load_requests(a)
    runs: dict[str, list[dict[str, Any]]] = {"dynamic": [], "single": []}
    for k in range(a.repeats):
        for mode in (("single", "dynamic") if k % 2 == 0 else ("dynamic", "single")):
            proc, url = start_server(folder, a, dynamic=mode == "dynamic")
            try:
                # one warm-up request (first-call costs are start-up, not throughput)
                httpx.post(f"{url}/v1/score", json=requests[0], timeout=600)
                r = asyncio.run(load_test(url, requests, a.clients))
                r["served"] = httpx.get(f"{url}/health").json()["served"]
                r["peak_rss_mb"] = peak_rss_mb(proc.pid)
            finally:
                proc.terminate()
                r["exit_code"] = proc.wait(120)
            runs[mode].append(r)
            print(f"repeat {k}: {mode}: {r['completions_per_s']:.2f} completions/s, p50 {r['p50_s']:.2f} s, "
                  f"p99 {r['p99_s']:.2f} s, errors {r['errors']}, mean requests per call "
                  f"{r['served']['mean_requests_per_call']:.2f}", file=sys.stderr)
    return {"runs": runs, "requests": len(requests),
            "completions_per_request": statistics.mean(len(r["completions"]) for r in requests)}


# ------------------------------------------------------------------------------------------ report


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def render(a: argparse.Namespace, off: dict | None, srv: dict | None, wall: float) -> str:
    import torch
    import transformers

    lines = [f"## Inference and serving — {time.strftime('%Y-%m-%d')}", "",
             f"Command: `python benchmarks/serving.py {' '.join(sys.argv[1:])}` (wall time {wall / 60:.1f} min). "
             f"Machine: {platform.machine()}, {os.cpu_count()} visible cores, {a.threads} torch threads on every side; "
             f"torch {torch.__version__}, transformers {transformers.__version__}. Model `{a.model}` (fp32) with a "
             "seeded score head, saved as a standard HF sequence-classification checkpoint; both sides load that folder. "
             "Each measurement runs in its own process; sides alternate; medians over repeats.", ""]
    if off:
        hf, rk = off["runs"]["hf"], off["runs"]["rk"]
        n = off["completions"]
        lines += [f"### Offline scoring: {n} HH helpful-base completions (last {a.pairs} pairs)", "",
                  f"Baseline at its best: B swept over {a.sweep} on the first {a.sweep_pairs} pairs; fastest B = "
                  f"**{off['best_batch']}**. Largest |reward difference| rewardkit vs transformers: "
                  f"{off['max_abs_reward_diff']:.2e}.", "",
                  "| B (sweep) | scoring s | padded / real tokens |", "|---|---|---|"]
        for b, r in off["sweep"].items():
            lines.append(f"| {b} | {r['score_s']:.1f} | {r['padded_tokens'] / r['tokens']:.2f}× |")
        per_repeat = ", ".join(f"{h['score_s'] / r['score_s']:.2f}" for h, r in zip(hf, rk))
        ratio_score = med([h["score_s"] / r["score_s"] for h, r in zip(hf, rk)])
        ratio_total = med([h["total_s"] / r["total_s"] for h, r in zip(hf, rk)])
        lines += ["", "| side | scoring s | completions/s | end to end s (load + tokenize + score) | peak RSS MB | tokens computed |",
                  "|---|---|---|---|---|---|",
                  f"| transformers loop, B = {off['best_batch']} | {med([r['score_s'] for r in hf]):.1f} | "
                  f"{n / med([r['score_s'] for r in hf]):.2f} | {med([r['total_s'] for r in hf]):.1f} | "
                  f"{med([r['peak_rss_mb'] for r in hf]):.0f} | {hf[0]['padded_tokens']:,} (padded) |",
                  f"| rewardkit (`{rk[0]['path']}`) | {med([r['score_s'] for r in rk]):.1f} | "
                  f"{n / med([r['score_s'] for r in rk]):.2f} | {med([r['total_s'] for r in rk]):.1f} | "
                  f"{med([r['peak_rss_mb'] for r in rk]):.0f} | {rk[0]['tokens']:,} (each prompt once) |", "",
                  f"**rewardkit / transformers at its best: {ratio_score:.2f}× scoring, {ratio_total:.2f}× end to end** "
                  f"(per-repeat ratios: {per_repeat}).", ""]
    if srv:
        d, s = srv["runs"]["dynamic"], srv["runs"]["single"]
        ratio = med([x["completions_per_s"] / y["completions_per_s"] for x, y in zip(d, s)])
        per_repeat = ", ".join(f"{x['completions_per_s'] / y['completions_per_s']:.2f}" for x, y in zip(d, s))
        lines += [f"### Server under load: {a.clients} concurrent clients × {a.requests} requests", "",
                  f"`POST /v1/score`, 1–8 completions per request (mean {srv['completions_per_request']:.2f}); prompt = "
                  f"the last user turn of an HH prompt (≤ {a.prompt_chars} characters), completions = HH replies (≤ "
                  f"{a.completion_chars} characters). Server: `rewardkit serve` on loopback, dynamic batch budget "
                  f"{a.server_batch_tokens} tokens, max wait {a.max_wait_ms} ms; one warm-up request before timing.", "",
                  "| server | errors | completions/s | requests/s | p50 latency s | p99 latency s | requests per batch (one `Scorer.run`) | peak RSS MB |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, rs in (("dynamic batching (default)", d), ("one request per forward (--no-dynamic-batching)", s)):
            errs = sum(sum(r["errors"].values()) for r in rs)
            lines.append(f"| {name} | {errs} | {med([r['completions_per_s'] for r in rs]):.2f} | "
                         f"{med([r['requests_per_s'] for r in rs]):.2f} | {med([r['p50_s'] for r in rs]):.2f} | "
                         f"{med([r['p99_s'] for r in rs]):.2f} | "
                         f"{med([r['served']['mean_requests_per_call'] for r in rs]):.1f} | "
                         f"{max(r['peak_rss_mb'] for r in rs):.0f} |")
        lines += ["", f"**Dynamic batching: {ratio:.2f}× the throughput** of one request per forward pass "
                      f"(per-repeat: {per_repeat}).", ""]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine (benchmarks/gpu_check.sh)")
    p.add_argument("--data", default=str(DATA), help="HH helpful-base file (default: ../shared/data/...)")
    p.add_argument("--parts", default="offline,server")
    p.add_argument("--pairs", type=int, default=500, help="offline: last N helpful-base pairs (2N completions)")
    p.add_argument("--sweep", default="1,2,4,8,16,32", help="offline: baseline batch sizes to try")
    p.add_argument("--sweep-pairs", type=int, default=48, help="offline: pairs used for the batch-size sweep")
    p.add_argument("--max-batch-tokens", type=int, default=None,
                   help="rewardkit's tokens per forward pass (default: rewardkit's own, 2048 on CPU)")
    p.add_argument("--server-batch-tokens", type=int, default=16384, help="server: tokens per dynamic batch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=3, help="server: requests per client")
    p.add_argument("--server-pool", type=int, default=400, help="server: HH pairs requests are drawn from")
    p.add_argument("--prompt-chars", type=int, default=300)
    p.add_argument("--completion-chars", type=int, default=300)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="folder for the benchmark checkpoint (default: cache)")
    p.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    p.add_argument("--output", default=None, help="also write the raw results JSON here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p


def main() -> None:
    a = parser().parse_args()
    if a.worker:
        return worker(json.loads(a.worker))
    from rewardkit.model import cache_root

    started = time.time()
    folder = checkpoint(a.model, Path(a.checkpoint) if a.checkpoint else cache_root() / f"bench-rm-{a.model}")
    parts = a.parts.split(",")
    off = offline(a, folder) if "offline" in parts else None
    srv = server_part(a, folder) if "server" in parts else None
    text = render(a, off, srv, time.time() - started)
    print(text)
    if a.output:
        Path(a.output).write_text(json.dumps({"offline": off, "server": srv}, indent=2, default=str))
    if a.write:
        write_section(text)


if __name__ == "__main__":
    main()
