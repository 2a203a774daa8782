"""The precision policy (rewardkit.precision): what each request means on each kind of hardware, and that bf16
scoring and training are what the policy says they are (the hardware is injected, never the model mocked)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rewardkit.config import ConfigError, TrainConfig, load_config
from rewardkit.data.synthetic import synthetic_pairs
from rewardkit.errors import UserError
from rewardkit.inference import score
from rewardkit.inference.scoring import load_classifier_scorer
from rewardkit.precision import CPU_BF16_ENV, Hardware, autocast, resolve_precision

from conftest import learnable_rows, write_jsonl

CUDA_BF16 = Hardware("cuda", True, "NVIDIA H100 supports bf16")
CUDA_OLD = Hardware("cuda", False, "Tesla V100 does not support bf16")
CPU_BF16 = Hardware("cpu", True, "the CPU has native bf16 (avx512_bf16)")
CPU_PLAIN = Hardware("cpu", False, "the CPU has no native bf16")


@pytest.mark.parametrize("hardware, compute", [(CUDA_BF16, "bf16"), (CUDA_OLD, "fp32"), (CPU_BF16, "bf16"),
                                                (CPU_PLAIN, "fp32")])
def test_auto_picks_bf16_exactly_where_the_hardware_computes_it(hardware, compute):
    train = resolve_precision("auto", hardware, training=True)
    infer = resolve_precision("auto", hardware, training=False)
    assert train.compute == infer.compute == compute
    assert train.weights == "fp32"  # fp32 master weights under autocast
    assert infer.weights == compute  # inference holds the weights in the compute format
    assert train.mixed_precision == {"bf16": "bf16", "fp32": "no"}[compute]
    assert hardware.detail in train.reason and train.reason.startswith("auto")
    assert train.line().startswith(f"precision: {compute}")
    assert train.describe() == {"requested": "auto", "compute": compute, "weights": "fp32", "reason": train.reason}


def test_explicit_choices_are_kept_and_questionable_ones_say_why():
    assert resolve_precision("fp32", CUDA_BF16, training=False).compute == "fp32"
    forced = resolve_precision("bf16", CPU_PLAIN, training=True)
    assert forced.compute == "bf16" and "no native bf16" in forced.reason
    half = resolve_precision("fp16", CPU_PLAIN, training=False)
    assert half.compute == half.weights == "fp16" and "meant for GPUs" in half.reason
    with pytest.raises(UserError, match="fp16 trains on GPUs only"):  # accelerate would silently run fp32
        resolve_precision("fp16", CPU_BF16, training=True)
    gpu = resolve_precision("fp16", CUDA_OLD, training=True)
    assert gpu.mixed_precision == "fp16" and gpu.weights == "fp32" and gpu.reason == "asked for"
    with pytest.raises(UserError, match="--precision 'bf17'"):
        resolve_precision("bf17", CPU_PLAIN, training=True)


def test_the_cpu_detection_can_be_overridden_for_a_process(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert Hardware.of("cpu").bf16 and CPU_BF16_ENV in Hardware.of("cpu").detail
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert not Hardware.of("cpu").bf16
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(UserError, match=CPU_BF16_ENV):
        Hardware.of("cpu")
    monkeypatch.delenv(CPU_BF16_ENV)
    assert Hardware.of("cpu").bf16 == bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def test_autocast_only_where_weights_are_wider_than_the_compute():
    train = resolve_precision("bf16", CPU_BF16, training=True)
    with autocast(train, "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(resolve_precision("bf16", CPU_BF16, training=False), "cpu"):  # bf16 weights: nothing to cast
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_a_config_with_the_old_flag_is_told_the_new_one(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("train_data: x.jsonl\nmixed_precision: bf16\n")
    with pytest.raises(ConfigError, match="mixed_precision was renamed to precision"):
        load_config(TrainConfig, path)


def test_bf16_scoring_is_bf16_weights_with_an_fp32_head_and_shared_equals_padded(tiny_model_dir):
    examples = synthetic_pairs("eval", n=12)
    fp32 = load_classifier_scorer(str(tiny_model_dir), precision="fp32", device="cpu")
    bf16 = load_classifier_scorer(str(tiny_model_dir), precision="bf16", device="cpu")
    assert next(bf16.model.hf.model.parameters()).dtype == torch.bfloat16
    assert bf16.model.hf.score.weight.dtype == torch.float32
    assert bf16.describe()["precision"]["weights"] == "bf16" and fp32.describe()["precision"]["compute"] == "fp32"

    def rewards(scorer, shared):
        scorer.prefix_sharing = shared
        result = score(scorer, examples)
        assert result.path == ("shared" if shared else "padded")
        return np.concatenate(result.rewards)

    exact = rewards(fp32, False)
    np.testing.assert_allclose(rewards(fp32, True), exact, atol=1e-5)
    padded, shared = rewards(bf16, False), rewards(bf16, True)
    # In its own precision the shared path is the padded path (the same bf16 maths; kernels may round differently).
    scale = np.abs(exact).max()
    assert np.abs(shared - padded).max() <= 0.02 * scale, (shared - padded)
    assert np.abs(padded - exact).max() <= 0.05 * scale  # and bf16 is near fp32
    # The head ran in fp32: rewards are not on bf16's 8-bit-mantissa grid (a bf16 head output would be).
    on_grid = torch.from_numpy(padded).float().bfloat16().float().numpy() == padded.astype(np.float32)
    assert on_grid.mean() < 0.5, padded


def test_training_under_bf16_autocast_keeps_fp32_weights_and_records_the_choice(tiny_model_dir, tmp_path):
    from rewardkit import train

    data = write_jsonl(tmp_path / "train.jsonl", learnable_rows(16))
    report = train(TrainConfig(model=str(tiny_model_dir), train_data=str(data), output_dir=str(tmp_path / "runs"),
                               run_name="bf16", batch_size=8, micro_batch_size=4, precision="bf16", eval_before=False,
                               learning_rate=1e-3, max_length=64))
    assert report["precision"]["compute"] == "bf16" and report["precision"]["weights"] == "fp32"
    saved = json.loads((tmp_path / "runs" / "bf16" / "report.json").read_text())
    assert saved["precision"] == report["precision"]
    assert all(np.isfinite(r["loss"]) for r in report.get("history", [])) or report["last_train_loss"] is not None
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "runs" / "bf16" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}  # master weights stayed fp32

    plain = train(TrainConfig(model=str(tiny_model_dir), train_data=str(data), output_dir=str(tmp_path / "runs"),
                              run_name="auto", batch_size=8, micro_batch_size=4, eval_before=False, max_length=64))
    assert plain["precision"]["compute"] == "fp32" and CPU_BF16_ENV in plain["precision"]["reason"]  # conftest's 0


def _tiny_step_setup(mixed_precision: str):
    from rewardkit.run import make_accelerator

    torch.manual_seed(0)
    accelerator = make_accelerator(mixed_precision)
    if mixed_precision == "fp16":  # what accelerate sets up for fp16 on a GPU (on a CPU it makes no scaler)
        accelerator.scaler, accelerator.native_amp = torch.amp.GradScaler("cpu"), True
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer, scheduler


def _backward(accelerator, model, poison: bool) -> float:
    loss = model(torch.ones(3, 4)).pow(2).mean()
    accelerator.backward(loss)
    if poison:  # what an fp16 overflow leaves in the gradients
        for p in model.parameters():
            p.grad.fill_(float("inf"))
    return loss.item()


@pytest.mark.parametrize("mixed_precision", ["fp16", "no"])
def test_a_non_finite_step_is_not_applied_and_the_next_step_is(mixed_precision):
    """fp16: the overflowing step goes through a real GradScaler (it skips the update and halves its scale), and
    the next, normal step applies; the old loop skipped ``optimizer.step()`` and the next ``unscale_`` raised.
    Without a scaler: the same outcome by the loop's own rule. The scheduler moves only with the weights."""
    from rewardkit.training.loop import finish_step

    accelerator, model, optimizer, scheduler = _tiny_step_setup(mixed_precision)
    assert (accelerator.scaler is not None) == (mixed_precision == "fp16")
    scale = accelerator.scaler.get_scale() if accelerator.scaler else None
    before = [p.detach().clone() for p in model.parameters()]
    out = finish_step(accelerator, model, optimizer, scheduler, _backward(accelerator, model, True), 1.0)
    assert not out.applied and not out.finite and out.overflow == (mixed_precision == "fp16")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert scheduler.last_epoch == 0
    if scale is not None:
        assert accelerator.scaler.get_scale() == scale / 2
    out = finish_step(accelerator, model, optimizer, scheduler, _backward(accelerator, model, False), 1.0)
    assert out.applied and out.finite and not out.overflow and np.isfinite(out.grad_norm)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert scheduler.last_epoch == 1
    assert all(p.grad is None for p in model.parameters())


