"""RewardBench conventions: section arithmetic (with weights), best-of-N credit with ties, the results
shape, and section maps from files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rewardkit.data.record import PreferenceExample
from rewardkit.evaluate import metrics_from_rewards
from rewardkit.rewardbench import (
    REWARDBENCH_V1_SECTIONS,
    SectionMap,
    best_of_n_example,
    example_credit,
    load_section_map,
    section_scores,
)


def test_section_arithmetic_by_hand_with_weights():
    smap = SectionMap({"Chat": ["easy", "hard"], "Reasoning": ["math", "code"]}, weights={"math": 3.0})
    acc = {"easy": 0.9, "hard": 0.5, "math": 0.2, "code": 0.8}
    n = {"easy": 100, "hard": 50, "math": 10, "code": 30}
    out = section_scores(acc, n, smap)
    chat = (100 * 0.9 + 50 * 0.5) / 150  # example-count-weighted: 0.7667
    reasoning = (3 * 10 * 0.2 + 30 * 0.8) / (3 * 10 + 30)  # math counts 3 × 10 = 30 examples: 0.5
    assert out["sections"]["Chat"] == pytest.approx(chat)
    assert out["sections"]["Reasoning"] == pytest.approx(reasoning)
    assert out["overall"] == pytest.approx((chat + reasoning) / 2)  # mean of sections, not of examples
    assert out["missing_sections"] == [] and out["unmapped_subsets"] == []
    # Without the weight, math would count for 10 examples only.
    plain = section_scores(acc, n, SectionMap(smap.sections))
    assert plain["sections"]["Reasoning"] == pytest.approx((10 * 0.2 + 30 * 0.8) / 40)


def test_missing_sections_and_unmapped_subsets_are_listed_not_zeroed():
    smap = SectionMap({"Chat": ["easy"], "Safety": ["refuse"]})
    out = section_scores({"easy": 0.8, "extra": 0.1}, {"easy": 10, "extra": 5}, smap)
    assert out["sections"] == {"Chat": 0.8} and out["overall"] == 0.8
    assert out["missing_sections"] == ["Safety"] and out["unmapped_subsets"] == ["extra"]


def test_section_arithmetic_is_elementwise_over_bootstrap_replicates():
    smap = SectionMap({"A": ["x", "y"], "B": ["z"]})
    acc = {"x": np.array([1.0, 0.0]), "y": np.array([0.0, 0.0]), "z": np.array([0.5, 1.0])}
    out = section_scores(acc, {"x": 1, "y": 3, "z": 2}, smap)
    np.testing.assert_allclose(out["overall"], [(0.25 + 0.5) / 2, (0.0 + 1.0) / 2])


def test_best_of_n_credit_with_ties_at_the_top():
    ranks = [0, 1, 1, 1]  # one chosen, three tied-worst rejected (RewardBench 2's best-of-4)
    assert example_credit(ranks, np.array([2.0, 1.0, 1.0, 0.0])) == 1.0
    assert example_credit(ranks, np.array([2.0, 2.0, 1.0, 0.0])) == 0.5  # tied with one rejected at the top
    assert example_credit(ranks, np.array([1.0, 1.0, 1.0, 1.0])) == 0.25
    assert example_credit(ranks, np.array([1.0, 2.0, 0.0, 0.0])) == 0.0  # a rejected alone at the top
    # Pairs follow RewardBench v1: strict, a reward tie earns nothing, and the better side may be second.
    assert example_credit([0, 1], np.array([1.0, 1.0])) == 0.0
    assert example_credit([1, 0], np.array([0.0, 1.0])) == 1.0


def test_best_of_n_record_and_subset_scores():
    ex = best_of_n_example("2 + 2?", "4", ["5", "22", "four-ish"], subset="math")
    assert ex.ranks == [0, 1, 1, 1] and ex.chosen[0]["content"] == "4"
    assert [p for p in ex.preference_pairs() if not p[2]] == [(0, 1, False), (0, 2, False), (0, 3, False)]
    other = best_of_n_example("capital of France?", "Paris", ["Rome", "Lyon", "Nice"], subset="math")
    pairs = [PreferenceExample.pair(f"q{i}", "good", "bad", subset="chat") for i in range(3)]
    rewards = [np.array([3.0, 3.0, 1.0, 0.0]), np.array([5.0, 1.0, 2.0, 3.0]),
               np.array([1.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    smap = SectionMap({"Chat": ["chat"], "Reasoning": ["math"]}, weights={"math": 2.0})
    m = metrics_from_rewards([ex, other, *pairs], rewards, section_map=smap, bootstrap_samples=300)
    # RewardBench's shape: accuracy, num_prompts, extra_results per subset
    assert m["extra_results"] == {"chat": pytest.approx(2 / 3), "math": pytest.approx((0.5 + 1.0) / 2)}
    assert m["num_prompts"] == 5 and m["subset_counts"] == {"chat": 3, "math": 2}
    assert m["sections"] == {"Chat": pytest.approx(2 / 3), "Reasoning": pytest.approx(0.75)}
    assert m["accuracy"] == pytest.approx((2 / 3 + 0.75) / 2)
    lo, hi = m["accuracy_ci"]
    assert lo <= m["accuracy"] <= hi
    # Top-1 over every prompt: 0.5 (chosen tied at the top), 1, and the three pairs 1, 1, 0.
    assert m["rankings"]["top1_accuracy"] == pytest.approx((0.5 + 1 + 1 + 1 + 0) / 5)
    # Pairwise accuracy counts the 3 + 3 strict pairs of the best-of-4 records and the 3 pairs.
    assert m["pairs"] == 9 and m["pairwise_accuracy"] == pytest.approx((2 + 3 + 2) / 9)
    assert m["annotator_tied_pairs"] == 6 and "tied" not in m  # rejected-vs-rejected: unordered, not "equal"


def test_section_maps_from_files_and_the_builtin_one(tmp_path):
    rb = load_section_map("rewardbench-v1")
    assert rb.sections == REWARDBENCH_V1_SECTIONS
    assert rb.weights["math-prm"] * 447 == pytest.approx(984)  # RewardBench's up-weighting of math
    path = tmp_path / "map.yaml"
    path.write_text("sections:\n  Chat: [a, b]\n  Safety: [c]\nweights:\n  c: 2\n")
    smap = load_section_map(str(path))
    assert smap.sections == {"Chat": ["a", "b"], "Safety": ["c"]} and smap.weights == {"c": 2}
    (tmp_path / "map.json").write_text(json.dumps({"sections": {"S": ["x"]}}))
    assert load_section_map(str(tmp_path / "map.json")).sections == {"S": ["x"]}
    with pytest.raises(ValueError, match="both"):
        SectionMap({"A": ["x"], "B": ["x"]})
    with pytest.raises(ValueError, match="positive"):
        SectionMap({"A": ["x"]}, weights={"x": -1})
    with pytest.raises(ValueError, match="no such file"):
        load_section_map(str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="expected"):
        load_section_map(str(tmp_path / "bad.yaml"))


def test_data_whose_subsets_are_not_in_the_map_is_an_error():
    examples = [PreferenceExample.pair("q", "a", "b", subset="mine")]
    with pytest.raises(ValueError, match="section map"):
        metrics_from_rewards(examples, [np.array([1.0, 0.0])], section_map=load_section_map("rewardbench-v1"))
