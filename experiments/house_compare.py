"""Issue 32: compare two sets of runs made by experiments/house_equivalence.sh (old code vs new).

For each variant: every safetensors file of the final checkpoint (model, ODIN's length head, a LoRA adapter)
tensor by tensor (max |Δ|), and metrics.jsonl line by line with the wall-clock fields (step_s, elapsed_s)
removed; the JSON must be equal field for field, floats to 1e-6 relative.
Usage: python experiments/house_compare.py runs/house-base runs/house-new
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from safetensors.torch import load_file

CLOCK = {"step_s", "elapsed_s"}


def close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    return a == b


def main(old: Path, new: Path) -> int:
    bad = 0
    for run in sorted(p for p in old.iterdir() if p.is_dir()):
        other = new / run.name
        if not other.exists():
            print(f"{run.name}: missing in {new}")
            bad += 1
            continue
        worst, n = 0.0, 0
        for f in sorted(run.rglob("*.safetensors")):
            rel = f.relative_to(run)
            if "checkpoints" in rel.parts:
                continue
            a, b = load_file(f), load_file(other / rel)
            if a.keys() != b.keys():
                print(f"{run.name}/{rel}: tensor names differ")
                bad += 1
                continue
            for k in a:
                worst = max(worst, (a[k].double() - b[k].double()).abs().max().item())
                n += 1
        lines = [[{k: v for k, v in json.loads(x).items() if k not in CLOCK} for x in (d / "metrics.jsonl").open()]
                 for d in (run, other)]
        same = len(lines[0]) == len(lines[1]) and all(close(x, y) for x, y in zip(*lines))
        ok = worst <= 1e-6 and same and n > 0
        bad += not ok
        print(f"{run.name}: {n} tensors, max |Δw| {worst:.3g}; metrics.jsonl {len(lines[0])} vs {len(lines[1])} lines, "
              f"{'equal' if same else 'DIFFERENT'} → {'same' if ok else 'NOT THE SAME'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
