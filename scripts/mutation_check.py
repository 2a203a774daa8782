"""Mutation check: break the code on purpose, one named breakage at a time, and see the tests go red.

Each breakage below replaces one snippet of one source file — its lines matched without their leading
indentation, which the replacement keeps, so re-indented code still matches; a snippet found other than
exactly once is reported as ``stale`` (the code changed: update the breakage) — and names the tests that
claim the behaviour it breaks. Every breakage must turn its tests red; a breakage that leaves them green is a test
that does not prove what it claims (issue 18).

The working tree is never touched: every run (the unbroken baseline, then each breakage) gets a fresh copy
of the committed tree (``git archive <ref>``, HEAD by default) in a temporary folder, with ``shared/`` beside
it pointing at the real ``../shared`` data, and runs pytest there with ``PYTHONPATH`` set to the copy (the
check verifies that ``rewardkit`` is imported from the copy, in subprocesses too). The baseline runs every
named test on the unbroken copy first; it must be green, or the table means nothing.

    .venv/bin/python scripts/mutation_check.py                 # baseline + every breakage, then the table
    .venv/bin/python scripts/mutation_check.py --list          # the breakages and their tests
    .venv/bin/python scripts/mutation_check.py --only pooling-assumes-right-padding --no-baseline

It runs the real tests (tiny models, real processes; two of them spawn training processes), one pytest at a
time: 10-15 minutes on a 2-core CPU. It is not part of CI; its last result is recorded in the issue's
closing note. Exit status 0 when the baseline is green and every breakage turned red.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Breakage:
    name: str
    what: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


SHARING_EXACT = ("tests/test_sharing.py::test_pairs_of_different_lengths_packed_together",
                 "tests/test_sharing.py::test_k4_rankings_and_mixed_k")
TRAIN_SHARED = "tests/test_train_losses.py::test_prefix_sharing_trains_exactly_like_padded_batches"
POOLING_INVARIANCE = "tests/test_pooling.py::test_rewards_do_not_depend_on_batch_size_or_padding_side"
CLI_INVARIANCE = "tests/test_cli.py::test_eval_cli_json_and_batch_invariance"
SPEED_SMOKE = "tests/test_benchmark_speed.py::test_speed_benchmark_smoke"
TWO_PROCESSES = "tests/test_train.py::test_two_processes_match_one_process"

BREAKAGES = (
    Breakage(
        "sharing-unsupported-for-llama", "sharing_unsupported_reason gives a reason for every model (Llama included): "
        "training, scoring and group_rewards all fall back to padded batches",
        "rewardkit/sharing.py",
        "    if cfg.model_type not in SHARING_MODEL_TYPES:\n",
        "    if True:\n",
        (*SHARING_EXACT, TRAIN_SHARED, POOLING_INVARIANCE, "tests/test_train.py::test_run_folder_contents", SPEED_SMOKE)),
    Breakage(
        "group-rewards-always-padded", "group_rewards takes its padded fallback whatever the model (callers that "
        "decide the path themselves would still claim 'shared')",
        "rewardkit/sharing.py",
        "        reason = sharing_unsupported_reason(inner)\n        if reason:\n",
        "        reason = sharing_unsupported_reason(inner)\n        if True:\n",
        (*SHARING_EXACT, TRAIN_SHARED, POOLING_INVARIANCE, CLI_INVARIANCE, SPEED_SMOKE)),
    Breakage(
        "pooling-assumes-right-padding", "the reward is read at index (real tokens − 1), right for right padding only",
        "rewardkit/pooling.py",
        "    return (positions * attention_mask.long()).argmax(-1)\n",
        "    return attention_mask.long().sum(-1) - 1\n",
        (POOLING_INVARIANCE, CLI_INVARIANCE)),
    Breakage(
        "judge-drops-second-order-swap", "sample mode: votes of the second order (j shown as A) count for i as if i "
        "had been shown as A",
        "rewardkit/judges/judge.py",
        "                v_i, v_j = (v_i + a, v_j + b) if i_first else (v_i + b, v_j + a)\n",
        "                v_i, v_j = v_i + a, v_j + b\n",
        ("tests/test_judges.py::test_sampled_votes_of_the_second_order_count_for_the_response_shown_as_a",)),
    Breakage(
        "shard-weight-always-one", "a process with an empty shard trains on batch[:1] at full weight instead of a "
        "zero-weight pass",
        "rewardkit/training/loop.py",
        "                weight = 1.0 if micro else 0.0\n",
        "                weight = 1.0\n",
        (TWO_PROCESSES,)),
    Breakage(
        "eval-gather-in-rank-order", "held-out rewards gathered from processes are stored in arrival (rank-major) "
        "order, not at their examples' indices",
        "rewardkit/training/common.py",
        "    for i, r in gathered:\n        out[i] = np.asarray(r)\n",
        "    for k, (_, r) in enumerate(gathered):\n        out[k] = np.asarray(r)\n",
        (TWO_PROCESSES,)),
    Breakage(
        "eq6-weights-dropped", "eq. 6 sums its C(K,2) pair terms instead of weighting each 1/C(K,2)",
        "rewardkit/losses.py",
        "    return soft_bradley_terry_loss(better, worse, target).mean()\n",
        "    return soft_bradley_terry_loss(better, worse, target).sum()\n",
        ("tests/test_losses.py::test_balanced_loss_gives_every_prompt_the_same_total_weight",
         "tests/test_losses.py::test_best_of_n_losers_are_unordered_not_tied")),
    Breakage(
        "plackett-luce-ignores-ranking", "record_loss gives Plackett-Luce the rewards in completion order, not "
        "best first",
        "rewardkit/losses.py",
        "        loss = plackett_luce_loss(rewards[list(ranking)])\n",
        "        loss = plackett_luce_loss(rewards)\n",
        ("tests/test_losses.py::test_plackett_luce_through_record_loss_follows_the_ranking",)),
    Breakage(
        "checkpoint-without-head", "the saved checkpoint leaves out the trained score head (it is re-initialised "
        "on load)",
        "rewardkit/checkpoint.py",
        "            model.hf.save_pretrained(folder, state_dict=state)\n",
        "            model.hf.save_pretrained(folder, state_dict={k: v for k, v in (state or model.hf.state_dict())"
        ".items() if not k.startswith('score.')})\n",
        ("tests/test_train.py::test_saved_checkpoint_scores_what_the_run_measured",)),
    Breakage(
        "divergence-never-stops", "non-finite steps are skipped forever; TrainingDiverged is never raised",
        "rewardkit/training/loop.py",
        "            if bad >= cfg.max_bad_steps or overflows >= MAX_OVERFLOWS:\n",
        "            if False:\n",
        ("tests/test_cli.py::test_a_diverging_run_stops_with_one_line_naming_its_checkpoint",
         "tests/test_run.py::test_non_finite_steps_in_a_row_stop_the_run_with_a_usable_checkpoint")),
    Breakage(
        "gradient-checkpointing-not-enabled", "--gradient-checkpointing is accepted but never switched on",
        "rewardkit/train.py",
        "        model.hf.activation_checkpointing_enable({\"use_reentrant\": False})\n",
        "        pass\n",
        ("tests/test_train.py::test_gradient_checkpointing_gives_the_same_losses",)),
)


def make_copy(ref: str, parent: Path) -> Path:
    """The committed tree at ``ref`` in ``parent/repo``, with ``parent/shared`` pointing at the real data."""
    repo = parent / "repo"
    repo.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(repo)], input=archive, check=True)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (parent / "shared").symlink_to(shared)
    return repo


def apply(repo: Path, b: Breakage) -> str | None:
    """Break ``b.file`` in the copy; None when done, else why not (the snippet is not there exactly once)."""
    path = repo / b.file
    lines = path.read_text().splitlines(keepends=True)
    old = [x.strip() for x in b.old.splitlines()]
    hits = [i for i in range(len(lines) - len(old) + 1)
            if [x.strip() for x in lines[i:i + len(old)]] == old]
    if len(hits) != 1:
        return f"the snippet to break occurs {len(hits)} times in {b.file} (must be once): update the breakage"
    (i,) = hits
    indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
    base = min(len(x) - len(x.lstrip()) for x in b.new.splitlines() if x.strip())
    new = [indent + x[base:] + "\n" for x in b.new.splitlines()]
    path.write_text("".join(lines[:i] + new + lines[i + len(old):]))
    return None


def env_for(repo: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "400"}


def check_imports_copy(repo: Path) -> None:
    out = subprocess.run([sys.executable, "-c", "import rewardkit; print(rewardkit.__file__)"], cwd=repo,
                         env=env_for(repo), capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(repo.resolve()):
        raise SystemExit(f"rewardkit imports from {out}, not from the copy {repo}")


def run_tests(repo: Path, tests: tuple[str, ...], timeout: int) -> tuple[str, str, float]:
    """(outcome, pytest's summary line, seconds): outcome is red (tests failed), green, error or timeout."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(repo.parent / "pytest"),
           "-o", "addopts=", *tests]
    started = time.time()
    try:
        proc = subprocess.run(cmd, cwd=repo, env=env_for(repo), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", f"no result after {timeout} s", time.time() - started
    lines = [x for x in proc.stdout.splitlines() if re.search(r"\b(passed|failed|error|no tests ran)\b", x)]
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    summary = lines[-1].strip("= ") if lines else (tail[-1] if tail else f"exit status {proc.returncode}")
    outcome = {0: "green", 1: "red"}.get(proc.returncode, "error")
    if outcome == "red" or outcome == "error":  # each failed test, with the start of its reason
        failed = []
        for x in proc.stdout.splitlines():
            if x.startswith(("FAILED", "ERROR")) and "::" in x:
                test, _, why = x.split(" ", 1)[1].partition(" - ")
                failed.append(f"{test.split('::', 1)[1]} ({why[:160]})" if why else test.split("::", 1)[1])
        summary = f"{summary}: {'; '.join(failed)}"
    return outcome, str(summary), time.time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD", help="the commit to copy (default HEAD: committed code only)")
    parser.add_argument("--only", action="append", help="run only this breakage (repeatable)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unbroken run")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per pytest run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument("--list", action="store_true", help="list the breakages and their tests, then exit")
    a = parser.parse_args()
    chosen = [b for b in BREAKAGES if not a.only or b.name in a.only]
    if a.only and len(chosen) != len(set(a.only)):
        raise SystemExit(f"unknown breakage; choose from {', '.join(b.name for b in BREAKAGES)}")
    if a.list:
        for b in chosen:
            print(f"{b.name}: {b.what}\n  {b.file}\n  " + "\n  ".join(b.tests))
        return 0
    work = Path(tempfile.mkdtemp(prefix="rewardkit-mutation-"))
    print(f"copies of {a.ref} under {work}", file=sys.stderr)
    rows, ok = [], True
    try:
        if not a.no_baseline:
            repo = make_copy(a.ref, work / "baseline")
            check_imports_copy(repo)
            tests = tuple(dict.fromkeys(t for b in chosen for t in b.tests))
            outcome, summary, seconds = run_tests(repo, tests, a.timeout * 2)
            print(f"baseline: {outcome} ({summary}, {seconds:.0f} s)", file=sys.stderr)
            rows.append(("(none: baseline)", len(tests), outcome, summary, seconds))
            ok &= outcome == "green"
        for b in chosen:
            repo = make_copy(a.ref, work / b.name)
            stale = apply(repo, b)
            check_imports_copy(repo)
            outcome, summary, seconds = ("stale", stale, 0.0) if stale else run_tests(repo, b.tests, a.timeout)
            print(f"{b.name}: {outcome} ({summary}, {seconds:.0f} s)", file=sys.stderr)
            rows.append((b.name, len(b.tests), outcome, summary, seconds))
            ok &= outcome == "red"
            if not a.keep:
                shutil.rmtree(work / b.name, ignore_errors=True)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nMutation check of {a.ref}: every breakage must turn its tests red.\n")
    print("| breakage | tests | result | pytest | s |\n|---|---|---|---|---|")
    for name, n, outcome, summary, seconds in rows:
        print(f"| {name} | {n} | **{outcome}** | {summary} | {seconds:.0f} |")
    baseline = "" if a.no_baseline else " and the baseline green"
    print(f"\nevery breakage red{baseline}" if ok else "\nNOT all red: see the rows above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
