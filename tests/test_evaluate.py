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
    assert m["reward_mean"] == pytest.approx(np.mean([2, 0, 1, -1, 0, 0, 3, -3]))


def test_perfectly_calibrated_large_margins_have_small_ece():
    rc, rr = np.full(100, 10.0), np.zeros(100)
    m = pair_metrics(rc, rr, np.ones(100), np.ones(100))
    assert m["accuracy"] == 1.0 and m["ece"] < 1e-4 and m["brier"] < 1e-8
