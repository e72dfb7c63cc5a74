from __future__ import annotations

import numpy as np

from mcrl.meta.advantages import LinearFeatureBaseline, discounted_returns, gae


def test_gae_matches_a_hand_computed_example():
    rewards = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    mask = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])  # episode 2 has length 2
    values = np.full((3, 2), 0.5) * mask
    adv = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # delta_2 = 0.5; delta_1 = 1 + 0.9*0.5 - 0.5 = 0.95; A_1 = 0.95 + 0.72*0.5 = 1.31;
    # A_0 = 0.95 + 0.72*1.31 = 1.8932. Episode 2 ends after step 1: A_1 = 0.5, A_0 = 1.31.
    np.testing.assert_allclose(adv[:, 0], [1.8932, 1.31, 0.5])
    np.testing.assert_allclose(adv[:, 1], [1.31, 0.5, 0.0])


def test_gae_with_lambda_one_and_zero_values_is_the_discounted_return():
    rng = np.random.default_rng(0)
    rewards = rng.standard_normal((6, 3))
    mask = np.ones((6, 3))
    np.testing.assert_allclose(
        gae(rewards, np.zeros((6, 3)), mask, 0.95, 1.0), discounted_returns(rewards, mask, 0.95)
    )


def test_the_baseline_reduces_advantage_variance():
    rng = np.random.default_rng(1)
    horizon, episodes = 50, 20
    obs = rng.uniform(-1, 1, (horizon, episodes, 2))
    # Reward depends on the observation, so the return is largely predictable from obs and t.
    rewards = 2.0 * obs[..., 0] + 0.1 * rng.standard_normal((horizon, episodes)) + 1.0
    mask = np.ones((horizon, episodes))
    returns = discounted_returns(rewards, mask, 0.99)
    baseline = LinearFeatureBaseline()
    baseline.fit(obs, returns, mask)
    with_baseline = gae(rewards, baseline.predict(obs), mask, 0.99, 1.0)
    without = gae(rewards, np.zeros_like(rewards), mask, 0.99, 1.0)
    assert with_baseline.var() < 0.2 * without.var()
