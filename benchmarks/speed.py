"""Training speed: rewardkit (prefix sharing + packing) vs. TRL's RewardTrainer, same machine, same threads.

Every configuration trains the same SmolLM2-135M reward model (same weights and score-head init) in
fp32 on the same HH helpful-base pairs in the same order (our Encoder's token ids, so tokenization
and max length are identical), with the same pairs per step, AdamW (torch's fused kernel everywhere:
TRL's default on torch ≥ 2.8, and rewardkit's), lr and clipping; gradient checkpointing off unless
said. Each configuration runs in its own subprocess (peak RSS is per configuration): one warm-up step, then ``--repeats`` timed chunks of ``--steps`` optimizer steps;
throughputs are medians over chunks, and ratios are medians of per-chunk time ratios (every configuration
times the same chunks of data, so each ratio compares equal work). The K-wise part trains on Open Assistant rankings: K-wise
(Plackett-Luce, one group per ranking, prompt computed once) vs. the same rankings flattened into
their C(K,2) pairs (eq. 6 weights), both measured in rankings/s.

Useful FLOPs (a property of the data, identical for every configuration): 6 × non-embedding
parameters × unique tokens (each prompt once) plus 6 × n_layers × d_attn × 2 × (query, key) pairs a
causal reward model must attend to. MFU = useful FLOP/s ÷ the fp32 matmul rate measured in the
same run (a 2048³ matmul on the same threads).

    python benchmarks/speed.py --write          # full run: ~20-25 min on 2 free cores (estimate)
    python benchmarks/speed.py --configs trl,rk_plain,rk_packed,rk_shared --write   # pairs only
    python benchmarks/speed.py --model <tiny> --pairs-per-step 2 --steps 1 --repeats 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import first_valid_records, write_section  # noqa: E402

HH = ROOT.parent / "shared/data/hh-rlhf/helpful-base.jsonl.gz"
OA = ROOT.parent / "shared/data/oasst-rankings/en_100_tree.jsonl"

PAIR_CONFIGS = ("trl", "trl_defaults", "rk_plain", "rk_packed", "rk_shared")
KWISE_CONFIGS = ("kwise_flat_plain", "kwise_flat_shared", "kwise_shared")
LABELS = {
    "trl": "TRL RewardTrainer (matched: fp32, same lr, no grad checkpointing)",
    "trl_defaults": "TRL RewardTrainer, its defaults (grad checkpointing, lr 1e-4, linear decay; fp32)",
    "rk_plain": "rewardkit, sharing and packing off (padded batch)",
    "rk_packed": "rewardkit, packing only (each sequence its own group)",
    "rk_shared": "rewardkit default: prefix sharing + packing",
    "kwise_flat_plain": "rankings flattened into C(K,2) pairs, padded",
    "kwise_flat_shared": "rankings flattened into C(K,2) pairs, each pair shared + packed",
    "kwise_shared": "rewardkit K-wise: one shared group per ranking",
}
for _m in (1, 2, 4, 8):  # TRL with small micro-batches and accumulation ("trl" is micro-batch = the whole step)
    LABELS[f"trl_mb{_m}"] = f"TRL RewardTrainer, micro-batch {_m} + accumulation (otherwise as matched)"


# ---------------------------------------------------------------------------------------------------
# Data (identical in every subprocess)


def hh_pairs(encoder, n: int) -> list[list[list[int]]]:
    return encoder.encode_examples([ex for _, ex in first_valid_records(HH, n)])


def oa_rankings(encoder, n: int, max_k: int) -> list[list[list[int]]]:
    """``n`` Open Assistant rankings read by rewardkit's own reader (the records training sees: the prompt is the
    conversation so far), in a seeded random order so the sample has the file's mix of K; completions best
    first. Rankings with tied replies are left out (Plackett-Luce cannot take them; counted on stderr)."""
    import random

    from rewardkit.data import read_preferences

    records, _ = read_preferences(str(OA))
    strict = [ex for ex in records if not any(t for _, _, t in ex.preference_pairs())]
    if len(strict) < len(records):
        print(f"OA: {len(records) - len(strict)} rankings with ties left out", file=sys.stderr)
    random.Random(0).shuffle(strict)
    strict = strict[:n]
    encoded = encoder.encode_examples(strict)
    return [[ids[i] for i in ex.ranking[:max_k or None]] for ex, ids in zip(strict, encoded)]


def useful_flops(config, groups: list[list[list[int]]]) -> tuple[float, int]:
    """(useful training FLOPs, unique tokens) of computing every group's rewards once, forward + backward."""
    from rewardkit.sharing import layout_group

    d_attn = config.num_attention_heads * getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
    unique = attended = 0
    for g in groups:
        tokens, positions, owner, _ = layout_group(g)
        unique += len(tokens)
        attended += sum(p + 1 for p in positions)  # a causal query at position p attends to p + 1 keys
    return 6.0 * non_embedding_params(config) * unique + 6.0 * config.num_hidden_layers * d_attn * 2 * attended, unique


