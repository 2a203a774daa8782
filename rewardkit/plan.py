"""Which records each optimizer step trains on: the whole data in memory, or a stream read a window at a time.

Both plans yield, per optimizer step, a :class:`Step`: this process's encoded records and a stand-in for a
process left without records (it runs a zero-weight pass so gradient sync lines up). The global record count
of a step is the sum over processes, which the training loop reduces.

* **In memory** (:func:`memory_steps`): every record is read and tokenized first; batches come from
  :func:`make_batches` (length-grouped, shuffled); each global batch is split across processes.
* **Streamed** (``--streaming``, :func:`stream_steps`): records are read, validated and tokenized lazily,
  ``stream_window`` raw records at a time (a multiple of the batch size); each window is cut into batches by
  the same :func:`make_batches` with the same generator, so with a window at least as large as the data the
  steps are exactly the in-memory ones (tested). Raw record i of the stream belongs to process i mod P; only
  its owner parses it into an example, validates and tokenizes it. Every process cuts its share of a window
  into the same number of steps (from the window's raw size, which all know), so the processes stay in step
  even when bad records are skipped unevenly. Memory holds one window, never the data.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rewardkit.data import DataError, PreferenceExample

if TYPE_CHECKING:
    import torch


@dataclass
class Item:
    """One training record, ready for the loss: the example, its token sequences (one per completion), its
    preference pairs, its loss weight and its completions' lengths in characters."""

    example: PreferenceExample
    ids: list[list[int]]
    pairs: list[tuple[int, int, bool]]
    weight: float = 1.0
    char_lengths: tuple[int, ...] = ()
    reads: list[list[int]] | None = None  # process reward models: per sequence, its step-end offsets

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.ids)


@dataclass
class Step:
    """One optimizer step: the epoch, this process's records, and a record to run at zero weight when a
    process has none (it must still take part in the gradient all-reduce)."""

    epoch: int
    items: list[Item]
    stand_in: Item


def make_batches(lengths: list[int], batch_size: int, rng: np.random.Generator, group_by_length: bool) -> list[list[int]]:
    """Shuffled batches of indices. With ``group_by_length``, indices are sorted by length inside random
    windows of 50 batches (as transformers' ``group_by_length``) and the batch order is shuffled."""
    order = rng.permutation(len(lengths))
    if group_by_length:
        window = 50 * batch_size
        order = np.concatenate([sorted(order[i:i + window], key=lambda j: -lengths[j]) for i in range(0, len(order), window)])
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def memory_steps(items: list[Item], batch_size: int, rng: np.random.Generator, group_by_length: bool,
                 rank: int, world: int, epochs: int, max_steps: int = 0) -> Iterator[Step]:
    """The in-memory plan: ``epochs`` passes (or exactly ``max_steps`` steps, passing over the data as often as
    needed), each global batch split across processes as ``np.array_split`` does."""
    lengths = [it.tokens for it in items]
    step = 0
    for epoch in (itertools.count() if max_steps else range(epochs)):  # max_steps ends it
        for batch in make_batches(lengths, batch_size, rng, group_by_length):
            if max_steps and step >= max_steps:
                return
            shard = np.array_split(np.asarray(batch), world)[rank].tolist()
            yield Step(epoch, [items[i] for i in shard], items[batch[0]])
            step += 1


def stream_steps(read: Callable[[Callable[[int], bool]], Iterable[tuple[int, PreferenceExample | None]]],
                 to_items: Callable[[list[PreferenceExample]], list[Item]], *, batch_size: int, window: int,
                 rng: np.random.Generator, group_by_length: bool, rank: int, world: int, epochs: int,
                 stand_in: Item, max_steps: int = 0) -> Iterator[Step]:
    """The streamed plan. ``read(keep)`` opens the stream afresh and yields ``(raw position, example or None)``
    for **every** raw record (None: not this process's, or skipped as bad), so all processes count windows
    alike; ``to_items`` encodes a window's examples. ``window`` raw records (a multiple of ``batch_size``) are
    held at a time. ``stand_in`` is what a process with no record of its own in a step runs at zero weight
    (any encoded record: the stream may not have given this process a valid one yet)."""
    if window % batch_size:
        raise ValueError("the stream window must be a multiple of the batch size")
    step = 0
    for epoch in (itertools.count() if max_steps else range(epochs)):  # max_steps ends it
        seen = 0
        for raw_count, examples in _windows(read(lambda i: i % world == rank), window):
            seen += raw_count
            items = to_items(examples)
            n_steps = math.ceil(raw_count / batch_size)  # from the raw count: the same on every process
            batches = (make_batches([it.tokens for it in items], math.ceil(len(items) / n_steps), rng, group_by_length)
                       if items else [])
            batches += [[]] * (n_steps - len(batches))
            for batch in batches:
                if max_steps and step >= max_steps:
                    return
                yield Step(epoch, [items[i] for i in batch], stand_in)
                step += 1
            # Let go of this window before the next is read and tokenized, so two windows never coexist.
            items = batches = examples = None
        if not seen:
            raise DataError("the training data is empty: no record to stream")


