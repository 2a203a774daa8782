"""RewardBench conventions: section arithmetic (with weights), best-of-N credit with ties, the results
shape, and section maps from files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rewardkit.data.record import PreferenceExample
from rewardkit.evaluate import metrics_from_rewards
from rewardkit.rewardbench import (
    REWARDBENCH_V1_SECTIONS,
    REWARDBENCH_V2_SECTIONS,
    SectionMap,
    TiesRow,
    best_of_n_example,
    example_credit,
    load_section_map,
    section_scores,
    ties_row,
    ties_score,
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
    # Rejected-vs-rejected pairs are unordered: not pairs at all (issue 14.2), so not "tied" either.
    assert m["annotator_tied_pairs"] == 0 and "tied" not in m


def test_section_maps_from_files_and_the_builtin_one(tmp_path):
    rb = load_section_map("rewardbench-v1")
    assert rb.sections == REWARDBENCH_V1_SECTIONS
    assert rb.counts["math-prm"] == 984 and rb.counts["hep-go"] == 164  # the official table, math up-weighted
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


def test_rewardbench_v1_on_a_subsample_weighs_subsets_by_the_official_counts():
    """Issue 14.9: the official code weighs a section's subsets by its fixed EXAMPLE_COUNTS, not by how many
    examples were scored, so a subsample must too (it weighed by the subsample's counts before)."""
    examples = ([PreferenceExample.pair(f"m{i}", "a", "b", subset="math-prm") for i in range(3)]
                + [PreferenceExample.pair("c", "a", "b", subset="hep-cpp")])
    rewards = [np.array([1.0, 0.0])] * 3 + [np.array([0.0, 1.0])]  # math right, code wrong
    m = metrics_from_rewards(examples, rewards, section_map=load_section_map("rewardbench-v1"))
    assert m["sections"]["Reasoning"] == pytest.approx(984 / (984 + 164))
    assert m["accuracy"] == pytest.approx(984 / (984 + 164))  # the only section present


def test_data_whose_subsets_are_not_in_the_map_is_an_error():
    examples = [PreferenceExample.pair("q", "a", "b", subset="mine")]
    with pytest.raises(ValueError, match="section map"):
        metrics_from_rewards(examples, [np.array([1.0, 0.0])], section_map=load_section_map("rewardbench-v1"))


# ------------------------------------------------------------------------------------- RewardBench 2


def _ties_rows() -> list[TiesRow]:
    """Four Ties prompts. Margins: correct–incorrect = worst correct − best incorrect; spread = best
    correct − worst correct (tied rows only)."""
    return [
        TiesRow("ref", "p0", (True, False, False), (4.0, 2.0, 1.0)),  # accurate, margin 2
        TiesRow("tied", "p0", (True, True, False), (6.0, 3.0, 0.5)),  # accurate, spread 3, margin 2.5
        TiesRow("ref", "p1", (True, False, False), (1.0, 3.0, 0.0)),  # wrong, margin −2
        TiesRow("tied", "p1", (True, True, False), (2.0, 2.0, 1.0)),  # accurate, spread 0, margin 1
        TiesRow("tied", "p2", (True, True, True, False), (1.0, 1.0, 1.0, 1.0)),  # a reward tie is wrong; no ref
        TiesRow("ref", "p3", (True, False), (1.0, 1.0)),  # wrong, margin 0
        TiesRow("tied", "p3", (True, True, False), (2.0, 2.0, 2.0)),  # wrong, spread 0, margin 0
    ]


def test_ties_score_follows_the_official_rule_by_hand():
    out = ties_score(_ties_rows())
    assert out["ref_accuracy"] == pytest.approx(1 / 3)  # p0 of p0, p1, p3
    assert out["tied_accuracy"] == pytest.approx(2 / 4)  # p0, p1 of p0..p3
    # Margin terms only over prompts with both a ref and a tied row: p0, p1, p3 (not p2).
    assert out["pairs"] == 3 and out["ref_prompts"] == 3 and out["tied_prompts"] == 4
    # tied margin > spread: p0 2.5 > 3 no; p1 1 > 0 yes; p3 0 > 0 no
    assert out["correctness_preferred"] == pytest.approx(1 / 3)
    # min(ref, tied margin) > spread: p0 min(2, 2.5) = 2 > 3 no; p1 −2 > 0 no; p3 0 > 0 no
    assert out["correctness_preferred_hard"] == 0.0
    # tanh(min margin / spread − 1): p0 tanh(2/3 − 1); p1 −2/0 = −inf → tanh = −1; p3 0/0 = nan → 0
    margin = (math.tanh(2 / 3 - 1) - 1.0 + 0.0) / 3
    assert out["correctness_margin_score"] == pytest.approx(margin)
    expected = 0.3 * 0.5 + 0.3 * (1 / 3) + 0.2 * (1 / 3) + 0.2 * 0.0 + 0.01 * margin
    assert out["score"] == pytest.approx(expected)
    # It is not best-of-N credit: mean 1/(tied at top) over these rows would be another number.
    assert out["score"] != pytest.approx(np.mean([1, 1 / 2, 0, 1 / 2, 1 / 4, 1 / 2, 1 / 3]))


def test_ties_score_edge_cases():
    # No ref/tied pair: the official margin terms are means over nothing (nan), so is the score.
    only_tied = ties_score([TiesRow("tied", 0, (True, True, False), (2.0, 1.0, 0.0))])
    assert only_tied["tied_accuracy"] == 1.0 and only_tied["ref_accuracy"] == 0.0
    assert only_tied["pairs"] == 0 and math.isnan(only_tied["score"])
    with pytest.raises(ValueError, match="correct and one incorrect"):
        ties_score([TiesRow("ref", 0, (True, True), (1.0, 0.0))])
    with pytest.raises(ValueError, match="two correct"):
        ties_score([TiesRow("tied", 0, (True, False), (1.0, 0.0))])
    with pytest.raises(ValueError, match="kind"):
        ties_score([TiesRow("other", 0, (True, False), (1.0, 0.0))])


def _bo4(prompt: str, subset: str, chosen_reward: float) -> tuple[PreferenceExample, np.ndarray]:
    ex = best_of_n_example(prompt, f"good {prompt}", [f"bad {prompt} {i}" for i in range(3)], subset=subset)
    return ex, np.array([chosen_reward, 1.0, 0.5, 0.0])  # chosen above all (2.0), tied at top (1.0) or below (0.0)


def _ties_example(prompt: str, n_correct: int, rewards: tuple[float, ...]) -> tuple[PreferenceExample, np.ndarray]:
    """A Ties record: the first ``n_correct`` completions are tied-best, the rest tied-worst."""
    k = len(rewards)
    ties = [g for g in (list(range(n_correct)), list(range(n_correct, k))) if len(g) > 1]
    ex = PreferenceExample(prompt=[{"role": "user", "content": prompt}],
                           completions=[[{"role": "assistant", "content": f"{prompt} #{i}"}] for i in range(k)],
                           ranking=list(range(k)), ties=ties or None, subset="Ties")
    return ex, np.asarray(rewards)


def test_rewardbench_v2_overall_is_the_unweighted_mean_of_its_six_domains():
    rb2 = load_section_map("rewardbench-v2")
    assert rb2.sections == REWARDBENCH_V2_SECTIONS and rb2.ties_subsets == ["Ties"]
    assert list(rb2.sections) == ["Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"]
    # A subsample with very unequal counts: 4 Factuality, 1 of each other best-of-4 domain.
    data = [_bo4(f"f{i}", "Factuality", r) for i, r in enumerate([2.0, 0.0, 0.0, 0.0])]  # 1/4
    data += [_bo4("i", "Precise IF", 2.0), _bo4("m", "Math", 1.0), _bo4("s", "Safety", 0.0), _bo4("o", "Focus", 2.0)]
    # Ties rows of _ties_rows(), one record each; ref and tied of a prompt share the prompt text.
    data += [_ties_example(f"t-{row.key}", sum(row.correct), row.scores) for row in _ties_rows()]
    examples, rewards = [d[0] for d in data], [d[1] for d in data]
    m = metrics_from_rewards(examples, rewards, section_map=rb2, bootstrap_samples=200)
    ties = ties_score(_ties_rows())["score"]
    subset = {"Factuality": 0.25, "Precise IF": 1.0, "Math": 0.5, "Safety": 0.0, "Focus": 1.0, "Ties": ties}
    assert m["extra_results"] == {k: pytest.approx(v) for k, v in subset.items()}
    assert m["sections"] == {k: pytest.approx(v) for k, v in subset.items()}
    assert m["accuracy"] == pytest.approx(sum(subset.values()) / 6)  # each domain 1/6, whatever its count
    assert m["missing_sections"] == [] and m["unmapped_subsets"] == []
    assert m["subset_counts"]["Factuality"] == 4 and m["subset_counts"]["Ties"] == 7
    terms = m["ties_subset_scores"]["Ties"]
    assert terms["pairs"] == 3 and terms["score"] == pytest.approx(ties)
    assert isinstance(m["ties"], int)  # still the number of reward ties among strict pairs
    lo, hi = m["subset_accuracy_ci"]["Ties"]
    assert lo <= hi
    # Without a map the headline stays the example-weighted mean of per-example credit.
    plain = metrics_from_rewards(examples, rewards, bootstrap_samples=0)
    assert plain["accuracy"] != pytest.approx(m["accuracy"])


def test_rewardbench_v2_ties_without_a_ref_tied_pair_is_a_missing_section():
    data = [_bo4("f", "Factuality", 2.0), _ties_example("t", 2, (2.0, 1.0, 0.0))]
    m = metrics_from_rewards([d[0] for d in data], [d[1] for d in data],
                             section_map=load_section_map("rewardbench-v2"), bootstrap_samples=0)
    assert "Ties" not in m["extra_results"] and "Ties" in m["missing_sections"]
    assert m["ties_subset_scores"]["Ties"]["pairs"] == 0 and m["accuracy"] == pytest.approx(1.0)


def test_ties_row_reads_a_record():
    ex, r = _ties_example("q", 2, (3.0, 2.0, 1.0))
    row = ties_row(ex, r)
    assert row.kind == "tied" and row.correct == (True, True, False) and row.scores == (3.0, 2.0, 1.0)
    ref = ties_row(*_ties_example("q", 1, (3.0, 2.0, 1.0)))
    assert ref.kind == "ref" and ref.key == row.key  # paired by prompt


def test_section_map_file_may_name_ties_subsets(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"sections": {"T": ["my-ties"], "A": ["a"]}, "ties_subsets": ["my-ties"]}))
    smap = load_section_map(str(path))
    assert smap.ties_subsets == ["my-ties"] and smap.to_dict()["ties_subsets"] == ["my-ties"]


