"""Advantage estimation: GAE with a linear feature baseline refit per task (or none)."""

from __future__ import annotations

import numpy as np

from mcrl.rollout.episodes import EpisodeBatch


def discounted_returns(rewards: np.ndarray, mask: np.ndarray, gamma: float) -> np.ndarray:
    """Reward-to-go ``sum_k gamma^k r_{t+k}`` within each episode, ``[H, E]``."""
    returns = np.zeros_like(rewards, dtype=np.float64)
    running = np.zeros(rewards.shape[1:], dtype=np.float64)
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] * mask[t] + gamma * running * mask[t]
        returns[t] = running
    return returns


def gae(
    rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float, lam: float
) -> np.ndarray:
    """Generalised advantage estimation on padded episodes, ``[H, E]``.

    ``values[t]`` estimates the return from step t. The value after an episode's last real step
    is taken as zero, both at termination and at the horizon (the MAML-RL convention: the
    horizon is part of the task).
    """
    horizon = rewards.shape[0]
    advantages = np.zeros_like(rewards, dtype=np.float64)
    running = np.zeros(rewards.shape[1:], dtype=np.float64)
    for t in reversed(range(horizon)):
        next_value = values[t + 1] * mask[t + 1] if t + 1 < horizon else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = (
            delta + gamma * lam * running * (mask[t + 1] if t + 1 < horizon else 0.0)
        ) * mask[t]
        advantages[t] = running
    return advantages


class LinearFeatureBaseline:
    """Least-squares value fit on (obs, obs², t, t², t³, 1), t being the step over the horizon.

    Refit on every task's own episodes before its advantages are computed (Duan et al. 2016).
    """

    def __init__(self, reg_coeff: float = 1e-5):
        self.reg_coeff = reg_coeff
        self.coeffs: np.ndarray | None = None

    @staticmethod
    def features(observations: np.ndarray, horizon: int) -> np.ndarray:
        h, e = observations.shape[:2]
        obs = np.clip(observations.reshape(h, e, -1).astype(np.float64), -10, 10)
        t = np.broadcast_to((np.arange(h, dtype=np.float64) / horizon)[:, None, None], (h, e, 1))
        return np.concatenate([obs, obs**2, t, t**2, t**3, np.ones_like(t)], axis=-1)

    def fit(self, observations: np.ndarray, returns: np.ndarray, mask: np.ndarray) -> None:
        feats = self.features(observations, observations.shape[0])
        valid = mask.astype(bool)
        x, y = feats[valid], returns[valid]
        gram = x.T @ x
        reg = self.reg_coeff
        identity = np.eye(gram.shape[0])
        # Raise the ridge until the system is well-posed (constant features make it singular).
        for _ in range(10):
            coeffs = np.linalg.lstsq(gram + reg * identity, x.T @ y, rcond=None)[0]
            if np.all(np.isfinite(coeffs)):
                break
            reg *= 10
        self.coeffs = coeffs

    def predict(self, observations: np.ndarray) -> np.ndarray:
        if self.coeffs is None:
            raise RuntimeError("fit the baseline before predicting")
        return self.features(observations, observations.shape[0]) @ self.coeffs


def normalize(advantages: np.ndarray, mask: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    valid = mask.astype(bool)
    mean = advantages[valid].mean()
    std = advantages[valid].std()
    return (advantages - mean) / (std + eps) * mask


def compute_advantages(
    batch: EpisodeBatch,
    gamma: float,
    gae_lambda: float,
    *,
    baseline: str = "linear",
    normalized: bool = True,
) -> np.ndarray:
    """Per-task advantages ``[H, E]`` (float32): GAE against the ``baseline`` (``linear``:
    :class:`LinearFeatureBaseline` refit on this batch; ``none``: zero), then standardised."""
    if baseline == "linear":
        returns = discounted_returns(batch.rewards, batch.mask, gamma)
        fitted = LinearFeatureBaseline()
        fitted.fit(batch.observations, returns, batch.mask)
        values = fitted.predict(batch.observations) * batch.mask
    elif baseline == "none":
        values = np.zeros(batch.rewards.shape, dtype=np.float64)
    else:
        raise ValueError(f"baseline must be linear or none, got {baseline!r}")
    advantages = gae(batch.rewards, values, batch.mask, gamma, gae_lambda)
    if normalized:
        advantages = normalize(advantages, batch.mask)
    return advantages.astype(np.float32)