def test_the_route_flag_is_one_spelling_of_prefix_sharing_and_reaches_the_scorer(tiny_model_dir):
    assert TrainConfig(route="padded").prefix_sharing is False
    with pytest.raises(ConfigError, match="--route padded is --no-prefix-sharing"):
        TrainConfig(route="segments", prefix_sharing=False)
    examples = synthetic_pairs("eval", n=6)
    ref = score(load_classifier_scorer(str(tiny_model_dir), precision="fp32", device="cpu", route="padded"), examples)
    assert ref.path == "padded"
    for route in ("segments", "flex"):
        scorer = load_classifier_scorer(str(tiny_model_dir), precision="fp32", device="cpu", route=route)
        assert scorer.describe()["route"] == route
        out = score(scorer, examples)
        assert out.path == "shared"
        np.testing.assert_allclose(np.concatenate(out.rewards), np.concatenate(ref.rewards), atol=1e-5)


def test_max_length_is_checked_against_a_learned_position_table(tmp_path, caplog):
    """GPT-2 learns 1,024 positions (here a tiny one, 512): past them the lookup fails inside the model (a CUDA
    device-side assert). A length asked for is refused, naming the limit; the default is lowered, with a notice."""
    from rewardkit.checkpoint import load_checkpoint
    from rewardkit.model import position_limit

    from conftest import build_tiny_model

    gpt2 = build_tiny_model(tmp_path / "gpt2", arch="gpt2")
    with pytest.raises(UserError, match="learned table of 512 positions; pass --max-length 512"):
        load_checkpoint(str(gpt2), max_length=600)
    model, encoder, _ = load_checkpoint(str(gpt2))  # the default 1,024
    assert position_limit(model.hf) == 512 and encoder.max_length == 512
    assert load_checkpoint(str(gpt2), max_length=300)[1].max_length == 300
    rope = build_tiny_model(tmp_path / "llama")
    model, encoder, _ = load_checkpoint(str(rope), max_length=4096)  # RoPE: computed positions, no table
    assert position_limit(model.hf) is None and encoder.max_length == 4096


