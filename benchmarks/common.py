"""What every benchmark shares: the first valid HH records, and writing its section into BENCHMARKS.md."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def write_section(text: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace the section whose heading (up to " — ") starts ``text``, or append it; the others stay."""
    doc = path.read_text() if path.exists() else "# Benchmarks\n\nEach section: the exact command, the machine and the date.\n"
    head = text.splitlines()[0].split(" — ")[0]
    start = doc.find(head)
    if start >= 0:
        end = doc.find("\n## ", start + 1)
        doc = doc[:start] + text.rstrip() + "\n" + (doc[end:] if end >= 0 else "")
    else:
        doc = doc.rstrip() + "\n\n" + text.rstrip() + "\n"
    path.write_text(doc)


def first_valid_records(path: str | Path, n: int) -> list[tuple[str, Any]]:
    """The first ``n`` lines of a preference JSON-lines file (gzip or not) that parse, with their records:
    HH has a few malformed records (empty reply), and every configuration skips the same ones."""
    from rewardkit.data.readers import parse_record

    out = []
    with gzip.open(path, "rt") if str(path).endswith(".gz") else open(path) as f:
        for line in f:
            try:
                out.append((line, parse_record(json.loads(line))))
            except ValueError:
                continue
            if len(out) == n:
                break
    return out
