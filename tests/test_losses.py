import math

import pytest
import torch

from rewardkit.losses import (
    TieError,
    balanced_pairwise_loss,
    bradley_terry_loss,
    bradley_terry_loss_softplus,
    label_smoothed_loss,
    margin_loss,
    plackett_luce_loss,
    record_loss,
    reward_centering,
    reward_l2,
    sigmoid,
    soft_bradley_terry_loss,
)


def test_eq3_against_hand_computed_values():
    r_w = torch.tensor([2.0, 0.0, -1.0, 3.0])
    r_l = torch.tensor([0.5, 0.0, 1.0, -3.0])
    # −log σ(d) = log(1 + e^{−d}) for d = 1.5, 0, −2, 6
    expected = [math.log(1 + math.exp(-1.5)), math.log(2.0), math.log(1 + math.exp(2.0)), math.log(1 + math.exp(-6.0))]
    assert bradley_terry_loss(r_w, r_l).tolist() == pytest.approx(expected, rel=1e-6)
    assert expected[0] == pytest.approx(0.2014132779827524, rel=1e-12)


def test_eq4_equals_eq3_and_the_printed_typo_does_not():
    torch.manual_seed(0)
    r_w, r_l = torch.randn(1000) * 5, torch.randn(1000) * 5
    assert torch.allclose(bradley_terry_loss(r_w, r_l), bradley_terry_loss_softplus(r_w, r_l), atol=1e-6)
    # The source's log(1 + e^{r_l} − e^{r_w}) is a different function (and NaN when e^{r_w} > 1 + e^{r_l}).
    typo = torch.log(1 + torch.exp(r_l) - torch.exp(r_w))
    assert torch.isnan(typo).any()


def test_losses_are_stable_for_extreme_margins():
    r_w, r_l = torch.tensor([1000.0, -1000.0]), torch.tensor([-1000.0, 1000.0])
    loss = bradley_terry_loss(r_w, r_l)
    assert torch.isfinite(loss).all()
    assert loss.tolist() == pytest.approx([0.0, 2000.0])


def test_gradient_of_eq3_is_sigmoid_of_negative_margin():
    r_w = torch.tensor([0.3], requires_grad=True)
    r_l = torch.tensor([-0.2], requires_grad=True)
    bradley_terry_loss(r_w, r_l).sum().backward()
    assert r_w.grad.item() == pytest.approx(-1 / (1 + math.exp(0.5)), rel=1e-6)
    assert r_l.grad.item() == pytest.approx(1 / (1 + math.exp(0.5)), rel=1e-6)


def test_margin_loss_eq5_shifts_the_margin():
    r_w, r_l = torch.tensor([2.0]), torch.tensor([1.0])
    assert margin_loss(r_w, r_l, torch.tensor([0.0])).item() == pytest.approx(bradley_terry_loss(r_w, r_l).item())
    assert margin_loss(r_w, r_l, torch.tensor([1.0])).item() == pytest.approx(math.log(2.0), rel=1e-6)


# ---------------------------------------------------------------- issue 3: every loss


def test_eq3_and_eq4_agree_in_value_and_gradient_including_large_margins():
    deltas = torch.tensor([-200.0, -80.0, -30.0, -1.0, 0.0, 1e-3, 2.5, 30.0, 89.0, 200.0], dtype=torch.float32)
    for fn in (bradley_terry_loss, bradley_terry_loss_softplus):
        assert torch.isfinite(fn(deltas, torch.zeros_like(deltas))).all()
    grads = []
    values = []
    for fn in (bradley_terry_loss, bradley_terry_loss_softplus):
        r_w = deltas.clone().requires_grad_(True)
        r_l = torch.zeros_like(deltas, requires_grad=True)
        loss = fn(r_w, r_l)
        loss.sum().backward()
        values.append(loss.detach())
        grads.append((r_w.grad.clone(), r_l.grad.clone()))
    assert torch.allclose(values[0], values[1], rtol=1e-6, atol=1e-6)
    for a, b in zip(grads[0], grads[1]):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6)
    # A naive log(1 + exp(−Δ)) overflows to inf where the stable forms stay exact (−Δ = 200 → loss 200).
    naive = torch.log(1 + torch.exp(-deltas))
    assert torch.isinf(naive[0])
    assert values[0][0].item() == pytest.approx(200.0)
    # Hand values: −log σ(2.5) and the gradient −σ(−2.5).
    assert values[1][6].item() == pytest.approx(math.log(1 + math.exp(-2.5)), rel=1e-6)
    assert grads[1][0][6].item() == pytest.approx(-1 / (1 + math.exp(2.5)), rel=1e-6)


