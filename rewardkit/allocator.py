"""Keep freed memory in the process for reuse (glibc, CPU training): large tensors stop paying page faults.

glibc's ``malloc`` serves every request above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and gives it
back on ``free``. A training step on a CPU allocates and frees such buffers again and again: the embedding
gradient (SmolLM2: 49,152 × 576 fp32 = 113 MB) zero-filled on every micro-batch's backward, every weight's bf16
cast and its fp32 gradient under autocast. Each fresh mapping is faulted in page by page and zeroed by the kernel
before PyTorch writes it: measured on a 2-core AMD EPYC VM, casting 106 M bf16 values to fp32 took 122–545 ms
into fresh pages and 20–23 ms into reused ones, and zero-filling the 113 MB embedding gradient 40–187 ms vs 8–36 ms.

``retain_freed_memory()`` tells glibc (``mallopt``) to serve large requests from its heap (``M_MMAP_MAX = 0``) and
not to return a freed heap top to the system (``M_TRIM_THRESHOLD``), so the next step reuses the pages the last
one touched. The cost: the process keeps its peak heap resident (what a training process reaches on its first
step anyway) and fragmentation can hold some more; the end-to-end benchmark reports peak RSS with it on.

It is what ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=…`` in the environment does, applied by every training run
on CPU (``rewardkit train`` and the ``rewardkit.train`` API; ``rewardkit.training.common.start_accelerator``) to its
process for the rest of its life — a notebook or test process that trains keeps its peak heap afterwards.
``REWARDKIT_MALLOC=system`` turns it off. It does nothing, and says so in its return value, on anything but Linux
with glibc and where ``LD_PRELOAD`` brings another allocator (jemalloc, tcmalloc: glibc's ``mallopt`` would still
say yes without governing it). Requests over about 64 MB from threads other than the main one still get ``mmap``
(glibc's per-thread arenas).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["ALLOCATOR_ENV", "ENVIRONMENT_SPELLING", "allocator_setting", "retain_freed_memory"]
ALLOCATOR_ENV = "REWARDKIT_MALLOC"
# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_TRIM_NEVER = 2**31 - 1  # an int: the largest threshold mallopt takes, 2 GiB of free heap top kept
# The same setting as glibc's environment variables, for a program that does not call mallopt itself.
ENVIRONMENT_SPELLING = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(_TRIM_NEVER)}
_applied: list[str] = []


def retain_freed_memory() -> str:
    """Apply the setting once per process; returns what was done, in words (for the run's report)."""
    if _applied:
        return _applied[0]
    if os.environ.get(ALLOCATOR_ENV, "").lower() == "system":
        outcome = f"system default ({ALLOCATOR_ENV}=system)"
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        outcome = "system default (not glibc)"
    elif any(name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc")):
        outcome = f"system default (LD_PRELOAD allocator: {os.environ['LD_PRELOAD']})"
    else:
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
        mmap_off = mallopt(_M_MMAP_MAX, 0) == 1
        trim_off = mmap_off and mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER) == 1
        outcome = ("glibc, freed memory retained for reuse" if trim_off
                   else "glibc, large buffers from the heap but its top trimmed (M_TRIM_THRESHOLD refused)" if mmap_off
                   else "system default (mallopt refused)")
    _applied.append(outcome)
    return outcome


def allocator_setting() -> str:
    """What this process runs with, in words: the applied setting, or the system default where none was."""
    return _applied[0] if _applied else "system default"
