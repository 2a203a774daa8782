"""Readers: preference data from files or hub ids → ``PreferenceExample`` records.

Accepted records (one per line / row / array element):

* ``{"chosen", "rejected"}`` with the prompt inside both. Anthropic HH transcripts are parsed
  into chat turns and split where the turns diverge; other text is split at the longest shared
  prefix, backed off to a whitespace boundary.
* ``{"prompt", "chosen", "rejected"}``, each either text or chat messages ``[{"role", "content"}]``.
  A ``chosen`` that repeats the prompt (full conversation) has the prompt removed.
* optional ``margin`` (number), ``subset`` (string), ``score_chosen`` / ``score_rejected``
  (at the top level or inside ``metadata``).

Files: ``.jsonl``, ``.jsonl.gz``, ``.json`` (an array, or JSON lines), ``.parquet``, ``.csv``
(message lists in CSV cells are JSON strings), a folder written by ``datasets``' ``save_to_disk``.
Anything else that is not a local path is taken as a Hugging Face dataset id. A spec may end in a Python slice over records, e.g.
``data.jsonl.gz[:1000]`` or ``data.jsonl.gz[-500:]``.

A bad record raises ``DataError`` naming file and line and what to do; with ``skip_bad=True`` it
is skipped, counted by reason and listed in the ``ReadReport``. Nothing is dropped silently.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardkit.data.hh import looks_like_hh, parse_hh
from rewardkit.data.record import Message, PreferenceExample, as_messages

_SLICE = re.compile(r"^(?P<path>.+?)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")
_ROLES = {"system", "user", "assistant", "tool"}
SKIP_HINT = "Fix the record, or pass --skip-bad-records to skip such records (they are counted and reported)."


class DataError(ValueError):
    """Bad input data; the message names the file and line and says what to do."""


class RecordError(ValueError):
    """One record is bad; ``reason`` is a short category used for skip counts."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass
class ReadReport:
    source: str
    records: int = 0
    loaded: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_at: list[str] = field(default_factory=list)  # first few locations, for the user to look at

    def summary(self) -> str:
        line = f"{self.source}: {self.loaded} of {self.records} records loaded"
        if self.skipped:
            reasons = ", ".join(f"{n} {r}" for r, n in self.skipped.most_common())
            line += f"; SKIPPED {sum(self.skipped.values())} ({reasons}; e.g. {', '.join(self.skipped_at[:3])})"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "records": self.records,
            "loaded": self.loaded,
            "skipped": dict(self.skipped),
            "skipped_at": self.skipped_at,
        }


def read_preferences(
    spec: str, *, skip_bad: bool = False, split: str = "train"
) -> tuple[list[PreferenceExample], ReadReport]:
    """Read preference examples from a file path or hub id (optionally sliced, e.g. ``f.jsonl[:100]``)."""
    path_str, window = _split_slice(spec)
    report = ReadReport(source=spec)
    examples: list[PreferenceExample] = []
    raw = list(_raw_records(path_str, split))
    if window is not None:
        raw = raw[window]
    for location, obj in raw:
        report.records += 1
        try:
            if isinstance(obj, RecordError):
                raise obj
            examples.append(parse_record(obj, location))
        except RecordError as e:
            if not skip_bad:
                raise DataError(f"{location}: {e} {SKIP_HINT}") from None
            report.skipped[e.reason] += 1
            if len(report.skipped_at) < 20:
                report.skipped_at.append(location)
    report.loaded = len(examples)
    if not examples:
        raise DataError(f"{spec}: no usable preference records ({report.summary()})")
    return examples, report


def _split_slice(spec: str) -> tuple[str, slice | None]:
    m = _SLICE.match(spec)
    if m is None or Path(spec).exists():
        return spec, None
    to_int = lambda s: int(s) if s else None  # noqa: E731
    return m["path"], slice(to_int(m["start"]), to_int(m["stop"]))


# ---------------------------------------------------------------- raw records with their locations