def test_soft_labels_ties_and_label_smoothing_by_hand():
    r_w, r_l = torch.tensor([1.0]), torch.tensor([-1.0])
    d = 2.0
    ls = lambda t: -(t * math.log(1 / (1 + math.exp(-d))) + (1 - t) * math.log(1 / (1 + math.exp(d))))  # noqa: E731
    assert label_smoothed_loss(r_w, r_l, 0.1).item() == pytest.approx(ls(0.9), rel=1e-6)
    assert soft_bradley_terry_loss(r_w, r_l, 0.5).item() == pytest.approx(ls(0.5), rel=1e-6)
    assert label_smoothed_loss(r_w, r_l, 0.0).item() == pytest.approx(bradley_terry_loss(r_w, r_l).item(), rel=1e-6)
    # A tie is minimised at Δr = 0, where its loss is log 2 and its gradient is zero.
    x = torch.tensor([0.0], requires_grad=True)
    tie = soft_bradley_terry_loss(x, torch.tensor([0.0]), 0.5)
    tie.backward()
    assert tie.item() == pytest.approx(math.log(2), rel=1e-6) and x.grad.item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="label smoothing"):
        label_smoothed_loss(r_w, r_l, 0.5)


def test_plackett_luce_by_hand_and_k2_equals_eq3():
    r = torch.tensor([2.0, 1.0, -0.5])
    e = [math.exp(v) for v in r.tolist()]
    expected = -math.log(e[0] / sum(e)) - math.log(e[1] / (e[1] + e[2]))
    assert plackett_luce_loss(r).item() == pytest.approx(expected, rel=1e-6)
    torch.manual_seed(1)
    for _ in range(20):
        pair = torch.randn(2) * 10
        assert plackett_luce_loss(pair).item() == pytest.approx(bradley_terry_loss(pair[0], pair[1]).item(), rel=1e-5, abs=1e-6)
    big = torch.tensor([300.0, -300.0, 0.0])
    assert torch.isfinite(plackett_luce_loss(big))


def _pairs(k: int) -> list[tuple[int, int, bool]]:
    return [(i, j, False) for i in range(k) for j in range(i + 1, k)]


def test_balanced_loss_gives_every_prompt_the_same_total_weight():
    torch.manual_seed(0)
    for k in (2, 3, 5, 9):
        pairs = _pairs(k)
        assert len(pairs) == math.comb(k, 2)
        # With all rewards equal every pair costs log 2, so a prompt's total loss is log 2 whatever K.
        assert balanced_pairwise_loss(torch.zeros(k), pairs).item() == pytest.approx(math.log(2), rel=1e-6)
        # Each pair's gradient carries weight 1/C(K,2): compare with the gradient built by hand.
        r = torch.zeros(k, requires_grad=True)
        balanced_pairwise_loss(r, pairs).backward()
        assert r.grad.tolist() == pytest.approx(_hand_gradient(k), abs=1e-7)
    r = torch.tensor([1.0, 0.0, -2.0])
    by_hand = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-3)) + math.log(1 + math.exp(-2))) / 3
    assert balanced_pairwise_loss(r, _pairs(3)).item() == pytest.approx(by_hand, rel=1e-6)
    with_tie = balanced_pairwise_loss(r, [(0, 1, True), (0, 2, False), (1, 2, False)])
    assert with_tie.item() == pytest.approx((0.5 * math.log(1 + math.exp(-1)) + 0.5 * math.log(1 + math.exp(1))
                                             + math.log(1 + math.exp(-3)) + math.log(1 + math.exp(-2))) / 3, rel=1e-6)


def _hand_gradient(k: int) -> list[float]:
    # At r = 0 each pair pushes its better side by −1/2 and its worse side by +1/2, weighted 1/C(K,2).
    grad = [0.0] * k
    for i, j, _ in _pairs(k):
        grad[i] -= 0.5 / math.comb(k, 2)
        grad[j] += 0.5 / math.comb(k, 2)
    return grad


def test_regularisers_by_hand():
    r = torch.tensor([1.5, -0.5])
    pair = [(0, 1, False)]
    assert reward_centering(r, pair, 0.01).item() == pytest.approx(0.01 * 1.0, rel=1e-6)
    assert reward_l2(r, pair, 0.1).item() == pytest.approx(0.1 / 2 * (2.25 + 0.25), rel=1e-6)
    total = record_loss("bt", r, [0, 1], pair, center_coef=0.01, l2_coef=0.1)
    assert total.item() == pytest.approx(math.log(1 + math.exp(-2)) + 0.01 + 0.125, rel=1e-6)


