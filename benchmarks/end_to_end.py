"""Training end to end: the whole ``rewardkit train`` command vs. TRL's RewardTrainer at its best configuration.

A user on this machine would tune TRL's micro-batch, so this compares against TRL's fastest one:

1. **Sweep.** TRL (``benchmarks/trl_train.py``, a whole script: start-up to saved model) at micro-batches
   ``--trl-micro-batches`` (accumulation to ``--batch-size`` pairs per optimizer step; an item may name its
   precision, ``1r@fp32``, so the sweep covers TRL's precision too), each on the same first ``--sweep-pairs`` HH
   pairs. The fastest by training-step time (all steps, the same pairs for every
   configuration) is TRL's best; the other rows stay for context.
2. **End to end.** ``--repeats`` alternating runs (TRL's best, then rewardkit, then rewardkit first, …) of both
   whole commands on the first ``--pairs`` HH helpful-base pairs: SmolLM2-135M, each side in its precision (TRL's best, rewardkit's auto), the same lr, schedule,
   clipping and pairs per step, the same threads. Reported: wall time of the command (median; ratio = median
   of per-repeat ratios), time in optimizer steps (per-step ratio), peak RSS, and where rewardkit's time
   outside the steps goes (``report.json`` ``timings_s``).
3. **The ceiling.** Both sides train on the same pairs, so the useful work is the same: 6 × non-embedding
   parameters × unique tokens (each prompt once) + causal attention (``benchmarks/speed.py``). TRL computes its
   padded micro-batches (shapes recorded by the script); their FLOPs ÷ the useful FLOPs is the speed-up
   rewardkit would have at an equal FLOP rate: the bound on the per-step ratio.

First-step losses are compared on identical batches by ``benchmarks/speed.py`` (its ``trl_mb*`` rows); here the
two sides draw their batches with their own samplers, so their first losses are different batches'.

    python benchmarks/end_to_end.py --write      # ~45 min on 2 free cores
    python benchmarks/end_to_end.py --model <tiny> --pairs 16 --sweep-pairs 16 --repeats 1 --trl-micro-batches 2,8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import first_valid_records, write_section  # noqa: E402

from rewardkit.allocator import ENVIRONMENT_SPELLING  # noqa: E402

HH = ROOT.parent / "shared/data/hh-rlhf/helpful-base.jsonl.gz"


# What ``rewardkit train`` does to its own process on CPU, as a user gives it to any program.
RETAIN_ENV = ENVIRONMENT_SPELLING


def timed(cmd: list[str], a: argparse.Namespace, extra_env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run a whole command under /usr/bin/time: (wall s, peak RSS MB)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(extra_env or {})}
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        proc = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", t.name, *cmd], env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
        wall, rss_kb = t.read().split()[-2:]
    return float(wall), float(rss_kb) / 1024


def first_valid_lines(a: argparse.Namespace, pairs: int, work: Path) -> Path:
    """The first ``pairs`` HH lines that parse (HH has a few malformed records), as the one file both sides read."""
    out = work / f"hh-{pairs}.jsonl"
    out.write_text("".join(line for line, _ in first_valid_records(a.data, pairs)))
    return out


def sweep_item(item: str, a: argparse.Namespace) -> tuple[int, bool, bool]:
    """``--trl-micro-batches`` item ``<micro>[r][@fp32|@bf16]`` → (micro-batch, retain freed memory, bf16); without
    ``@``, the precision is ``--trl-precision``'s."""
    size, _, precision = item.partition("@")
    if not size.rstrip("r").isdigit() or precision not in ("", "fp32", "bf16"):
        raise SystemExit(f"--trl-micro-batches: {item!r} is not a micro-batch size with optional 'r' and "
                         "'@fp32'/'@bf16' (e.g. 1, 2r or 1r@fp32)")
    return int(size.rstrip("r")), size.endswith("r"), precision == "bf16" if precision else trl_bf16(a)


