"""The optimisation loop every trainer runs: one optimizer step at a time, top to bottom.

A step takes a global batch of ``batch_size`` records. The batch is split across processes and into
micro-batches (``rewardkit.plan``); every micro-batch runs all completions of its records through the model
in one forward pass (so a prompt's completions always share a batch, as InstructGPT prescribes), and its
summed loss is scaled by ``processes / batch_size`` so the averaged gradient equals that of the mean loss
over the global batch, whatever the process count or accumulation. The last, smaller batch of an epoch is
used, not dropped. *What* a micro-batch's loss is belongs to the objective
(``rewardkit.training.objectives``); the loop owns *how* a step is taken:

* DDP synchronises gradients only on a step's last micro-batch (``no_sync`` around forward and backward);
* a process with fewer micro-batches runs zero-weight passes so every process takes part in each all-reduce;
* under DeepSpeed the engine steps inside ``backward``: the loop marks the accumulation boundary itself;
* clipping (``max_grad_norm``), then the non-finite policy (:func:`finish_step`): a step whose loss or gradient
  norm is NaN/inf is not applied and is logged with ``skipped``; ``max_bad_steps`` in a row stop the run. Under
  fp16 a loss scaler decides instead (an overflow lowers its scale and skips the update: routine, not a
  divergence), and under DeepSpeed the engine has already applied the update, which the log says;
* evaluation every ``eval_every`` steps and checkpoints every ``save_every`` through :class:`rewardkit.run.Run`.

A resumed run replays the seeded plan and skips the steps already done, so it sees the same batches as the
uninterrupted run. Everything the loop learns comes back as a :class:`LoopResult`.
"""

from __future__ import annotations

import collections
import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from tqdm.auto import tqdm

