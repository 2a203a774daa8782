"""Tokens per forward pass for CPU scoring: rewardkit's inference path at several budgets, alternating.

    python benchmarks/forward_budget.py --budgets 16384,1024,16384,1024,16384,1024,4096,1024,4096

Scores the last ``--pairs`` HH helpful-base pairs with a SmolLM2 checkpoint (the one benchmarks/serving.py
builds) once per listed budget, in the listed order, in one process, and prints tokens/s for each. The
default budget of ``rewardkit.inference.forward_token_budget`` on CPU comes from this measurement.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budgets", default="16384,1024,16384,1024,16384,1024,4096,1024,4096")
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hh-rlhf" / "helpful-base.jsonl.gz"))
    a = p.parse_args()
    import torch
    from serving import checkpoint

    from rewardkit.data import read_preferences
    from rewardkit.inference.factory import load_scorer
    from rewardkit.model import cache_root

    torch.set_num_threads(a.threads)
    folder = checkpoint(a.model, cache_root() / f"bench-rm-{a.model}")
    examples, _ = read_preferences(f"{a.data}[-{a.pairs}:]", skip_bad=True)
    for budget in (int(b) for b in a.budgets.split(",")):
        scorer = load_scorer(str(folder), max_batch_tokens=budget)
        prepared = scorer.prepare(examples)
        started = time.perf_counter()
        (result,) = scorer.run([prepared])
        seconds = time.perf_counter() - started
        print(f"budget {budget:>6}: {seconds:6.1f} s, {prepared.tokens} tokens, {prepared.tokens / seconds:5.0f} tokens/s, "
              f"{result.forward_passes} forward passes", flush=True)


if __name__ == "__main__":
    main()
