from __future__ import annotations

import numpy as np
import pytest

import mcrl
from mcrl.meta.advantages import (
    LinearFeatureBaseline,
    compute_advantages,
    discounted_returns,
    gae,
)
from mcrl.rollout.episodes import EpisodeBatch
from tests.conftest import tiny_config


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


def random_batch(seed: int = 2, horizon: int = 12, episodes: int = 4) -> EpisodeBatch:
    rng = np.random.default_rng(seed)
    mask = np.ones((horizon, episodes), np.float32)
    mask[9:, 1] = 0.0  # one episode ends early
    obs = rng.uniform(-1, 1, (horizon, episodes, 2)).astype(np.float32) * mask[..., None]
    rewards = (3.0 * obs[..., 0] + 5.0 + rng.standard_normal((horizon, episodes))) * mask
    return EpisodeBatch(
        task=None,
        observations=obs,
        actions=np.zeros((horizon, episodes, 1), np.float32),
        rewards=rewards.astype(np.float32),
        terminated=np.zeros((horizon, episodes), bool),
        truncated=np.zeros((horizon, episodes), bool),
        log_probs=np.zeros((horizon, episodes), np.float32),
        mask=mask,
    )


def test_without_a_baseline_or_normalisation_advantages_are_the_returns_to_go():
    batch = random_batch()
    raw = compute_advantages(batch, 0.9, 1.0, baseline="none", normalized=False)
    np.testing.assert_allclose(raw, discounted_returns(batch.rewards, batch.mask, 0.9), rtol=1e-5)


@pytest.mark.parametrize("baseline", ["linear", "none"])
def test_normalised_advantages_have_zero_mean_and_unit_std_over_real_steps(baseline):
    batch = random_batch()
    valid = batch.mask.astype(bool)
    normalized = compute_advantages(batch, 0.9, 0.95, baseline=baseline)[valid]
    assert abs(normalized.mean()) < 1e-5 and abs(normalized.std() - 1) < 1e-4
    raw = compute_advantages(batch, 0.9, 0.95, baseline=baseline, normalized=False)[valid]
    assert abs(raw.std() - 1) > 0.1  # so the check above can fail


def test_the_learner_uses_the_configured_baseline_and_normalisation(tmp_path):
    config = tiny_config("baseline=none", "normalize_advantages=false", "iterations=1")
    trainer = mcrl.train(config, tmp_path)
    batch = random_batch()
    prepared = trainer.learner.prepare([batch]).advantages[0].numpy()
    expected = compute_advantages(
        batch, config.gamma, config.gae_lambda, baseline="none", normalized=False
    )
    np.testing.assert_allclose(prepared, expected.reshape(-1), rtol=1e-6)