def test_rewardbench2_rows_read_as_they_are_and_ties_pair_by_id(tmp_path):
    """RewardBench 2's own rows (lists of chosen/rejected replies, 'id', 'subset') load as best-of-N records: the
    chosen beat each rejected, several chosen are tied, the rejected unordered; Ties rows pair by their id."""
    from rewardkit.data import read_preferences
    from rewardkit.rewardbench import ties_row

    rows = [
        {"id": "17", "prompt": "2+2?", "chosen": ["4"], "rejected": ["5", "22", "3"], "subset": "Math"},
        {"id": "ref:7", "prompt": "Name a colour.", "chosen": ["red"], "rejected": ["seven", "table"], "subset": "Ties"},
        {"id": "tied:7", "prompt": "Name a colour!", "chosen": ["red", "blue"], "rejected": ["seven"], "subset": "Ties"},
    ]
    path = tmp_path / "rb2.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (math_ex, ref, tied), _ = read_preferences(str(path))
    assert math_ex.unordered == [[1, 2, 3]] and math_ex.ties is None and math_ex.id == "17"
    assert math_ex.preference_pairs() == [(0, 1, False), (0, 2, False), (0, 3, False)]
    assert tied.ties == [[0, 1]] and tied.unordered is None and tied.ranks == [0, 0, 2]
    # The two Ties rows have different prompt texts: only the id pairs them, as the official code does.
    r_ref, r_tied = ties_row(ref, np.array([1.0, 0.0, -1.0])), ties_row(tied, np.array([2.0, 1.5, 0.0]))
    assert (r_ref.kind, r_tied.kind) == ("ref", "tied") and r_ref.key == r_tied.key == "7"
    m = metrics_from_rewards([math_ex, ref, tied], [np.array([3.0, 1.0, 2.0, 0.0]), np.array([1.0, 0.0, -1.0]),
                                                      np.array([2.0, 1.5, 0.0])],
                             section_map=load_section_map("rewardbench-v2"), bootstrap_samples=0)
    assert m["extra_results"]["Math"] == 1.0 and "Ties" in m["sections"]
