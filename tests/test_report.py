"""The visual report: `rewardkit eval --report` and `rewardkit report` through real subprocesses on a
tiny model, and the report of results with ties and rankings written through the Python API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rewardkit.data.record import PreferenceExample
from rewardkit.evaluate import metrics_from_rewards, rewards_path_for, write_eval_output
from rewardkit.report import best_worst_rewards, load_eval, write_report
from rewardkit.rewardbench import best_of_n_example

from conftest import learnable_rows, write_jsonl

PNG = b"\x89PNG\r\n\x1a\n"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rewardkit.cli", *args], capture_output=True, text=True, timeout=300)


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 5000, path  # a real, non-empty image


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    rows = learnable_rows(24, seed=3)
    for i, r in enumerate(rows):
        r["subset"] = ["easy", "hard", "code"][i % 3]
    return write_jsonl(tmp_path_factory.mktemp("data") / "heldout.jsonl", rows)


def test_eval_with_report_writes_results_sidecar_pngs_and_one_html(tiny_model_dir, heldout, tmp_path):
    smap = tmp_path / "sections.yaml"
    smap.write_text("sections:\n  Chat: [easy, hard]\n  Code: [code]\nweights:\n  code: 2\n")
    out = tmp_path / "report"
    run = cli("eval", "--model", str(tiny_model_dir), "--data", str(heldout), "--report", str(out),
              "--sections", str(smap), "--seed", "3", "--bootstrap-samples", "200")
    assert run.returncode == 0, run.stderr
    result = json.loads((out / "eval.json").read_text())
    # RewardBench's results shape, plus ours
    assert result["model"] == str(tiny_model_dir)
    assert set(result["extra_results"]) == {"easy", "hard", "code"} and result["num_prompts"] == 24
    assert result["accuracy"] == pytest.approx(np.mean(list(result["sections"].values())))
    assert result["scorer"]["head_init_seed"] == 3 and result["bootstrap"]["seed"] == 3
    assert result["eval_config"]["seed"] == 3
    sidecar = out / result["rewards_file"]
    assert sidecar == rewards_path_for(out / "eval.json")
    rows = [json.loads(line) for line in sidecar.read_text().splitlines()]
    assert len(rows) == 24 and all(len(r["rewards"]) == 2 and r["ranks"] == [0, 1] for r in rows)
    for name in ("accuracy", "reliability", "length", "reward_histograms"):
        check_png(out / f"{name}.png")
    page = (out / "report.html").read_text()
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 4
    assert not re.search(r"(src|href)=['\"]?(http|file|/)", page)  # self-contained
    for text in ("Per subset", "Sections", "longer wins", "Calibration", "ECE of σ(Δr)", "n=8"):
        assert text in page, text


def test_report_command_compares_runs_and_explains_missing_results(tiny_model_dir, heldout, tmp_path):
    outputs = []
    for seed in (1, 2):
        outputs.append(tmp_path / f"eval-{seed}.json")
        run = cli("eval", "--model", str(tiny_model_dir), "--data", str(heldout), "--seed", str(seed),
                  "--output", str(outputs[-1]), "--bootstrap-samples", "100")
        assert run.returncode == 0, run.stderr
    run = cli("report", *map(str, outputs), "--output-dir", str(tmp_path / "cmp"))
    assert run.returncode == 0, run.stderr
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert "(eval-1)" in page and "(eval-2)" in page  # same model twice: labels say which results file
    check_png(tmp_path / "cmp" / "accuracy.png")

    (tmp_path / "empty").mkdir()
    bad = cli("report", str(tmp_path / "empty"))
    assert bad.returncode == 2 and "holds no eval results" in bad.stderr and "Traceback" not in bad.stderr
    bad = cli("report", str(tmp_path / "nope.json"))
    assert bad.returncode == 2 and "no such eval results" in bad.stderr
    bad = cli("eval", "--model", str(tiny_model_dir), "--data", str(heldout), "--sections", str(tmp_path / "x.yaml"))
    assert bad.returncode == 2 and "no such file" in bad.stderr


def test_report_of_ties_and_rankings(tmp_path):
    examples = [PreferenceExample.pair(f"q{i}", "good " * (i + 1), "bad", subset="pairs") for i in range(12)]
    examples += [PreferenceExample.pair(f"t{i}", "same", "same.", ties=[[0, 1]], subset="pairs") for i in range(4)]
    examples += [best_of_n_example(f"b{i}", "right", ["wrong", "off", "no"], subset="bon") for i in range(4)]
    rng = np.random.default_rng(0)
    rewards = [rng.normal(size=len(ex.completions)) + np.eye(len(ex.completions))[ex.ranking[0]] for ex in examples]
    result = {"model": "synthetic", **metrics_from_rewards(examples, rewards, bootstrap_samples=100)}
    write_eval_output(tmp_path / "eval.json", result, examples, rewards)
    run = load_eval(tmp_path)  # a folder holding one results file
    best, worst = best_worst_rewards(run.records)
    assert len(best) == 16 and len(worst) == 12 + 4 * 3  # tie-only examples left out; 3 tied-worst per best-of-4
    page = write_report([tmp_path / "eval.json"])
    assert page == tmp_path / "report" / "report.html"
    check_png(tmp_path / "report" / "three_way.png")
    text = page.read_text()
    assert "3-way accuracy" in text and "rankings: top-1" in text and "rate-matched" in text