def _raw_records(path_str: str, split: str) -> Iterator[tuple[str, Any]]:
    path = Path(path_str).expanduser()
    name = path.name.lower()
    if not path.exists():
        if re.search(r"\.(jsonl|json|gz|parquet|csv)$", name) or path_str.startswith((".", "/", "~")):
            raise DataError(f"data file not found: {path_str}")
        yield from _hub_records(path_str, split)
        return
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            yield from _saved_dataset_records(path, path_str, split)
            return
        raise DataError(f"{path_str} is a folder but not a saved Hugging Face dataset; "
                        "pass a .jsonl/.jsonl.gz/.json/.parquet/.csv file")
    if name.endswith((".jsonl.gz", ".json.gz")):
        with gzip.open(path, "rb") as f:
            try:
                data = f.read()
            except (OSError, EOFError, zlib.error) as e:  # zlib.error: corrupt deflate data
                raise DataError(f"{path_str}: not a readable gzip file ({e})") from None
        if name.endswith(".json.gz"):  # like .json: an array or JSON lines
            yield from _json_records(data, path_str)
        else:
            yield from _jsonl_records(data, path_str)
    elif name.endswith(".jsonl"):
        yield from _jsonl_records(path.read_bytes(), path_str)
    elif name.endswith(".json"):
        yield from _json_records(path.read_bytes(), path_str)
    elif name.endswith(".parquet"):
        yield from _parquet_records(path, path_str)
    elif name.endswith(".csv"):
        yield from _csv_records(path.read_bytes(), path_str)
    else:
        raise DataError(f"{path_str}: unknown file type; use .jsonl, .jsonl.gz, .json, .parquet or .csv")


def _jsonl_records(data: bytes, where: str) -> Iterator[tuple[str, Any]]:
    data = data.removeprefix(codecs.BOM_UTF8)
    for lineno, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        location = f"{where}:{lineno}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield location, RecordError("non-UTF-8", f"line is not valid UTF-8 (byte {e.start}).")
            continue
        try:
            yield location, json.loads(text)
        except json.JSONDecodeError as e:
            yield location, RecordError("malformed JSON", f"malformed JSON ({e.msg} at column {e.colno}).")


def _json_records(data: bytes, where: str) -> Iterator[tuple[str, Any]]:
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{where}:{line}: file is not valid UTF-8 (byte {e.start}); re-encode it as UTF-8") from None
    stripped = text.lstrip()
    if not stripped.startswith("["):
        if stripped.startswith("{"):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:  # JSON lines saved as .json
                yield from _jsonl_records(data, where)
                return
            rows = next((v for k, v in obj.items() if isinstance(v, list) and k in ("data", "train", "examples")), None)
            if rows is None:
                yield f"{where}:1", obj
                return
            for i, row in enumerate(rows):
                yield f"{where} record {i}", row
            return
        raise DataError(f"{where}:1: expected a JSON array of records or JSON lines")
    # Walk the array element by element so that every record knows its line number.
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    line, counted = 1, 0  # line number at offset `counted`
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise DataError(f"{where}:{text.count(chr(10)) + 1}: JSON array is not closed (missing ']')")
        if text[pos] == "]":
            return
        line, counted = line + text.count("\n", counted, pos), pos
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}:{e.lineno}: malformed JSON ({e.msg}); fix the file") from None
        yield f"{where}:{line}", obj


def _parquet_records(path: Path, where: str) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{where}: not a readable parquet file ({e})") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{where} row {i}", row


def _csv_records(data: bytes, where: str) -> Iterator[tuple[str, Any]]:
    # surrogateescape keeps going past bad bytes so the bad row (not the file) is reported.
    text = data.removeprefix(codecs.BOM_UTF8).decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return
    start = reader.line_num + 1
    for values in reader:
        location = f"{where}:{start}"
        start = reader.line_num + 1  # a row may span several lines (quoted newlines)
        if not values:  # blank line
            continue
        if any(_has_surrogate(v) for v in values):
            yield location, RecordError("non-UTF-8", "row is not valid UTF-8.")
            continue
        if len(values) > len(header):
            yield location, RecordError("malformed CSV", "row has more fields than the header.")
            continue
        row = dict(zip(header, values))
        yield location, {k: _maybe_json(row.get(k)) for k in header}


def _has_surrogate(s: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in s)


def _maybe_json(value: str | None) -> Any:
    if value is None:
        return None
    s = value.strip()
    if s.startswith(("[", "{")):
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            return value
    return value


def _hub_records(dataset_id: str, split: str) -> Iterator[tuple[str, Any]]:
    try:
        import datasets

        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as e:  # offline, unknown id, gated repo, ... all reach the user the same way
        raise DataError(
            f"'{dataset_id}' is not a local file, and loading it as a Hugging Face dataset "
            f"(split '{split}') failed: {type(e).__name__}: {str(e)[:300]}. "
            "Pass a local .jsonl/.jsonl.gz/.json/.parquet/.csv path, or check the id and your network."
        ) from None
    for i, row in enumerate(ds):
        yield f"{dataset_id}[{split}] row {i}", row


