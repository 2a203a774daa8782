"""Prefix sharing and packing compute exactly what the plain padded path computes.

Tolerance: rewards within 1e-4 · max(1, |r|); gradients, per parameter tensor, within
1e-4 · max|plain grad| (max-norm relative error). The plain path (shared=False) is the reference.
"""

from __future__ import annotations

import gzip
import json
import logging
import random

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from rewardkit import sharing
from rewardkit.batching import Encoder, TruncationStats
from rewardkit.config import TrainConfig
from rewardkit.data import read_preferences
from rewardkit.data.readers import parse_record
from rewardkit.inference import forward_token_budget, group_batches, group_tokens
from rewardkit.model import RewardModel, load_reward_model
from rewardkit.plan import make_batches
from rewardkit.sharing import (
    FLEX_MAX_ROW_TOKENS,
    FLEX_MIN_WIDTH,
    FLEX_RECOMPILE_LIMIT,
    build_layout,
    flex_shape,
    group_rewards,
    layout_group,
    pack_rows,
    row_budget,
    shared_prefix_length,
    supports_sharing,
)

from conftest import SHARED

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    torch.manual_seed(0)
    model, tok = load_reward_model(str(tiny_model_dir))
    # A random head reads near-zero rewards; scale it so the tolerance is tested on O(1) values.
    with torch.no_grad():
        model.hf.score.weight.mul_(30)
    return model, tok


def random_groups(sizes: list[tuple[int, list[int]]], seed: int = 0, vocab: int = 500) -> list[list[list[int]]]:
    """Groups as (prompt length, [completion lengths]) with random token ids."""
    rng = random.Random(seed)
    tok = lambda n: [rng.randrange(5, vocab) for _ in range(n)]  # noqa: E731
    groups = []
    for p, lens in sizes:
        prompt = tok(p)
        groups.append([prompt + tok(n) for n in lens])
    return groups


def objective(rewards: list[torch.Tensor]) -> torch.Tensor:
    """A fixed, non-symmetric function of all rewards, so every reward gets a distinct gradient weight."""
    total = torch.zeros(())
    for g, r in enumerate(rewards):
        w = torch.linspace(1.0, -0.5, len(r)) * (1 + 0.1 * g)
        total = total + (w * r).sum() + 0.05 * (r ** 2).sum() - torch.nn.functional.logsigmoid(r[0] - r[-1])
    return total


def rewards_and_grads(model, groups, pad_id, path: str, **kw):
    """Rewards and gradients, checking that ``group_rewards`` took ``path`` (what it reports having run)."""
    model.zero_grad(set_to_none=True)
    rewards = group_rewards(model, groups, pad_id, **kw)
    assert rewards.path == path, (rewards.path, rewards.reason)
    if path == "shared":  # the route asked for ran ("auto" is segments on CPU)
        assert rewards.route == {"auto": "segments"}.get(kw.get("route", "auto"), kw.get("route")), rewards.route
    objective(rewards).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return [r.detach() for r in rewards], grads


def assert_same(model, groups, pad_id, **shared_kw):
    ref_r, ref_g = rewards_and_grads(model, groups, pad_id, "padded", shared=False)
    r, g = rewards_and_grads(model, groups, pad_id, "shared", shared=True, **shared_kw)
    assert [len(x) for x in r] == [len(grp) for grp in groups]
    for a, b in zip(ref_r, r):
        assert torch.all((a - b).abs() <= TOL * a.abs().clamp(min=1)), (a, b)
    assert ref_g.keys() == g.keys() and len(g) > 0
    for name in ref_g:
        scale = ref_g[name].abs().max().clamp(min=1e-12)
        err = (ref_g[name] - g[name]).abs().max() / scale
        assert err <= TOL, f"{name}: relative grad error {err:.2e}"
    return ref_r


def test_shared_prefix_length_keeps_a_token_per_completion():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5]]) == 3
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4, 5]]) == 2  # one sequence is a prefix of the other
    assert shared_prefix_length([[1, 2], [1, 2]]) == 1  # identical sequences
    assert shared_prefix_length([[7, 2], [1, 2]]) == 0
    assert shared_prefix_length([[1, 2, 3]]) == 2
    with pytest.raises(ValueError, match="at least one token"):
        shared_prefix_length([[1, 2], []])


