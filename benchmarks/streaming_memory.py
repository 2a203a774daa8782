"""Peak memory of training on 10k vs 200k pairs: streamed (``--streaming``) and, for contrast, in memory.

    python benchmarks/streaming_memory.py --write      # results into BENCHMARKS.md

The data is HH helpful-base pairs repeated (each copy's prompt gets a distinct suffix, so no two records
are equal) into a JSON-lines file of N pairs. The model is a tiny random Llama (as in the tests, 1 block,
hidden 64) and sequences are cut to 32 tokens, 256 pairs a step, so that the run is short and what grows
with N is the data pipeline, not the model. Each run is the whole command
``python -m rewardkit.cli train ...`` under ``/usr/bin/time``; peak RSS is its maximum resident set size.
Streamed runs hold one window of ``--stream-window`` raw records (default 50 × batch size); in-memory runs
read and tokenize everything first.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import write_section  # noqa: E402


def make_data(path: Path, n: int, source: Path) -> Path:
    with gzip.open(source, "rt") as f:
        base = [json.loads(line) for line in f if line.strip()][:2000]
    with open(path, "w") as out:
        for i in range(n):
            row = base[i % len(base)]
            tag = f" (copy {i // len(base)})"
            out.write(json.dumps({"chosen": row["chosen"].replace("\n\nAssistant:", tag + "\n\nAssistant:", 1),
                                  "rejected": row["rejected"].replace("\n\nAssistant:", tag + "\n\nAssistant:", 1)})
                      + "\n")
    return path


def run(model: Path, data: Path, out: Path, name: str, streaming: bool, args: argparse.Namespace) -> dict:
    cmd = ["/usr/bin/time", "-f", "%M %e", sys.executable, "-m", "rewardkit.cli", "train", "--model", str(model),
           "--train-data", str(data), "--output-dir", str(out), "--run-name", name, "--batch-size", str(args.batch_size),
           "--micro-batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--no-eval-before",
           "--skip-bad-records", "--learning-rate", "1e-4", *(["--streaming"] if streaming else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{name} failed:\n{res.stderr[-3000:]}")
    kb, wall = res.stderr.strip().splitlines()[-1].split()
    report = json.loads((out / name / "report.json").read_text())
    return {"name": name, "pairs": report["train_data"]["loaded"], "steps": report["steps"], "streaming": streaming,
            "peak_rss_mb": int(kb) / 1024, "wall_s": float(wall)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,200000")
    p.add_argument("--memory-sizes", default="10000,50000", help="in-memory runs, for contrast")
    p.add_argument("--batch-size", type=int, default=256, help="pairs per step (large: few steps over 200k pairs)")
    p.add_argument("--max-length", type=int, default=32, help="tokens per sequence (short: cheap steps)")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/hh-rlhf/helpful-base.jsonl.gz",
                   help="HH pairs to repeat")
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    from conftest import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="rk-stream-"))
    model = build_tiny_model(tmp / "tiny", layers=args.layers)
    source = args.data
    results = []
    for streaming, sizes in ((True, args.sizes), (False, args.memory_sizes)):
        for n in (int(s) for s in sizes.split(",") if s):
            data = tmp / f"pairs-{n}.jsonl"
            if not data.exists():
                make_data(data, n, source)
            r = run(model, data, tmp / "runs", f"{'stream' if streaming else 'memory'}-{n}", streaming, args)
            print(json.dumps(r), flush=True)
            results.append(r)
    stream = [r for r in results if r["streaming"]]
    lines = ["## Streaming: peak memory vs data size (issue 15)", "",
             f"`python benchmarks/streaming_memory.py --write` — {time.strftime('%Y-%m-%d')}, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}. "
             f"Tiny random Llama ({args.layers} block(s), hidden 64), HH helpful-base pairs repeated, batch {args.batch_size}, "
             f"max length {args.max_length}, whole `rewardkit train` command under `/usr/bin/time`.", "",
             "| mode | pairs | steps | peak RSS | wall |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {'streamed' if r['streaming'] else 'in memory'} | {r['pairs']:,} | {r['steps']:,} | "
                     f"{r['peak_rss_mb']:,.0f} MB | {r['wall_s']:,.0f} s |")
    if len(stream) >= 2:
        lo, hi = stream[0], stream[-1]
        growth = hi['peak_rss_mb'] / lo['peak_rss_mb'] - 1
        lines += ["", f"Streamed: {hi['pairs'] / lo['pairs']:.0f}× the pairs, peak RSS "
                      f"{hi['peak_rss_mb'] / lo['peak_rss_mb']:.3f}× ({lo['peak_rss_mb']:,.0f} → {hi['peak_rss_mb']:,.0f} MB): "
                      f"{growth:+.1%}, the issue-15 target (within 10 %) is {'met' if abs(growth) <= 0.10 else '**not met**'}. "
                      f"A window holds 50 × {args.batch_size} = {50 * args.batch_size:,} raw records, so a run of fewer "
                      "pairs holds all of them in its one window."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
