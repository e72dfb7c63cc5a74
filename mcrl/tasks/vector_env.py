"""Batches of envs, one task each, that the sampler steps in lockstep.

The sampler only talks to :class:`TaskVectorEnv`. The default, :class:`SerialTaskVectorEnv`,
keeps a pool of Gymnasium envs and re-targets them with ``family.set_task`` (never rebuilding a
MuJoCo model between phases). A family may ship a natively vectorised subclass that steps all
episodes as arrays, which removes the per-env Python overhead for cheap envs.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np

from mcrl.tasks.task import Task

if TYPE_CHECKING:  # the family builds these envs; the envs only hold on to it
    from mcrl.tasks.family import TaskFamily


def gym_spaces(env_id: str) -> tuple[gym.spaces.Box, gym.spaces.Box | gym.spaces.Discrete]:
    """The observation and action spaces of Gymnasium's ``env_id`` (a native vector env that
    reimplements that env has the same)."""
    probe = gym.make(env_id)
    observation_space, action_space = probe.observation_space, probe.action_space
    probe.close()
    assert isinstance(observation_space, gym.spaces.Box)
    assert isinstance(action_space, gym.spaces.Box | gym.spaces.Discrete)
    return observation_space, action_space


class TaskVectorEnv(abc.ABC):
    """``num_envs`` envs, env ``k`` set to ``tasks[k]``.

    ``step`` receives actions for every env and a boolean ``active`` mask; envs whose episode has
    ended are not stepped (their outputs are ignored by the sampler).
    """

    observation_space: gym.spaces.Box
    action_space: gym.spaces.Box | gym.spaces.Discrete
    """Every env's spaces (the kinds mcrl's policies act in)."""
    unstable: np.ndarray | None = None
    """After :meth:`step`, which envs' simulations became unstable (their episodes end as
    truncated; None where an env cannot tell)."""
    success: np.ndarray | None = None
    """After :meth:`step`, which envs reported success at that step (``info["success"]``,
    Meta-World's protocol); None for families that report no success."""

    @property
    @abc.abstractmethod
    def num_envs(self) -> int: ...

    @abc.abstractmethod
    def set_tasks(self, tasks: Sequence[Task]) -> None:
        """Point env ``k`` at ``tasks[k]``; the number of envs becomes ``len(tasks)``."""

    @abc.abstractmethod
    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """Reset every env with its own seed; returns observations ``[num_envs, *obs_shape]``."""

    @abc.abstractmethod
    def step(
        self, actions: np.ndarray, active: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step the active envs; returns (observations, rewards, terminated, truncated)."""

    def set_threads(self, threads: int) -> None:  # noqa: B027 - optional hook
        """Step with up to ``threads`` threads, where the env can (a native MuJoCo env does)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class SerialTaskVectorEnv(TaskVectorEnv):
    """One Gymnasium env per episode, built once and re-targeted with ``family.set_task``.

    Envs are matched to tasks by ``family.can_retarget``, not by position, and the ones a batch
    does not use are kept as spares (at most as many as the largest batch had envs, the least
    recently used dropped first): a family whose envs differ in kind (Meta-World's task types,
    each its own MuJoCo model, ~0.3-1 s to build) then rebuilds an env only when no spare of that
    kind is left, instead of whenever a position changes kind.
    """

    def __init__(self, family: TaskFamily, tasks: Sequence[Task]):
        self.family = family
        self._envs: list[gym.Env] = []
        self._count = 0
        self._largest_batch = 0  # spares kept: a smaller batch must not empty the pool
        self.set_tasks(tasks)
        observation_space, action_space = (
            self._envs[0].observation_space,
            self._envs[0].action_space,
        )
        if not isinstance(observation_space, gym.spaces.Box) or not isinstance(
            action_space, gym.spaces.Box | gym.spaces.Discrete
        ):
            raise ValueError(
                f"family {family.name!r}: mcrl needs Box observations and Box or Discrete actions, "
                f"got {observation_space} and {action_space}"
            )
        self.observation_space, self.action_space = observation_space, action_space
        self._obs = np.zeros((0, *observation_space.shape), dtype=np.float32)
        self.success = np.zeros(0, dtype=bool) if family.reports_success else None

    @property
    def num_envs(self) -> int:
        return self._count

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        # Spares in order of last use; for a family whose envs all retarget (the usual case) env
        # k stays at position k, as if matched by position.
        spares = self._envs
        envs = []
        for task in tasks:
            match = next(
                (i for i, env in enumerate(spares) if self.family.can_retarget(env, task)), None
            )
            if match is None:
                envs.append(self.family.make_env(task))
            else:
                envs.append(spares.pop(match))
                self.family.set_task(envs[-1], task)
        self._largest_batch = max(self._largest_batch, len(tasks))
        for env in spares[self._largest_batch :]:
            env.close()
        self._envs = envs + spares[: self._largest_batch]
        self._count = len(tasks)

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        self._obs = np.stack(
            [
                np.asarray(self._envs[k].reset(seed=int(s))[0], dtype=np.float32)
                for k, s in enumerate(seeds)
            ]
        )
        return self._obs.copy()

    def step(self, actions, active):
        n = self._count
        obs = self._obs
        rewards = np.zeros(n, dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        index = np.flatnonzero(active)
        envs = self._envs
        results = [envs[k].step(actions[k]) for k in index.tolist()]
        if results:
            obs[index] = np.array([r[0] for r in results], dtype=np.float32)
            rewards[index] = [r[1] for r in results]
            terminated[index] = [r[2] for r in results]
            truncated[index] = [r[3] for r in results]
        if self.success is not None:
            self.success = np.zeros(n, dtype=bool)
            self.success[index] = [bool(r[4].get("success", 0.0)) for r in results]
        return obs.copy(), rewards, terminated, truncated

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs.clear()
