"""Pooling reads the last real token: right/left padding, pad == eos, batch size, truncation."""

import pytest
import torch

from rewardkit.batching import Encoder, TruncationStats, pad_batch
from rewardkit.data.record import PreferenceExample, as_messages
from rewardkit.inference import RewardModelScorer, score
from rewardkit.model import load_reward_model
from rewardkit.pooling import last_token_index, position_ids_from_mask


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tok = load_reward_model(str(tiny_model_dir))
    torch.nn.init.normal_(model.hf.score.weight, std=1.0)  # a random head makes rewards differ visibly
    return model.eval(), tok


def test_last_token_index_left_and_right():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    assert last_token_index(left).tolist() == [4, 4, 4]
    assert position_ids_from_mask(left)[0].tolist() == [0, 0, 0, 1, 2]


def test_all_padding_row_is_an_error():
    with pytest.raises(ValueError, match="no real tokens"):
        last_token_index(torch.tensor([[1, 1], [0, 0]]))


def test_loader_gives_pad_distinct_from_eos(tiny):
    _, tok = tiny
    assert tok.pad_token_id != tok.eos_token_id


def _rewards(model, seqs, pad_id, side):
    ids, mask = pad_batch(seqs, pad_id, side)
    with torch.no_grad():
        return model(ids, mask)


def test_same_reward_alone_left_padded_right_padded(tiny):
    model, tok = tiny
    seqs = [[5, 9, 20, 33, 2], [7, 8, 2], [40, 41, 42, 43, 44, 45, 46, 2], [11]]
    alone = torch.stack([_rewards(model, [s], tok.pad_token_id, "right")[0] for s in seqs])
    right = _rewards(model, seqs, tok.pad_token_id, "right")
    left = _rewards(model, seqs, tok.pad_token_id, "left")
    assert torch.allclose(alone, right, atol=1e-5)
    assert torch.allclose(alone, left, atol=1e-5)


def test_pad_equals_eos_sequences_ending_in_eos(tiny):
    """With pad == eos (id 2 here, as in SmolLM2), searching for the pad id pools the wrong token."""
    model, _ = tiny
    eos = 2
    seqs = [[5, 9, 20, eos], [7, eos, 8, 9, 10, eos]]
    alone = torch.stack([_rewards(model, [s], eos, "right")[0] for s in seqs])
    batched = _rewards(model, seqs, eos, "right")  # padded *with eos*, as a pad == eos tokenizer would
    assert torch.allclose(alone, batched, atol=1e-5)
    # The pad-id search used by *ForSequenceClassification lands elsewhere for these rows:
    ids, _ = pad_batch(seqs, eos, "right")
    non_pad = (ids != eos).int() * torch.arange(ids.shape[1])
    assert non_pad.argmax(-1).tolist() == [2, 4]  # not 3 and 5, the real last tokens


