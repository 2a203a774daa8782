"""Rendering, tokenization and batching: the same code path for training, evaluation and scoring.

A (prompt, completion) is rendered with the tokenizer's chat template (``template="chat"``) or as
plain ``Human:/Assistant:`` text (``template="raw"``), tokenized once, and truncated to
``max_length`` by cutting the prompt from the left (keeping a leading BOS) so the completion's end,
which the reward is read from, is always kept. Batches are padded on either side; the pooled index
comes from the attention mask (``rewardkit.pooling``), so the padding side never changes a reward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rewardkit.data.record import Message, PreferenceExample
from rewardkit.errors import UserError

# Texts per tokenizer call (``Encoder._tokenize_texts``) and records per truncation pass (``encode_groups``).
TOKENIZE_CHUNK = 512

_RAW_ROLE = {"user": "Human", "assistant": "Assistant", "system": "System", "tool": "Tool"}


@dataclass
class TruncationStats:
    sequences: int = 0
    prompt_truncated: int = 0  # prompt cut from the left, completion whole
    completion_truncated: int = 0  # completion longer than max_length: prompt dropped, completion's end kept

    def to_dict(self) -> dict[str, int]:
        return {"sequences": self.sequences, "prompt_truncated": self.prompt_truncated,
                "completion_truncated": self.completion_truncated}

    def add(self, other: TruncationStats) -> TruncationStats:
        """The sum of two counts, as a new value."""
        return TruncationStats(self.sequences + other.sequences, self.prompt_truncated + other.prompt_truncated,
                               self.completion_truncated + other.completion_truncated)

    def merge(self, other: TruncationStats) -> None:
        """Add ``other``'s counts into this caller-owned count."""
        self.sequences += other.sequences
        self.prompt_truncated += other.prompt_truncated
        self.completion_truncated += other.completion_truncated

    def count(self, cut: str | None) -> None:
        """Count one sequence and how it was cut (``None``, ``"prompt"`` or ``"completion"``)."""
        self.sequences += 1
        self.prompt_truncated += cut == "prompt"
        self.completion_truncated += cut == "completion"

    def summary(self) -> str:
        n = self.prompt_truncated + self.completion_truncated
        return (f"{n} of {self.sequences} sequences truncated to max_length "
                f"({self.prompt_truncated} prompt cut from the left, {self.completion_truncated} completion cut)")


