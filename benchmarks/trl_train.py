"""The baseline of ``benchmarks/end_to_end.py``: what a user runs to train a reward model with TRL.

HH pairs → conversational records → ``trl.RewardTrainer`` → ``trainer.save_model``. It is timed as a whole
command, as ``rewardkit train`` is. Two things are ours, and cost the same on both sides: the HH transcripts
are split into chat turns by rewardkit's HH parser (the same records rewardkit trains on; TRL's chat-template
tokenization of them gives exactly rewardkit's token ids, checked on HH), and a callback notes each
optimizer step's time, first loss and every micro-batch's padded shape (for the work ratio), written to
``--stats``. Everything else is TRL's defaults except what the comparison fixes on both sides: the precision
(``--bf16``: TRL's bf16 autocast with fp32 weights; else fp32),
learning rate, cosine schedule with 5 % warmup, clipping 1.0, no weight decay, 1 epoch, the fused AdamW
kernel (TRL's default optimizer on this torch), no saving of intermediate checkpoints.

    python benchmarks/trl_train.py --data HH.jsonl.gz --pairs 160 --micro-batch 2 --accumulation 4 --output DIR
"""

from __future__ import annotations

import argparse
import gzip
import json
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--pairs", type=int, default=160)
    p.add_argument("--model", default="smollm2-135m", help="a local folder or hub id (built-in names resolved)")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--accumulation", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--bf16", action="store_true", help="bf16=True (TRL's default; on a CPU: autocast)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output", required=True)
    p.add_argument("--stats", default="", help="write step times, first loss and padded shapes here (JSON)")
    a = p.parse_args()

    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback, set_seed
    from trl import RewardConfig, RewardTrainer

    from rewardkit.data.readers import parse_record
    from rewardkit.model import resolve_backbone

    rows = []
    with gzip.open(a.data, "rt") if a.data.endswith(".gz") else open(a.data) as f:
        for line in f:
            try:
                ex = parse_record(json.loads(line))
            except ValueError:  # the few malformed HH records (empty reply): rewardkit skips them too
                continue
            prompt = [dict(m) for m in ex.prompt]
            rows.append({"chosen": prompt + [dict(m) for m in ex.completions[ex.ranking[0]]],
                         "rejected": prompt + [dict(m) for m in ex.completions[ex.ranking[1]]]})
            if len(rows) == a.pairs:
                break
    set_seed(a.seed)
    source = resolve_backbone(a.model)
    tok = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id

    stats: dict = {"step_s": [], "first_loss": None, "padded_shapes": []}

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            stats["step_s"].append(time.perf_counter() - self.t)

        def on_log(self, args, state, control, logs=None, **kw):
            if stats["first_loss"] is None and logs and "loss" in logs:
                stats["first_loss"] = logs["loss"]

    args = RewardConfig(output_dir=a.output, per_device_train_batch_size=a.micro_batch,
                        gradient_accumulation_steps=a.accumulation, learning_rate=a.lr, num_train_epochs=1,
                        lr_scheduler_type="cosine", warmup_steps=0.05,  # < 1: a ratio (transformers 5)
                        weight_decay=0.0, max_grad_norm=1.0,
                        gradient_checkpointing=a.gradient_checkpointing, optim="adamw_torch_fused",
                        max_length=a.max_length, use_cpu=True, bf16=a.bf16, report_to=[], save_strategy="no",
                        logging_steps=1, disable_tqdm=True, seed=a.seed)
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                            callbacks=[Clock()])
    collate = trainer.data_collator

    def recording_collator(features):  # the padded (rows, width) TRL computes, for the work ratio
        batch = collate(features)
        stats["padded_shapes"].append(list(batch["input_ids"].shape))
        return batch

    trainer.data_collator = recording_collator
    trainer.train()
    trainer.save_model(a.output)
    stats["pairs"], stats["trained_pairs"] = len(rows), len(trainer.train_dataset)  # TRL drops pairs > max_length
    if a.stats:
        with open(a.stats, "w") as f:
            json.dump(stats, f)


if __name__ == "__main__":
    main()
