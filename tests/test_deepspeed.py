"""DeepSpeed ZeRO-2 and ZeRO-3 through ``accelerate launch``, for real, on CPU (issue 15.3).

DeepSpeed runs on CPU with its CPU accelerator over gloo (``rewardkit.run.make_accelerator``). Two processes must
end where one process ends (the same global batches; 41 pairs, so the last step has one pair and one process
none): that fails if DeepSpeed steps its engine on every micro-batch (the field's known accumulation bug:
before the fix, weights differed by 1e-2) or if a ZeRO-3 run saves its own shard (empty tensors) instead of
the gathered weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import learnable_rows, write_jsonl

pytest.importorskip("deepspeed")  # installed by setup.sh; an optional dependency for users (GPU clusters)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
# ZeRO-3 as a large model meets it: no parameter kept whole for being small (the tiny model's are all under
# DeepSpeed's default persistence threshold) and none kept gathered between uses, so every process really
# holds only its shard when the run saves.
ZERO3_ALWAYS_SHARDED = {"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0,
                                              "stage3_max_live_parameters": 0, "stage3_max_reuse_distance": 0,
                                              "stage3_prefetch_bucket_size": 0,
                                              "stage3_gather_16bit_weights_on_model_save": True},
                        "gradient_accumulation_steps": "auto", "train_micro_batch_size_per_gpu": "auto",
                        "train_batch_size": "auto", "gradient_clipping": "auto"}


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deepspeed")
    train_file = write_jsonl(tmp / "train.jsonl", learnable_rows(41, seed=1))  # 6 steps of 8, the last 1 pair
    eval_file = write_jsonl(tmp / "eval.jsonl", learnable_rows(31, seed=2))  # uneven over 2 processes
    args = ["train", "--model", str(tiny_model_dir), "--train-data", str(train_file), "--eval-data", str(eval_file),
            "--output-dir", str(tmp / "runs"), "--batch-size", "8", "--micro-batch-size", "2", "--learning-rate",
            "2e-3", "--max-length", "64", "--no-eval-before"]
    one = subprocess.run([sys.executable, "-m", "rewardkit.cli", *args, "--run-name", "one"], env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    return tmp, args


def launch(config: Path, args: list[str], port: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                           "--main_process_port", str(port), "-m", "rewardkit.cli", *args], env=ENV,
                          capture_output=True, text=True, timeout=600)


def compare_with_one_process(tmp: Path, name: str) -> None:
    from safetensors.torch import load_file

    def rows(run: str) -> list[dict]:
        return [json.loads(x) for x in (tmp / "runs" / run / "metrics.jsonl").read_text().splitlines()]

    one, two = rows("one"), rows(name)
    l1, l2 = ([r["loss"] for r in x if r["split"] == "train"] for x in (one, two))
    assert len(l1) == len(l2) == 6
    assert max(abs(a - b) for a, b in zip(l1, l2)) < 1e-5, (l1, l2)
    w1, w2 = (load_file(tmp / "runs" / run / "model.safetensors") for run in ("one", name))
    assert w1.keys() == w2.keys()
    assert all(w2[k].shape == w1[k].shape for k in w1), "a process saved its shard, not the gathered weights"
    diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    print(f"{name}: max |w(1 process) - w(2 processes)| = {diff:.2e}")
    assert diff < 1e-5
    e1, e2 = ([r for r in x if r["split"] == "eval"][-1] for x in (one, two))
    assert e2["accuracy"] == e1["accuracy"] and abs(e2["mean_margin"] - e1["mean_margin"]) < 1e-4
    report = json.loads((tmp / "runs" / name / "report.json").read_text())
    assert report["processes"] == 2


def test_zero2_matches_one_process(setup):
    """The shipped ZeRO-2 config, unchanged: accumulation over 2 micro-batches per process is one update."""
    tmp, args = setup
    proc = launch(ROOT / "configs/accelerate/deepspeed_zero2.yaml", [*args, "--run-name", "zero2"], 29551)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "processes: 2 (DistributedType.DEEPSPEED)" in proc.stdout
    compare_with_one_process(tmp, "zero2")


def test_zero3_gathers_the_sharded_weights_to_save(setup):
    """ZeRO-3 with every parameter sharded: the final model and a periodic checkpoint hold the whole weights."""
    from safetensors.torch import load_file

    tmp, args = setup
    ds = tmp / "zero3.json"
    ds.write_text(json.dumps(ZERO3_ALWAYS_SHARDED))
    config = tmp / "zero3.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n"
                      f"  deepspeed_config_file: {ds}\n  zero3_init_flag: false\nnum_machines: 1\nnum_processes: 2\n"
                      "machine_rank: 0\nrdzv_backend: static\nsame_network: true\nuse_cpu: false\n")
    proc = launch(config, [*args, "--run-name", "zero3", "--save-every", "3"], 29553)
    assert proc.returncode == 0, proc.stderr[-3000:]
    compare_with_one_process(tmp, "zero3")
    step3 = load_file(tmp / "runs/zero3/checkpoints/step-000003/model.safetensors")
    assert min(v.numel() for v in step3.values()) > 0

    # what rewardkit refuses under sharded parameters, each with one line and exit 2 (no traceback)
    for extra, message in ((["--lora-r", "4"], "error: --lora-r with sharded parameters"),
                           (["--resume", "auto"], "error: --resume under DistributedType.DEEPSPEED")):
        refused = launch(config, [*args, "--run-name", "zero3", *extra], 29555)
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr[-2000:]
        assert 'rewardkit/train.py", line' not in refused.stderr and 'rewardkit/run.py", line' not in refused.stderr


def test_deepspeed_accumulation_of_its_own_is_refused(setup, tmp_path):
    """rewardkit accumulates itself (the step's micro-batch count varies); a config asking DeepSpeed to
    accumulate too would divide and step by its own count."""
    tmp, args = setup
    config = tmp_path / "gas.yaml"
    config.write_text((ROOT / "configs/accelerate/deepspeed_zero2.yaml").read_text()
                      .replace("gradient_accumulation_steps: 1", "gradient_accumulation_steps: 4"))
    proc = launch(config, [*args, "--run-name", "gas"], 29557)
    assert proc.returncode != 0
    assert "sets gradient_accumulation_steps=4: rewardkit accumulates itself" in proc.stderr


def test_zero3_held_out_evaluation_with_uneven_forward_passes(setup, tmp_path):
    """Under ZeRO-3 every forward pass gathers each layer's parameters from both processes. Five long held-out
    pairs split 3 / 2 over two processes: rank 0's share needs two passes of the 2,048-token budget, rank 1's one.
    Before the fix rank 1 went on to gather its rewards while rank 0 was still in a forward pass (a hang, or a
    crash on mismatched collectives); now both score in lockstep, and the rewards are those of one process."""
    tmp, args = setup
    words = " ".join(f"word{i % 7}" for i in range(600))
    long_eval = write_jsonl(tmp_path / "long.jsonl", [
        {"prompt": f"Question {i}: how was it?", "chosen": f"the answer is good {words}",
         "rejected": f"the answer is bad {words}"} for i in range(5)])
    ds = tmp_path / "zero3.json"
    ds.write_text(json.dumps(ZERO3_ALWAYS_SHARDED))
    config = tmp_path / "zero3.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n"
                      f"  deepspeed_config_file: {ds}\n  zero3_init_flag: false\nnum_machines: 1\nnum_processes: 2\n"
                      "machine_rank: 0\nrdzv_backend: static\nsame_network: true\nuse_cpu: false\n")
    argv = [a if a != "64" else "500" for a in args]  # --max-length 500: each pair ~1,000 tokens
    argv[argv.index("--eval-data") + 1] = str(long_eval)
    try:
        proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                               "--main_process_port", "29559", "-m", "rewardkit.cli", *argv, "--run-name",
                               "zero3-eval", "--max-steps", "1"], env=ENV, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("ZeRO-3 held-out evaluation hung (processes ran different numbers of forward passes)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp / "runs" / "zero3-eval"
    trained = json.loads((run / "report.json").read_text())["after"]
    one = subprocess.run([sys.executable, "-m", "rewardkit.cli", "eval", "--model", str(run), "--data",
                          str(long_eval), "--bootstrap-samples", "0"], env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    alone = json.loads(one.stdout)
    assert trained["pairs"] == alone["pairs"] == 5
    assert abs(trained["mean_margin"] - alone["mean_margin"]) < 1e-4


def test_a_non_finite_step_under_deepspeed_is_reported_as_what_happened(setup, tmp_path):
    """Under DeepSpeed the engine updates inside ``backward``, so whether a NaN step moved the weights is the
    engine's to say, and the run must report what happened (``non_finite_applied`` had it moved the weights). Here
    the engine skipped it: the record says so, the schedule waited, and the run ends where the plain
    single-process run with the same fault (which skips the step itself) ends. Step 3's first micro-batch on each
    process is NaN (forward call 5: 2 micro-batches per process per step)."""
    from safetensors.torch import load_file

    tmp, args = setup
    args = [a for a in args if a != "--no-eval-before"]
    i = args.index("--eval-data")
    args = args[:i] + args[i + 2:] + ["--no-eval-before", "--warmup-ratio", "0"]
    env = {**ENV, "REWARDKIT_TEST_NAN_CALLS": "5"}
    fault = str(ROOT / "tests" / "nan_fault_cli.py")
    # one process takes step 3 as its micro-batches 9-12: a NaN in the first makes the step's loss NaN
    one = subprocess.run([sys.executable, fault, *args, "--run-name", "nan-one"],
                         env={**env, "REWARDKIT_TEST_NAN_CALLS": "9"}, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                          str(ROOT / "configs/accelerate/deepspeed_zero2.yaml"), "--main_process_port", "29559",
                          fault, *args, "--run-name", "nan-zero2"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]

    def rows(run: str) -> list[dict]:
        return [json.loads(x) for x in (tmp / "runs" / run / "metrics.jsonl").read_text().splitlines()
                if json.loads(x)["split"] == "train"]

    plain, ds = rows("nan-one"), rows("nan-zero2")
    assert plain[2].get("skipped") and [r["step"] for r in plain if r.get("skipped")] == [3]
    # ZeRO-1/2 check gradients for inf/NaN at every precision (not only under fp16's loss scaler) and skip the
    # update; rewardkit reads that from the engine (accelerate's step_was_skipped) instead of assuming either way
    step3 = ds[2]
    assert step3.get("skipped") and step3.get("overflow") and not step3.get("non_finite_applied"), step3
    report = json.loads((tmp / "runs" / "nan-zero2" / "report.json").read_text())
    assert report["skipped_steps"] == 1
    assert ds[3]["lr"] == ds[2]["lr"] == plain[3]["lr"] != ds[1]["lr"]  # the schedule waited a step
    # nothing moved at step 3: the run ends where the plain run, which skipped the step itself, ends
    w1, w2 = (load_file(tmp / "runs" / run / "model.safetensors") for run in ("nan-one", "nan-zero2"))
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-5