@dataclass
class Encoder:
    """Turns (prompt, completion) messages into token ids the same way everywhere.

    It holds configuration only: every method that truncates takes the caller's ``stats`` to count
    into, so one encoder can serve concurrent calls (a server) without their counts mixing.
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int = 1024
    template: str = "auto"  # "auto" (chat if the tokenizer has a chat template), "chat" or "raw"

    def __post_init__(self) -> None:
        if self.template == "auto":
            self.template = "chat" if getattr(self.tokenizer, "chat_template", None) else "raw"
        if self.template not in ("chat", "raw"):
            raise UserError(f"template must be 'auto', 'chat' or 'raw', got {self.template!r}")
        if self.template == "chat" and not getattr(self.tokenizer, "chat_template", None):
            raise UserError("template='chat' but this tokenizer has no chat template; use template='raw'")
        if self.max_length < 8:
            raise UserError(f"max_length must be at least 8, got {self.max_length}")

    def render(self, prompt: list[Message], completion: list[Message]) -> tuple[str, str]:
        """(prompt text, full text); the full text starts with the prompt text."""
        if self.template == "raw":
            head = "".join(f"\n\n{_RAW_ROLE.get(m['role'], m['role'])}: {m['content']}" for m in prompt)
            body = "".join(f"\n\n{_RAW_ROLE.get(m['role'], m['role'])}: {m['content']}" for m in completion)
            return head, head + body
        apply = self.tokenizer.apply_chat_template
        full = apply(prompt + completion, tokenize=False)
        if not prompt:
            return "", full
        for with_cue in (True, False):
            head = apply(prompt, tokenize=False, add_generation_prompt=with_cue)
            if full.startswith(head):
                return head, full
        raise UserError("the chat template does not render the prompt as a prefix of the conversation")

    def encode(self, prompt: list[Message], completion: list[Message], stats: TruncationStats | None = None) -> list[int]:
        return self.encode_many([(prompt, completion)], stats)[0]

    def encode_many(self, items: list[tuple[list[Message], list[Message]]],
                    stats: TruncationStats | None = None) -> list[list[int]]:
        """Token ids per (prompt, completion), each truncated on its own (no siblings to keep aligned)."""
        return [self._truncate(ids, prompt_len, self._prompt_room(ids, prompt_len), stats)
                for ids, prompt_len in self._tokenize(items)]

    def encode_examples(self, examples: list[PreferenceExample], stats: TruncationStats | None = None
                        ) -> list[list[list[int]]]:
        """Token ids per example per completion.

        The completions of one example keep the *same* prompt tokens: when the longest one does not
        fit, every sibling loses the same tokens from the prompt's left. So chosen and rejected are
        always judged in the same context, and their shared prefix can be computed once
        (``rewardkit.sharing``). A completion longer than ``max_length`` on its own keeps its end
        and loses the prompt, alone.
        """
        out = []
        for ids, group_stats in self.encode_groups(examples):
            out.append(ids)
            if stats is not None:
                stats.merge(group_stats)
        return out

    def encode_groups(self, examples: list[Any]) -> list[tuple[list[list[int]], TruncationStats]]:
        """:meth:`encode_examples` with each group's own truncation counts (``prompt`` + ``completions``)."""
        out = []
        for start in range(0, len(examples), TOKENIZE_CHUNK):  # truncated chunk by chunk: full-length ids never pile up
            chunk = examples[start:start + TOKENIZE_CHUNK]
            tokenized = self._tokenize([(ex.prompt, c) for ex in chunk for c in ex.completions])
            i = 0
            for ex in chunk:
                stats = TruncationStats()
                out.append((self._truncate_siblings(tokenized[i:i + len(ex.completions)], stats), stats))
                i += len(ex.completions)
        return out

    def end_of_turn(self) -> str:
        """The text this template writes after an assistant reply's content ("<|im_end|>\\n" for ChatML; "" raw)."""
        if self.template == "raw":
            return ""
        sentinel = "\u2063rewardkit-end-of-turn\u2063"
        full = self.tokenizer.apply_chat_template([{"role": "user", "content": "q"},
                                                   {"role": "assistant", "content": sentinel}], tokenize=False)
        return full[full.rindex(sentinel) + len(sentinel):] if sentinel in full else ""

    def complete_turn(self, text: str) -> tuple[str, bool]:
        """``text`` ending with this template's whole end-of-turn marker: the missing part is appended (a
        reply that stops at EOS, or at ``max_new_tokens``, is scored where training read rewards). Returns
        (text, whether anything was added)."""
        end = self.end_of_turn()
        if not end or text.endswith(end):
            return text, False
        # A part of the marker already there ends on one of its special tokens ("<|im_end|>" without its "\n"): a
        # reply is decoded token by token, so it can stop after a whole special token, never inside one. Matching
        # any prefix would take a reply's own trailing "<" (or "<|") for the start of the marker.
        specials = [t for t in {*self.tokenizer.all_special_tokens, *self.tokenizer.get_added_vocab()} if t and t in end]
        have = next((k for k in range(len(end) - 1, 0, -1)
                     if text.endswith(end[:k]) and any(end[:k].endswith(t) for t in specials)), 0)
        return text + end[have:], True

    def encode_rendered(self, texts: list[str], prompt_text: str | None = None, stats: TruncationStats | None = None,
                        *, complete_turn: bool = True) -> tuple[list[list[int]], int]:
        """Token ids of already-rendered conversations (one prompt's completions, e.g. OpenRLHF's ``query``).

        The text is tokenized as given, the way rendered training text is (a chat template's text carries its
        own special tokens; raw text gets the tokenizer's BOS). With ``complete_turn`` a missing end-of-turn
        marker is appended (:meth:`complete_turn`). ``prompt_text``, when every text starts with it, marks
        the prompt, which is cut from the left as in training; otherwise a text too long keeps its end.
        Siblings are truncated together. Returns (ids, number of texts whose end of turn was completed).
        """
        added = 0
        if complete_turn:
            done = [self.complete_turn(t) for t in texts]
            texts, added = [t for t, _ in done], sum(a for _, a in done)
        head = prompt_text if prompt_text and all(t.startswith(prompt_text) for t in texts) else ""
        return self._truncate_siblings(self._tokenize_texts([(head, t) for t in texts]), stats), added

    def _truncate_siblings(self, group: list[tuple[list[int], int]], stats: TruncationStats | None
                           ) -> list[list[int]]:
        rooms = [self._prompt_room(ids, prompt_len) for ids, prompt_len in group]
        fitting = [r for r in rooms if r >= 0]
        room = min(fitting) if fitting else -1
        return [self._truncate(ids, prompt_len, room if r >= 0 else r, stats) for (ids, prompt_len), r in zip(group, rooms)]

    def _tokenize(self, items: list[tuple[list[Message], list[Message]]]) -> list[tuple[list[int], int]]:
        return self._tokenize_texts([self.render(p, c) for p, c in items])

    def _tokenize_texts(self, rendered: list[tuple[str, str]]) -> list[tuple[list[int], int]]:
        """(ids, number of prompt tokens) per (prompt text, full text)."""
        out = []
        # In chunks: the tokenizer's output for a batch (ids, attention masks, per-token offset tuples as Python
        # objects, all before truncation) is ~40x the ids we keep. Tokenized whole, 10k HH pairs peaked at
        # 2.8 GB and 50k at 12.5 GB with a tiny model (BENCHMARKS.md, streaming); chunks bound that transient.
        for i in range(0, len(rendered), TOKENIZE_CHUNK):
            chunk = rendered[i:i + TOKENIZE_CHUNK]
            # Chat templates already contain their special tokens; raw text gets the tokenizer's own (BOS).
            enc = self.tokenizer([full for _, full in chunk], add_special_tokens=self.template == "raw",
                                 return_offsets_mapping=True, return_attention_mask=False)
            for (head, _), ids, offsets in zip(chunk, enc["input_ids"], enc["offset_mapping"]):
                # A token that starts inside the prompt text is a prompt token (an added BOS has offset (0, 0));
                # a leading BOS always counts as one, also when there is no prompt.
                ids = list(ids)
                out.append((ids, max(sum(1 for start, _ in offsets if start < len(head)), len(self._bos(ids)))))
        return out

    def _bos(self, ids: list[int]) -> list[int]:
        return [ids[0]] if ids and ids[0] == self.tokenizer.bos_token_id else []

    def _prompt_room(self, ids: list[int], prompt_len: int) -> int:
        """How many prompt tokens (after a kept BOS) fit beside the completion; < 0 if the completion alone is too long."""
        bos = self._bos(ids)
        return min(prompt_len - len(bos), self.max_length - len(bos) - (len(ids) - prompt_len))

    def _truncate(self, ids: list[int], prompt_len: int, room: int, stats: TruncationStats | None) -> list[int]:
        """Keep BOS, the last ``room`` prompt tokens and the whole completion (or, if room < 0, the completion's end)."""
        stats = stats if stats is not None else TruncationStats()
        bos = self._bos(ids)
        prompt, completion = ids[len(bos):prompt_len], ids[prompt_len:]
        if room >= len(prompt):
            stats.count(None)
            return ids
        if room >= 0:
            stats.count("prompt")
            return bos + (prompt[len(prompt) - room:] if room else []) + completion
        stats.count("completion")
        return bos + completion[-(self.max_length - len(bos)):]


