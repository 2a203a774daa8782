"""Readers: preference data from files or hub ids → ``PreferenceExample`` records.

Accepted records (one per line / row / array element; the shape is detected per record):

* ``{"chosen", "rejected"}`` with the prompt inside both. Anthropic HH transcripts are parsed
  into chat turns and split where the turns diverge; other text is split at the longest shared
  prefix, backed off to a whitespace boundary.
* ``{"prompt", "chosen", "rejected"}``, each either text or chat messages ``[{"role", "content"}]``.
  A ``chosen`` that repeats the prompt (full conversation) has the prompt removed.
  Optional: ``margin`` (a number, or a Likert category such as "better", mapped to a number by the
  ``likert`` table, default Llama 2 "large": see ``rewardkit.data.margins``), ``subset`` (string),
  ``score_chosen`` / ``score_rejected`` (at the top level or inside ``metadata``, as in
  UltraFeedback), ``tie: true`` (the two are equally good: ``ties=[[0, 1]]``).
  Equal ``score_chosen`` and ``score_rejected`` also make a tie (the record is kept, counted in
  the report's notes): equal ratings carry no preference, so reading them as "chosen wins" would
  invent one. ``score_chosen < score_rejected`` keeps the explicit label (chosen stays chosen) and
  is counted in the notes; margins from such scores are refused by ``apply_margins``.
* Rankings: ``{"prompt", "completions": [text or messages, …], "ranks": [...]}`` (0 = best,
  distinct integers; ties cannot be written as equal ranks: use ``scores``) or ``"scores": [...]``
  (higher = better, stored in ``scores``; equal scores form a tie group in ``ties``). With both,
  ranks give the order and scores must not contradict it. K ≥ 2 completions, all distinct.
* Open Assistant message trees (``{"message_tree_id", "prompt": {message, "replies": [...]}}`` or a
  bare root message): every prompter message with ≥ 2 ranked assistant replies is one K-wise
  ranking (``rank`` 0 = best); the prompt is the conversation from the root down to that message
  (prompter → user, assistant → assistant); source is ``file:line node <message_id>``. Replies
  without a rank (and deleted ones) are not part of any ranking; they are counted in the notes.
  ``subset = "oasst"``.
  One line gives many records; ``ReadReport.records`` counts rankings (and bad trees).
* PandaLM (``{"instruction", "input", "response1", "response2", "annotator1", …}``, votes 0 = tie,
  1, 2): a pair with prompt = instruction and input joined by a blank line (blank ones left out),
  one user turn; completions
  ``[response1, response2]`` in that order, ranking by the majority vote. A majority for 0, or no
  majority (1/2/0), is a tie (``ties=[[0, 1]]``). ``scores = [votes for response1, votes for
  response2]``, so the tie votes are ``annotators − sum(scores)``; ``subset = "pandalm"``. Empty
  responses are kept (annotators judged them; they usually lose) and responses stored as JSON
  booleans (``true`` for the text "True") are read as text; both are counted in the notes.

Files: ``.jsonl``, ``.jsonl.gz``, ``.json`` (an array, or JSON lines), ``.parquet``, ``.csv``
(message lists in CSV cells are JSON strings), a folder written by ``datasets``' ``save_to_disk``.
Anything else that is not a local path is taken as a Hugging Face dataset id. A spec may end in a
Python slice over records (lines / rows / trees, before trees are expanded), e.g.
``data.jsonl.gz[:1000]`` or ``data.jsonl.gz[-500:]``.

Several sources are one spec joined by commas, read in order, each with its own slice:
``a.jsonl[:-500],b.jsonl.gz``. A source may carry an aspect tag, ``helpful=a.jsonl``: its records get
that ``aspect`` unless they have an ``aspect`` field of their own (aspect-conditioned reward models,
``rewardkit.aspects``). A spec that exists as a path as a whole is one source, commas or ``=`` and all.

A bad record raises ``DataError`` naming file and line and what to do; with ``skip_bad=True`` it
is skipped, counted by reason and listed in the ``ReadReport``. Nothing is dropped silently:
facts about kept records (ties, unranked replies left out, …) are counted in ``ReadReport.notes``
and the number of completions per record in ``ReadReport.k_counts``.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import itertools
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardkit.data.hh import has_hh_turns, parse_hh
from rewardkit.data.margins import likert_margin, parse_likert
from rewardkit.data.record import Message, PreferenceExample, as_messages
from rewardkit.errors import DataError, RecordError

_ASPECT_TAG = re.compile(r"^(?P<aspect>[A-Za-z_][\w-]*)=(?P<spec>.+)$")
_SLICE = re.compile(r"^(?P<path>.+?)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")
_ROLES = {"system", "user", "assistant", "tool"}
SKIP_HINT = "Fix the record, or pass --skip-bad-records to skip such records (they are counted and reported)."


@dataclass
class ReadReport:
    source: str
    records: int = 0
    loaded: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_at: list[str] = field(default_factory=list)  # first few locations, for the user to look at
    notes: Counter = field(default_factory=Counter)  # facts about kept records, e.g. "pairs with equal scores read as ties"
    k_counts: Counter = field(default_factory=Counter)  # completions per loaded record → number of records

    def summary(self) -> str:
        line = f"{self.source}: {self.loaded} of {self.records} records loaded"
        if set(self.k_counts) - {2}:
            line += "; K: " + ", ".join(f"{n}×{k}" for k, n in sorted(self.k_counts.items()))
        if self.notes:
            line += "; " + ", ".join(f"{n} {what}" for what, n in self.notes.most_common())
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
            "notes": dict(self.notes),
            "k_counts": {str(k): n for k, n in sorted(self.k_counts.items())},
        }


def merge_reports(reports: list[ReadReport]) -> ReadReport:
    """One report from the reports of processes that each read their shard of the same data."""
    out = ReadReport(source=reports[0].source)
    for r in reports:
        out.records += r.records
        out.loaded += r.loaded
        out.skipped.update(r.skipped)
        out.notes.update(r.notes)
        out.k_counts.update(r.k_counts)
        out.skipped_at += r.skipped_at
    # In reading order again ("file:12" before "file:103"), the first 20 kept as a single reader keeps them.
    out.skipped_at = sorted(out.skipped_at, key=lambda loc: [int(t) if t.isdigit() else t
                                                             for t in re.split(r"(\d+)", loc)])[:20]
    return out


def read_preferences(
    spec: str,
    *,
    skip_bad: bool = False,
    split: str = "train",
    likert: str | Mapping[str, float] | None = None,
    split_flag: str = "--split",
) -> tuple[list[PreferenceExample], ReadReport]:
    """Read preference examples from a file path or hub id (optionally sliced, e.g. ``f.jsonl[:100]``).

    ``split`` applies to hub ids and saved datasets: a name, or comma-separated names tried in order
    (``"test,validation"``); ``split_flag`` is the option named in the error when none exists.

    ``likert`` maps Likert ``margin`` categories to numbers (a preset name, ``"category=value,…"``
    or a mapping; default Llama 2 "large", see ``rewardkit.data.margins.parse_likert``).
    """
    report = ReadReport(source=spec)
    examples = list(iter_preferences(spec, report, skip_bad=skip_bad, split=split, likert=likert,
                                     split_flag=split_flag))
    if not examples:
        raise DataError(f"{spec}: no usable preference records ({report.summary()})")
    return examples, report


def iter_preferences(
    spec: str,
    report: ReadReport,
    *,
    skip_bad: bool = False,
    split: str = "train",
    likert: str | Mapping[str, float] | None = None,
    split_flag: str = "--split",
    streaming: bool = False,
    keep: Callable[[int], bool] | None = None,
    positions: bool = False,
) -> Iterator[Any]:
    """The examples of ``spec`` one at a time, counting into ``report`` as they pass (see ``read_preferences``).

    Files are read line by line (JSON lines, CSV, parquet row groups; a ``.json`` array is read whole), saved
    datasets are memory-mapped, and with ``streaming`` a hub dataset is streamed, so memory does not grow with
    the data. ``keep(i)`` selects raw records by position before they are validated (a process's shard); the
    others are not parsed into examples and are not counted. With ``positions``, every raw record yields
    ``(position, example)``, the example None when the record is not kept or is skipped, so that processes
    reading the same stream agree on where they are. A negative slice needs the whole data first and is
    refused with ``streaming``.
    """
    table = parse_likert(likert)

    def parse(obj: Any, location: str) -> list[tuple[str, PreferenceExample | RecordError]]:
        return parse_records(obj, location, likert=table, notes=report.notes)

    def kept(unit: PreferenceExample, aspect: str | None) -> None:
        if aspect and unit.aspect is None:
            unit.aspect = aspect
        report.k_counts[len(unit.completions)] += 1

    yield from iter_records(spec, report, parse, PreferenceExample, kept, split=split, split_flag=split_flag,
                            skip_bad=skip_bad, streaming=streaming, keep=keep, positions=positions, tagged=True)


def iter_records(
    spec: str,
    report: ReadReport,
    parse: Callable[[Any, str], list[tuple[str, Any]]],
    kind: type,
    on_kept: Callable[..., None],
    *,
    skip_bad: bool = False,
    split: str = "train",
    split_flag: str = "--split",
    streaming: bool = False,
    keep: Callable[[int], bool] | None = None,
    positions: bool = False,
    tagged: bool = False,
) -> Iterator[Any]:
    """The one reading loop behind every record type (preferences here, verifier records in ``rewardkit.data.steps``):
    raw records of ``spec``'s sources → ``parse(obj, location)`` → units of type ``kind`` (kept, counted, passed to
    ``on_kept``) or ``RecordError`` (raised with file:line, or skipped and counted with ``skip_bad``). ``keep`` and
    ``positions`` as in :func:`iter_preferences`; with ``tagged`` ``on_kept`` also gets the source's ``name=`` tag."""
    raw = itertools.chain.from_iterable(
        ((location, obj, aspect) for location, obj in sliced_records(source, split, split_flag, streaming))
        for aspect, source in split_sources(spec))
    for position, (location, obj, aspect) in enumerate(raw):
        if keep is not None and not keep(position):
            if positions:
                yield position, None
            continue
        units = [(location, obj)] if isinstance(obj, RecordError) else parse(obj, location)
        kept = False
        for unit_location, unit in units:
            report.records += 1
            if isinstance(unit, kind):
                on_kept(unit, aspect) if tagged else on_kept(unit)
                report.loaded += 1
                kept = True
                yield (position, unit) if positions else unit
                continue
            if not skip_bad:
                raise DataError(f"{unit_location}: {unit} {SKIP_HINT}")
            report.skipped[unit.reason] += 1
            if len(report.skipped_at) < 20:
                report.skipped_at.append(unit_location)
        if positions and not kept:
            yield position, None