def test_layout_positions_and_reward_positions():
    groups = [[[1, 2, 3, 10, 11], [1, 2, 3, 20]], [[5, 6], [5, 7, 8]]]
    lay = build_layout(groups, pad_id=0)
    assert lay.input_ids.tolist() == [[1, 2, 3, 10, 11, 20, 5, 6, 7, 8]]
    assert lay.position_ids.tolist() == [[0, 1, 2, 3, 4, 3, 0, 1, 1, 2]]
    assert list(zip(lay.end_row.tolist(), lay.end_col.tolist())) == [(0, 4), (0, 5), (0, 7), (0, 9)]
    assert lay.real_tokens == 14 and lay.unique_tokens == 10
    first = lay.segments[0].mask
    assert first[5].tolist() == [True, True, True, False, False, True]  # completion 2 never sees completion 1
    assert first[4].tolist() == [True, True, True, True, True, False]


def test_pack_rows_respects_budget_and_isolates_long_groups():
    rows = pack_rows([5, 9, 3, 30, 4], max_tokens_per_row=12)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3, 4]
    assert [3] in rows  # longer than the budget: a row of its own
    assert all(sum([5, 9, 3, 30, 4][i] for i in r) <= 12 for r in rows if r != [3])
    with pytest.raises(ValueError, match="at least 1"):
        pack_rows([3], 0)


