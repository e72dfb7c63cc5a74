"""Episodes of one task, padded to the family's horizon."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcrl.tasks import Task


@dataclass
class EpisodeBatch:
    """``num_episodes`` episodes of one task as arrays ``[horizon, episodes, ...]``.

    Steps after an episode ended are padding: ``mask`` is 1.0 for real steps and 0.0 there, and
    the padded entries are zero. ``actions`` are what the policy sampled (before any clipping to
    the action space), so ``log_probs`` are their log-probabilities under the sampling policy.
    """

    task: Task
    observations: np.ndarray  # [H, E, obs_dim] float32
    actions: np.ndarray  # [H, E, act_dim] float32, or [H, E] int64 for discrete actions
    rewards: np.ndarray  # [H, E] float32
    terminated: np.ndarray  # [H, E] bool: the env said the episode ended at this step
    truncated: np.ndarray  # [H, E] bool: the episode was cut at this step (horizon or time limit)
    log_probs: np.ndarray  # [H, E] float32, under the policy that sampled the episodes
    mask: np.ndarray  # [H, E] float32
    success: np.ndarray | None = None  # [E] bool: the env reported success at some step (None:
    # the family reports no success, see TaskFamily.reports_success)

    _ARRAYS = ("observations", "actions", "rewards", "terminated", "truncated", "log_probs", "mask")

    @property
    def horizon(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_episodes(self) -> int:
        return self.rewards.shape[1]

    @property
    def lengths(self) -> np.ndarray:
        return self.mask.sum(0).astype(np.int64)

    @property
    def returns(self) -> np.ndarray:
        """Undiscounted return of each episode, ``[episodes]``."""
        return (self.rewards * self.mask).sum(0)

    @property
    def success_rate(self) -> float | None:
        """The share of episodes that succeeded, where the family reports success."""
        return None if self.success is None else float(self.success.mean())

    @property
    def num_steps(self) -> int:
        return int(self.mask.sum())


def success_rate(batches: list[EpisodeBatch]) -> float | None:
    """The mean over tasks of each task's success rate; None where the family reports none."""
    rates = [b.success_rate for b in batches]
    known = [r for r in rates if r is not None]
    return float(np.mean(known)) if known and len(known) == len(rates) else None
