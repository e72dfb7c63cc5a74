"""Episodes of one task, padded to the family's horizon."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

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
    def num_steps(self) -> int:
        return int(self.mask.sum())

    def episodes(self, index: slice | np.ndarray) -> EpisodeBatch:
        """A batch with a subset of the episodes (same task)."""
        return EpisodeBatch(self.task, **{k: getattr(self, k)[:, index] for k in self._ARRAYS})

    @staticmethod
    def concatenate(batches: Sequence[EpisodeBatch]) -> EpisodeBatch:
        """Episodes of several batches of the same task, side by side."""
        tasks = {b.task for b in batches}
        if len(tasks) != 1:
            raise ValueError(f"can only concatenate batches of one task, got {len(tasks)} tasks")
        return EpisodeBatch(
            batches[0].task,
            **{
                k: np.concatenate([getattr(b, k) for b in batches], axis=1)
                for k in EpisodeBatch._ARRAYS
            },
        )

    def allclose(self, other: EpisodeBatch, **kwargs) -> bool:
        """Same task and numerically equal arrays (for equivalence tests across backends)."""
        return self.task == other.task and all(
            np.allclose(getattr(self, f.name), getattr(other, f.name), **kwargs)
            for f in fields(self)
            if f.name in self._ARRAYS
        )