@pytest.mark.parametrize("route", ["segments", "dense"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_pairs_of_different_lengths_packed_together(tiny, route, padding_side):
    model, tok = tiny
    groups = random_groups([(40, [7, 15]), (5, [30, 2]), (0, [9, 4]), (18, [1, 1]), (60, [12, 25])], seed=1)
    assert_same(model, groups, tok.pad_token_id, route=route, padding_side=padding_side, max_tokens_per_row=80)


@pytest.mark.parametrize("route", ["segments", "dense"])
def test_k4_rankings_and_mixed_k(tiny, route):
    model, tok = tiny
    groups = random_groups([(30, [5, 12, 1, 20]), (12, [8, 8, 3, 16]), (25, [6, 9])], seed=2)
    assert_same(model, groups, tok.pad_token_id, route=route)


def test_group_longer_than_budget_gets_its_own_row(tiny):
    model, tok = tiny
    groups = random_groups([(90, [20, 30]), (10, [5, 6]), (8, [4, 9])], seed=3)
    lay = build_layout(groups, tok.pad_token_id, max_tokens_per_row=50)
    assert lay.input_ids.shape == (2, 140)  # the 140-token group alone; the two short ones share a row
    assert_same(model, groups, tok.pad_token_id, max_tokens_per_row=50)


def test_single_token_completion_and_sequence_that_is_a_prefix_of_its_sibling(tiny):
    model, tok = tiny
    base = random_groups([(20, [1])], seed=4)[0][0]
    groups = [[base, base + [77]], [base + [5], base + [6]], [base[:1], base[:1] + [9, 9]]]
    assert_same(model, groups, tok.pad_token_id)


def test_differently_truncated_siblings(tiny):
    model, tok = tiny
    enc = Encoder(tok, max_length=24)
    prompt = [{"role": "user", "content": "What is the answer to the question about the great fine answer?"}]
    short = [{"role": "assistant", "content": "good"}]
    long = [{"role": "assistant", "content": "the answer is fine and the answer is great and good"}]
    stats = TruncationStats()
    ids = enc.encode_many([(prompt, short), (prompt, long)], stats)
    assert stats.prompt_truncated >= 1 and all(len(x) <= 24 for x in ids)
    assert shared_prefix_length(ids) < len(ids[0]) - 3  # the longer one lost prompt tokens from the left
    assert_same(model, [ids], tok.pad_token_id)


def test_flex_route_rewards_match_on_cpu(tiny):
    """FlexAttention has no backward on CPU (torch 2.13): rewards only here; gradients need a GPU."""
    model, tok = tiny
    groups = random_groups([(30, [5, 12, 1, 20]), (12, [8, 3])], seed=5)
    with torch.no_grad():
        ref = group_rewards(model, groups, tok.pad_token_id, shared=False)
        out = group_rewards(model, groups, tok.pad_token_id, route="flex", max_tokens_per_row=64)
    assert (ref.path, out.path, out.route) == ("padded", "shared", "flex")
    for a, b in zip(ref, out):
        assert torch.allclose(a, b, atol=TOL, rtol=TOL)


HH_HELPFUL = SHARED / "data" / "hh-rlhf" / "helpful-base.jsonl.gz"


@pytest.fixture(scope="module")
def hh_epoch(tiny):
    """HH helpful-base encoded as training encodes it, and one epoch's micro-batches (TrainConfig defaults)."""
    if not HH_HELPFUL.exists():
        pytest.skip(f"real HH data not found at {HH_HELPFUL} (see ../shared/data/README.md)")
    _, tok = tiny
    cfg = TrainConfig()
    examples, _ = read_preferences(str(HH_HELPFUL), skip_bad=True)  # a few records have an empty reply
    encoded = Encoder(tok, max_length=cfg.max_length).encode_examples(examples)
    lengths = [sum(len(ids) for ids in record) for record in encoded]
    micro = [batch[j:j + cfg.micro_batch_size]  # the split of train.optimise with one process
             for batch in make_batches(lengths, cfg.batch_size, np.random.default_rng(cfg.seed), cfg.group_by_length)
             for j in range(0, len(batch), cfg.micro_batch_size)]
    return encoded, micro


def test_flex_shape_ladder():
    assert flex_shape(1, 1) == (1, FLEX_MIN_WIDTH)
    assert flex_shape(1, FLEX_MIN_WIDTH) == (1, FLEX_MIN_WIDTH)
    assert flex_shape(1, FLEX_MIN_WIDTH + 1) == (1, 2 * FLEX_MIN_WIDTH)
    assert flex_shape(3, 5000) == (4, 8192)
    assert flex_shape(2, FLEX_MAX_ROW_TOKENS) == (2, FLEX_MAX_ROW_TOKENS)
    widths = {flex_shape(1, w)[1] for w in range(1, FLEX_MAX_ROW_TOKENS + 1)}
    assert len(widths) == 5 and all(w % 128 == 0 for w in widths)  # whole FlexAttention blocks
    with pytest.raises(ValueError, match="at least one row"):
        flex_shape(0, 10)
    assert row_budget("flex", None) == FLEX_MAX_ROW_TOKENS
    assert row_budget("flex", 300) == 300 and row_budget("segments", None) is None


def test_flex_shapes_stay_few_over_a_real_hh_epoch(tiny, hh_epoch):
    """The compiled kernel sees a handful of shapes over a real epoch: every micro-batch of training and
    every scoring batch of the same data at the GPU budget (evaluation runs it in another autograd mode,
    a separate compiled entry, so both together must stay within the region's recompile limit)."""
    _, tok = tiny
    encoded, micro = hh_epoch
    budget = row_budget("flex", None)

    def layouts(batches):
        return [build_layout([encoded[i] for i in b], tok.pad_token_id, budget) for b in batches]

    train = layouts(micro)
    scoring = layouts(group_batches([group_tokens(g) for g in encoded], forward_token_budget(torch.device("cuda"))))
    packed = {tuple(lay.input_ids.shape) for lay in train}
    assert len(packed) > 100  # what the kernel saw when compiled at the exact packed shape
    train_shapes = {lay.flex_shape for lay in train}
    scoring_shapes = {lay.flex_shape for lay in scoring}
    assert len(train_shapes) <= 5 and len(scoring_shapes) <= 5, (train_shapes, scoring_shapes)
    assert len(train_shapes) + len(scoring_shapes) <= FLEX_RECOMPILE_LIMIT
    assert all(lay.flex_shape[1] >= lay.width for lay in train + scoring)


def test_flex_padding_costs_one_block_per_block_of_positions(tiny):
    """The positions bucketing adds are each their own group: FlexAttention visits only the diagonal block
    of a padding block (no block between padding and real tokens), so a wider bucket costs little attention."""
    _, tok = tiny
    lay = build_layout(random_groups([(90, [20, 30]), (10, [5, 6]), (8, [4, 9])], seed=3), tok.pad_token_id, 100)
    assert tuple(lay.input_ids.shape) == (2, 140) and lay.flex_shape == (2, 1024)
    mask = sharing._block_mask(lay, torch.device("cpu"))
    visited = mask.kv_num_blocks + (mask.full_kv_num_blocks if mask.full_kv_num_blocks is not None else 0)
    first_padding_block = -(-lay.width // 128)  # blocks from here on hold padding only
    assert visited[:, 0, first_padding_block:].eq(1).all()


def spy_kernel(monkeypatch, kernel=None) -> list[tuple[int, ...]]:
    """Record the query shape of every flex kernel call (the kernel itself: the CPU reference unless given)."""
    from torch.nn.attention.flex_attention import flex_attention

    seen: list[tuple[int, ...]] = []

    def spy(query, *args, **kw):
        seen.append(tuple(query.shape))
        return (kernel or flex_attention)(query, *args, **kw)

    monkeypatch.setattr(sharing, "_flex_kernel", lambda device: spy)
    return seen


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_flex_route_padding_to_the_ladder_keeps_rewards(tiny, hh_epoch, monkeypatch, padding_side):
    """Real HH micro-batches: the kernel runs on the ladder's padded shape, and rewards match the plain path."""
    model, tok = tiny
    encoded, micro = hh_epoch
    seen = spy_kernel(monkeypatch)
    # The two narrowest micro-batches (the CPU reference materialises every score), and one of them in
    # rows of at most 120 tokens (3 rows here), so whole padding rows are added too.
    small = sorted(micro, key=lambda b: sum(group_tokens(encoded[i]) for i in b))[:2]
    cases = [([encoded[i] for i in b], None) for b in small] + [([encoded[i] for i in small[0]], 120)]
    padded_rows = 0
    for groups, budget in cases:
        lay = build_layout(groups, tok.pad_token_id, row_budget("flex", budget), padding_side)
        assert lay.flex_shape[1] > lay.width  # the padded positions are really there
        padded_rows += lay.flex_shape[0] > lay.input_ids.shape[0]
        seen.clear()
        with torch.no_grad():
            ref = group_rewards(model, groups, tok.pad_token_id, shared=False)
            out = group_rewards(model, groups, tok.pad_token_id, route="flex", max_tokens_per_row=budget,
                                padding_side=padding_side)
        layers = model.hf.config.num_hidden_layers
        assert (ref.path, out.path, out.route) == ("padded", "shared", "flex")
        assert seen[:1] * layers == seen and seen[0][0::2] == lay.flex_shape, (seen, lay.flex_shape)
        for a, b in zip(ref, out):
            assert torch.all((a - b).abs() <= TOL * a.abs().clamp(min=1)), (a, b)
    assert padded_rows >= 1


def test_flex_kernel_compiles_once_per_ladder_shape(tiny, monkeypatch):
    """Through dynamo (CPU, a counting backend): layouts of five widths compile once per ladder shape,
    so each micro-batch's fresh BlockMask and mask_mod closure are not a reason to recompile."""
    from torch._dynamo.testing import CompileCounter
    from torch.nn.attention.flex_attention import flex_attention

    model, tok = tiny
    counter = CompileCounter()
    compiled = torch.compile(flex_attention, backend=counter, dynamic=False, recompile_limit=FLEX_RECOMPILE_LIMIT,
                             isolate_recompiles=True)
    seen = spy_kernel(monkeypatch, compiled)
    sizes = [[(30, [5, 12])], [(60, [7, 3]), (9, [4, 4])], [(200, [40, 60])], [(500, [100, 200])],
             [(900, [100, 200])]]
    for i, size in enumerate(sizes):
        groups = random_groups(size, seed=10 + i)
        with torch.no_grad():
            out = group_rewards(model, groups, tok.pad_token_id, route="flex")
            ref = group_rewards(model, groups, tok.pad_token_id, shared=False)
        assert (ref.path, out.path, out.route) == ("padded", "shared", "flex")
        for a, b in zip(ref, out):
            assert torch.all((a - b).abs() <= TOL * a.abs().clamp(min=1)), (a, b)
    widths = {shape[2] for shape in seen}
    assert widths == {1024, 2048}
    assert counter.frame_count == len(widths)


def test_gradient_checkpointing_recomputes_with_the_shared_layout(tiny_model_dir):
    model, tok = load_reward_model(str(tiny_model_dir))
    with torch.no_grad():
        model.hf.score.weight.mul_(30)
    model.hf.gradient_checkpointing_enable({"use_reentrant": False})
    model.train()
    assert_same(model, random_groups([(25, [6, 14]), (10, [3, 8, 2, 5])], seed=6), tok.pad_token_id)


def mlp_positions(model, groups, pad_id) -> list[int]:
    """Positions each block's MLP computed in one shared forward + backward (and the rewards are exact)."""
    from rewardkit.blocks import transformer_blocks

    assert_same(model, groups, pad_id)
    seen: list[int] = []
    blocks = transformer_blocks(model.hf.model)
    handles = [b.mlp.register_forward_hook(lambda m, a, out: seen.append(out.shape[0] * out.shape[1])) for b in blocks]
    try:
        rewards_and_grads(model, groups, pad_id, "shared", shared=True)
    finally:
        for h in handles:
            h.remove()
    return seen


def test_last_block_mlp_runs_only_where_rewards_are_read(tiny):
    """Issue 17: the last block's MLP runs at each completion's last token only (work no reward reads is
    skipped), and rewards and gradients still equal the padded path (assert_same, every parameter); with
    gradient checkpointing (recomputation runs without the hooks) it runs everywhere."""
    model, tok = tiny
    groups = random_groups([(30, [7, 12]), (9, [4, 8, 3]), (15, [20, 6])], seed=11)
    unique = sum(len(layout_group(g)[0]) for g in groups)
    seen = mlp_positions(model, groups, tok.pad_token_id)
    n_blocks = model.config.num_hidden_layers
    assert seen[:n_blocks - 1] == [unique] * (n_blocks - 1) and seen[n_blocks - 1] == 7  # 7 completions


def test_last_block_mlp_pruning_is_off_under_gradient_checkpointing(tiny_model_dir):
    model, tok = load_reward_model(str(tiny_model_dir))
    model.hf.activation_checkpointing_enable({"use_reentrant": False})
    model.train()
    groups = random_groups([(12, [5, 9]), (20, [3, 4])], seed=12)
    unique = sum(len(layout_group(g)[0]) for g in groups)
    seen = mlp_positions(model, groups, tok.pad_token_id)
    assert set(seen) == {unique}  # every block, forward and recomputation, at every position


def test_plain_calls_and_saving_are_unchanged_after_sharing(tiny, tmp_path):
    model, tok = tiny
    groups = random_groups([(10, [3, 4])], seed=7)
    with torch.no_grad():
        before = group_rewards(model, groups, tok.pad_token_id, shared=False)[0]
        assert group_rewards(model, groups, tok.pad_token_id).path == "shared"
        after = group_rewards(model, groups, tok.pad_token_id, shared=False)[0]
    assert torch.equal(before, after)
    model.hf.save_pretrained(tmp_path)
    assert "rewardkit" not in (tmp_path / "config.json").read_text()


def test_unsupported_model_falls_back_to_the_plain_path_with_a_notice(caplog, monkeypatch):
    import rewardkit.sharing

    monkeypatch.setattr(rewardkit.sharing, "_warned", set())  # the notice is once per process: not yet given here
    torch.manual_seed(0)
    gpt2 = GPT2ForSequenceClassification(GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                                    num_labels=1, pad_token_id=0))
    model = RewardModel(gpt2).eval()
    assert not supports_sharing(model)
    groups = random_groups([(10, [3, 4])], seed=8, vocab=100)
    with caplog.at_level(logging.WARNING, logger="rewardkit"):
        out = group_rewards(model, groups, 0)
    assert "prefix sharing off" in caplog.text and "gpt2" in caplog.text
    assert out.path == "padded" and "gpt2" in out.reason  # the result says which path ran, and why
    with torch.no_grad():
        assert torch.allclose(out[0], group_rewards(model, groups, 0, shared=False)[0])


def test_bad_input_is_a_clear_error(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="at least one"):
        group_rewards(model, [[[1, 2], []]], tok.pad_token_id)
    with pytest.raises(ValueError, match="at least one"):
        group_rewards(model, [], tok.pad_token_id)
    with pytest.raises(ValueError, match="route"):
        group_rewards(model, [[[1, 2]]], tok.pad_token_id, route="fast")


@pytest.mark.slow
def test_smollm2_hh_pairs_and_k4(tmp_path):
    model, tok = load_reward_model("smollm2-135m")
    enc = Encoder(tok, max_length=160)
    with gzip.open(SHARED / "data" / "hh-rlhf" / "helpful-base.jsonl.gz", "rt") as f:
        records = [parse_record(json.loads(next(f))) for _ in range(3)]
    stats = TruncationStats()
    pairs = enc.encode_examples(records, stats)
    assert stats.prompt_truncated > 0  # max_length 160 cuts some prompts: truncation interplay on real data
    # K = 4: one prompt, the two HH replies plus two more built from them.
    ex = records[0]
    extra = [[{"role": "assistant", "content": ex.chosen[-1]["content"][:40]}],
             [{"role": "assistant", "content": "I don't know."}]]
    k4 = enc.encode_many([(ex.prompt, c) for c in ex.completions + extra])
    assert_same(model, pairs + [k4], tok.pad_token_id, max_tokens_per_row=400)


def test_compile_options_follow_the_torch_at_hand():
    """Both branches: this torch's ``torch.compile`` takes the per-function recompile arguments; one from before
    spring 2026 (its signature as torch 2.5 shipped it) gets only what it takes, never a ``TypeError``."""
    assert sharing.compile_options() == {"dynamic": False, "recompile_limit": FLEX_RECOMPILE_LIMIT,
                                         "isolate_recompiles": True}

    def torch_2_5_compile(model=None, *, fullgraph=False, dynamic=None, backend="inductor", mode=None, options=None,
                          disable=False):
        return model

    options = sharing.compile_options(torch_2_5_compile)
    assert options == {"dynamic": False}
    torch_2_5_compile(lambda: None, **options)  # accepted as it stands
    import torch._dynamo

    before = torch._dynamo.config.recompile_limit
    try:
        torch._dynamo.config.recompile_limit = 8
        sharing._raise_global_recompile_limit()  # the old torch's way to the same budget
        assert torch._dynamo.config.recompile_limit == FLEX_RECOMPILE_LIMIT
    finally:
        torch._dynamo.config.recompile_limit = before


def test_flex_falls_back_to_segments_with_one_warning_when_compiling_fails(tiny, monkeypatch, caplog):
    """A compiler that fails (as on a GPU without a working Triton, or an older torch): the real ``torch.compile``
    on CPU with a backend that raises. The packed forward still answers, on the segments route, exactly; one
    warning says why, and later calls do not try again."""
    model, tok = tiny

    def broken_backend(graph, example_inputs):
        raise RuntimeError("Cannot find a working triton installation")

    monkeypatch.setattr(sharing, "COMPILE_DEVICES", ("cpu",))
    monkeypatch.setattr(sharing, "COMPILE_BACKEND", broken_backend)
    monkeypatch.setattr(sharing, "_flex_failed", [])
    groups = random_groups([(30, [5, 12, 1]), (12, [8, 3])], seed=7)
    with torch.no_grad():
        ref = group_rewards(model, groups, tok.pad_token_id, shared=False)
        with caplog.at_level(logging.WARNING, logger="rewardkit"):
            first = group_rewards(model, groups, tok.pad_token_id, route="flex")
            again = group_rewards(model, groups, tok.pad_token_id, route="flex")
    warnings = [r for r in caplog.records if "did not compile" in r.getMessage()]
    assert len(warnings) == 1 and "triton" in warnings[0].getMessage()
    for out in (first, again):
        assert (out.path, out.route) == ("shared", "segments") and "flex did not compile" in out.reason
        for a, b in zip(ref, out):
            assert torch.all((a - b).abs() <= TOL * a.abs().clamp(min=1)), (a, b)


def test_an_implementation_that_reads_its_own_name_works_after_a_packed_call(tiny_model_dir):
    """transformers' flash_attention_2 integration picks its kernel by ``module.config._attn_implementation``; after
    a packed call renamed it to the dispatcher's name, the next padded call broke. An implementation with the same
    contract (registered here, as flash_attention_2 is; SDPA inside so it runs on CPU) must see its own name."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    seen: list[str] = []

    def named_kernel(module, query, key, value, attention_mask, **kwargs):
        seen.append(module.config._attn_implementation)
        if module.config._attn_implementation != "named_sdpa":
            raise ValueError(f"no kernel called {module.config._attn_implementation!r}")
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("named_sdpa", named_kernel)
    AttentionMaskInterface.register("named_sdpa", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    model, tok = load_reward_model(str(tiny_model_dir))
    model.hf.config._attn_implementation = "named_sdpa"
    groups = random_groups([(20, [5, 9]), (7, [3, 4])], seed=2)
    with torch.no_grad():
        before = group_rewards(model, groups, tok.pad_token_id, shared=False)
        shared = group_rewards(model, groups, tok.pad_token_id)
        after = group_rewards(model, groups, tok.pad_token_id, shared=False)
    assert shared.path == "shared" and seen and set(seen) == {"named_sdpa"}
    for a, b, c in zip(before, shared, after):
        assert torch.equal(a, c) and torch.allclose(a, b, atol=TOL, rtol=TOL)


def _windowed_model(family: str) -> RewardModel:
    """A tiny random model of a family whose layers have sliding windows (8 tokens: shorter than the prompts and
    completions below, so the window cuts inside both), scaled head so rewards are O(1)."""
    from transformers import (
        Gemma2Config,
        Gemma2ForSequenceClassification,
        Gemma3TextConfig,
        Gemma3TextForSequenceClassification,
        MistralConfig,
        MistralForSequenceClassification,
    )

    torch.manual_seed(0)
    common = dict(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=512, sliding_window=8, pad_token_id=0,
                  num_labels=1)
    if family == "gemma3":
        cfg = Gemma3TextConfig(**common, query_pre_attn_scalar=16, layer_types=["sliding_attention",
                               "full_attention", "sliding_attention", "full_attention"])
        hf = Gemma3TextForSequenceClassification(cfg)
    elif family == "gemma2":  # soft-capped logits (cap 5 so it bites), eager attention as transformers requires
        cfg = Gemma2Config(**common, query_pre_attn_scalar=16, attn_logit_softcapping=5.0,
                           layer_types=["sliding_attention", "full_attention"] * 2, attn_implementation="eager")
        hf = Gemma2ForSequenceClassification(cfg)
    else:
        hf = MistralForSequenceClassification(MistralConfig(**common))
    model = RewardModel(hf.float())
    with torch.no_grad():
        model.hf.score.weight.mul_(30)
    return model


@pytest.mark.parametrize("family", ["gemma3", "gemma2", "mistral"])
def test_sliding_window_families_share_exactly(family):
    """Each layer's window is honoured in the packed layout: prompts (30, 12 tokens) and completions (up to 20)
    longer than the 8-token window, rewards and gradients equal to the padded path; soft-capping (Gemma 2) too."""
    model = _windowed_model(family)
    assert supports_sharing(model), sharing.sharing_unsupported_reason(model)
    groups = random_groups([(30, [5, 12, 1, 20]), (12, [9, 3])], seed=11)
    assert_same(model, groups, 0)
    assert_same(model, groups, 0, route="dense")
    assert_same(model, groups, 0, max_tokens_per_row=40)  # several rows
    with torch.no_grad():  # flex: rewards only on CPU (no backward there)
        ref = group_rewards(model, groups, 0, shared=False)
        out = group_rewards(model, groups, 0, route="flex", max_tokens_per_row=64)
    assert (out.path, out.route) == ("shared", "flex")
    for a, b in zip(ref, out):
        assert torch.all((a - b).abs() <= TOL * a.abs().clamp(min=1)), (a, b)


def test_a_window_that_is_ignored_would_be_caught():
    """The test above can fail: with the window dropped from the shared masks, rewards move (Gemma 3)."""
    model = _windowed_model("gemma3")
    groups = random_groups([(30, [5, 20])], seed=11)
    with torch.no_grad():
        ref = group_rewards(model, groups, 0, shared=False)
        for layer in model.hf.model.layers:
            layer.self_attn.sliding_window = None  # what a route that ignores windows computes
        wrong = group_rewards(model, groups, 0)
    assert max((a - b).abs().max().item() for a, b in zip(ref, wrong)) > 10 * TOL
