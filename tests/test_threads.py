"""Concurrent score() calls on one scorer (a server's or a library caller's threads) give each call its own answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rewardkit.data.synthetic import synthetic_pairs
from rewardkit.inference import score
from rewardkit.inference.scoring import load_classifier_scorer


def test_concurrent_calls_on_one_scorer_are_safe_and_exact(tiny_model_dir):
    scorer = load_classifier_scorer(str(tiny_model_dir), precision="fp32", device="cpu")
    batches = [synthetic_pairs("eval", n=n, seed=s) for s, n in enumerate([3, 5, 2, 7, 4, 6, 1, 8])]
    alone = [np.concatenate(score(scorer, b).rewards) for b in batches]
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(lambda b=b: np.concatenate(score(scorer, b).rewards)) for _ in range(10) for b in batches]
        results = [f.result() for f in futures]  # re-raises any error a thread hit
    for i, r in enumerate(results):
        np.testing.assert_allclose(r, alone[i % len(batches)], atol=1e-6)