def split_sources(spec: str) -> list[tuple[str | None, str]]:
    """``spec`` → its sources as (aspect tag or None, source spec): comma-joined, each optionally ``name=``-tagged
    (module docstring). A spec that exists as a path as a whole is one untagged source."""
    if Path(spec).expanduser().exists():
        return [(None, spec)]
    out = []
    for part in spec.split(","):
        part = part.strip()
        m = _ASPECT_TAG.match(part)
        tagged = m is not None and not Path(part).expanduser().exists()
        out.append((m["aspect"], m["spec"].strip()) if tagged else (None, part))
        if not out[-1][1]:
            raise DataError(f"{spec}: an empty data source; join sources with commas, e.g. 'a.jsonl,b.jsonl[:100]'")
    return out


def sliced_records(spec: str, split: str, split_flag: str, streaming: bool) -> Iterable[tuple[str, Any]]:
    """One source's raw records, its slice applied."""
    path_str, window = _split_slice(spec)
    raw: Iterable[tuple[str, Any]] = _raw_records(path_str, split, split_flag, streaming=streaming)
    if window is None:
        return raw
    if (window.start or 0) < 0 or (window.stop or 0) < 0:
        if streaming:
            raise DataError(f"{spec}: a slice from the end needs the whole data in memory; with --streaming "
                            "give a slice from the start ([:N], [M:N])")
        return list(raw)[window]
    return itertools.islice(raw, window.start, window.stop)


