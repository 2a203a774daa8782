"""What every benchmark shares: writing its section into BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

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
