"""bf16 vs fp32 on this CPU: one optimizer step's forward+backward of SmolLM2 on HH pairs, per forward route.

For the same pairs (8 per step, the first valid HH helpful-base pairs from ``--offset``), cut into the micro-batches
``rewardkit train`` would make at ``--micro-batch-tokens`` (and at most ``--micro-batch-size`` records), it times
forward+backward of the Bradley-Terry loss in fp32 and under bf16 autocast with fp32 weights (what
``--precision bf16`` runs), for:

* ``shared``: prefix sharing + packing on the segments route (rewardkit's CPU default);
* ``padded``: the plain padded batch, each micro-batch's sequences padded to its longest (what TRL runs);

alternating fp32 / bf16 repeats, medians; the ratio is the median of per-repeat fp32 ÷ bf16. ``--profile`` adds
a torch.profiler table of one bf16 step per route (which operators do not get faster). Prints a Markdown table;
``--write`` puts it into BENCHMARKS.md with the CPU's bf16 flags.

    python benchmarks/precision_step.py --write     # the first row: each precision at its own auto budget
    python benchmarks/precision_step.py --micro-batch-tokens 2048,0 --profile
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import first_valid_records, write_section  # noqa: E402

HH = ROOT.parent / "shared/data/hh-rlhf/helpful-base.jsonl.gz"


class Pair:
    """A record as ``rewardkit.plan.micro_batches`` sees it: its token sequences and their total length."""

    def __init__(self, ids: list[list[int]]):
        self.ids, self.tokens = ids, sum(map(len, ids))


def cpu_flags() -> str:
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0] if Path("/proc/cpuinfo").exists() else ""
    want = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx512_vnni", "avx2")
    have = [f for f in want if f" {f}" in flags + " "]
    return ", ".join(have) or "none of " + ", ".join(want)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--pairs", type=int, default=8, help="pairs per optimizer step")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--micro-batch-tokens", default="1024,2048,0", help="comma-separated (0: no cap)")
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--routes", default="shared,padded")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--no-defaults", action="store_true", help="skip the row of each precision at its auto budget")
    p.add_argument("--system-malloc", action="store_true",
                   help="keep glibc's default allocator (rewardkit train retains freed memory: rewardkit.allocator)")
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from rewardkit.allocator import retain_freed_memory

    allocator = "glibc default (--system-malloc)" if a.system_malloc else retain_freed_memory()

    from rewardkit.batching import Encoder
    from rewardkit.losses import bradley_terry_loss
    from rewardkit.model import load_reward_model
    from rewardkit.plan import micro_batch_token_budget, micro_batches
    from rewardkit.sharing import group_rewards

    model, tok = load_reward_model(a.model)
    model.train()
    enc = Encoder(tok, max_length=a.max_length)
    records = [r for _, r in first_valid_records(HH, a.offset + a.pairs)][a.offset:]
    groups = enc.encode_examples(records)
    items = [Pair(g) for g in groups]
    tokens = sum(it.tokens for it in items)

    def step(route: str, budget: int | tuple[int, int], bf16: bool) -> float:
        budget = budget[bf16] if isinstance(budget, tuple) else budget
        micros = micro_batches(items, a.micro_batch_size, budget)
        started = time.perf_counter()
        for micro in micros:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                rewards = group_rewards(model, [it.ids for it in micro], tok.pad_token_id, shared=route == "shared")
                loss = torch.stack([bradley_terry_loss(r[0], r[1]) for r in rewards]).sum() / len(items)
            loss.backward()
        elapsed = time.perf_counter() - started
        model.zero_grad(set_to_none=True)
        return elapsed

    rows = []
    # Each precision at its own auto budget (what `rewardkit train --precision fp32|bf16` runs per step), then each
    # budget for both.
    cpu = torch.device("cpu")
    defaults = (micro_batch_token_budget(-1, cpu), micro_batch_token_budget(-1, cpu, bf16=True))
    configs = [("shared", defaults)] if "shared" in a.routes.split(",") and not a.no_defaults else []
    configs += [(route, int(x)) for x in a.micro_batch_tokens.split(",") for route in a.routes.split(",")]
    for route, budget in configs:
        step(route, budget, False), step(route, budget, True)  # warm-up both
        times: dict[bool, list[float]] = {False: [], True: []}
        for r in range(a.repeats):
            for bf16 in ((False, True) if r % 2 == 0 else (True, False)):
                times[bf16].append(step(route, budget, bf16))
        ratios = [f / b for f, b in zip(times[False], times[True])]
        n_micro = "/".join(str(len(micro_batches(items, a.micro_batch_size, b)))
                           for b in (budget if isinstance(budget, tuple) else (budget,)))
        rows.append((route, budget, n_micro, statistics.median(times[False]), statistics.median(times[True]),
                     statistics.median(ratios), min(ratios), max(ratios)))
        print(f"{route} budget {budget}: fp32 {rows[-1][3]:.2f} s, bf16 {rows[-1][4]:.2f} s, "
              f"fp32/bf16 {rows[-1][5]:.2f}x", flush=True)
        if a.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step(route, budget, True)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

    table = ["| route | micro-batch tokens | micro-batches | fp32 step (s) | bf16 step (s) | fp32 ÷ bf16 (range) |",
             "|---|---|---|---|---|---|"]
    for route, budget, n, f, b, ratio, lo, hi in rows:
        budget = (f"auto: {budget[0]:,} (fp32) / {budget[1]:,} (bf16)" if isinstance(budget, tuple)
                  else f"{budget:,}" if budget else "no cap")
        table.append(f"| {route} | {budget} | {n} | {f:.2f} | {b:.2f} | **{ratio:.2f}×** ({lo:.2f}–{hi:.2f}) |")
    text = "\n".join(table)
    print(text)
    if a.write:
        cmd = "python benchmarks/precision_step.py " + " ".join(sys.argv[1:])
        write_section(
            f"## bf16 vs fp32 training step on this CPU (issue 33) — {datetime.date.today()}\n\n"
            f"Command: `{cmd}`. Machine: {platform.machine()}, {torch.get_num_threads()} threads, CPU flags: "
            f"{cpu_flags()} (`torch.cpu._is_avx512_bf16_supported()` = {torch.cpu._is_avx512_bf16_supported()}); "
            f"torch {torch.__version__}; allocator: {allocator}. Model `{a.model}`, {len(items)} HH helpful-base "
            f"pairs ({tokens} tokens) per step, micro-batches as `rewardkit train` cuts them (at most {a.micro_batch_size} records), forward + "
            f"backward of the BT loss; bf16 = autocast with fp32 weights (`--precision bf16`). {a.repeats} "
            f"alternating repeats after a warm-up, medians.\n\n{text}\n")


if __name__ == "__main__":
    main()