def count_raw_records(spec: str, split: str = "train") -> int | None:
    """How many raw records ``spec`` holds (one cheap pass, nothing parsed into examples), or None for a hub
    dataset, whose length a stream does not know. Used to size a streamed run's schedule."""
    total = 0
    for _, source in split_sources(spec):
        path_str, window = _split_slice(source)
        if not Path(path_str).expanduser().exists():
            return None
        n = sum(1 for _ in _raw_records(path_str, split, "--split"))
        total += len(range(n)[window]) if window is not None else n
    return total


def _split_slice(spec: str) -> tuple[str, slice | None]:
    m = _SLICE.match(spec)
    if m is None or Path(spec).exists():
        return spec, None
    to_int = lambda s: int(s) if s else None  # noqa: E731
    return m["path"], slice(to_int(m["start"]), to_int(m["stop"]))


# ---------------------------------------------------------------- raw records with their locations


def _raw_records(path_str: str, split: str, flag: str = "--split", streaming: bool = False
                 ) -> Iterator[tuple[str, Any]]:
    path = Path(path_str).expanduser()
    name = path.name.lower()
    if not path.exists():
        if re.search(r"\.(jsonl|json|gz|parquet|csv)$", name) or path_str.startswith((".", "/", "~")):
            raise DataError(f"data file not found: {path_str}")
        yield from _hub_records(path_str, split, flag, streaming)
        return
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            yield from _saved_dataset_records(path, path_str, split, flag)
            return
        raise DataError(f"{path_str} is a folder but not a saved Hugging Face dataset; "
                        "pass a .jsonl/.jsonl.gz/.json/.parquet/.csv file")
    if name.endswith(".json.gz"):  # like .json: an array or JSON lines, read whole
        with gzip.open(path, "rb") as f:
            try:
                data = f.read()
            except (OSError, EOFError, zlib.error) as e:  # zlib.error: corrupt deflate data
                raise DataError(f"{path_str}: not a readable gzip file ({e})") from None
        yield from _json_records(data, path_str)
    elif name.endswith(".jsonl.gz"):
        with gzip.open(path, "rb") as f:
            yield from _jsonl_records(_gzip_lines(f, path_str), path_str)
    elif name.endswith(".jsonl"):
        with open(path, "rb") as f:
            yield from _jsonl_records(f, path_str)
    elif name.endswith(".json"):
        yield from _json_records(path.read_bytes(), path_str)
    elif name.endswith(".parquet"):
        yield from _parquet_records(path, path_str)
    elif name.endswith(".csv"):
        with open(path, "rb") as f:
            yield from _csv_records(f, path_str)
    else:
        raise DataError(f"{path_str}: unknown file type; use .jsonl, .jsonl.gz, .json, .parquet or .csv")


def _gzip_lines(f: Any, where: str) -> Iterator[bytes]:
    try:
        yield from f
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: corrupt deflate data
        raise DataError(f"{where}: not a readable gzip file ({e})") from None


def _jsonl_records(lines: Iterable[bytes], where: str) -> Iterator[tuple[str, Any]]:
    """JSON lines from any iterable of byte lines (a file read lazily, or ``data.split(b"\\n")``)."""
    for lineno, line in enumerate(lines, start=1):
        if lineno == 1:
            line = line.removeprefix(codecs.BOM_UTF8)
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
                yield from _jsonl_records(data.split(b"\n"), where)
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
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)  # a row group's batch at a time
        i = 0
        for batch in batches:
            for row in batch.to_pylist():
                yield f"{where} row {i}", row
                i += 1
    except DataError:
        raise
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{where}: not a readable parquet file ({e})") from None


