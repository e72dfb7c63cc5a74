"""The task family: how a family's tasks are distributed, and the envs it builds for them."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from mcrl.common.validation import check_positive_int
from mcrl.tasks.task import BoxTaskSpace, ParamValue, Task, check_split
from mcrl.tasks.vector_env import SerialTaskVectorEnv, TaskVectorEnv


class TaskFamily(abc.ABC):
    """A family of related environments that differ in goals or dynamics.

    Subclasses set ``name`` and ``default_horizon``, give a :class:`BoxTaskSpace` as ``space``
    (or override :meth:`sample_params`, :meth:`split_of` and :meth:`describe`), and implement
    :meth:`make_env` and :meth:`set_task`. :meth:`make_vector_env` may be overridden with a
    natively vectorised implementation; the default steps one Gymnasium env per episode.
    """

    name: str = "TaskFamily"
    default_horizon: int = 100
    space: BoxTaskSpace | None = None
    held_out_test: bool = True
    """False for a family whose test tasks cannot differ from its training tasks (two-task
    benchmarks such as HalfCheetahDir); every other family holds its test tasks out."""
    reports_success: bool = False
    """True for a family whose envs put ``success`` in their step info (Meta-World): episodes
    then record whether it was reached, and metrics and evaluations report the success rate."""
    group_by: str | None = None
    """The task parameter that names a task's kind (Meta-World's ``task_name``): evaluations
    also report their results per value of it. None: tasks are not grouped."""
    serial_group: int | None = None
    """How many of this family's Gymnasium envs the sampler steps round-robin at most, where it
    steps one env per episode: fewer for envs whose simulation falls out of the CPU caches in
    larger groups (Meta-World's). None: the sampler's default (64)."""

    def __init__(self, horizon: int | None = None):
        self.horizon = check_positive_int(
            "horizon", self.default_horizon if horizon is None else horizon
        )

    # -- task distribution -------------------------------------------------------------------
    def sample_tasks(self, n: int, *, split: str = "train", seed: int | None = None) -> list[Task]:
        """``n`` tasks of ``split``, indexed 0..n-1; the same seed gives the same tasks."""
        check_positive_int("n", n)
        check_split(split)
        rng = np.random.default_rng(seed)
        return [Task(self.name, split, i, self.sample_params(rng, split)) for i in range(n)]

    def sample_params(self, rng: np.random.Generator, split: str) -> dict[str, ParamValue]:
        return self._space().sample(rng, split)

    def split_of(self, params: Mapping[str, ParamValue]) -> str | None:
        """The split that can produce ``params``, or None when no split can."""
        return self._space().split_of(params)

    def describe(self) -> dict[str, dict[str, str]]:
        """For each split, a text per parameter describing its range."""
        return self._space().describe()

    def _space(self) -> BoxTaskSpace:
        if self.space is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no `space`; override sample_params, split_of and describe"
            )
        return self.space

    def check_params(self, params: Mapping[str, Any]) -> None:
        """A one-line error unless the family can simulate a task with ``params``: the names it
        takes, each of the right size, finite numbers in the parameter's domain."""
        if self.space is not None:
            self.space.check_params(params)
            return
        # A family without a box: its names from describe(), each value finite.
        expected = sorted(self.describe()["train"])
        unknown, missing = sorted(set(params) - set(expected)), sorted(set(expected) - set(params))
        if unknown or missing:
            wrong = f"unknown {unknown}" if unknown else f"missing {missing}"
            raise ValueError(f"task parameter(s) {wrong}; {self.name} takes {expected}")
        for name, value in params.items():
            value = Task.freeze(name, value)
            if isinstance(value, str):  # a family that takes names checks them itself
                raise ValueError(f"task parameter {name!r} must be a number, got {value!r}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"task parameter {name!r} must be finite, got {value!r}")

    def check_task(self, task: Task) -> Task:
        if not isinstance(task, Task):
            raise ValueError(f"expected a Task, got {type(task).__name__}")
        if task.family != self.name:
            raise ValueError(f"task belongs to family {task.family!r}, not {self.name!r}")
        try:
            self.check_params(task.params)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None
        return task

    def task(self, params: Mapping[str, Any], *, split: str = "test", index: int = 0) -> Task:
        """A task of this family with explicit parameters (for adapting to one chosen env)."""
        if not isinstance(params, Mapping):
            raise ValueError(
                f"task parameters must be a mapping of names to values, got {params!r}"
            )
        return self.check_task(Task(self.name, check_split(split), index, params))

    # -- environments ------------------------------------------------------------------------
    @abc.abstractmethod
    def make_env(self, task: Task) -> gym.Env:
        """A Gymnasium env for ``task`` (time-limited to the family's horizon)."""

    @abc.abstractmethod
    def set_task(self, env: gym.Env, task: Task) -> None:
        """Re-target ``env`` (built by :meth:`make_env`) to ``task`` without rebuilding it."""

    def can_retarget(self, env: gym.Env, task: Task) -> bool:
        """Whether :meth:`set_task` can point ``env`` at ``task`` (else the sampler looks for
        another of its envs that can, and builds one if none is left)."""
        return True

    @property
    def has_native_vector_env(self) -> bool:
        """Whether the family overrides :meth:`make_vector_env` with its own vectorised env."""
        return type(self).make_vector_env is not TaskFamily.make_vector_env

    def make_vector_env(self, tasks: Sequence[Task]) -> TaskVectorEnv:
        """Envs for a batch of episodes, one task each, stepped together."""
        return SerialTaskVectorEnv(self, tasks)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(horizon={self.horizon})"
