"""LoRA vs full fine-tuning: speed and memory of whole ``rewardkit train`` commands on the same HH pairs.

    python benchmarks/lora_speed.py --write      # ~5 min on 2 free cores; results into BENCHMARKS.md

Both sides are ``rewardkit train`` with its defaults on the first ``--pairs`` valid HH helpful-base pairs
(``--batch-size`` pairs per step), alternating, ``--repeats`` times; LoRA adds ``--lora-r 16 --lora-alpha 32``
(every linear layer of the blocks, the score head in full). Timed like ``benchmarks/end_to_end.py``:
``/usr/bin/time`` for wall and peak RSS, ``metrics.jsonl`` ``step_s`` for the time in steps.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_section  # noqa: E402
from end_to_end import HH, run_rewardkit  # noqa: E402

LORA = ("--lora-r", "16", "--lora-alpha", "32")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default=str(HH))
    p.add_argument("--pairs", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    started = time.time()
    runs: dict[str, list[dict]] = {"full": [], "lora": []}
    with tempfile.TemporaryDirectory(prefix="lora-speed-") as tmp:
        for i in range(a.repeats):
            for side in (("full", "lora") if i % 2 == 0 else ("lora", "full")):
                runs[side].append(run_rewardkit(a, a.pairs, Path(tmp), LORA if side == "lora" else ()))
    med = statistics.median
    ratio = [f["steps_s"] / lo["steps_s"] for f, lo in zip(runs["full"], runs["lora"])]
    e2e = [f["wall_s"] / lo["wall_s"] for f, lo in zip(runs["full"], runs["lora"])]
    lines = [f"## LoRA vs full fine-tuning: speed and memory (issue 15) — {time.strftime('%Y-%m-%d')}", "",
             f"`python benchmarks/lora_speed.py{' --write' if a.write else ''}` (wall time "
             f"{(time.time() - started) / 60:.1f} min). {platform.machine()}, {os.cpu_count()} cores, {a.threads} "
             f"threads. Model `{a.model}`, fp32, the first {a.pairs} HH helpful-base pairs, {a.batch_size} pairs per "
             f"step, `rewardkit train` defaults otherwise (prefix sharing + packing); LoRA: `{' '.join(LORA)}`. "
             f"{a.repeats} alternating repeats, medians (range of per-repeat ratios).", "",
             "| | wall (s) | time in steps (s) | median step (s) | peak RSS (MB) |", "|---|---|---|---|---|"]
    for side, label in (("full", "full fine-tune"), ("lora", "LoRA r = 16")):
        r = runs[side]
        lines.append(f"| {label} | {med([x['wall_s'] for x in r]):.1f} | {med([x['steps_s'] for x in r]):.1f} | "
                     f"{med([x['steady_step_s'] for x in r]):.2f} | {med([x['rss_mb'] for x in r]):.0f} |")
    rng = lambda xs: f" ({min(xs):.2f}–{max(xs):.2f})" if len(xs) > 1 else ""  # noqa: E731
    lines += ["", f"LoRA takes {1 / med(ratio):.2f}× the full fine-tune's time in steps{rng([1 / x for x in ratio])} "
                  f"and {1 / med(e2e):.2f}× its wall time; peak RSS "
                  f"{med([x['rss_mb'] for x in runs['lora']]) / med([x['rss_mb'] for x in runs['full']]):.2f}×.", ""]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.write:
        write_section(text)


if __name__ == "__main__":
    main()