def _csv_records(f: Any, where: str) -> Iterator[tuple[str, Any]]:
    # surrogateescape keeps going past bad bytes so the bad row (not the file) is reported; utf-8-sig drops a BOM.
    reader = csv.reader(io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline=""))
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


def split_candidates(split: str) -> list[str]:
    """``"test,validation"`` → ["test", "validation"]: the splits to try, in order."""
    names = [s.strip() for s in split.split(",") if s.strip()]
    if not names:
        raise DataError(f"no split named in {split!r}; give a split name such as 'train' or 'test'")
    return names


def choose_split(available: Iterable[str], split: str, where: str, flag: str) -> str:
    """The first of ``split``'s comma-separated names that the dataset has; an error listing what it has."""
    have = list(available)
    for name in split_candidates(split):
        if name in have:
            return name
    raise DataError(f"{where}: no split {' or '.join(map(repr, split_candidates(split)))} in this dataset (it has "
                    f"{sorted(have)}); pass {flag} NAME")


def _hub_records(dataset_id: str, split: str, flag: str, streaming: bool = False) -> Iterator[tuple[str, Any]]:
    try:
        import datasets

        names = split_candidates(split)
        # One candidate is loaded directly; several need the split names first (one metadata request).
        chosen = names[0] if len(names) == 1 else choose_split(
            datasets.get_dataset_split_names(dataset_id), split, dataset_id, flag)
        ds = datasets.load_dataset(dataset_id, split=chosen, streaming=streaming)
    except DataError:
        raise
    except Exception as e:  # offline, unknown id, gated repo, ... all reach the user the same way
        raise DataError(
            f"'{dataset_id}' is not a local file, and loading it as a Hugging Face dataset "
            f"(split '{split}') failed: {type(e).__name__}: {str(e)[:300]}. "
            "Pass a local .jsonl/.jsonl.gz/.json/.parquet/.csv path, or check the id and your network."
        ) from None
    for i, row in enumerate(ds):
        yield f"{dataset_id}[{chosen}] row {i}", row