def test_record_loss_dispatch_and_refusals():
    r = torch.tensor([0.2, 0.7])
    assert record_loss("bt", r, [1, 0], [(1, 0, False)]).item() == pytest.approx(math.log(1 + math.exp(-0.5)), rel=1e-6)
    assert record_loss("bt_softplus", r, [1, 0], [(1, 0, False)]).item() == pytest.approx(math.log(1 + math.exp(-0.5)), rel=1e-6)
    assert record_loss("margin", r, [1, 0], [(1, 0, False)], margin=0.5).item() == pytest.approx(math.log(2), rel=1e-6)
    tie = [(0, 1, True)]
    assert record_loss("bt", r, [0, 1], tie).item() == pytest.approx(soft_bradley_terry_loss(r[0], r[1], 0.5).item())
    with pytest.raises(TieError, match="f.jsonl:3.*tie.*--drop-ties"):
        record_loss("margin", r, [0, 1], tie, margin=1.0, where="f.jsonl:3")
    with pytest.raises(TieError, match="plackett_luce"):
        record_loss("plackett_luce", r, [0, 1], tie)
    with pytest.raises(ValueError, match="needs a margin"):
        record_loss("margin", r, [0, 1], [(0, 1, False)])
    with pytest.raises(ValueError, match="balanced"):
        record_loss("bt", torch.zeros(3), [0, 1, 2], _pairs(3))
    with pytest.raises(ValueError, match="unknown loss"):
        record_loss("hinge", r, [0, 1], [(0, 1, False)])