def _windows(stream: Iterable[tuple[int, PreferenceExample | None]], window: int
             ) -> Iterator[tuple[int, list[PreferenceExample]]]:
    """(raw records in the window, this process's examples in it) for consecutive windows of ``window`` raw
    records; every raw position is seen by every process, so all cut the same windows."""
    buffer: list[PreferenceExample] = []
    count, last = 0, -1
    for position, example in stream:
        if position != last:  # one raw record may hold several examples (an Open Assistant tree)
            if count == window:
                yield count, buffer
                buffer, count = [], 0
            count, last = count + 1, position
        if example is not None:
            buffer.append(example)
    if count:
        yield count, buffer


def micro_batches(items: list[Item], max_records: int, max_tokens: int = 0) -> list[list[Item]]:
    """A step's records on one process cut into micro-batches, in order: at most ``max_records`` records and, when
    ``max_tokens`` > 0, at most ``max_tokens`` tokens (their sequences' lengths summed) each; a record longer than
    the budget on its own is a micro-batch alone.

    A token budget keeps a micro-batch's activation memory about constant whatever the records' lengths (a count
    of records does not: four long HH pairs hold ~5x the tokens of four short ones)."""
    out: list[list[Item]] = []
    current: list[Item] = []
    tokens = 0
    for it in items:
        if current and (len(current) == max_records or (max_tokens and tokens + it.tokens > max_tokens)):
            out.append(current)
            current, tokens = [], 0
        current.append(it)
        tokens += it.tokens
    if current:
        out.append(current)
    return out


def micro_batch_token_budget(setting: int, device: torch.device, bf16: bool = False) -> int:
    """Tokens per training micro-batch (``--micro-batch-tokens``); 0 means no cap (``--micro-batch-size`` decides).

    Auto (-1) on CPU is 1,024 in fp32 and 2,048 under bf16 autocast. fp32: ``python benchmarks/end_to_end.py``
    (SmolLM2-135M, 48 HH pairs, 8 a step, the 2-core machine of BENCHMARKS.md, one run each): time in steps
    49.5 / 46.7 / 44.6 / 48.7 s and peak RSS 3.96 / 4.12 / 5.36 / 7.18 GB for budgets of 512 / 1,024 / 2,048
    tokens / none (4 records); 1,024 is as fast as any (within this machine's noise) at two thirds of the memory
    of 2,048. bf16 (``python benchmarks/precision_step.py``, AMD EPYC with avx512_bf16, 3 alternating repeats): a
    step of 8 pairs took 8.50 / 7.82 / 8.16 s at 1,024 / 2,048 / no cap — each micro-batch recasts every weight
    to bf16 and its gradient back, and zero-fills the embedding's gradient, so fewer, larger passes pay off — and
    ``benchmarks/end_to_end.py`` on 48 pairs: 58.1 / 50.6 / 49.5 s in steps at 4.3 / 5.3 / 6.7 GB peak RSS. 2,048
    buys that ~13 % for about 1 GB, the trade fp32 declined at 5 %; fp32 keeps 1,024 until its own end-to-end run
    says otherwise (its step alone was also faster at 2,048 in one bf16-CPU session, BENCHMARKS.md). ``--precision
    bf16`` on a CPU without native bf16 gets 2,048 too (not measured there: slow either way). On a GPU, larger
    passes fill the device: no cap."""
    if setting >= 0:
        return setting
    if device.type != "cpu":
        return 0
    return 2048 if bf16 else 1024
