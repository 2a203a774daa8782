"""Shared fixtures: a tiny random Llama reward model with a real (trained-here) BPE tokenizer.

The tokenizer reproduces SmolLM2's trap: pad == eos, and a ChatML template whose turns end in eos.
Everything is written to real folders and loaded the way users load models (a local path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite checks exactness in fp32 whatever CPU runs it: --precision auto would pick bf16 on a CPU with native bf16
# and fp32 on one without, so the same test would compute different numbers on different machines. Tests of bf16 and
# of the policy ask for it explicitly (tests/test_precision.py); subprocesses inherit this.
os.environ.setdefault("REWARDKIT_CPU_BF16", "0")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_model(folder: Path, pad_equals_eos: bool = True, layers: int = 2, seed: int = 0,
                     arch: str = "llama") -> Path:
    """``arch``: 'llama' (rotary positions) or 'gpt2' (learned absolute positions, which padding can shift)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from rewardkit.data.synthetic import synthetic_pairs

    corpus = []
    for ex in synthetic_pairs("train") + synthetic_pairs("eval"):
        corpus += [m["content"] for m in ex.prompt + ex.chosen + ex.rejected]
    corpus += ["good great fine bad awful poor the a is answer question " * 3]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>",
                                   pad_token="<|im_end|>" if pad_equals_eos else "<|endoftext|>")
    fast.chat_template = CHATML
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    if arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        GPT2LMHeadModel(GPT2Config(vocab_size=len(fast), n_embd=64, n_layer=layers, n_head=4, n_positions=512,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=fast.pad_token_id)).save_pretrained(folder)
        return folder
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=fast.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


def chat_rollout(tok, prompts: list[str], replies: list[str]) -> tuple[list[str], list[str]]:
    """What an RL loop sends a reward server: every (prompt, reply) as a templated chat query, and its prompt."""
    queries, templated = [], []
    for p in prompts:
        for r in replies:
            m = [{"role": "user", "content": p}]
            queries.append(tok.apply_chat_template(m + [{"role": "assistant", "content": r}], tokenize=False))
            templated.append(tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True))
    return queries, templated


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def learnable_rows(n: int, seed: int = 0) -> list[dict]:
    """A task a tiny random model can learn: the chosen reply is positive, the rejected one negative."""
    import random

    rng = random.Random(seed)
    good, bad = ["good", "great", "fine"], ["bad", "awful", "poor"]
    rows = []
    for _ in range(n):
        q = rng.choice(["How was the answer?", "Is the question fine?", "What is the answer?"])
        rows.append({"prompt": q, "chosen": f"the answer is {rng.choice(good)}",
                     "rejected": f"the answer is {rng.choice(bad)}"})
    return rows


def saved_reward_model(model_dir: Path, folder: Path, *, seed: int, max_length: int, mean: float, std: float) -> Path:
    """A rewardkit checkpoint of the tiny model with a seeded random head and recorded reward statistics (what the
    serving tests serve)."""
    from rewardkit.batching import Encoder
    from rewardkit.checkpoint import save_checkpoint
    from rewardkit.model import load_reward_model

    torch.manual_seed(seed)
    model, tok = load_reward_model(str(model_dir))
    save_checkpoint(folder, model, tok, Encoder(tok, max_length=max_length), reward_mean=mean, reward_std=std,
                    reward_stats_source="eval")
    return folder
