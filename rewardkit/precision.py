"""The precision policy: which number format a command computes in, decided in one place and said once.

``--precision auto|fp32|bf16|fp16`` is one flag for ``train``, ``train-genrm``, ``eval``, ``score``, ``rerank`` and
``serve``. ``auto`` asks the hardware:

* a CUDA device that supports bf16 (Ampere and later), or a CPU with native bf16 instructions (``avx512_bf16`` or
  AMX; ``torch.cpu._is_avx512_bf16_supported()``): **bf16**. On such a CPU a SmolLM2-135M forward+backward runs
  about 1.8× faster under bf16 autocast than in fp32 (issue 33); on a CPU without them bf16 is emulated and far
  slower, so:
* anything else: **fp32**.

What bf16 means differs by job, on purpose:

* **training** keeps fp32 master weights and optimizer state and computes the forward and backward under bf16
  autocast (accelerate's ``mixed_precision='bf16'``): bf16 weights would lose small Adam updates (8 mantissa
  bits: an update under 1/256 of a weight rounds away).
* **inference** (eval, score, rerank, serve) loads the backbone's weights in bf16 (half the memory: an 8B reward
  model is 16 GB, not 32) — no master copy is needed when nothing is updated.
* In both, the **reward head runs in fp32** on the upcast pooled state (``rewardkit.model.RewardModel``): a reward
  is a difference-sensitive scalar, and bf16's resolution at |r|≈2 is 0.016, coarser than many pairs' margins.

``fp16`` is for GPUs: training runs it with a loss scaler (``rewardkit.training.loop.finish_step``); on a CPU
training refuses it (accelerate runs neither fp16 autocast nor loss scaling there, so it would silently be fp32),
inference allows it when asked for (slow, emulated); ``auto`` never picks it. The hardware can be overridden for a whole process with
``REWARDKIT_CPU_BF16=0|1`` (e.g. to keep a test suite or a comparison in fp32 on any CPU).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch

from rewardkit.config import PRECISIONS
from rewardkit.errors import UserError

__all__ = ["PRECISIONS", "Hardware", "Precision", "autocast", "precision_for", "resolve_precision"]
CPU_BF16_ENV = "REWARDKIT_CPU_BF16"
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Hardware:
    """What the policy asks of the machine: the device type and whether it computes bf16 natively."""

    device: str  # "cpu" or "cuda" (other accelerators: treated as "cpu" would be wrong; named as they are)
    bf16: bool
    detail: str  # how ``bf16`` was found, for the printed reason

    @classmethod
    def of(cls, device: torch.device | str) -> Hardware:
        device = torch.device(device)
        if device.type == "cuda":
            ok = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
            name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "CUDA device"
            return cls("cuda", ok, f"{name} {'supports' if ok else 'does not support'} bf16")
        if device.type != "cpu":
            return cls(device.type, False, f"{device.type}: bf16 support is not detected there")
        forced = os.environ.get(CPU_BF16_ENV)
        if forced is not None:
            if forced not in ("0", "1"):
                raise UserError(f"{CPU_BF16_ENV}={forced!r}: use 1 (the CPU computes bf16 natively) or 0 (it does not)")
            return cls("cpu", forced == "1", f"{CPU_BF16_ENV}={forced}")
        return cls("cpu", *_cpu_bf16())


def _cpu_bf16() -> tuple[bool, str]:
    cpu = torch.cpu
    found = [name for name, probe in (("avx512_bf16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
             if getattr(cpu, probe, None) is not None and getattr(cpu, probe)()]
    if found:
        return True, f"the CPU has native bf16 ({' and '.join(found)})"
    return False, "the CPU has no native bf16 (neither avx512_bf16 nor AMX): bf16 would be emulated, far slower"


@dataclass(frozen=True)
class Precision:
    """The decision: the compute format, the format weights are held in, and why."""

    requested: str
    compute: str  # fp32, bf16 or fp16
    weights: str  # fp32 (training, master weights) or the compute format (inference)
    reason: str

    @property
    def compute_dtype(self) -> torch.dtype:
        return _DTYPES[self.compute]

    @property
    def weights_dtype(self) -> str:
        """The name ``rewardkit.model.load_reward_model`` takes."""
        return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[self.weights]

    @property
    def mixed_precision(self) -> str:
        """accelerate's name for the training autocast."""
        return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[self.compute]

    def line(self) -> str:
        """The one line a command prints."""
        held = "" if self.weights == self.compute else f", {self.weights} weights"
        return f"precision: {self.compute}{held} ({self.reason})"

    def describe(self) -> dict[str, Any]:
        return {"requested": self.requested, "compute": self.compute, "weights": self.weights, "reason": self.reason}


def resolve_precision(requested: str, hardware: Hardware, *, training: bool) -> Precision:
    """The precision ``requested`` means on ``hardware``, for training (fp32 master weights) or inference."""
    if requested not in PRECISIONS:
        raise UserError(f"--precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        compute = "bf16" if hardware.bf16 else "fp32"
        reason = f"auto: {hardware.detail}"
    else:
        compute = requested
        reason = "asked for"
        if compute == "bf16" and not hardware.bf16:
            reason += f"; note {hardware.detail}"
        if compute == "fp16" and hardware.device != "cuda":
            if training:
                raise UserError(f"--precision fp16 trains on GPUs only ({hardware.device} here: accelerate runs no fp16 "
                                "autocast or loss scaling on it, so nothing would be fp16); use --precision bf16 or fp32")
            reason += "; fp16 is meant for GPUs (on a CPU it is emulated and slow)"
    weights = "fp32" if training else compute
    return Precision(requested, compute, weights, reason)


def precision_for(requested: str, device: torch.device | str, *, training: bool) -> Precision:
    """``resolve_precision`` on the hardware of ``device``."""
    return resolve_precision(requested, Hardware.of(device), training=training)


def autocast(precision: Precision, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast to the compute format where weights are held wider (training); nothing otherwise."""
    if precision.compute == precision.weights:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=precision.compute_dtype)