def test_resume_restores_every_generator_it_saved():
    import random

    from rewardkit.run import rng_state, set_rng_state

    state = rng_state()
    assert set(state) >= {"python", "numpy", "torch"} and ("cuda" in state) == (
        torch.cuda.is_available() and torch.cuda.is_initialized())
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_cpu_bf16_training_attention_runs_short_blocks_in_fp32_and_long_ones_in_bf16():
    """Under CPU bf16 autocast a short block that will be backpropagated runs SDPA in fp32 (the faster backward
    there); the result is that fp32 attention rounded to bf16, and gradients reach fp32 inputs."""
    import torch.nn.functional as F

    from rewardkit.sharing import CPU_BF16_FP32_ATTENTION_BELOW, _attend

    torch.manual_seed(0)

    def inputs(n):
        return [torch.randn(1, 4, n, 16, requires_grad=True) for _ in range(3)]

    q, k, v = inputs(40)
    mask = torch.ones(40, 40, dtype=torch.bool).tril()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _attend(q, k, v, mask, False, None, 0.0, False, None)
        assert out.dtype == torch.bfloat16
        with torch.no_grad():  # inference: autocast's own bf16 kernel, nothing changes
            assert torch.equal(_attend(q, k, v, mask, False, None, 0.0, False, None),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(out, reference.to(torch.bfloat16))  # fp32 maths on the fp32 inputs, rounded once
    out.float().sum().backward()
    assert q.grad is not None and q.grad.dtype == torch.float32 and torch.isfinite(q.grad).all()

    q, k, v = inputs(CPU_BF16_FP32_ATTENTION_BELOW)  # a long block: the bf16 kernel is the faster one
    with torch.autocast("cpu", dtype=torch.bfloat16):
        long = _attend(q, k, v, None, True, None, 0.0, False, None)
        assert torch.equal(long, F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_bf16_training_gradients_on_the_shared_path_match_the_padded_path(tiny_model_dir):
    """One step's gradients under bf16 autocast: prefix sharing + packing (whose short blocks run fp32 attention)
    against the plain padded batch, in the same precision, and both near fp32."""
    from rewardkit.batching import Encoder
    from rewardkit.losses import bradley_terry_loss
    from rewardkit.model import load_reward_model
    from rewardkit.sharing import group_rewards

    model, tok = load_reward_model(str(tiny_model_dir))
    model.train()
    model.hf.config.attention_dropout = 0.0
    groups = Encoder(tok, max_length=64).encode_examples(synthetic_pairs("train", n=6))

    def grads(shared, bf16):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            rewards = group_rewards(model, groups, tok.pad_token_id, shared=shared)
            loss = torch.stack([bradley_terry_loss(r[0], r[1]) for r in rewards]).mean()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).clone()

    exact = grads(False, False)
    padded, shared = grads(False, True), grads(True, True)
    scale = exact.abs().max()
    assert (shared - padded).abs().max() <= 0.03 * scale
    assert (padded - exact).abs().max() <= 0.06 * scale
    assert torch.nn.functional.cosine_similarity(shared, exact, dim=0) > 0.99


def test_the_auto_micro_batch_token_budget_follows_device_and_precision():
    from rewardkit.plan import micro_batch_token_budget

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert micro_batch_token_budget(-1, cpu) == 1024 and micro_batch_token_budget(-1, cpu, bf16=True) == 2048
    assert micro_batch_token_budget(-1, gpu) == micro_batch_token_budget(-1, gpu, bf16=True) == 0
    assert micro_batch_token_budget(512, cpu, bf16=True) == 512 and micro_batch_token_budget(0, cpu) == 0