def test_sigmoid_is_exact_and_never_overflows():
    """σ(Δ) for a judge's huge log-odds: exactly 1 or 0, no OverflowError (math.exp(800) raises), no warning."""
    import warnings

    import numpy as np

    with pytest.raises(OverflowError):
        1 / (1 + math.exp(800))  # what a naive σ(−800) does
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        for x, expected in ((800, 1.0), (-800, 0.0), (1e6, 1.0), (-1e6, 0.0), (800.0, 1.0), (-1e6, 0.0)):
            assert sigmoid(x) == expected and isinstance(sigmoid(x), float)
        big = np.array([800.0, -800.0, 1e6, -1e6, np.float64(1e300), -1e300])
        np.testing.assert_array_equal(sigmoid(big), [1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
        assert sigmoid(np.float32(-1e6)) == 0.0
    xs = np.linspace(-30, 30, 241)
    naive = 1 / (1 + np.exp(-xs))
    np.testing.assert_allclose(sigmoid(xs), naive, rtol=0, atol=1e-12)
    for x in (-30.0, -5.5, -1.0, 0.0, 0.25, 3.0, 17.0, 30.0):
        assert abs(sigmoid(x) - 1 / (1 + math.exp(-x))) <= 1e-12
    assert sigmoid(0) == 0.5 and sigmoid(2.0) + sigmoid(-2.0) == pytest.approx(1.0, abs=1e-15)


def test_best_of_n_losers_are_unordered_not_tied():
    """Issue 14.2: a 1-vs-3 best-of-N record trains the chosen against each rejected (3 BT terms, eq. 6 weights
    1/3), never the rejected toward each other (they were 3 of 6 'tie' terms); centering sees those 3 pairs."""
    from rewardkit.rewardbench import best_of_n_example

    ex = best_of_n_example("2 + 2?", "4", ["5", "22", "four-ish"])
    assert ex.ties is None and ex.unordered == [[1, 2, 3]]
    pairs = ex.preference_pairs()
    assert pairs == [(0, 1, False), (0, 2, False), (0, 3, False)]
    r = torch.tensor([1.0, 0.5, -2.0, 3.0], requires_grad=True)
    loss = record_loss("balanced", r, ex.ranking, pairs, unordered=True)
    expected = sum(math.log(1 + math.exp(-(1.0 - x))) for x in (0.5, -2.0, 3.0)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # The rejected only ever move down, each by its own pair's gradient σ(r_j − r_0)/3: no pull toward each other.
    for j, x in zip((1, 2, 3), (0.5, -2.0, 3.0)):
        assert r.grad[j].item() == pytest.approx(1 / (1 + math.exp(-(x - 1.0))) / 3, rel=1e-5)
    centered = record_loss("balanced", r.detach(), ex.ranking, pairs, center_coef=1.0, unordered=True) - loss.detach()
    assert centered.item() == pytest.approx(((1.5) ** 2 + (-1.0) ** 2 + 4.0 ** 2) / 3, rel=1e-6)


def test_refusals_say_what_helps_for_best_of_n_and_partial_ties():
    from rewardkit.rewardbench import best_of_n_example

    ex = best_of_n_example("q", "a", ["b", "c"])
    with pytest.raises(ValueError, match="unordered.*--loss balanced") as err:
        record_loss("plackett_luce", torch.zeros(3), ex.ranking, ex.preference_pairs(), unordered=True, where="f:1")
    assert "--drop-ties" not in str(err.value)  # it would not drop this record
    # Scores [3, 3, 1]: a partial tie. --drop-ties skips only records tied throughout, so it is not the advice.
    partial = [(0, 1, True), (0, 2, False), (1, 2, False)]
    with pytest.raises(TieError, match="--flatten-rankings --drop-ties"):
        record_loss("plackett_luce", torch.zeros(3), [0, 1, 2], partial)


# ---------------------------------------------------------------- Plackett-Luce against brute force (issue 18)


def _naive_plackett_luce(rewards: list[float], order: list[int]) -> float:
    """−log P(order) under Plackett-Luce, as the definition reads: pick the best of what is left, K times."""
    left, nll = list(order), 0.0
    for k in order:
        nll -= math.log(math.exp(rewards[k]) / sum(math.exp(rewards[j]) for j in left))
        left.remove(k)
    return nll


def test_plackett_luce_equals_the_definition_and_is_a_distribution_over_orderings():
    """K = 4, 5, 6 against a naive loop; exp(−L) summed over all K! orderings is 1 (a probability of each order)."""
    import itertools

    rng = torch.Generator().manual_seed(3)
    for k in (4, 5, 6):
        r = (torch.randn(k, generator=rng, dtype=torch.float64) * 2).tolist()
        for order in ([*range(k)], [*range(k)][::-1], torch.randperm(k, generator=rng).tolist()):
            got = plackett_luce_loss(torch.tensor(r, dtype=torch.float64)[order]).item()
            assert got == pytest.approx(_naive_plackett_luce(r, order), rel=1e-12, abs=1e-12), (k, order)
        total = sum(math.exp(-plackett_luce_loss(torch.tensor(r, dtype=torch.float64)[list(p)]).item())
                    for p in itertools.permutations(range(k)))
        assert total == pytest.approx(1.0, abs=1e-12), k


def test_plackett_luce_gradient_by_hand_and_by_finite_differences():
    """∂L/∂r_i = −1 + Σ_{stages k up to i's place} softmax_k(r)_i: each stage i survives takes its share, the
    stage that picks it gives −1 (the last stage, where one item is left, contributes 0)."""
    torch.manual_seed(5)
    for k in (2, 4, 5):
        r = (torch.randn(k, dtype=torch.float64) * 1.5).requires_grad_(True)
        plackett_luce_loss(r).backward()
        hand = []
        for i in range(k):
            g = -1.0 if i < k - 1 else 0.0
            for stage in range(min(i + 1, k - 1)):
                tail = [math.exp(x) for x in r.detach().tolist()[stage:]]
                g += tail[i - stage] / sum(tail)
            hand.append(g)
        assert r.grad.tolist() == pytest.approx(hand, abs=1e-12), k
        assert torch.autograd.gradcheck(plackett_luce_loss, (r.detach().clone().requires_grad_(True),))


def test_plackett_luce_through_record_loss_follows_the_ranking():
    """A non-identity ranking: record_loss must put the rewards in ranking order (best first), nowhere else."""
    from rewardkit.data.record import PreferenceExample

    ex = PreferenceExample(prompt=[], completions=[[{"role": "assistant", "content": str(i)}] for i in range(4)],
                           ranking=[2, 0, 3, 1])
    r = torch.tensor([0.4, -1.2, 2.0, 0.1], dtype=torch.float64, requires_grad=True)
    loss = record_loss("plackett_luce", r, ex.ranking, ex.preference_pairs())
    assert loss.item() == pytest.approx(_naive_plackett_luce(r.tolist(), ex.ranking), rel=1e-12)
    assert abs(loss.item() - _naive_plackett_luce(r.tolist(), [0, 1, 2, 3])) > 0.5  # the identity would differ
    loss.backward()
    # the best-ranked completion is pushed up, the worst-ranked down
    assert r.grad[2].item() < 0 < r.grad[1].item()