def padded_flops(config, rows: int, length: int) -> float:
    """Training FLOPs of a padded batch as TRL computes it: every position of ``rows`` × ``length``, causal attention."""
    d_attn = config.num_attention_heads * getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
    attended = rows * length * (length + 1) / 2
    return 6.0 * non_embedding_params(config) * rows * length + 6.0 * config.num_hidden_layers * d_attn * 2 * attended


def non_embedding_params(config) -> int:
    h, i = config.hidden_size, config.intermediate_size
    hd = getattr(config, "head_dim", h // config.num_attention_heads)
    attn = h * hd * (2 * config.num_attention_heads + 2 * config.num_key_value_heads)
    return config.num_hidden_layers * (attn + 3 * h * i + 2 * h) + h


# ---------------------------------------------------------------------------------------------------
# One configuration (subprocess)


def worker(a: argparse.Namespace) -> dict[str, Any]:
    import torch

    from rewardkit.losses import plackett_luce_loss

    torch.set_num_threads(a.threads)
    from rewardkit.batching import Encoder
    from rewardkit.losses import bradley_terry_loss
    from rewardkit.model import load_reward_model
    from rewardkit.sharing import group_rewards

    torch.manual_seed(0)
    model, tok = load_reward_model(a.model)
    model.to(a.device)
    cuda = a.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    encoder = Encoder(tok, max_length=a.max_length)
    n_steps = 1 + a.steps * a.repeats
    kwise = a.worker.startswith("kwise")
    per_step = a.rankings_per_step if kwise else a.pairs_per_step
    data = (oa_rankings(encoder, per_step * n_steps, a.max_k) if kwise else hh_pairs(encoder, per_step * n_steps))
    if len(data) < per_step * n_steps:
        raise SystemExit(f"only {len(data)} examples for {n_steps} steps of {per_step}")
    batches = [data[i * per_step:(i + 1) * per_step] for i in range(n_steps)]
    pad = tok.pad_token_id
    times: list[float] = []
    first_loss: list[float] = []
    paths: set[str] = set()  # what group_rewards reports having run (shared / padded)

    if a.worker.startswith("trl"):
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import RewardConfig, RewardTrainer

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                self.t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                sync()
                times.append(time.perf_counter() - self.t)

            def on_log(self, args, state, control, logs=None, **kw):  # the first step's loss, over all its micro-batches
                if not first_loss and logs and "loss" in logs:
                    first_loss.append(float(logs["loss"]))

        Trainer = RewardTrainer

        rows = [{"chosen_ids": c, "rejected_ids": r} for b in batches for c, r in b]
        # trl_mbN: micro-batches of N pairs, accumulated to the step's pairs (how a user tunes TRL on a CPU)
        micro = int(a.worker.removeprefix("trl_mb")) if a.worker.startswith("trl_mb") else per_step
        common = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=micro,
                      gradient_accumulation_steps=per_step // micro, max_steps=n_steps,
                      report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True, use_cpu=not cuda,
                      bf16=a.bf16, train_sampling_strategy="sequential", max_length=a.max_length, seed=0)
        if a.worker == "trl" or a.worker.startswith("trl_mb"):
            args = RewardConfig(**common, learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0,
                                weight_decay=0.0, max_grad_norm=1.0, gradient_checkpointing=False, optim="adamw_torch_fused")
        else:  # TRL's defaults, except bf16 (CPU bf16 is ~60× slower; every run here is fp32)
            args = RewardConfig(**common)
        trainer = Trainer(model=model.hf, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                          callbacks=[Clock()])
        trainer.train()
    else:
        model.train()
        from rewardkit.config import TrainConfig
        from rewardkit.training.common import make_optimizer

        opt = make_optimizer(model, TrainConfig(learning_rate=a.lr, weight_decay=0.0))  # what `rewardkit train` uses
        import contextlib

        autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if a.bf16 else contextlib.nullcontext
        for batch in batches:
            t = time.perf_counter()
            ctx = autocast()  # bf16 compute, fp32 master weights: what `--mixed-precision bf16` runs
            ctx.__enter__()
            if a.worker == "rk_plain":
                rewards = group_rewards(model, batch, pad, shared=False)
                paths.add(rewards.path)
            elif a.worker == "rk_packed":
                rewards = group_rewards(model, [[s] for pair in batch for s in pair], pad, shared=True)
                paths.add(rewards.path)
                rewards = [torch.cat(rewards[i:i + 2]) for i in range(0, len(rewards), 2)]
            elif a.worker in ("rk_shared", "kwise_shared"):
                rewards = group_rewards(model, batch, pad, shared=True, max_tokens_per_row=a.max_tokens_per_row)
                paths.add(rewards.path)
            else:  # flattened: every ranking's C(K,2) pairs, each weighted 1/C(K,2) (eq. 6), in micro-batches
                pairs = [[g[i], g[j]] for g in batch for i in range(len(g)) for j in range(i + 1, len(g))]
                weights = torch.tensor([1.0 / (len(g) * (len(g) - 1) / 2) for g in batch
                                        for i in range(len(g)) for j in range(i + 1, len(g))])
                loss = torch.zeros(())
                for lo in range(0, len(pairs), a.flat_micro_pairs):  # gradient accumulation, as training does
                    sl = slice(lo, lo + a.flat_micro_pairs)
                    out = group_rewards(model, pairs[sl], pad, shared=a.worker == "kwise_flat_shared")
                    paths.add(out.path)
                    r = torch.stack(out)
                    micro = (bradley_terry_loss(r[:, 0], r[:, 1]) * weights[sl]).sum() / len(batch)
                    micro.backward()
                    loss = loss + micro.detach()
            if a.worker == "kwise_shared":
                loss = torch.stack([plackett_luce_loss(r) for r in rewards]).mean()
            elif not kwise:
                r = torch.stack(rewards)
                loss = bradley_terry_loss(r[:, 0], r[:, 1]).mean()
            ctx.__exit__(None, None, None)
            if loss.requires_grad:
                loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            times.append(time.perf_counter() - t)
            first_loss.append(float(loss.detach()))
    if len(times) != n_steps:
        raise SystemExit(f"{a.worker}: timed {len(times)} steps, expected {n_steps}")
    flops, real, unique, padded = [], [], [], []
    for b in batches:
        f, u = useful_flops(model.config, b)
        flops.append(f)
        unique.append(u)
        real.append(sum(len(s) for g in b for s in g))
        # TRL pads each micro-batch (chosen + rejected rows) to its longest sequence
        m = int(a.worker.removeprefix("trl_mb")) if a.worker.startswith("trl_mb") else len(b)
        padded.append(sum(padded_flops(model.config, len(seqs), max(len(s) for s in seqs))
                          for seqs in ([s for g in b[i:i + m] for s in g] for i in range(0, len(b), m))))
    chunks = [range(1 + k * a.steps, 1 + (k + 1) * a.steps) for k in range(a.repeats)]

    def med(values: list[float]) -> float:
        return statistics.median(sum(values[i] for i in c) / sum(times[i] for i in c) for c in chunks)

    return {
        "config": a.worker, "examples_per_s": med([per_step] * n_steps), "real_tokens_per_s": med(real),
        "useful_flops_per_s": med(flops), "step_s": statistics.median(times[1:]), "first_loss": first_loss[0],
        "path": "+".join(sorted(paths)) or "trl",
        "peak_rss_mb": (torch.cuda.max_memory_allocated() / 2**20 if cuda else
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),  # GPU: peak allocated memory
        "real_tokens_per_step": statistics.mean(real[1:]), "unique_tokens_per_step": statistics.mean(unique[1:]),
        "per_step": per_step, "chunk_s": [sum(times[i] for i in c) for c in chunks],
        "chunk_useful_flops": [sum(flops[i] for i in c) for c in chunks],
        "chunk_padded_flops": [sum(padded[i] for i in c) for c in chunks],
        "flat_pairs_per_step": statistics.mean(sum(len(g) * (len(g) - 1) // 2 for g in b) for b in batches[1:]),
        "mean_k": statistics.mean(len(g) for b in batches[1:] for g in b),
    }


# ---------------------------------------------------------------------------------------------------
# Driver


def matmul_gflops(threads: int, n: int = 2048, reps: int = 5, device: str = "cpu", bf16: bool = False) -> float:
    import torch

    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        n = 8192  # a GPU needs a bigger matmul to reach its rate
    dtype = torch.bfloat16 if bf16 else torch.float32
    x, y = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    x @ y
    sync()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        x @ y
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def run_config(name: str, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", name] + [
        f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items()
        if k not in ("worker", "write", "configs") and v is not None and v is not False]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    t = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        why = " (killed by signal 9: most likely out of memory; lower --flat-micro-pairs)" if proc.returncode == -9 else ""
        raise SystemExit(f"{name} failed{why}:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {name}: {result['examples_per_s']:.3f}/s, first loss {result['first_loss']:.6f} "
          f"path {result['path']} ({time.time() - t:.0f} s)", file=sys.stderr)
    return result


def paired_ratio(base: dict | None, r: dict) -> str:
    """Median over chunks of (baseline time ÷ this time) on the same chunk of data, with the range."""
    if not base:
        return "–"
    ratios = sorted(b / t for b, t in zip(base["chunk_s"], r["chunk_s"]))
    spread = f" ({ratios[0]:.2f}–{ratios[-1]:.2f})" if len(ratios) > 1 else ""
    return f"{statistics.median(ratios):.2f}×{spread}"


def render(results: dict[str, dict], peak: float, a: argparse.Namespace, wall: float) -> str:
    import importlib.util

    import torch
    import transformers

    trl_version = __import__("trl").__version__ if importlib.util.find_spec("trl") else "not installed"
    cmd = "python benchmarks/speed.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in vars(a).items()
        if k not in ("worker", "write", "configs") and v != DEFAULTS.get(k)) + (" --write" if a.write else "")
    lines = [
        f"## Training speed vs. TRL — {time.strftime('%Y-%m-%d')}",
        "",
        f"Command: `{cmd}` (wall time {wall / 60:.1f} min). Machine: {platform.machine()}, "
        f"{os.cpu_count()} visible cores, {a.threads} threads for every configuration; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, TRL {trl_version} (installed for this benchmark only). "
        f"Model `{a.model}`, {'bf16 autocast (fp32 weights)' if a.bf16 else 'fp32'} on {a.device}"
        f"{' (the memory column is peak GPU memory allocated)' if a.device != 'cpu' else ''}, max length {a.max_length}, lr {a.lr}, AdamW (fused kernel in every configuration), "
        "clip 1.0. Each configuration in its "
        f"own process; 1 warm-up step, then {a.repeats} timed chunks of {a.steps} step(s) over the same data in every "
        "configuration: rates are medians over chunks; ratios are medians of per-chunk time ratios on the same "
        "data (range in brackets). "
        f"Measured fp32 matmul rate (2048³, same threads): **{peak:.1f} GFLOP/s**. Useful FLOPs = 6 × non-embedding "
        "parameters × unique tokens (each prompt once) + causal attention; MFU = useful FLOP/s ÷ that rate.",
        "",
    ]
    pair = [c for c in results if c in PAIR_CONFIGS or c.startswith("trl_mb")]
    if pair:
        base = results.get("trl") or next((results[c] for c in pair if c.startswith("trl_mb")), None)
        r0 = results[pair[0]]
        lines += [f"HH helpful-base, {a.pairs_per_step} pairs per step ({r0['real_tokens_per_step']:.0f} real tokens "
                  f"per step on average, {r0['unique_tokens_per_step']:.0f} unique):", "",
                  "| configuration | pairs/s | vs. TRL | real tokens/s | useful GFLOP/s | MFU | peak RSS (MB) "
                  "| first-step loss |", "|---|---|---|---|---|---|---|---|"]
        for c in pair:
            r = results[c]
            lines.append(f"| {LABELS[c]} | {r['examples_per_s']:.3f} | {paired_ratio(base, r)} | {r['real_tokens_per_s']:.0f} | "
                         f"{r['useful_flops_per_s'] / 1e9:.1f} | {r['useful_flops_per_s'] / 1e9 / peak:.1%} | "
                         f"{r['peak_rss_mb']:.0f} | {r['first_loss']:.6f} |")
        lines.append("")
        if base:  # where the ratio can come from: the work TRL does per useful FLOP, and how fast it does it
            work = [p / u for p, u in zip(base["chunk_padded_flops"], base["chunk_useful_flops"])]
            trl_rate = statistics.median(p / t / 1e9 for p, t in zip(base["chunk_padded_flops"], base["chunk_s"]))
            lines += [f"Work per chunk: TRL's padded batches cost {statistics.median(work):.2f}× the useful FLOPs "
                      f"(median; range {min(work):.2f}–{max(work):.2f}), computed at {trl_rate:.1f} GFLOP/s "
                      f"({trl_rate / peak:.0%} of the matmul rate). A speed-up of s over TRL therefore needs "
                      "the useful work run at s ÷ that ratio × TRL's rate.", ""]
            if "rk_shared" in results:
                per = zip(work, base["chunk_s"], results["rk_shared"]["chunk_s"])
                lines += ["Per chunk, in data order (TRL's work ÷ useful work → rewardkit default's speed-up): "
                          + ", ".join(f"{w:.2f}× → {b / t:.2f}×" for w, b, t in per) + ".", ""]
    kw = [c for c in KWISE_CONFIGS if c in results]
    if kw:
        base = results.get("kwise_flat_plain")
        r0 = results[kw[0]]
        cap = f"K ≤ {a.max_k}" if a.max_k else "all K"
        lines += [f"Open Assistant rankings ({cap}; a seeded random sample, mean K {r0['mean_k']:.2f}), "
                  f"{a.rankings_per_step} rankings per step = {r0['flat_pairs_per_step']:.1f} flattened pairs per step "
                  f"(micro-batches of {a.flat_micro_pairs} pairs) ({r0['real_tokens_per_step']:.0f} tokens of K "
                  f"sequences per step, {r0['unique_tokens_per_step']:.0f} unique):", "",
                  "| configuration | rankings/s | vs. flattened, padded | useful GFLOP/s | MFU | peak RSS (MB) |",
                  "|---|---|---|---|---|---|"]
        for c in kw:
            r = results[c]
            lines.append(f"| {LABELS[c]} | {r['examples_per_s']:.3f} | {paired_ratio(base, r)} | {r['useful_flops_per_s'] / 1e9:.1f} | "
                         f"{r['useful_flops_per_s'] / 1e9 / peak:.1%} | {r['peak_rss_mb']:.0f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--pairs-per-step", type=int, default=8)
    p.add_argument("--rankings-per-step", type=int, default=3)
    p.add_argument("--max-k", type=int, default=0, help="use at most the K best-ranked replies of a ranking (0: all)")
    p.add_argument("--flat-micro-pairs", type=int, default=4, help="flattened baselines: pairs per forward pass")
    p.add_argument("--max-tokens-per-row", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU check (benchmarks/gpu_check_train.sh)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides (GPU; on CPU bf16 is ~60x slower)")
    p.add_argument("--steps", type=int, default=1, help="optimizer steps per timed chunk")
    p.add_argument("--repeats", type=int, default=2, help="timed chunks (median)")
    p.add_argument("--configs", default=",".join(PAIR_CONFIGS + KWISE_CONFIGS))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    return p


DEFAULTS = {k: v for k, v in vars(parser().parse_args([])).items()}


def main() -> None:
    a = parser().parse_args()
    if a.worker:
        print(json.dumps(worker(a)))
        return
    started = time.time()
    peak = matmul_gflops(a.threads, device=a.device, bf16=a.bf16)
    print(f"fp32 matmul: {peak:.1f} GFLOP/s on {a.threads} threads", file=sys.stderr)
    results = {c: run_config(c, a) for c in a.configs.split(",") if c}
    text = render(results, peak, a, time.time() - started)
    print(text)
    if a.write:
        write_section(text)


if __name__ == "__main__":
    main()