def run_trl(a: argparse.Namespace, micro: int, pairs: int, work: Path, retain: bool = False,
            bf16: bool = False) -> dict[str, Any]:
    """TRL at micro-batch ``micro`` (``bf16``: TRL's ``bf16=True``); ``retain``: with glibc told to keep freed memory
    (``RETAIN_ENV``), the allocator setting rewardkit applies to itself, so TRL may have it too."""
    name = f"trl-{micro}{'r' if retain else ''}-{'bf16' if bf16 else 'fp32'}"
    out, stats = work / name, work / f"{name}.json"
    data = first_valid_lines(a, pairs, work)
    wall, rss = timed([sys.executable, str(ROOT / "benchmarks/trl_train.py"), "--data", str(data), "--pairs", str(pairs),
                       "--model", a.model, "--micro-batch", str(micro), "--accumulation", str(a.batch_size // micro),
                       "--lr", str(a.lr), "--max-length", str(a.max_length), "--output", str(out),
                       "--stats", str(stats), *(["--bf16"] if bf16 else [])], a, RETAIN_ENV if retain else None)
    s = json.loads(stats.read_text())
    if s["trained_pairs"] != pairs:
        raise SystemExit(f"TRL trained on {s['trained_pairs']} of {pairs} pairs (it drops pairs over --max-length); "
                         "raise --max-length so both sides train on the same pairs")
    side = f"TRL {'bf16' if bf16 else 'fp32'}, micro-batch {micro} × accumulation {a.batch_size // micro}" + (
        f" + freed memory retained (`{' '.join(f'{k}={v}' for k, v in RETAIN_ENV.items())}`)" if retain else "")
    r = {"side": side, "micro": micro, "retain": retain, "bf16": bf16, "wall_s": wall,
         "rss_mb": rss, "steps_s": sum(s["step_s"]), "steady_step_s": statistics.median(s["step_s"][1:] or s["step_s"]),
         "n_steps": len(s["step_s"]), "first_loss": s["first_loss"], "padded_shapes": s["padded_shapes"]}
    print(f"  {r['side']}: wall {wall:.1f} s, steps {r['steps_s']:.1f} s, RSS {rss:.0f} MB", file=sys.stderr)
    return r


def trl_bf16(a: argparse.Namespace) -> bool:
    """TRL at its best includes its precision: bf16 where this CPU computes it natively (TRL's own default), else
    fp32 (bf16 is emulated there, far slower) — the same rule ``rewardkit --precision auto`` follows."""
    if a.trl_precision != "auto":
        return a.trl_precision == "bf16"
    from rewardkit.precision import Hardware

    return Hardware.of("cpu").bf16


def cpu_line() -> str:
    """The CPU's model name and its bf16-relevant flags, for the section's machine line."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    have = [f for f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2") if f in flags]
    return f"{name} (flags: {', '.join(have) or 'none of avx512_bf16/amx_bf16/avx512f/avx2'})"


def run_rewardkit(a: argparse.Namespace, pairs: int, work: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """``rewardkit train`` with its defaults (``extra``: flags the sweep varies)."""
    wall, rss = timed([sys.executable, "-m", "rewardkit.cli", "train", "--model", a.model, "--train-data",
                       str(first_valid_lines(a, pairs, work)), "--batch-size", str(a.batch_size),
                       "--learning-rate", str(a.lr), "--max-length", str(a.max_length), "--output-dir", str(work),
                       "--run-name", "rk", "--overwrite", *extra], a)
    report = json.loads((work / "rk/report.json").read_text())
    if report["train_data"]["loaded"] != pairs:
        raise SystemExit(f"rewardkit trained on {report['train_data']['loaded']} of {pairs} pairs")
    steps = [r["step_s"] for r in map(json.loads, (work / "rk/metrics.jsonl").read_text().splitlines())
             if r.get("split") == "train"]
    r = {"side": "rewardkit train " + (" ".join(extra) or "(defaults)"), "wall_s": wall, "rss_mb": rss, "steps_s": sum(steps),
         "steady_step_s": statistics.median(steps[1:] or steps), "n_steps": len(steps),
         "first_loss": report["first_train_loss"], "timings": report["timings_s"],
         "precision": (report.get("precision") or {}).get("compute", "fp32")}
    print(f"  rewardkit: wall {wall:.1f} s, steps {r['steps_s']:.1f} s, RSS {rss:.0f} MB", file=sys.stderr)
    return r


def work_ratio(a: argparse.Namespace, pairs: int, shapes: list[list[int]]) -> tuple[float, float, float]:
    """(useful FLOPs, TRL's padded FLOPs, unique tokens) of one pass over the first ``pairs`` pairs."""
    from speed import hh_pairs, padded_flops, useful_flops
    from transformers import AutoConfig

    from rewardkit.batching import Encoder
    from rewardkit.model import load_tokenizer, resolve_backbone

    source = resolve_backbone(a.model)
    config = AutoConfig.from_pretrained(source)
    groups = hh_pairs(Encoder(load_tokenizer(source), max_length=a.max_length), pairs)
    useful, unique = useful_flops(config, groups)
    padded = sum(padded_flops(config, rows, width) for rows, width in shapes)
    return useful, padded, unique


def render(a: argparse.Namespace, sweep: list[dict], best: dict, trl: list[dict], rk: list[dict], bound: tuple,
           wall: float, rk_sweep: list[dict]) -> str:
    import torch
    import transformers
    import trl as trl_pkg

    med = statistics.median
    useful, padded, unique = bound
    cmd = "python benchmarks/end_to_end.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in vars(a).items() if k != "write" and v != DEFAULTS.get(k)) + \
        (" --write" if a.write else "")
    e2e = [t["wall_s"] / r["wall_s"] for t, r in zip(trl, rk)]
    per_step = [t["steps_s"] / r["steps_s"] for t, r in zip(trl, rk)]
    steady = [t["steady_step_s"] / r["steady_step_s"] for t, r in zip(trl, rk)]
    rng = lambda xs: f" ({min(xs):.2f}–{max(xs):.2f})" if len(xs) > 1 else ""  # noqa: E731
    from rewardkit.precision import Hardware

    kind = "with" if Hardware.of("cpu").bf16 else "without"
    trl_prec = "bf16 (`bf16=True`)" if best["bf16"] else "fp32"
    swept = len({r["bf16"] for r in sweep}) > 1
    lines = [
        f"## Training end to end vs. TRL at its best, on a CPU {kind} native bf16 — {time.strftime('%Y-%m-%d')}",
        "",
        f"Command: `{cmd}` (wall time {wall / 60:.1f} min). Machine: {cpu_line()}, {platform.machine()}, "
        f"{os.cpu_count()} visible cores, {a.threads} threads on both sides; torch {torch.__version__}, transformers "
        f"{transformers.__version__}, TRL {trl_pkg.__version__} (installed for this benchmark only). Precision: TRL "
        f"{trl_prec}, " + ("the faster in the sweep below" if swept else "its best on this CPU by the rule "
        "bf16 where the CPU computes it natively, else fp32 (not swept)") + "; rewardkit its default `--precision auto` "
        f"({rk[0].get('precision', '?')}). Model `{a.model}`, max length "
        f"{a.max_length}, lr {a.lr}, cosine with 5 % warmup, clip 1.0, fused AdamW, {a.batch_size} pairs per "
        f"optimizer step, the first {a.pairs} HH helpful-base pairs. Whole commands, start-up to saved model, "
        "timed by `/usr/bin/time` (wall, peak RSS), both reading one file of the first valid pairs. TRL: "
        "`benchmarks/trl_train.py`; rewardkit: `rewardkit train "
        f"--train-data FILE --batch-size {a.batch_size} --learning-rate {a.lr}` (its defaults otherwise: "
        "micro-batches of at most 1,024 tokens in fp32 or 2,048 under bf16 and 4 records on CPU, prefix sharing + "
        "packing, freed memory retained by its allocator).",
        "",
        f"**Sweep of TRL's micro-batch** (first {a.sweep_pairs} pairs, accumulation to {a.batch_size} pairs per step, "
        "gradient checkpointing off: on CPU it only trades time for memory, e.g. 0.82× in the per-step table "
        "below):",
        "",
        "| TRL configuration | wall (s) | time in steps (s) | median step (s) | peak RSS (MB) | padded ÷ useful FLOPs |",
        "|---|---|---|---|---|---|",
    ]
    for s in sweep:
        u, p, _ = s["bound"]
        mark = " **(best)**" if s is best else ""
        lines.append(f"| {s['side']}{mark} | {s['wall_s']:.1f} | {s['steps_s']:.1f} | {s['steady_step_s']:.2f} | "
                     f"{s['rss_mb']:.0f} | {p / u:.2f}× |")
    if rk_sweep:
        lines += [
            "",
            f"**rewardkit's micro-batching on the same {a.sweep_pairs} pairs**, for context (its default is a token "
            "budget of 1,024 per micro-batch on CPU in fp32, 2,048 under bf16, at most 4 records; one run each):",
            "",
            "| rewardkit configuration | wall (s) | time in steps (s) | median step (s) | peak RSS (MB) |",
            "|---|---|---|---|---|",
        ]
        for s in rk_sweep:
            lines.append(f"| {s['side']} | {s['wall_s']:.1f} | {s['steps_s']:.1f} | {s['steady_step_s']:.2f} | "
                         f"{s['rss_mb']:.0f} |")
    lines += [
        "",
        f"**End to end**, {len(trl)} alternating repeats, {a.pairs} pairs ({rk[0]['n_steps']} steps); medians, "
        "ratios are medians of per-repeat ratios (range):",
        "",
        "| | wall (s) | time in steps (s) | median step (s) | outside steps | peak RSS (MB) | first-step loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in ((best["side"], trl), ("rewardkit train", rk)):
        outside = med([(r["wall_s"] - r["steps_s"]) / r["wall_s"] for r in runs])
        lines.append(f"| {name} | {med([r['wall_s'] for r in runs]):.1f} | {med([r['steps_s'] for r in runs]):.1f} | "
                     f"{med([r['steady_step_s'] for r in runs]):.2f} | {outside:.1%} | {med([r['rss_mb'] for r in runs]):.0f} | "
                     f"{runs[0]['first_loss']:.4f} |")
    timings = rk[len(rk) // 2]["timings"]
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()
                      if k not in ("total", "outside_steps_fraction", "steps") and v >= 0.05)
    lines += [
        "",
        f"- **End to end: {med(e2e):.2f}×**{rng(e2e)} TRL's best configuration's wall time.",
        f"- **Per step: {med(per_step):.2f}×**{rng(per_step)} (all steps' time, the same {a.pairs} pairs on both "
        f"sides); steady steps (median step, first excluded): {med(steady):.2f}×{rng(steady)}.",
        f"- **The ceiling.** TRL's padded micro-batches cost {padded / useful:.2f}× the useful FLOPs of these "
        f"{a.pairs} pairs ({unique:,} unique tokens): at an equal FLOP rate that is the most any per-step speed-up "
        f"can be. TRL ran its padded work at {padded / med([r['steps_s'] for r in trl]) / 1e9:.1f} GFLOP/s, "
        f"rewardkit the useful work at {useful / med([r['steps_s'] for r in rk]) / 1e9:.1f} GFLOP/s.",
        f"- rewardkit's time outside steps (the middle repeat's `report.json` `timings_s`): {parts}; "
        f"{timings['outside_steps_fraction']:.1%} of its wall time.",
        "",
    ]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default=str(HH))
    p.add_argument("--pairs", type=int, default=160)
    p.add_argument("--sweep-pairs", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--trl-micro-batches", default="1,2,4,8,1r,2r",
                   help="TRL micro-batches to sweep; a trailing r: with freed memory retained (RETAIN_ENV); "
                        "@fp32 or @bf16: that precision instead of --trl-precision's (e.g. 1r,1r@fp32)")
    p.add_argument("--trl-precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 where the CPU computes it natively (TRL's default), else fp32")
    p.add_argument("--rk-sweep", default="--micro-batch-tokens 1024,--micro-batch-tokens 2048,--micro-batch-tokens 0",
                   help="comma-separated rewardkit flag sets run on the sweep's pairs, for context")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    return p


DEFAULTS = vars(parser().parse_args([]))


def main() -> None:
    a = parser().parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="e2e-") as tmp:
        work = Path(tmp)
        print("sweep:", file=sys.stderr)
        sweep = []
        for item in (x.strip().lower() for x in a.trl_micro_batches.split(",") if x.strip()):
            micro, retain, bf16 = sweep_item(item, a)
            r = run_trl(a, micro, a.sweep_pairs, work, retain=retain, bf16=bf16)
            r["bound"] = work_ratio(a, a.sweep_pairs, r["padded_shapes"])
            sweep.append(r)
        rk_sweep = [run_rewardkit(a, a.sweep_pairs, work, tuple(flags.split()))
                    for flags in a.rk_sweep.split(",") if flags]
        best = min(sweep, key=lambda r: r["steps_s"])
        print(f"TRL's best: {best['side']}", file=sys.stderr)
        trl, rk = [], []
        for i in range(a.repeats):
            print(f"repeat {i + 1}:", file=sys.stderr)
            if i % 2 == 0:
                trl.append(run_trl(a, best["micro"], a.pairs, work, best["retain"], best["bf16"]))
                rk.append(run_rewardkit(a, a.pairs, work))
            else:
                rk.append(run_rewardkit(a, a.pairs, work))
                trl.append(run_trl(a, best["micro"], a.pairs, work, best["retain"], best["bf16"]))
        bound = work_ratio(a, a.pairs, trl[0]["padded_shapes"])
    text = render(a, sweep, best, trl, rk, bound, time.time() - started, rk_sweep)
    print(text)
    if a.write:
        write_section(text)


if __name__ == "__main__":
    main()
