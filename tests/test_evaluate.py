import math

import numpy as np
import pytest

from rewardkit.evaluate import pair_metrics


def test_pair_metrics_by_hand():
    rc = np.array([2.0, 0.0, 1.0, -1.0])
    rr = np.array([0.0, 0.0, 3.0, -3.0])  # Δ = 2, 0 (tie), −2, 2
    lc = np.array([10, 5, 1, 8])
    lr = np.array([3, 5, 9, 2])
    m = pair_metrics(rc, rr, lc, lr)
    assert m["accuracy"] == 0.5  # the tie counts as wrong
    assert m["ties"] == 1
    assert m["mean_margin"] == pytest.approx(0.5)
    s2 = 1 / (1 + math.exp(-2))
    assert m["brier"] == pytest.approx(((1 - s2) ** 2 * 2 + 0.25 + s2 ** 2) / 4)
    # confidences: s2 (right), 0.5 (tie: wrong), s2 (wrong), s2 (right)
    # bins: s2 = 0.881 → bin 7 holds 3 pairs with accuracy 2/3; 0.5 → bin 0 with accuracy 0
    expected_ece = 0.75 * abs(2 / 3 - s2) + 0.25 * abs(0 - 0.5)
    assert m["ece"] == pytest.approx(expected_ece)
    assert m["length_baseline_accuracy"] == 0.5  # longer wins in pairs 0 and 3; equal lengths count as wrong
    # Reward statistics are per completion, so they are not a pair metric (see metrics_from_rewards).
    assert "reward_mean" not in m and "reward_std" not in m


def test_perfectly_calibrated_large_margins_have_small_ece():
    rc, rr = np.full(100, 10.0), np.zeros(100)
    m = pair_metrics(rc, rr, np.ones(100), np.ones(100))
    assert m["accuracy"] == 1.0 and m["ece"] < 1e-4 and m["brier"] < 1e-8


# ------------------------------------------------------------------------------------------ new metrics

from rewardkit.data.record import PreferenceExample  # noqa: E402
from rewardkit.evaluate import (  # noqa: E402
    Bootstrap,
    bootstrap_ci,
    calibration,
    kendall_tau,
    metrics_from_rewards,
    ranking_metrics,
    spearman,
    tie_threshold_rate_matched,
    top1_credit,
)
from rewardkit.losses import sigmoid  # noqa: E402


def pair(prompt: str, chosen: str, rejected: str, **kw) -> PreferenceExample:
    return PreferenceExample.pair(prompt, chosen, rejected, **kw)


def test_calibration_ece_and_brier_on_known_inputs():
    # σ(Δr) given to the annotators' choice: four pairs at confidence 0.85 (three right), two at 0.25
    # (the model backed the other side with confidence 0.75, wrongly)
    p = np.array([0.85, 0.85, 0.85, 0.15, 0.25, 0.25])
    cal = calibration(p, n_bins=5)  # bins of width 0.1 on [0.5, 1]
    assert cal["ece"] == pytest.approx(4 / 6 * abs(0.75 - 0.85) + 2 / 6 * abs(0.0 - 0.75))
    assert cal["brier"] == pytest.approx(np.mean((1 - p) ** 2))
    by_lo = {round(b["lo"], 2): b for b in cal["bins"]}
    assert by_lo[0.8]["count"] == 4 and by_lo[0.8]["accuracy"] == 0.75
    assert by_lo[0.7]["count"] == 2 and by_lo[0.7]["confidence"] == pytest.approx(0.75)
    assert by_lo[0.7]["accuracy"] == 0.0
    assert sum(b["count"] for b in cal["bins"]) == 6


def test_calibrated_probabilities_have_small_ece_and_overconfident_ones_do_not():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 20000)
    right = rng.random(20000) < conf  # outcomes drawn with the stated probability
    p_label = np.where(right, conf, 1 - conf)
    assert calibration(p_label)["ece"] < 0.02
    # The same outcomes, but the model claims 0.99 every time: ECE ≈ 0.99 − 0.75.
    over = np.where(right, 0.99, 0.01)
    assert calibration(over)["ece"] == pytest.approx(0.99 - right.mean(), abs=1e-9)