def test_rewards_do_not_depend_on_batch_size_or_padding_side(tiny):
    """Batch size and padding side act on the padded path: it runs (the result says so) in batches of 1 to all
    48 sequences, padded left and right; the shared path, cut into several passes, gives the same rewards."""
    model, tok = tiny
    from rewardkit.data.synthetic import synthetic_pairs

    examples = synthetic_pairs("eval", n=24)
    encoder = Encoder(tok, max_length=128)
    lengths = {len(ids) for ex in encoder.encode_examples(examples) for ids in ex}
    assert len(lengths) > 1  # one batch of all of them is padded

    def scored(**kw):
        return score(RewardModelScorer(model, encoder, name="tiny", kind="test", **kw), examples)

    base = scored(max_batch_size=1, prefix_sharing=False, max_batch_tokens=100_000)
    assert base.path == "padded" and base.forward_passes == 48  # one sequence per pass: no padding at all
    for size in (2, 5, 64):
        for side in ("left", "right"):
            other = scored(max_batch_size=size, padding_side=side, prefix_sharing=False, max_batch_tokens=100_000)
            assert other.path == "padded" and other.forward_passes == -(-48 // size), (size, other.forward_passes)
            for a, b in zip(base.rewards, other.rewards):
                assert abs(a - b).max() < 1e-4, (size, side)
    for budget in (None, 120):
        shared = scored(max_batch_tokens=budget)
        assert shared.path == "shared" and (shared.forward_passes > 1) == (budget is not None)
        for a, b in zip(base.rewards, shared.rewards):
            assert abs(a - b).max() < 1e-4, budget


def test_truncation_keeps_completion_end_and_cuts_prompt_from_left(tiny):
    _, tok = tiny
    ex = PreferenceExample.pair("What is the capital of France? " * 20, "The capital of France is Paris.", "x")
    full = Encoder(tok, max_length=10_000).encode(ex.prompt, ex.chosen)
    enc, stats = Encoder(tok, max_length=40), TruncationStats()
    ids = enc.encode(ex.prompt, ex.chosen, stats)
    assert len(ids) == 40
    assert ids[-25:] == full[-25:]  # the completion's end is kept
    assert ids[0] == tok.bos_token_id  # a leading BOS survives the cut
    assert stats.prompt_truncated == 1 and stats.completion_truncated == 0

    long_reply = PreferenceExample.pair("Hi", "paper " * 200, "x")
    enc2, stats2 = Encoder(tok, max_length=30), TruncationStats()
    ids2 = enc2.encode(long_reply.prompt, long_reply.chosen, stats2)
    full2 = Encoder(tok, max_length=10_000).encode(long_reply.prompt, long_reply.chosen)
    assert len(ids2) == 30 and ids2[1:] == full2[-29:]
    assert stats2.completion_truncated == 1
    assert "1 completion cut" in stats2.summary()


def test_siblings_keep_the_same_prompt_tokens_when_truncated(tiny):
    _, tok = tiny
    ex = PreferenceExample.pair("What is the capital of France? " * 20, "Paris.", "The capital of France is Paris, a city.")
    full = Encoder(tok, max_length=10_000).encode_examples([ex])[0]
    enc, stats = Encoder(tok, max_length=40), TruncationStats()
    short, long = enc.encode_examples([ex], stats)[0]
    assert len(long) == 40 and len(short) < 40  # the longest sibling fills the budget
    # Both keep the same prompt tokens: they agree up to where the completions start.
    n = 0
    while short[n] == long[n]:
        n += 1
    assert short[:n] == long[:n] and short[n:] == full[0][-(len(short) - n):] and long[n:] == full[1][-(len(long) - n):]
    assert short[0] == tok.bos_token_id and stats.prompt_truncated == 2
    # encode_many (scoring one completion) still truncates each sequence on its own.
    alone = Encoder(tok, max_length=40).encode(ex.prompt, ex.chosen)
    assert len(alone) == 40 and alone[-3:] == full[0][-3:]
    # A completion too long on its own keeps its end; its sibling keeps the prompt it fits with.
    ex2 = PreferenceExample.pair("Hi there", "paper " * 200, "ok")
    a, b = Encoder(tok, max_length=30).encode_examples([ex2])[0]
    assert len(a) == 30 and b == Encoder(tok, max_length=10_000).encode(ex2.prompt, ex2.rejected)


def test_chat_template_and_completion_boundary(tiny):
    _, tok = tiny
    enc = Encoder(tok, max_length=512)
    assert enc.template == "chat"
    prompt = [{"role": "user", "content": "What is 2 + 2?"}]
    head, full = enc.render(prompt, [{"role": "assistant", "content": "4."}])
    assert full == "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n4.<|im_end|>\n"
    assert full.startswith(head) and head.endswith("<|im_start|>assistant\n")
    assert enc.encode(prompt, [{"role": "assistant", "content": "4."}]) == tok(full, add_special_tokens=False)["input_ids"]


def test_empty_prompt_keeps_one_bos_and_counts_no_truncation(tiny):
    """Issue 14.1: with an empty prompt the leading BOS was taken for a completion token, so the record
    went down the "completion too long" path: BOS twice and a truncation counted though nothing was cut."""
    import copy

    from tokenizers.processors import TemplateProcessing

    _, tok = tiny
    tok = copy.deepcopy(tok)  # a tokenizer that adds BOS, as Llama's do
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, tok.bos_token_id)])
    enc = Encoder(tok, max_length=256, template="raw")
    stats = TruncationStats()
    ex = PreferenceExample(prompt=[], completions=[[{"role": "assistant", "content": "the answer is good"}],
                                                   [{"role": "assistant", "content": "bad"}]])
    ids = enc.encode_examples([ex], stats)[0]
    for seq in ids:
        assert seq[0] == tok.bos_token_id and seq.count(tok.bos_token_id) == 1
    assert stats.completion_truncated == 0 and stats.prompt_truncated == 0 and stats.sequences == 2
    assert ids[0] == tok(enc.render([], ex.completions[0])[1])["input_ids"]  # the text's own tokens, nothing cut


def test_encoding_in_chunks_gives_the_same_ids_and_counts(tiny, monkeypatch):
    """Tokenization runs in chunks of TOKENIZE_CHUNK records (bounded memory); the chunk size must not change any
    sequence or truncation count, including records with three completions straddling a chunk boundary."""
    import rewardkit.batching as batching

    _, tok = tiny
    examples = [PreferenceExample.pair(f"Question {i}? " * (i % 7 + 1), "yes " * (i % 5 + 1), "no " * (i % 11 + 1))
                for i in range(23)]
    examples.insert(3, PreferenceExample(as_messages("Rank these " * 9, "user"), [as_messages(t, "assistant") for t in
                                         ("a b c", "a b", "a")], ranking=[0, 1, 2]))
    enc = Encoder(tok, max_length=24)
    whole_stats = TruncationStats()
    whole = enc.encode_examples(examples, whole_stats)
    monkeypatch.setattr(batching, "TOKENIZE_CHUNK", 4)
    chunked_stats = TruncationStats()
    assert enc.encode_examples(examples, chunked_stats) == whole
    assert chunked_stats.to_dict() == whole_stats.to_dict() and whole_stats.prompt_truncated > 0
    single = enc.encode_many([(ex.prompt, c) for ex in examples for c in ex.completions])
    monkeypatch.setattr(batching, "TOKENIZE_CHUNK", 512)
    assert single == enc.encode_many([(ex.prompt, c) for ex in examples for c in ex.completions])