def _saved_dataset_records(path: Path, where: str, split: str) -> Iterator[tuple[str, Any]]:
    """A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{where}: no split '{split}' in this dataset (it has {sorted(ds)}); pass --split")
        ds = ds[split]
    for i, row in enumerate(ds):
        yield f"{where}[{split}] row {i}", row


# ---------------------------------------------------------------- one record → PreferenceExample


def parse_record(obj: Any, location: str = "") -> PreferenceExample:
    if not isinstance(obj, dict):
        raise RecordError("not an object", f"expected a JSON object, got {type(obj).__name__}.")
    for key in ("chosen", "rejected"):
        if key not in obj or obj[key] is None:
            raise RecordError(
                f"missing '{key}'",
                f"missing field '{key}'; expected {{chosen, rejected}} or {{prompt, chosen, rejected}}"
                f" (found keys: {sorted(obj)}).",
            )
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    extras = {
        "margin": _number(obj.get("margin"), "margin"),
        "subset": obj.get("subset") if isinstance(obj.get("subset"), str) else None,
        "source": location,
    }
    sc, sr = (obj.get(k, meta.get(k)) for k in ("score_chosen", "score_rejected"))
    scores = [_number(sc, "score_chosen"), _number(sr, "score_rejected")]
    if None not in scores:
        extras["scores"] = scores

    prompt_value = obj.get("prompt")
    if prompt_value is None:
        prompt, chosen, rejected = _split_implicit(obj["chosen"], obj["rejected"])
    else:
        prompt = parse_messages(prompt_value, "prompt", "user")
        chosen = strip_prompt(parse_messages(obj["chosen"], "chosen", "assistant"), prompt)
        rejected = strip_prompt(parse_messages(obj["rejected"], "rejected", "assistant"), prompt)
        if not _nonempty(prompt):
            raise RecordError("empty 'prompt'", "field 'prompt' is empty.")
    for name, completion in (("chosen", chosen), ("rejected", rejected)):
        if not _nonempty(completion):
            raise RecordError(f"empty '{name}'", f"field '{name}' is empty (no completion text after the prompt).")
    if chosen == rejected:
        raise RecordError("chosen == rejected", "'chosen' and 'rejected' are identical; the pair carries no preference.")
    return PreferenceExample(prompt=prompt, completions=[chosen, rejected], ranking=[0, 1], **extras)


def _number(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RecordError(f"bad '{name}'", f"field '{name}' must be a number, got {value!r}.") from None


def _nonempty(messages: list[Message]) -> bool:
    return any(m["content"].strip() for m in messages)


def parse_messages(value: Any, name: str, role: str) -> list[Message]:
    if isinstance(value, str):
        if looks_like_hh(value):
            turns = parse_hh(value)
            if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"].strip() and name == "prompt":
                turns = turns[:-1]  # "…\n\nAssistant:" ending a prompt is the generation cue, not a turn
            return turns
        return as_messages(value, role)
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        for m in value:
            if m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
                raise RecordError(
                    f"bad '{name}' messages",
                    f"field '{name}': each message needs a role in {sorted(_ROLES)} and a string content, got {m!r:.120}.",
                )
        return as_messages(value, role)
    raise RecordError(f"bad '{name}'", f"field '{name}' must be text or a list of chat messages, got {type(value).__name__}.")


def strip_prompt(completion: list[Message], prompt: list[Message]) -> list[Message]:
    if len(completion) > len(prompt) and completion[: len(prompt)] == prompt:
        return completion[len(prompt) :]
    return completion


def _split_implicit(chosen: Any, rejected: Any) -> tuple[list[Message], list[Message], list[Message]]:
    """Find the prompt shared by chosen and rejected."""
    if isinstance(chosen, str) and isinstance(rejected, str) and not (looks_like_hh(chosen) and looks_like_hh(rejected)):
        if not chosen.strip() or not rejected.strip():
            name = "chosen" if not chosen.strip() else "rejected"
            raise RecordError(f"empty '{name}'", f"field '{name}' is empty.")
        n = 0
        for a, b in zip(chosen, rejected):
            if a != b:
                break
            n += 1
        # Back off so a shared first word stays in both completions (also when one text is a prefix
        # of the other, or both are identical: then the pair is reported as chosen == rejected).
        while n > 0 and not chosen[n - 1].isspace():
            n -= 1
        prompt_text = chosen[:n]
        prompt = [{"role": "user", "content": prompt_text.strip()}] if prompt_text.strip() else []
        return prompt, as_messages(chosen[n:].strip(), "assistant"), as_messages(rejected[n:].strip(), "assistant")
    c = parse_messages(chosen, "chosen", "assistant")
    r = parse_messages(rejected, "rejected", "assistant")
    n = 0
    while n < min(len(c), len(r)) and c[n] == r[n]:
        n += 1
    # The completion starts at an assistant turn: a diverging user turn belongs to both completions.
    while n > 0 and (n >= len(c) or c[n]["role"] != "assistant"):
        n -= 1
    return c[:n], c[n:], r[n:]