def _saved_dataset_records(path: Path, where: str, split: str, flag: str) -> Iterator[tuple[str, Any]]:
    """A folder written by ``Dataset.save_to_disk`` (one split: read whole) / ``DatasetDict.save_to_disk``."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    name = "all"
    if isinstance(ds, datasets.DatasetDict):
        name = choose_split(ds.keys(), split, where, flag)
        ds = ds[name]
    for i, row in enumerate(ds):
        yield f"{where}[{name}] row {i}", row


# ---------------------------------------------------------------- one record → PreferenceExample


def parse_records(
    obj: Any,
    location: str = "",
    *,
    likert: Mapping[str, float] | None = None,
    notes: Counter | None = None,
) -> list[tuple[str, PreferenceExample | RecordError]]:
    """One raw record → its examples, each with its location; bad ones as ``RecordError``.

    An Open Assistant tree gives one entry per ranking; every other shape gives exactly one.
    """
    notes = Counter() if notes is None else notes
    if is_oa_tree(obj):
        return _oa_rankings(obj, location, notes)
    try:
        return [(location, parse_record(obj, location, likert=likert, notes=notes))]
    except RecordError as e:
        return [(location, e)]


def parse_record(
    obj: Any,
    location: str = "",
    *,
    likert: Mapping[str, float] | None = None,
    notes: Counter | None = None,
) -> PreferenceExample:
    """One record that holds one preference (a pair, a ranking or a PandaLM row) → an example.

    ``notes`` (if given) counts facts about the kept record (see ``ReadReport.notes``); they are
    added only when the record is valid.
    """
    if not isinstance(obj, dict):
        raise RecordError("not an object", f"expected a JSON object, got {type(obj).__name__}.")
    if is_oa_tree(obj):
        raise RecordError("OA tree", "an Open Assistant tree holds many rankings; read it with read_preferences.")
    found: Counter = Counter()
    if "response1" in obj and "response2" in obj:
        example = _parse_pandalm(obj, location, found)
    elif "completions" in obj:
        example = _parse_ranking(obj, location)
    else:
        example = _parse_pair(obj, location, likert, found)
    if notes is not None:
        notes.update(found)
    aspect = obj.get("aspect")
    if aspect is not None:
        if not isinstance(aspect, str) or not aspect.strip():
            raise RecordError("bad aspect", f"'aspect' must be a non-empty string (an objective name such as "
                                            f"'helpful'), got {aspect!r}.")
        example.aspect = aspect.strip()
    return example


def _record_id(obj: dict) -> str | None:
    value = obj.get("id")
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _parse_best_of_n(obj: dict, location: str) -> PreferenceExample:
    """RewardBench 2's rows: ``chosen`` and ``rejected`` are lists of replies to one ``prompt``. Every chosen reply
    beats every rejected one; several chosen are tied (Ties rows), the rejected are unordered among themselves."""
    if obj.get("prompt") is None:
        raise RecordError("missing 'prompt'", "lists of 'chosen'/'rejected' replies need a 'prompt' beside them.")
    prompt = parse_messages(obj["prompt"], "prompt", "user")
    if not _nonempty(prompt):
        raise RecordError("empty 'prompt'", "field 'prompt' is empty.")
    chosen = [as_messages(t, "assistant") for t in obj["chosen"]]
    rejected = [as_messages(t, "assistant") for t in obj["rejected"]]
    completions = chosen + rejected
    for i, completion in enumerate(completions):
        if not _nonempty(completion):
            name = f"chosen[{i}]" if i < len(chosen) else f"rejected[{i - len(chosen)}]"
            raise RecordError("empty completion", f"{name} is empty.")
    _check_distinct(completions, "chosen + rejected")
    k, c = len(completions), len(chosen)
    return PreferenceExample(
        prompt=prompt, completions=completions, ranking=list(range(k)),
        ties=[list(range(c))] if c > 1 else None,
        unordered=[list(range(c, k))] if k - c > 1 else None,
        subset=obj.get("subset") if isinstance(obj.get("subset"), str) else None, id=_record_id(obj), source=location)


def _parse_pair(obj: dict, location: str, likert: Mapping[str, float] | None, notes: Counter) -> PreferenceExample:
    if _is_text_list(obj.get("chosen")) and _is_text_list(obj.get("rejected")):
        return _parse_best_of_n(obj, location)
    for key in ("chosen", "rejected"):
        if key not in obj or obj[key] is None:
            raise RecordError(
                f"missing '{key}'",
                f"missing field '{key}'; expected {{chosen, rejected}} or {{prompt, chosen, rejected}}, "
                f"or a ranking {{prompt, completions, ranks or scores}} (found keys: {sorted(obj)}).",
            )
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    extras: dict[str, Any] = {
        "margin": _margin(obj.get("margin"), likert, notes),
        "subset": obj.get("subset") if isinstance(obj.get("subset"), str) else None,
        "id": _record_id(obj),
        "source": location,
    }
    sc, sr = (obj.get(k, meta.get(k)) for k in ("score_chosen", "score_rejected"))
    scores = [_number(sc, "score_chosen"), _number(sr, "score_rejected")]
    tie = _flag(obj.get("tie"), "tie")
    if None not in scores:
        extras["scores"] = scores
        if scores[0] == scores[1] and not tie:
            tie = True
            notes["pairs with equal scores read as ties"] += 1
        elif scores[0] < scores[1]:
            notes["pairs with score_chosen < score_rejected (label kept)"] += 1
    if tie:
        extras["ties"] = [[0, 1]]

    prompt_value = obj.get("prompt")
    if prompt_value is None:
        prompt, chosen, rejected = _split_implicit(obj["chosen"], obj["rejected"])
        notes["prompts found where chosen and rejected diverge (no 'prompt' field)"] += 1
    else:
        prompt = parse_messages(prompt_value, "prompt", "user")
        chosen = _strip_counted(parse_messages(obj["chosen"], "chosen", "assistant"), prompt, notes)
        rejected = _strip_counted(parse_messages(obj["rejected"], "rejected", "assistant"), prompt, notes)
        if not _nonempty(prompt):
            raise RecordError("empty 'prompt'", "field 'prompt' is empty.")
    for name, completion in (("chosen", chosen), ("rejected", rejected)):
        if not _nonempty(completion):
            raise RecordError(f"empty '{name}'", f"field '{name}' is empty (no completion text after the prompt).")
        _check_assistant_reply(completion, f"'{name}'")
    if chosen == rejected:
        raise RecordError("chosen == rejected", "'chosen' and 'rejected' are identical; the pair carries no preference.")
    return PreferenceExample(prompt=prompt, completions=[chosen, rejected], ranking=[0, 1], **extras)


def _margin(value: Any, likert: Mapping[str, float] | None, notes: Counter) -> float | None:
    """A number, a numeric string, or a Likert category (eq. 5, Llama 2) mapped by ``likert``."""
    if isinstance(value, str) and value.strip():
        try:
            float(value)
        except ValueError:
            table = parse_likert(None) if likert is None else likert
            try:
                margin = likert_margin(value, table)
            except ValueError as e:
                raise RecordError("bad 'margin'", f"field 'margin': {e}") from None
            notes["Likert margins mapped"] += 1
            return margin
    return _number(value, "margin")


def _flag(value: Any, name: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", ""):
        return value.strip().lower() == "true"
    raise RecordError(f"bad '{name}'", f"field '{name}' must be true or false, got {value!r}.")


def _number(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecordError(f"bad '{name}'", f"field '{name}' must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise RecordError(f"bad '{name}'", f"field '{name}' must be a finite number, got {value!r}.")
    return number


# ---------------------------------------------------------------- rankings: {"prompt", "completions", ranks|scores}


def _parse_ranking(obj: dict, location: str) -> PreferenceExample:
    if obj.get("prompt") is None:
        raise RecordError("missing 'prompt'", "a ranking needs a 'prompt' beside 'completions'.")
    prompt = parse_messages(obj["prompt"], "prompt", "user")
    if not _nonempty(prompt):
        raise RecordError("empty 'prompt'", "field 'prompt' is empty.")
    values = obj["completions"]
    if not isinstance(values, list):
        raise RecordError("bad 'completions'", f"field 'completions' must be a list, got {type(values).__name__}.")
    k = len(values)
    if k < 2:
        raise RecordError("K < 2", f"a ranking needs at least 2 completions, got {k}.")
    completions = [strip_prompt(parse_messages(v, f"completions[{i}]", "assistant"), prompt) for i, v in enumerate(values)]
    for i, completion in enumerate(completions):
        if not _nonempty(completion):
            raise RecordError("empty completion", f"completions[{i}] is empty.")
        _check_assistant_reply(completion, f"completions[{i}]")
    _check_distinct(completions, "completions")
    if "margin" in obj and obj["margin"] is not None:
        raise RecordError("bad 'margin'", "a ranking cannot carry one 'margin'; margins for rankings come from 'scores'.")
    ranks_value, scores_value = obj.get("ranks"), obj.get("scores")
    if ranks_value is None and scores_value is None:
        raise RecordError(
            "missing ranks/scores",
            f"a ranking needs 'ranks' (0 = best, one per completion) or 'scores' (higher = better) "
            f"beside its {k} completions (found keys: {sorted(obj)}).",
        )
    scores = None if scores_value is None else _score_list(scores_value, k)
    ties = None
    if ranks_value is not None:
        ranks = _rank_list(ranks_value, k)
        ranking = sorted(range(k), key=ranks.__getitem__)
        if scores is not None:
            for better, worse in zip(ranking, ranking[1:]):
                if scores[better] < scores[worse]:
                    raise RecordError(
                        "ranks and scores disagree",
                        f"'ranks' put completion {better} above {worse}, but 'scores' rate it lower "
                        f"({scores[better]:g} < {scores[worse]:g}); fix one of them or give only one.",
                    )
    else:
        assert scores is not None
        ranking = sorted(range(k), key=lambda i: -scores[i])  # stable: equal scores keep file order
        groups = [[i for i in ranking if scores[i] == s] for s in sorted(set(scores), reverse=True)]
        ties = [g for g in groups if len(g) > 1] or None
    subset = obj.get("subset") if isinstance(obj.get("subset"), str) else None
    return PreferenceExample(prompt=prompt, completions=completions, ranking=ranking, ties=ties,
                             scores=scores, subset=subset, id=_record_id(obj), source=location)


def _check_distinct(completions: list[list[Message]], what: str) -> None:
    seen: dict[str, int] = {}
    for i, completion in enumerate(completions):
        key = json.dumps(completion, sort_keys=True)
        if key in seen:
            raise RecordError("identical completions",
                              f"{what} {seen[key]} and {i} are identical; a ranking between them carries no preference.")
        seen[key] = i


def _score_list(value: Any, k: int) -> list[float]:
    if not isinstance(value, list):
        raise RecordError("bad 'scores'", f"field 'scores' must be a list of numbers, got {type(value).__name__}.")
    if len(value) != k:
        raise RecordError("length mismatch", f"'scores' has {len(value)} values for {k} completions; give one per completion.")
    out = []
    for i, v in enumerate(value):
        if v is None or v == "":
            raise RecordError("missing score", f"completion {i} has no score; give every completion a score.")
        if isinstance(v, bool):
            raise RecordError("bad 'scores'", f"scores[{i}] must be a number, got {v!r}.")
        out.append(_number(v, f"scores[{i}]"))
    return out  # type: ignore[return-value]  # _number only returns None for None/"" (handled above)


def _rank_list(value: Any, k: int) -> list[int]:
    if not isinstance(value, list):
        raise RecordError("bad 'ranks'", f"field 'ranks' must be a list of integers, got {type(value).__name__}.")
    if len(value) != k:
        raise RecordError("length mismatch", f"'ranks' has {len(value)} values for {k} completions; give one per completion.")
    ranks = []
    for i, v in enumerate(value):
        if v is None:
            raise RecordError("missing rank", f"completion {i} has no rank; give every completion a rank (0 = best).")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 0:
            raise RecordError("bad 'ranks'", f"ranks[{i}] must be an integer ≥ 0 (0 = best), got {v!r}.")
        ranks.append(int(v))
    duplicates = sorted(r for r, n in Counter(ranks).items() if n > 1)
    if duplicates:
        raise RecordError(
            "duplicate ranks",
            f"'ranks' repeats {', '.join(map(str, duplicates))}; ranks must be distinct. To express a tie "
            "(equally good completions), give 'scores' instead, with equal values for the tied ones.",
        )
    return ranks


# ---------------------------------------------------------------- PandaLM: two responses, three annotators


_VOTE_KEY = re.compile(r"^annotator\d+$")


def _parse_pandalm(obj: dict, location: str, notes: Counter) -> PreferenceExample:
    parts = []
    for key in ("instruction", "input"):
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise RecordError("bad PandaLM record", f"field '{key}' must be text, got {type(value).__name__}.")
        if value and value.strip():
            parts.append(value)
    if not parts:
        raise RecordError("empty 'prompt'", "a PandaLM record needs a non-empty 'instruction' or 'input'.")
    prompt_text = "\n\n".join(parts)  # upstream idx 466 has a blank instruction: its input is the whole task
    responses = []
    for key in ("response1", "response2"):
        value = obj[key]
        if isinstance(value, (bool, int, float)):
            # The upstream file stores some one-word answers ("True") as JSON booleans.
            notes["PandaLM responses stored as JSON booleans/numbers, read as text"] += 1
            value = str(value)
        if not isinstance(value, str):
            raise RecordError("bad PandaLM record", f"field '{key}' must be text, got {type(value).__name__}.")
        if not value.strip():
            notes["PandaLM empty responses kept"] += 1
        responses.append(value)
    if responses[0] == responses[1]:
        raise RecordError("chosen == rejected", "'response1' and 'response2' are identical; the pair carries no preference.")
    vote_keys = sorted((k for k in obj if _VOTE_KEY.match(k)), key=lambda k: int(k[len("annotator"):]))
    if not vote_keys:
        raise RecordError("bad PandaLM record", "a PandaLM record needs votes 'annotator1', 'annotator2', … (0 = tie, 1, 2).")
    votes = []
    for key in vote_keys:
        v = obj[key]
        if isinstance(v, bool) or v not in (0, 1, 2):
            raise RecordError("bad PandaLM record", f"field '{key}' must be 0 (tie), 1 or 2, got {v!r}.")
        votes.append(int(v))
    count = Counter(votes)
    majority = next((label for label, n in count.items() if n * 2 > len(votes)), 0)  # no majority → tie
    ranking, ties = ([1, 0], None) if majority == 2 else ([0, 1], [[0, 1]] if majority == 0 else None)
    if ties:
        notes["PandaLM ties (majority 0 or no majority)"] += 1
    return PreferenceExample(
        prompt=as_messages(prompt_text, "user"),
        completions=[as_messages(r, "assistant") for r in responses],
        ranking=ranking, ties=ties, scores=[float(count[1]), float(count[2])], subset="pandalm", source=location,
    )


# ---------------------------------------------------------------- Open Assistant message trees


_OA_ROLES = {"prompter": "user", "assistant": "assistant"}


def is_oa_tree(obj: Any) -> bool:
    """An Open Assistant export tree, or a bare message node with ``replies``."""
    if not isinstance(obj, dict):
        return False
    if "message_tree_id" in obj or (isinstance(obj.get("prompt"), dict) and "replies" in obj["prompt"]):
        return True
    return "replies" in obj and "role" in obj and "text" in obj


def _oa_message(node: Any, where: str) -> Message:
    if not isinstance(node, dict) or node.get("role") not in _OA_ROLES or not isinstance(node.get("text"), str):
        got = sorted(node) if isinstance(node, dict) else type(node).__name__
        raise RecordError("bad OA tree", f"{where}: each message needs 'role' (prompter or assistant) and "
                                         f"'text'; got {got}. Its subtree is left out.")
    if not isinstance(node.get("replies", []), list):
        raise RecordError("bad OA tree", f"{where}: 'replies' must be a list. Its subtree is left out.")
    return {"role": _OA_ROLES[node["role"]], "content": node["text"]}


def _oa_rankings(tree: dict, location: str, notes: Counter) -> list[tuple[str, PreferenceExample | RecordError]]:
    """Every prompter message with ≥ 2 ranked replies → one ranking; the prompt is the path to it."""
    root = tree.get("prompt") if "message_tree_id" in tree or "prompt" in tree else tree
    if not isinstance(root, dict):
        return [(location, RecordError("bad OA tree", "an Open Assistant tree needs its root message in 'prompt'."))]
    out: list[tuple[str, PreferenceExample | RecordError]] = []
    stack: list[tuple[Any, list[Message]]] = [(root, [])]
    while stack:
        node, before = stack.pop()
        node_id = node.get("message_id", "?") if isinstance(node, dict) else "?"
        where = f"{location} node {node_id}"
        try:
            path = before + [_oa_message(node, "message")]
        except RecordError as e:
            out.append((where, e))
            continue
        replies = node.get("replies", [])
        # Depth-first in file order: push children reversed so the first reply is visited first.
        stack.extend((reply, path) for reply in reversed(replies))
        ranked = [r for r in replies if isinstance(r, dict) and r.get("rank") is not None]
        if node["role"] == "assistant":
            if ranked:
                notes["OA ranked prompter replies (not a reward ranking; not used)"] += len(ranked)
            continue
        deleted = [r for r in ranked if r.get("deleted")]
        if deleted:
            notes["OA deleted replies (in no ranking)"] += len(deleted)
            ranked = [r for r in ranked if not r.get("deleted")]
        unranked = sum(1 for r in replies if isinstance(r, dict) and r.get("rank") is None)
        if unranked:
            notes["OA assistant replies without rank (in no ranking)"] += unranked
        if len(ranked) == 1:
            notes["OA messages with a single ranked reply (no ranking)"] += 1
        if len(ranked) >= 2:
            try:
                out.append((where, _oa_ranking(ranked, path, where)))
            except RecordError as e:
                out.append((where, e))
    return out


def _oa_ranking(replies: list[dict], prompt: list[Message], where: str) -> PreferenceExample:
    ranks = [r["rank"] for r in replies]
    for r in replies:
        if r.get("role") != "assistant":
            raise RecordError("bad OA tree", f"ranked reply {r.get('message_id', '?')} has role {r.get('role')!r}, not 'assistant'.")
        if isinstance(r["rank"], bool) or not isinstance(r["rank"], int):
            raise RecordError("bad 'ranks'", f"reply {r.get('message_id', '?')} has rank {r['rank']!r}; ranks are integers (0 = best).")
    duplicates = sorted(rank for rank, n in Counter(ranks).items() if n > 1)
    if duplicates:
        raise RecordError("duplicate ranks", f"replies share rank {', '.join(map(str, duplicates))}; ranks must be distinct.")
    completions = [[_oa_message(r, f"reply {r.get('message_id', '?')}")] for r in replies]
    for r, completion in zip(replies, completions):
        if not _nonempty(completion):
            raise RecordError("empty completion", f"reply {r.get('message_id', '?')} is empty.")
    _check_distinct(completions, "replies")
    return PreferenceExample(prompt=prompt, completions=completions, ranking=sorted(range(len(ranks)), key=ranks.__getitem__),
                             subset="oasst", source=where)


def _nonempty(messages: list[Message]) -> bool:
    # a turn that only calls a tool (or only reasons) says something too
    return any(m["content"].strip() or m.get("tool_calls") or m.get("reasoning_content") or m.get("reasoning")
               or m.get("thinking") for m in messages)


def _check_assistant_reply(completion: list[Message], name: str) -> None:
    """A completion is what the assistant says next: it must open with an assistant turn. A transcript with no
    Assistant turn (``"\n\nHuman: hi"`` against ``"\n\nHuman: hello"``) would otherwise train the reward
    model on user turns."""
    if completion[0]["role"] != "assistant":
        raise RecordError(
            "completion is not an assistant reply",
            f"{name} continues the conversation with a {completion[0]['role']} turn, not an assistant reply "
            f"({completion[0]['content'][:60]!r}); each completion must start with the assistant's turn "
            "(an HH transcript needs an '\n\nAssistant:' turn after the shared prompt).",
        )


def parse_messages(value: Any, name: str, role: str) -> list[Message]:
    if isinstance(value, str):
        if has_hh_turns(value):
            turns = parse_hh(value)
            if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"].strip() and name == "prompt":
                turns = turns[:-1]  # "…\n\nAssistant:" ending a prompt is the generation cue, not a turn
            return turns
        return as_messages(value, role)
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return [_normalise_message(m, name) for m in value]
    raise RecordError(f"bad '{name}'", f"field '{name}' must be text or a list of chat messages, got {type(value).__name__}.")


# Fields of OpenAI-style messages (as TRL, vLLM and tool-using agents write them) kept beside role and content and
# handed to the chat template, which renders them as the model was trained to see them (or leaves them out); others,
# such as "name", are dropped as before.
_MESSAGE_EXTRAS = ("tool_calls", "tool_call_id", "reasoning_content", "reasoning", "thinking")


def _normalise_message(m: dict, name: str) -> Message:
    """One chat message in the canonical form: ``content`` as text (an OpenAI list of content parts is joined,
    text parts only; ``None`` is "" for a turn that only calls tools or only reasons), ``developer`` as
    ``system``, and the tool and reasoning fields kept for the template."""
    role = "system" if m.get("role") == "developer" else m.get("role")
    content = m.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise RecordError(f"non-text content in '{name}'",
                                  f"field '{name}': a {kind!r} content part cannot be scored by a text model; send "
                                  "text parts ({\"type\": \"text\", \"text\": ...}) only.")
        content = "\n".join(texts)
    elif content is None and any(m.get(k) for k in _MESSAGE_EXTRAS if k != "tool_call_id"):
        content = ""
    if role not in _ROLES or not isinstance(content, str):
        raise RecordError(
            f"bad '{name}' messages",
            f"field '{name}': each message needs a role in {sorted(_ROLES)} and a content (text, a list of text "
            f"parts, or none beside tool_calls), got {m!r:.120}.",
        )
    out: Message = {"role": role, "content": content}
    for key in _MESSAGE_EXTRAS:
        if m.get(key) is not None:
            out[key] = m[key]
    return out


def strip_prompt(completion: list[Message], prompt: list[Message]) -> list[Message]:
    """The completion without a copy of the prompt in front of it: the prompt's messages repeated at its start
    (a full conversation), or — for a text prompt and a text completion — the prompt's text repeated at the start
    of the reply's text (``{"prompt": "Q", "chosen": "Q A"}``, as prompt + completion datasets often store it)."""
    if len(completion) > len(prompt) and completion[: len(prompt)] == prompt:
        return completion[len(prompt) :]
    if (len(prompt) == 1 and len(completion) == 1 and prompt[0]["role"] == "user"
            and completion[0]["role"] == "assistant"):
        question, reply = prompt[0]["content"].strip(), completion[0]["content"]
        if question and reply.startswith(question) and reply[len(question):].strip():
            return [{**completion[0], "content": reply[len(question):].strip()}]
    return completion


def _strip_counted(completion: list[Message], prompt: list[Message], notes: Counter) -> list[Message]:
    stripped = strip_prompt(completion, prompt)
    if stripped is not completion:
        notes["completions that repeated the prompt (prompt removed)"] += 1
    return stripped


def _split_implicit(chosen: Any, rejected: Any) -> tuple[list[Message], list[Message], list[Message]]:
    """Find the prompt shared by chosen and rejected."""
    if isinstance(chosen, str) and isinstance(rejected, str) and not (has_hh_turns(chosen) or has_hh_turns(rejected)):
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