def test_kendall_tau_and_top1_by_hand():
    ranks = np.array([0, 1, 2, 3])
    # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3): only (1,2) is discordant → τ = (5 − 1) / 6
    assert kendall_tau(ranks, np.array([3.0, 1.0, 2.0, 0.0])) == pytest.approx(4 / 6)
    # a reward tie between 0 and 1: τ-b = 5 / sqrt(6 · 5)
    assert kendall_tau(ranks, np.array([3.0, 3.0, 1.0, 0.0])) == pytest.approx(5 / math.sqrt(30))
    assert kendall_tau(ranks, np.zeros(4)) == 0.0
    assert math.isnan(kendall_tau(np.zeros(3, dtype=int), np.array([1.0, 2.0, 3.0])))
    assert top1_credit(ranks, np.array([3.0, 1.0, 2.0, 0.0])) == 1.0
    assert top1_credit(ranks, np.array([3.0, 3.0, 1.0, 0.0])) == 0.5  # two at the top, one is the best
    assert top1_credit(ranks, np.array([0.0, 3.0, 1.0, 0.0])) == 0.0
    assert top1_credit(np.array([0, 0, 2]), np.array([1.0, 1.0, 0.0])) == 1.0  # both tied-best are annotator-best


def test_ranking_metrics_over_all_strict_pairs():
    msgs = [[{"role": "assistant", "content": t}] for t in ("a", "b", "c")]
    prompt = [{"role": "user", "content": "q"}]
    ranked = PreferenceExample(prompt, msgs, ranking=[2, 0, 1])  # c ≻ a ≻ b
    partly_tied = PreferenceExample(prompt, msgs, ranking=[0, 1, 2], ties=[[1, 2]])  # a ≻ b = c
    rewards = [np.array([1.0, 0.0, 2.0]),  # fully right: 3 of 3 pairs
               np.array([0.0, 1.0, -1.0])]  # a vs b wrong, a vs c right; b = c is not a strict pair
    m = ranking_metrics([ranked, partly_tied], rewards)
    assert m["pairs"] == 5 and m["pairwise_accuracy"] == pytest.approx(4 / 5)
    assert m["pairwise_accuracy_per_prompt"] == pytest.approx((1 + 0.5) / 2)
    assert m["top1_accuracy"] == pytest.approx(0.5)
    assert m["kendall_tau"] == pytest.approx((1.0 + 0.0) / 2)  # second: (+1 −1) / sqrt(2 · 3) = 0


def test_ties_are_excluded_from_accuracy_and_scored_three_ways():
    examples = [pair("q1", "good", "bad"), pair("q2", "fine", "poor"),
                PreferenceExample(prompt=[{"role": "user", "content": "q3"}], ranking=[1, 0],  # the second is better
                                  completions=[[{"role": "assistant", "content": t}] for t in ("x", "y")]),
                pair("q4", "same", "same!", ties=[[0, 1]]), pair("q5", "one", "two", ties=[[0, 1]])]
    rewards = [np.array([2.0, 0.0]), np.array([0.0, 1.0]), np.array([0.0, 3.0]),
               np.array([1.0, 1.05]), np.array([0.0, 4.0])]
    m = metrics_from_rewards(examples, rewards, bootstrap_samples=200)
    assert m["pairs"] == 3 and m["pairwise_accuracy"] == pytest.approx(2 / 3)  # ties are not pairs
    assert m["accuracy"] == pytest.approx(2 / 3) and m["num_prompts"] == 3
    t = m["tied"]
    assert t["tied_pairs"] == 2 and t["threshold_rule"] == "rate-matched"
    # closeness |σ(Δr) − ½| per pair: q4 is the closest, q1/q2/q3/q5 far → with 2 model ties allowed,
    # the two closest pairs are q4 (0.0125) and q2 (σ(−1) → 0.231); q5 (0.482) is not called a tie.
    assert t["accuracy"] == 0.5
    # completion order: q1 first ✓, q2 human first / model tie, q3 human second ✓, q4 tie ✓, q5 tie / model second
    assert t["three_way_confusion"] == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert t["three_way_accuracy"] == pytest.approx(3 / 5)
    fixed = metrics_from_rewards(examples, rewards, tie_threshold=0.49, bootstrap_samples=0)["tied"]
    assert fixed["threshold"] == 0.49 and fixed["accuracy"] == 1.0 and fixed["accuracy_ci"] is None
    assert fixed["three_way_confusion"][0] == [0, 2, 0]  # q1 and q2 are close enough too at t = 0.49