@dataclass
class StepEncoding:
    """A problem's solutions as token ids with their step-reward positions (process reward models).

    ``ids[k]`` is solution k's whole sequence (prompt, then each step followed by the step-end marker);
    ``reads[k][i]`` the offset in it of step i's marker's last token, where step i's reward is read. A solution
    longer than ``max_length`` keeps its first steps: ``len(reads[k])`` may be less than its step count
    (``dropped_steps`` counts those, and the callers report them)."""

    ids: list[list[int]]
    reads: list[list[int]]
    dropped_steps: int = 0


def encode_steps(encoder: Encoder, prompt: list[Message], solutions: list[list[str]], marker: str,
                 stats: TruncationStats | None = None, *, prompt_text: str | None = None) -> StepEncoding:
    """Token ids and step-reward positions of one problem's solutions, fixed by tokenising each piece on its own.

    The prompt is rendered with the template up to where the assistant's reply starts (its generation cue), each
    step and the ``marker`` are tokenised separately (no special tokens) and the ids are joined: the text is never
    re-tokenised as a whole, so a step boundary cannot merge with its neighbours' characters into one token and
    move the position its reward is read from (what re-tokenising the joined text does, e.g. TRL's PRMTrainer).
    Training and scoring both come here, so the positions agree. Truncation as elsewhere: the siblings' prompt
    loses the same tokens from the left (BOS kept); a solution too long on its own also drops its last steps.
    ``prompt_text``: the prompt already rendered up to the reply (an OpenRLHF ``/get_reward`` prompt), used as is.
    """
    stats = stats if stats is not None else TruncationStats()
    tok = encoder.tokenizer
    if prompt_text is None:
        sentinel = "\u2063rewardkit-step\u2063"
        _, full = encoder.render(prompt, [{"role": "assistant", "content": sentinel}])
        cue = full[:full.index(sentinel)]
    else:
        cue = prompt_text
    prompt_ids = list(tok(cue, add_special_tokens=encoder.template == "raw")["input_ids"])
    bos = encoder._bos(prompt_ids)
    marker_ids = list(tok(marker, add_special_tokens=False)["input_ids"])
    if not marker_ids:
        raise UserError(f"the step marker {marker!r} tokenises to nothing; use a marker with text (e.g. '\\n\\n')")
    flat = [s for steps in solutions for s in steps]
    pieces = iter(tok(flat, add_special_tokens=False)["input_ids"] if flat else [])
    bodies = [[list(next(pieces)) + marker_ids for _ in steps] for steps in solutions]
    limit = encoder.max_length - len(bos)
    prompt_body = prompt_ids[len(bos):]
    fitting = [limit - sum(map(len, b)) for b in bodies if sum(map(len, b)) <= limit]
    room = min([len(prompt_body), *fitting]) if fitting else 0  # prompt tokens every fitting sibling keeps
    ids, reads, dropped = [], [], 0
    for body in bodies:
        if sum(map(len, body)) > limit:  # too long alone: no prompt, the first steps that fit
            kept: list[list[int]] = []
            for piece in body:
                if sum(map(len, kept)) + len(piece) > limit:
                    break
                kept.append(piece)
            # a first step longer than max_length keeps its end (with the marker), as a long completion does
            kept = kept or [body[0][-limit:]]
            dropped += len(body) - len(kept)
            seq = list(bos)
            stats.count("completion")
        else:
            kept = body
            seq = bos + (prompt_body[len(prompt_body) - room:] if room else [])
            stats.count(None if room == len(prompt_body) else "prompt")
        positions = []
        for piece in kept:
            seq = seq + piece
            positions.append(len(seq) - 1)
        ids.append(seq)
        reads.append(positions)
    return StepEncoding(ids, reads, dropped)


def pad_batch(sequences: list[list[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence → (input_ids, attention_mask)."""
    if side not in ("left", "right"):
        raise UserError(f"padding side must be 'left' or 'right', got {side!r}")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def length_sorted_batches(lengths: list[int], max_tokens: int, max_batch: int) -> list[list[int]]:
    """Group indices of similar length into batches bounded by padded tokens (for inference only)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current, width = [], [], 0
    for i in order:
        w = max(width, lengths[i])
        if current and (w * (len(current) + 1) > max_tokens or len(current) >= max_batch):
            batches.append(current)
            current, w = [], lengths[i]
        current.append(i)
        width = w
    if current:
        batches.append(current)
    return batches
