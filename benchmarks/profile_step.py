"""Where a training step's time goes: one prefix-shared, packed forward+backward of SmolLM2 on HH pairs.

    python benchmarks/profile_step.py [--pairs 8] [--threads 2]

Prints the top operators by self CPU time (torch.profiler) and the share spent in matrix
multiplies, attention and everything else — the explanation of the MFU figure in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from rewardkit.batching import Encoder
from rewardkit.data.readers import parse_record
from rewardkit.losses import bradley_terry_loss
from rewardkit.model import load_reward_model
from rewardkit.sharing import group_rewards

HH = Path(__file__).resolve().parents[2] / "shared/data/hh-rlhf/helpful-base.jsonl.gz"
MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")
ATTENTION = ("scaled_dot_product", "attention")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-length", type=int, default=1024)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model, tok = load_reward_model("smollm2-135m")
    enc = Encoder(tok, max_length=a.max_length)
    examples = []
    with gzip.open(HH, "rt") as f:
        for line in f:
            try:
                examples.append(parse_record(json.loads(line)))
            except ValueError:
                continue
            if len(examples) == a.pairs:
                break
    groups = enc.encode_examples(examples)

    def step() -> str:
        rewards = group_rewards(model, groups, tok.pad_token_id)
        loss = torch.stack([bradley_terry_loss(r[0], r[1]) for r in rewards]).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        return f"{rewards.path}{':' + rewards.route if rewards.route else ''}"  # what ran, as group_rewards says

    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        path = step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    share = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for e in events:
        kind = ("matmul" if e.key in MATMUL else "attention" if any(k in e.key for k in ATTENTION) else "other")
        share[kind] += e.self_cpu_time_total
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    print("share of self CPU time: " + ", ".join(f"{k} {v / total:.0%}" for k, v in share.items()))
    print(f"total self CPU time {total / 1e6:.1f} s for {a.pairs} pairs, "
          f"{sum(len(s) for g in groups for s in g)} tokens ({a.threads} threads, path {path})")


if __name__ == "__main__":
    main()