def test_rate_matched_threshold_calls_as_many_ties_as_annotators():
    closeness = np.array([0.3, 0.01, 0.2, 0.05, 0.4])
    t = tie_threshold_rate_matched(closeness, 2)
    assert (closeness < t).sum() == 2 and 0.05 < t < 0.2
    assert tie_threshold_rate_matched(closeness, 0) == 0.0


def test_length_buckets_and_baseline_by_hand():
    # chosen/rejected lengths in characters: diffs +60, −60, +600, 0
    examples = [pair(f"q{i}", "a" * lc, "b" * lr) for i, (lc, lr) in enumerate([(70, 10), (10, 70), (700, 100), (5, 5)])]
    rewards = [np.array([1.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([1.0, 0.0])]
    length = metrics_from_rewards(examples, rewards, bootstrap_samples=0)["length"]
    assert length["unit"] == "characters"
    assert length["length_baseline_accuracy"] == 0.5  # +60 and +600 are right; 0 (equal) counts as wrong
    assert length["equal_length_pairs"] == 1
    buckets = {(b["lo"], b["hi"]): b for b in length["buckets"]}
    assert buckets[(50, 150)]["count"] == 1 and buckets[(50, 150)]["accuracy"] == 1.0
    assert buckets[(-150, -50)]["accuracy"] == 1.0 and buckets[(-150, -50)]["length_baseline_accuracy"] == 0.0
    assert buckets[(500, None)]["accuracy"] == 0.0
    assert buckets[(-50, 50)]["count"] == 1
    assert sum(b["count"] for b in length["buckets"]) == 4
    # the model prefers the longer reply in 1 of the 3 pairs whose lengths differ (the +60 one)
    assert length["model_prefers_longer"] == pytest.approx(1 / 3)
    assert length["chosen_shorter_pairs"] == 1 and length["accuracy_chosen_shorter"] == 1.0  # the −60 pair


def test_spearman():
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    assert math.isnan(spearman(np.array([1, 1, 1]), np.array([1, 2, 3])))


def test_bootstrap_interval_covers_the_true_rate_about_95_percent_of_the_time():
    p, n, repeats = 0.7, 200, 200
    rng = np.random.default_rng(123)
    covered = 0
    for k in range(repeats):
        data = (rng.random(n) < p).astype(float)
        lo, hi = bootstrap_ci(data, samples=1000, seed=k)
        covered += lo <= p <= hi
    assert 0.90 <= covered / repeats <= 0.99


def test_bootstrap_resamples_prompts_not_pairs():
    # 20 prompts, each with 5 pairs that are all right or all wrong: the effective sample size is 20.
    outcome = np.repeat(np.arange(20) % 2, 5).astype(float)
    groups = np.repeat(np.arange(20), 5)
    by_prompt = bootstrap_ci(outcome, groups, samples=2000, seed=0)
    by_pair = bootstrap_ci(outcome, samples=2000, seed=0)
    assert (by_prompt[1] - by_prompt[0]) > 1.8 * (by_pair[1] - by_pair[0])


def test_bootstrap_is_seeded_and_recorded():
    b1, b2, b3 = (Bootstrap(np.arange(50), 300, seed) for seed in (7, 7, 8))
    values = (np.arange(50) % 3 == 0).astype(float)
    assert b1.ci(values, np.arange(50)) == b2.ci(values, np.arange(50))
    assert b1.ci(values, np.arange(50)) != b3.ci(values, np.arange(50))
    examples = [pair(f"q{i}", "good", "bad") for i in range(30)]
    rewards = [np.array([1.0, float(i % 3)]) for i in range(30)]
    m1 = metrics_from_rewards(examples, rewards, seed=5)
    m2 = metrics_from_rewards(examples, rewards, seed=5)
    assert m1 == m2 and m1["bootstrap"]["seed"] == 5 and m1["bootstrap"]["prompts"] == 30


def test_normalised_calibration_uses_the_reward_scale():
    examples = [pair(f"q{i}", "good", "bad") for i in range(40)]
    rewards = [np.array([0.2 * (i % 5), 0.0]) for i in range(40)]
    m = metrics_from_rewards(examples, rewards, reward_stats=(0.0, 0.1), bootstrap_samples=0)
    norm = m["calibration_normalized"]
    delta = np.array([0.2 * (i % 5) for i in range(40)])
    assert norm["brier"] == pytest.approx(np.mean((1 - sigmoid(delta / 0.1)) ** 2))
    assert m["calibration"]["brier"] == pytest.approx(np.mean((1 - sigmoid(delta)) ** 2))
    assert "calibration_normalized" not in metrics_from_rewards(examples, rewards, bootstrap_samples=0)


def test_non_finite_rewards_and_mismatched_lengths_are_errors():
    examples = [pair("q", "a", "b")]
    with pytest.raises(ValueError, match="non-finite rewards"):
        metrics_from_rewards(examples, [np.array([np.nan, 0.0])])
    with pytest.raises(ValueError, match="2 completions"):
        metrics_from_rewards(examples, [np.array([1.0, 0.0, 2.0])])
    with pytest.raises(ValueError, match="every pair in the data is a tie"):
        metrics_from_rewards([pair("q", "a", "b", ties=[[0, 1]])], [np.array([1.0, 0.0])])


def test_reward_mean_counts_each_completion_once_top_level_and_per_subset():
    # A best-of-4 record has 3 strict pairs (chosen vs each rejected): counting completions per pair
    # would count the chosen 3 times. Both levels must average the 4 + 2 + 2 rewards once each.
    bo4 = PreferenceExample(prompt=[{"role": "user", "content": "q"}],
                            completions=[[{"role": "assistant", "content": c}] for c in "abcd"],
                            ranking=[0, 1, 2, 3], ties=[[1, 2, 3]], subset="s")
    examples = [bo4, pair("p", "good", "bad", subset="s"), pair("r", "good", "bad", subset="t")]
    rewards = [np.array([9.0, 0.0, 1.0, 2.0]), np.array([1.0, 0.0]), np.array([4.0, 2.0])]
    m = metrics_from_rewards(examples, rewards, bootstrap_samples=0)
    everything = np.concatenate(rewards)
    assert m["reward_mean"] == pytest.approx(everything.mean())
    assert m["reward_std"] == pytest.approx(everything.std())
    s = np.concatenate(rewards[:2])  # 9, 0, 1, 2, 1, 0: the chosen 9 once, not three times
    assert m["subsets"]["s"]["reward_mean"] == pytest.approx(s.mean())
    assert m["subsets"]["s"]["reward_std"] == pytest.approx(s.std())
    assert m["subsets"]["t"]["reward_mean"] == pytest.approx(3.0)
    # One subset holding everything reads the same as the top level: one definition under one name.
    for ex in examples:
        ex.subset = "all"
    one = metrics_from_rewards(examples, rewards, bootstrap_samples=0)
    assert one["subsets"]["all"]["reward_mean"] == pytest.approx(one["reward_mean"])
    assert one["subsets"]["all"]["reward_std"] == pytest.approx(one["reward_std"])