from rewardkit.checkpoint import latest_checkpoint
from rewardkit.plan import Step, micro_batch_token_budget, micro_batches
from rewardkit.run import Resumed, Run
from rewardkit.training.objectives import Objective


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the message says at which step and what to try."""


@dataclass
class LoopResult:
    """What the loop did: the final step count (resumed steps included), every step's record (the resumed part
    as ``metrics.jsonl`` logged it), records trained on, the last rewards of the reward head per record with the
    step that computed them, the forward paths the training passes took (path → why not shared), and the last
    periodic evaluation."""

    step: int
    history: list[dict[str, Any]]
    records: int
    recent_rewards: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    paths: dict[str, str | None] = field(default_factory=dict)
    last_eval: Any = None


# fp16 overflows in a row that stop a run: each halves the loss scale, so 32 take it from 2**16 to 2**-16 — the
# gradients are not finite at any scale.
MAX_OVERFLOWS = 32


@dataclass(frozen=True)
class StepOutcome:
    """How an optimizer step ended. ``applied``: the update reached the weights (the scheduler moved with it);
    ``finite``: the loss and gradient norm were finite; ``overflow``: a loss scaler (fp16) or DeepSpeed's found
    inf/NaN gradients and skipped the update (it lowered its scale; not a divergence by itself)."""

    applied: bool
    finite: bool
    overflow: bool
    grad_norm: float


def finish_step(accelerator: Accelerator, model: torch.nn.Module, optimizer: Any, scheduler: Any, loss: float,
                max_grad_norm: float) -> StepOutcome:
    """Clip, then apply the step if it should be, move the scheduler exactly when the weights moved, zero grads.

    * plain fp32/bf16: a non-finite step is not applied;
    * a loss scaler (fp16): every step goes through it — the scaler skips a non-finite update itself and lowers
      its scale; skipping ``optimizer.step()`` around it would leave the scaler mid-step (the next ``unscale_``
      raises "already been called") and its scale stuck at the value that overflowed;
    * DeepSpeed: the engine updated inside ``backward`` (clipping and, in fp16, its own overflow check included),
      so the step *was* applied unless the engine reports an overflow skip; the scheduler follows what happened.
    """
    # (under DeepSpeed the engine has already clipped and stepped; this reads its gradient norm)
    norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm) if max_grad_norm > 0 else None
    grad_norm = float("nan") if norm is None else float(norm)
    finite = math.isfinite(loss) and (max_grad_norm <= 0 or math.isfinite(grad_norm))
    decides = accelerator.distributed_type == DistributedType.DEEPSPEED or accelerator.scaler is not None
    if decides:
        optimizer.step()  # DeepSpeed: a no-op (already stepped); a scaler: it applies or skips
        applied = not optimizer.step_was_skipped
    else:
        if finite:
            optimizer.step()
        applied = finite
    if applied:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepOutcome(applied=applied, finite=finite, overflow=decides and not applied, grad_norm=grad_norm)


def count_gradient_syncs(model: torch.nn.Module) -> list[int]:
    """Count DDP's gradient all-reduces (one per bucket per synchronised backward) through a comm hook
    that wraps the default all-reduce; a one-element list, [0] forever on a single process.

    Logged per step as ``grad_syncs``, so a run shows that accumulation really skips the sync of all
    but the last micro-batch (issue 14.6: PyTorch's ``no_sync`` only works when the forward runs inside it).
    """
    from torch.nn.parallel import DistributedDataParallel

    calls = [0]
    if isinstance(model, DistributedDataParallel):
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def counting_allreduce(state, bucket):  # unannotated: DDP checks annotations against its own types
            calls[0] += 1
            return allreduce_hook(state, bucket)

        model.register_comm_hook(None, counting_allreduce)
    return calls


def optimise(accelerator: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             cfg: Any, objective: Objective, steps: Iterable[Step], total_steps: int, *, run: Run,
             evaluate: Callable[[int], Any], save: Callable[[Path, Any, Any], None], started: float,
             resumed: Resumed | None = None, desc: str = "train", gather: Callable[[], Any] | None = None,
             keep_rewards: int = 0, last_eval: Any = None) -> LoopResult:
    """Train ``model`` on the plan ``steps`` (per optimizer step, this process's records) with ``objective``'s loss.

    ``evaluate(step)`` runs the held-out evaluation (every ``cfg.eval_every`` steps) and returns it;
    ``save(folder, gathered_state, last_evaluation)`` writes a periodic checkpoint's model (every
    ``cfg.save_every`` steps, after a finite step); ``gather`` (every process) collects sharded weights first.
    ``last_eval`` is the evaluation before training (a periodic checkpoint carries the latest one's reward
    statistics). The ``keep_rewards`` most recent records' rewards are kept (the free source of reward statistics)."""
    world, device = accelerator.num_processes, accelerator.device
    history: list[dict[str, Any]] = list(resumed.history) if resumed else []
    start = resumed.step if resumed else 0
    records = resumed.records if resumed else 0
    recent: collections.deque[tuple[int, torch.Tensor]] = collections.deque(maxlen=keep_rewards or None)
    paths: dict[str, str | None] = {}
    bar = tqdm(total=total_steps, initial=start, disable=not accelerator.is_main_process, desc=desc, unit="step")
    step, bad, overflows = 0, 0, 0
    syncs = count_gradient_syncs(model)
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    micro_tokens = micro_batch_token_budget(cfg.micro_batch_tokens, device, accelerator.mixed_precision == "bf16")
    model.train()
    for planned in steps:
        epoch, shard = planned.epoch, planned.items
        step_started = time.perf_counter()
        micros = micro_batches(shard, cfg.micro_batch_size, micro_tokens)
        # Every process's record count: the step's size (the loss is a mean over it) and its micro-batch count.
        if world == 1:
            n_records, n_micro = len(shard), len(micros)
        else:  # every process runs as many micro-batches as the busiest one (zero-weight passes fill in)
            counts = accelerator.gather(torch.tensor([[len(shard), len(micros)]], device=device))
            n_records, n_micro = int(counts[:, 0].sum()), int(counts[:, 1].max())
        if not n_records:  # a streamed step whose records were all skipped as bad, on every process
            continue
        if step < start:  # done before the run was interrupted
            step += 1
            continue
        context = objective.before_step(model, micros)
        stats = torch.zeros(4, device=device)  # loss sum, correct, margin sum, zero-weight passes
        seen: set[int] = set()  # this step's own records, each remembered once
        for j in range(n_micro):
            micro = micros[j] if j < len(micros) else []
            # A process with no records left still runs a zero-weight pass so gradient sync lines up.
            weight = 1.0 if micro else 0.0
            # DDP decides in the forward whether the next backward all-reduces, so the forward must run
            # inside no_sync too: only the last micro-batch of a step synchronises gradients.
            last = j == n_micro - 1
            sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
            with sync:
                out = objective.loss(model, micro or [planned.stand_in], context)
                losses = out.losses * weight
                if deepspeed:
                    # DeepSpeed steps its engine (clip, update, zero the gradients) inside backward at an
                    # accumulation boundary (accelerate's DeepSpeedEngineWrapper): only the step's last micro-batch
                    # is one. accelerate's own `accumulate` counts a fixed number of micro-batches; ours varies.
                    accelerator.gradient_state._set_sync_gradients(last)
                accelerator.backward(losses.sum() * world / n_records)
            if out.path is not None:
                paths[out.path] = out.reason
            if micro and keep_rewards and out.rewards is not None:
                for it, r in zip(micro, out.rewards):
                    if id(it) not in seen:
                        seen.add(id(it))
                        recent.append((step + 1, r.detach()))  # stays on device: no sync
            stats += torch.tensor([losses.detach().sum().item(), out.correct * weight, out.margin * weight,
                                   1.0 - weight], device=device)
        stats = accelerator.reduce(stats, "sum")
        loss, acc, margin = (stats[:3] / n_records).tolist()
        lr = scheduler.get_last_lr()[0]  # the rate this step's update uses (read before the scheduler moves on)
        outcome = finish_step(accelerator, model, optimizer, scheduler, loss, cfg.max_grad_norm)
        finite = outcome.finite
        # A scaler's overflow with a finite loss is the scaler's business (it lowered its scale); a NaN loss,
        # or a non-finite step nobody guards, counts toward divergence.
        bad = 0 if finite else bad + (0 if outcome.overflow and math.isfinite(loss) else 1)
        overflows = overflows + 1 if outcome.overflow else 0
        step += 1
        records += n_records
        record = {"step": step, "epoch": epoch, "split": "train", "loss": loss, "accuracy": acc,
                  "margin": margin, "lr": lr, "grad_norm": outcome.grad_norm, "records": n_records,
                  "step_s": round(time.perf_counter() - step_started, 3), "elapsed_s": round(time.time() - started, 2)}
        if world > 1:
            record["grad_syncs"], syncs[0] = syncs[0], 0
            record["empty_passes"] = int(stats[3])  # zero-weight passes of processes with no records left
        if not outcome.applied:
            record["skipped"] = True
        if outcome.overflow:
            record["overflow"] = True  # the loss scaler skipped it and lowered its scale
        if outcome.applied and not finite:
            record["non_finite_applied"] = True  # DeepSpeed applied it inside backward: the weights moved
        history.append(record)
        if step % cfg.log_every == 0 or step == total_steps or not finite:
            run.log(record)
        if bad >= cfg.max_bad_steps or overflows >= MAX_OVERFLOWS:
            raise diverged(run, history, step, epoch, max(bad, overflows), cfg.learning_rate)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.2f}")
        if cfg.eval_every and step % cfg.eval_every == 0 and step != total_steps:
            last_eval = evaluate(step) or last_eval
            model.train()
        if cfg.save_every and finite and (step % cfg.save_every == 0 or step == total_steps):
            run.save(step, lambda folder, state=None, evaluation=last_eval: save(folder, state, evaluation),
                     optimizer, scheduler, gather=gather, records=records)
    bar.close()
    return LoopResult(step=step, history=history, records=records, recent_rewards=list(recent),
                      paths=paths, last_eval=last_eval)


def diverged(run: Run, history: list[dict[str, Any]], step: int, epoch: int, bad: int,
             learning_rate: float) -> TrainingDiverged:
    """The error that stops a run after ``bad`` non-finite steps in a row, naming the checkpoint to go back to."""
    last = latest_checkpoint(run.dir)
    skipped = sum(1 for r in history if r.get("skipped"))
    return TrainingDiverged(
        f"the loss or gradient was not finite for {bad} steps in a row (step {step}, epoch {epoch}; "
        f"{skipped} steps skipped in all, each logged in metrics.jsonl). Lower --learning-rate (now "
        f"{learning_rate}) or check the data for extreme inputs. "
        + (f"Last checkpoint written after a finite step: {last} (--resume {last}); one step can blow the "
           "weights up and still be finite, so evaluate it before resuming from it." if last else
           "No checkpoint was written (--save-every N writes them)."))
