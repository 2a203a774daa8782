"""Padded tokens per training epoch: rewardkit's length-grouped batches vs. plain random batches.

Baseline: random batches padded to the longest sequence of each micro-batch (what a trainer without
length grouping does, e.g. TRL's RewardTrainer with its defaults). Both use the same data, tokenizer,
batch size and micro-batch size; the count of token positions the model computes is exact and
machine-independent, so this measures work, not seconds. Median over seeds.

    python benchmarks/padding.py [--data SPEC] [--batch-size 16] [--micro-batch-size 4] [--seeds 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from rewardkit.batching import Encoder
from rewardkit.data import read_preferences
from rewardkit.model import load_tokenizer, resolve_backbone
from rewardkit.plan import make_batches

ROOT = Path(__file__).resolve().parents[1]


def padded_tokens(encoded, batches, micro: int) -> int:
    total = 0
    for batch in batches:
        for j in range(0, len(batch), micro):
            ids = batch[j:j + micro]
            width = max(max(len(encoded[i][0]), len(encoded[i][1])) for i in ids)
            total += 2 * len(ids) * width  # chosen and rejected go through one padded forward pass
    return total


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/hh-rlhf/helpful-base.jsonl.gz") + "[:1000]")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--write", action="store_true", help="append the result table to BENCHMARKS.md")
    a = p.parse_args()

    examples, report = read_preferences(a.data, skip_bad=True)
    encoder = Encoder(load_tokenizer(resolve_backbone(a.model)), max_length=a.max_length)
    encoded = encoder.encode_examples(examples)
    lengths = [max(len(c), len(r)) for c, r in encoded]
    real = sum(len(c) + len(r) for c, r in encoded)
    results = {}
    for name, group in (("random batches (baseline)", False), ("rewardkit group_by_length", True)):
        counts = [padded_tokens(encoded, make_batches(lengths, a.batch_size, np.random.default_rng(s), group),
                                a.micro_batch_size) for s in range(a.seeds)]
        results[name] = statistics.median(counts)
    base = results["random batches (baseline)"]
    lines = [
        f"## Padded tokens per epoch — {time.strftime('%Y-%m-%d')}",
        "",
        f"Command: `python benchmarks/padding.py{' --write' if a.write else ''}` "
        f"(data `{Path(a.data).name}`, {report.loaded} pairs, tokenizer of `{a.model}`, batch {a.batch_size}, "
        f"micro-batch {a.micro_batch_size}, max length {a.max_length}, median over {a.seeds} seeds). "
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}; counts do not depend on it.",
        "",
        "| batching | token positions computed | vs. real tokens | baseline / this |",
        "|---|---|---|---|",
        f"| real tokens (no padding at all) | {real:,} | 1.00× | – |",
    ]
    for name, count in results.items():
        lines.append(f"| {name} | {count:,.0f} | {count / real:.2f}× | {base / count:.2f}× |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.write:
        path = ROOT / "BENCHMARKS.md"
        head = "" if path.exists() else "# Benchmarks\n\nEach section: the exact command, the machine and the date.\n\n"
        path.write_text((path.read_text() if path.exists() else head) + text + "\n")


if __name__ == "__main__":
    main()
