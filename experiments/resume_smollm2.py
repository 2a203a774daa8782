"""Resume a real SmolLM2 run on HH after SIGKILL and compare it with the uninterrupted run (issue 13).

    python experiments/resume_smollm2.py [--pairs 160] [--kill-at 12] [--out runs/resume-exp]

Two runs of the same command (SmolLM2-135M-Instruct, HH helpful-base first N pairs, 8 pairs per step,
checkpoint every 5 steps): one uninterrupted; one SIGKILLed as soon as its metrics show step
``--kill-at``, then continued with ``--resume auto``. Prints both held-out accuracies (last 200
helpful-base pairs), the largest weight difference, and whether every metrics line matches.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh-rlhf" / "helpful-base.jsonl.gz"


def command(a: argparse.Namespace, name: str) -> list[str]:
    return [sys.executable, "-m", "rewardkit.cli", "train", "--model", "smollm2-135m",
            "--train-data", f"{HH}[:{a.pairs}]", "--eval-data", f"{HH}[-{a.eval_pairs}:]", "--skip-bad-records",
            "--batch-size", "8", "--learning-rate", "1e-5", "--no-eval-before", "--save-every", "5",
            "--output-dir", a.out, "--run-name", name]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=160)
    p.add_argument("--eval-pairs", type=int, default=200)
    p.add_argument("--kill-at", type=int, default=12)
    p.add_argument("--out", default="runs/resume-exp")
    a = p.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    t0 = time.time()
    subprocess.run([*command(a, "whole"), "--overwrite"], env=env, check=True)
    t1 = time.time()
    run = Path(a.out) / "killed"
    proc = subprocess.Popen([*command(a, "killed"), "--overwrite"], env=env, start_new_session=True)
    while proc.poll() is None:
        lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
        if any(line.endswith("}") and json.loads(line).get("step") == a.kill_at for line in lines):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait()
    print(f"killed at step {a.kill_at} (exit {proc.returncode})", flush=True)
    subprocess.run([*command(a, "killed"), "--resume", "auto"], env=env, check=True)
    t2 = time.time()

    from safetensors.torch import load_file

    whole, killed = Path(a.out) / "whole", run
    rw, rk = (json.loads((r / "report.json").read_text()) for r in (whole, killed))
    ww, wk = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    diff = max(float((ww[k] - wk[k]).abs().max()) for k in ww)

    def lines(r: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"}
                for x in (r / "metrics.jsonl").read_text().splitlines()]

    print(json.dumps({
        "uninterrupted_accuracy": rw["after"]["accuracy"], "resumed_accuracy": rk["after"]["accuracy"],
        "accuracy_difference": abs(rw["after"]["accuracy"] - rk["after"]["accuracy"]),
        "max_abs_weight_difference": diff, "metrics_lines_identical": lines(whole) == lines(killed),
        "resumed_from": rk["resumed_from"], "steps": rk["steps"], "eval_pairs": rw["after"]["pairs"],
        "wall_s": {"uninterrupted": round(t1 - t0, 1), "killed_and_resumed": round(t2 - t1, 1)},
    }, indent=2))


if __name__ == "__main__":
    main()
