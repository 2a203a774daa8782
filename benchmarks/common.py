"""What every benchmark shares: the first valid HH records, writing its section into BENCHMARKS.md, and the HTTP
load clients of the serving benchmarks."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
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


def peak_rss_mb(pid: int) -> float:
    """A live process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def http_load(url: str, route: str, per_client: list[list[dict[str, Any]]], items: str,
                    timeout: float) -> dict[str, Any]:
    """per_client[c]: the bodies client c POSTs to ``route``, one after another on its own connection pool; all
    clients at once. A request counts when it answers 200 with one reward per element of ``body[items]``; anything
    else is counted under its status or exception name. Returns wall time, answered items, errors, p50/p99."""
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    answered = 0

    async def client(mine: list[dict[str, Any]]) -> None:
        nonlocal answered
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:
            for body in mine:
                t = time.perf_counter()
                try:
                    r = await http.post(route, json=body)
                    ok = r.status_code == 200 and len(r.json()["rewards"]) == len(body[items])
                    key = None if ok else f"HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    key = type(e).__name__
                if key:
                    errors[key] = errors.get(key, 0) + 1
                else:
                    latencies.append(time.perf_counter() - t)
                    answered += len(body[items])

    t0 = time.perf_counter()
    await asyncio.gather(*(client(m) for m in per_client))
    wall = time.perf_counter() - t0
    lat = sorted(latencies)

    def q(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    return {"wall_s": wall, "requests": sum(map(len, per_client)), "answered": len(lat), "errors": errors,
            "items": answered, "p50_s": q(0.50), "p99_s": q(0.99)}
