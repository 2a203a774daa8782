"""A training run on disk: its folder, config, metrics, trackers, atomic checkpoints and resume.

Both trainers (``rewardkit.train`` for classifier RMs, ``rewardkit.judges.genrm`` for GenRMs) open a
:class:`Run` and hand it what is theirs (how to save their model); everything about surviving a
crash lives here:

* ``runs/<name>/`` holds ``train_config.json``, ``metrics.jsonl`` (one JSON line per logged step and
  per evaluation), ``checkpoints/step-NNNNNN/`` and, at the end, the final model (today's layout: a
  Hugging Face folder plus ``rewardkit.json``), ``report.json`` and ``report.md``.
* **Atomic checkpoints.** A checkpoint is written into ``checkpoints/.tmp-step-NNNNNN/`` — the model
  folder as the trainer saves it (``rewardkit.json`` included, so it loads and scores on its own), plus
  ``trainer_state.pt`` (optimizer, scheduler, step, every process's RNG states) — and renamed into
  place only when complete. A crash while writing leaves a ``.tmp-`` folder that nothing reads (it is
  removed at the next start). The final model is written the same way, then moved into the run folder
  with ``rewardkit.json`` last: a run folder without it is an unfinished run, and loading one is an
  error that says so (``rewardkit.checkpoint``), never a silent bare backbone.
* **Resume.** ``--resume auto`` continues the run named by ``--run-name`` from its latest complete
  checkpoint, ``--resume PATH`` from that checkpoint folder. The config must be the one the run was
  started with, except fields that only change bookkeeping (:data:`MAY_CHANGE_ON_RESUME`); any other
  difference is refused, naming the fields. Model, optimizer, scheduler and RNG states and the data
  position are restored, and ``metrics.jsonl`` is cut back to the checkpoint's step and continued, so a
  resumed run computes exactly what the uninterrupted run computes (tested to 1e-6 after SIGKILL).
* **Trackers.** ``--report-to tensorboard|wandb`` logs the same scalars as ``metrics.jsonl`` through
  ``accelerate``'s trackers; wandb runs offline unless ``WANDB_MODE`` says otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs, broadcast_object_list

from rewardkit.checkpoint import CHECKPOINTS, STATE_FILE, latest_checkpoint
from rewardkit.config import to_dict
from rewardkit.errors import UserError

RUN_FILES = ("metrics.jsonl", "report.json", "report.md", "eval_rewards.jsonl", "train_config.json")
MODEL_FILES = ("config.json", "generation_config.json", "model*.safetensors", "model.safetensors.index.json",
               "tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "vocab.json",
               "merges.txt", "rewardkit.json", "rewardkit_judge.json", "adapter_config.json",
               "adapter_model.safetensors", "README.md", "rewardkit_length_head.safetensors")
# Fields that change how a run is watched or saved, not what it computes: a resumed run may change them.
MAY_CHANGE_ON_RESUME = frozenset({"resume", "overwrite", "save_every", "keep_checkpoints", "report_to", "log_every",
                                  "eval_every", "max_bad_steps"})
# Failure injection for the crash tests: SIGKILL this process after writing checkpoint step N's files but
# before renaming them into place (a real kill at the worst moment). Not a user setting.
CRASH_IN_SAVE_ENV = "REWARDKIT_CRASH_IN_SAVE_AT_STEP"


@dataclass
class Resumed:
    """What a resumed run starts from."""

    step: int
    checkpoint: Path
    history: list[dict[str, Any]]  # the train lines of metrics.jsonl up to ``step`` (the logged ones)
    evals: dict[int, dict[str, Any]]  # eval lines by step
    records: int = 0  # records trained on up to ``step`` (every step's, logged or not)


@dataclass
class Clock:
    """Where a run's wall time goes: seconds per named phase (model load, data, evaluation, saving, ...),
    accumulated, plus the start-up before the trainer was called (imports, argument parsing: measured from the
    process's start). ``report.json`` carries it as ``timings_s``, so a user sees what a run pays outside its
    optimizer steps."""

    started: float = field(default_factory=time.time)
    phases: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - t

    def summary(self, step_seconds: list[float]) -> dict[str, float]:
        """Phases, ``startup`` (process start → trainer), ``steps`` (sum of ``step_seconds``, of which
        ``first_step``), ``other`` (the rest), ``total`` and ``outside_steps_fraction``."""
        import psutil

        startup = max(0.0, self.started - psutil.Process().create_time())
        total = time.time() - self.started + startup
        steps = sum(step_seconds)
        out = {"startup": startup, **self.phases, "steps": steps,
               "first_step": step_seconds[0] if step_seconds else 0.0}
        out["other"] = total - startup - steps - sum(self.phases.values())
        out["total"] = total
        out["outside_steps_fraction"] = (total - steps) / total if total else 0.0
        return {k: round(v, 3) for k, v in out.items()}


def rng_state() -> dict[str, Any]:
    """Every random generator a step can draw from on this process: Python's, NumPy's, torch's CPU one and, on a
    GPU, the current CUDA device's (dropout and sampling there draw from it; a resumed run must continue it)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s generators (a CUDA state only where there is a GPU to take it)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def training_device() -> str:
    """The device type accelerate will train on, asked before the ``Accelerator`` exists (the precision it is
    built with depends on it): CUDA when there is a GPU and accelerate is not told to use the CPU."""
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
    return "cuda" if torch.cuda.is_available() and not use_cpu else "cpu"


def make_accelerator(mixed_precision: str = "no") -> Accelerator:
    """The ``Accelerator`` every trainer runs on (what ``accelerate launch`` and its config file ask for).

    One addition: DeepSpeed without a GPU. accelerate names a process-group backend only for the devices it
    finds, so on a CPU machine each DeepSpeed process would start alone (``Run.open`` refuses that); DeepSpeed's
    own CPU accelerator talks over gloo, so we name gloo. It lets a ZeRO config be run end to end on a laptop or
    in CI (slowly) before it goes to GPUs; with a GPU nothing changes.
    """
    handlers = []
    if (os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and "LOCAL_RANK" in os.environ
            and not torch.cuda.is_available()):
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    _forget_other_precision(mixed_precision)
    return Accelerator(mixed_precision=mixed_precision, kwargs_handlers=handlers)


def _forget_other_precision(mixed_precision: str) -> None:
    """Let one Python process train twice in different precisions (a notebook: fp32, then bf16).

    accelerate keeps one process-wide ``AcceleratorState`` and refuses a second ``Accelerator`` with another
    ``mixed_precision``. In a single, non-distributed process nothing else shares that state between runs, so it is
    cleared (the process group, in ``PartialState``, is kept); launched processes keep the refusal.
    """
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != mixed_precision and "LOCAL_RANK" not in os.environ:
        AcceleratorState._reset_state(reset_partial_state=False)


def configure_deepspeed(accelerator: Accelerator, micro_batch_size: int, max_grad_norm: float) -> None:
    """Fill the DeepSpeed config's batch and clipping fields from rewardkit's own settings, before ``prepare``.

    rewardkit owns accumulation (a step is ``batch_size`` records, however many micro-batches that takes on each
    process) and marks DeepSpeed's accumulation boundary itself (``rewardkit.train.optimise``), so DeepSpeed must
    not scale or step by a count of its own: ``gradient_accumulation_steps`` stays 1. Clipping happens inside
    DeepSpeed's step, so it gets ``--max-grad-norm``. A config that sets accumulation other than 1 is refused.
    """
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    gas = ds.get("gradient_accumulation_steps", "auto")
    if gas not in ("auto", 1):
        raise UserError(f"the DeepSpeed config sets gradient_accumulation_steps={gas}: rewardkit accumulates itself "
                        "(--batch-size / --micro-batch-size per process); set it to 1 or auto")
    ds["gradient_accumulation_steps"] = 1
    ds["train_micro_batch_size_per_gpu"] = micro_batch_size
    ds["train_batch_size"] = micro_batch_size * accelerator.num_processes
    if ds.get("gradient_clipping", "auto") == "auto":
        ds["gradient_clipping"] = max_grad_norm
    ds.setdefault("zero_allow_untested_optimizer", True)  # torch's AdamW, as in the single-process run


def shards_parameters(accelerator: Accelerator) -> bool:
    """True when no process holds the whole model: DeepSpeed ZeRO-3 or FSDP."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    return (accelerator.distributed_type == DistributedType.DEEPSPEED
            and accelerator.state.deepspeed_plugin.zero_stage == 3)


def full_state_dict(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole model's weights, keyed as the Hugging Face model inside a ``RewardModel`` names them, when they
    are sharded across processes (ZeRO-3, FSDP); None when every process holds them whole (read the module).

    **Every process must call it** (it is a collective): accelerate gathers the shards onto the main process
    (ZeRO-3 one parameter at a time, which needs ``stage3_gather_16bit_weights_on_model_save`` / the accelerate
    config's ``zero3_save_16bit_model``; the weights keep their training dtype, fp32 unless asked otherwise).
    Saving from the main process alone would write its own shard: empty tensors (the field's known failure).
    """
    if not shards_parameters(accelerator):
        return None
    try:
        state = accelerator.get_state_dict(model)
    except ValueError as e:  # accelerate's message names the DeepSpeed setting to turn on
        raise UserError(f"cannot gather the sharded model to save it: {e}") from e
    return {k.removeprefix("hf."): v for k, v in (state or {}).items()}


class Run:
    """One training run's folder and bookkeeping. Create with :meth:`open`; every process holds one."""

    def __init__(self, accelerator: Accelerator, cfg: Any, run_dir: Path, resume_from: Path | None):
        self.accelerator, self.cfg, self.dir = accelerator, cfg, run_dir
        self.main = accelerator.is_main_process
        self.resume_from = resume_from
        self._metrics = None
        self._tracker: Any = None  # an accelerate tracker (tensorboard / wandb), main process only
        self.clock = Clock()

    # ---- opening

    @classmethod
    def open(cls, accelerator: Accelerator, cfg: Any, default_name: str) -> Run:
        """Resolve the run folder (the same on every process), check it against ``--overwrite`` / ``--resume``."""
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched > accelerator.num_processes:
            # e.g. an accelerate FSDP config with use_cpu: true: the launcher starts N processes, accelerate
            # connects none of them, and N independent runs would write one run folder
            raise UserError(f"the launcher started {launched} processes but accelerate connected "
                            f"{accelerator.num_processes} ({accelerator.distributed_type}): they would train "
                            "independently. Check the accelerate config (on CPU use --multi_gpu with "
                            "ACCELERATE_USE_CPU=1, which runs DDP, or a DeepSpeed config; FSDP needs GPUs)")
        name = [cfg.run_name or time.strftime(default_name)]
        broadcast_object_list(name)  # every process must write to the same run folder
        run_dir = Path(cfg.output_dir) / name[0]
        resume = getattr(cfg, "resume", None)
        if resume and cfg.overwrite:
            raise UserError("--resume continues a run and --overwrite deletes it: pass one of them")
        resume_from = None
        if resume and accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
            raise UserError(f"--resume under {accelerator.distributed_type}: the optimizer state is sharded across "
                            "processes and rewardkit checkpoints keep one process's share, so it cannot be resumed "
                            "exactly. The checkpoint's weights are whole: start a new run from them with --model")
        if resume:
            resume_from = latest_checkpoint(run_dir) if resume == "auto" else Path(resume)
            if resume_from is None:
                raise UserError(f"--resume auto: {run_dir} has no complete checkpoint to resume from "
                                 f"(looked in {run_dir / CHECKPOINTS}); train with --save-every N to write them")
            if not (resume_from / STATE_FILE).is_file():
                raise UserError(f"--resume {resume}: {resume_from} is not a complete rewardkit checkpoint "
                                 f"(no {STATE_FILE}); pass a checkpoints/step-N folder or 'auto'")
            if resume != "auto":
                run_dir = resume_from.parent.parent  # runs/<name>/checkpoints/step-N
            check_resumable(run_dir, cfg)
        elif is_run_folder(run_dir):
            if not cfg.overwrite:
                raise UserError(f"run folder {run_dir} already holds a run; continue it with --resume auto, pick "
                                 "another --run-name, or pass --overwrite to delete it")
        elif run_dir.is_dir() and any(run_dir.iterdir()):
            # never write a run into (or clear) a folder of something else: a model, a dataset, a home folder
            raise UserError(f"{run_dir} is not empty and is not a rewardkit run folder (no train_config.json, "
                            "metrics.jsonl or checkpoints/), so rewardkit will neither write into it nor clear it"
                            + (" with --overwrite" if cfg.overwrite else "")
                            + "; pick another --run-name or --output-dir")
        return cls(accelerator, cfg, run_dir, resume_from)

    def begin(self, config: dict[str, Any]) -> None:
        """Create the folder (deleting an old run's files with --overwrite), write the config, open the metrics."""
        self.accelerator.wait_for_everyone()  # the folder is made only once model and data have loaded
        if self.main:
            if self.cfg.overwrite and self.dir.exists():
                clear_run(self.dir)
            self.dir.mkdir(parents=True, exist_ok=True)
            for tmp in (self.dir / CHECKPOINTS).glob(".tmp-*"):  # left by a crash while saving
                shutil.rmtree(tmp, ignore_errors=True)
            if not self.resume_from:
                (self.dir / "train_config.json").write_text(json.dumps(config, indent=2))
        self.accelerator.wait_for_everyone()
        report_to = getattr(self.cfg, "report_to", "none")
        if report_to != "none" and self.main:
            from accelerate.tracking import TensorBoardTracker, WandBTracker

            if report_to == "wandb":
                os.environ.setdefault("WANDB_MODE", "offline")  # offline-safe: sync later with `wandb sync`
                self._tracker = WandBTracker(self.dir.name, dir=str(self.dir))
            else:
                self._tracker = TensorBoardTracker(self.dir.name, str(self.dir / "tensorboard"))
            self._tracker.start()  # what accelerate's init_trackers does for each tracker
            self._tracker.store_init_configuration({k: v for k, v in config.items()
                                                    if isinstance(v, (int, float, str, bool))})

    # ---- metrics

    def resume(self, load_model: Callable[[Path], None], optimizer: torch.optim.Optimizer, scheduler: Any) -> Resumed | None:
        """Restore model (``load_model(checkpoint_folder)``), optimizer, scheduler and RNG states; cut
        ``metrics.jsonl`` back to the checkpoint's step. None for a fresh run."""
        if not self.resume_from:
            self._metrics = open(self.dir / "metrics.jsonl", "w") if self.main else None
            return None
        folder = self.resume_from
        state = torch.load(folder / STATE_FILE, weights_only=False)
        load_model(folder)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"][min(self.accelerator.process_index, len(state["rng"]) - 1)])
        step = int(state["step"])
        lines = read_metrics(self.dir / "metrics.jsonl")
        train_lines = [r for r in lines if r.get("split") == "train" and r.get("step", 0) <= step]
        # (checkpoints written before the count was kept: the logged steps' records, exact with --log-every 1)
        records = int(state.get("records", sum(r.get("records", 0) for r in train_lines)))
        kept = [r for r in lines if r.get("step", 0) <= step]
        self.accelerator.wait_for_everyone()
        if self.main:
            with open(self.dir / "metrics.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
            self._metrics = open(self.dir / "metrics.jsonl", "a")
        self.accelerator.wait_for_everyone()
        return Resumed(step=step, checkpoint=folder, history=train_lines,
                       evals={r["step"]: r for r in kept if r.get("split") == "eval"}, records=records)

    def log(self, record: dict[str, Any]) -> None:
        if self._metrics:
            self._metrics.write(json.dumps(record) + "\n")
            self._metrics.flush()
        if self._tracker:
            prefix = record.get("split", "train")
            scalars = {f"{prefix}/{k}": v for k, v in record.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
            self._tracker.log(scalars, step=record.get("step", 0))

    # ---- checkpoints

    def save(self, step: int, save_model: Callable[..., None], optimizer: torch.optim.Optimizer,
             scheduler: Any, gather: Callable[[], Any] | None = None, records: int = 0) -> Path:
        """Write checkpoint ``step`` atomically (every process must call this); keep the newest ``keep_checkpoints``.
        ``records``: records trained on so far (a resumed run's reward statistics count them).

        ``gather``, when given, runs on every process first (e.g. :func:`full_state_dict`, a collective) and its
        result goes to the main process's ``save_model(folder, gathered)``."""
        root = self.dir / CHECKPOINTS
        final, tmp = root / f"step-{step:06d}", root / f".tmp-step-{step:06d}"
        rngs = gather_objects(self.accelerator, rng_state())
        gathered = gather() if gather else None
        if self.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_model(tmp, gathered) if gather else save_model(tmp)
            torch.save({"step": step, "records": records, "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "rng": rngs,
                        "processes": self.accelerator.num_processes}, tmp / STATE_FILE)
            if os.environ.get(CRASH_IN_SAVE_ENV) == str(step):
                os.kill(os.getpid(), 9)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            complete = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file())
            for old in complete[:-self.cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return final

    def save_final(self, save_model: Callable[..., None], metadata_file: str,
                   gather: Callable[[], Any] | None = None) -> None:
        """The final model into the run folder, with ``metadata_file`` (``rewardkit.json``) moved in last
        (every process must call this; ``gather`` as in :meth:`save`)."""
        gathered = gather() if gather else None
        if not self.main:
            return
        tmp = self.dir / ".tmp-final"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_model(tmp, gathered) if gather else save_model(tmp)
        (self.dir / metadata_file).unlink(missing_ok=True)
        for path in sorted(tmp.iterdir(), key=lambda p: p.name == metadata_file):
            os.replace(path, self.dir / path.name)
        tmp.rmdir()

    def close(self) -> None:
        if self._metrics:
            self._metrics.close()
            self._metrics = None
        if self._tracker:
            self._tracker.finish()
            self._tracker = None


def check_resumable(run_dir: Path, cfg: Any) -> None:
    """Refuse to resume with a config that computes something else, naming the fields that differ. A field the
    run's saved config lacks (added to rewardkit after the run started) counts as its default value."""
    saved_file = run_dir / "train_config.json"
    if not saved_file.is_file():
        raise UserError(f"cannot resume: {saved_file} is missing, so the run's config is unknown")
    defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    saved, now = defaults | json.loads(saved_file.read_text()), to_dict(cfg)
    differ = sorted(k for k in set(saved) | set(now)
                    if k not in MAY_CHANGE_ON_RESUME and k != "run_name" and saved.get(k) != now.get(k))
    if differ:
        detail = ", ".join(f"{k}: {saved.get(k)!r} (run) vs {now.get(k)!r} (now)" for k in differ)
        raise UserError(f"cannot resume {run_dir}: the config differs from the run's in {detail}. Resume with the "
                         f"same settings (only {', '.join(sorted(MAY_CHANGE_ON_RESUME - {'resume', 'overwrite'}))} "
                         "may change), or start a new run")


def is_run_folder(run_dir: Path) -> bool:
    """A folder a rewardkit run made: every run writes ``train_config.json`` when it begins."""
    return any((run_dir / name).exists() for name in ("train_config.json", "metrics.jsonl", CHECKPOINTS))


def clear_run(run_dir: Path) -> None:
    """--overwrite: remove an old run's files (metrics, reports, checkpoints, final model) but nothing else;
    a folder that is not a run is never cleared (``Run.open`` refuses it)."""
    if not is_run_folder(run_dir):
        raise UserError(f"{run_dir} is not a rewardkit run folder; --overwrite clears only run folders")
    for name in (*RUN_FILES, CHECKPOINTS, "tensorboard", ".tmp-final", "lora-adapter"):
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for path in run_dir.iterdir():  # the final model's files, by the names save_pretrained gives them
        if path.is_file() and any(path.match(pattern) for pattern in MODEL_FILES):
            path.unlink()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by the kill: everything after it is gone too
    return out


def gather_objects(accelerator: Accelerator, obj: Any) -> list[Any]:
    """``obj`` from every process, in rank order (a single process: ``[obj]``)."""
    if accelerator.num_processes == 1:
        return [obj]
    from torch import distributed as dist

    out: list[Any] = [None] * accelerator.num_processes
    dist.all_gather_object(out, obj)
    return out


def load_weights(module: torch.nn.Module, folder: Path,
                 transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None) -> None:
    """Load a ``save_pretrained`` folder's weights into ``module`` in place (tied weights may be absent);
    ``transform`` rebuilds what the checkpoint stores differently (e.g. ODIN's length head beside the model)."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(folder / name))
    if transform is not None:
        state = transform(state)
    missing, unexpected = module.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k and getattr(module.config, "tie_word_embeddings", False)}
    if set(missing) - tied or unexpected:
        raise UserError(f"checkpoint {folder} does not match the model: missing {sorted(set(missing) - tied)}, "
                         f"unexpected {sorted(unexpected)}")
