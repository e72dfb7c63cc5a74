"""MAML's 2D point navigation (Finn et al. 2017): reach a goal in the plane."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mcrl.tasks import BoxTaskSpace, Range, Task, TaskFamily
from mcrl.tasks.vector_env import TaskVectorEnv

MAX_SPEED = 0.1
GOAL_RADIUS = 0.01


def _move(state: np.ndarray, goal: np.ndarray, action: np.ndarray):
    """One step for any number of points (shared by the single and the vector env, so that
    both give bit-identical transitions)."""
    state = state + np.clip(action, -MAX_SPEED, MAX_SPEED)
    delta = state - goal
    distance = np.sqrt(np.sum(delta * delta, axis=-1))
    return state, -distance, distance < GOAL_RADIUS


def _observation_space() -> spaces.Box:
    return spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)


def _action_space() -> spaces.Box:
    return spaces.Box(-MAX_SPEED, MAX_SPEED, shape=(2,), dtype=np.float32)


class Navigation2DEnv(gym.Env):
    """A point starts at the origin; actions are velocities clipped to [-0.1, 0.1];
    the reward is minus the distance to the goal; the episode ends within 0.01 of it."""

    metadata = {"render_modes": []}

    def __init__(self, goal: Sequence[float] = (0.0, 0.0)):
        self.observation_space = _observation_space()
        self.action_space = _action_space()
        self.goal = np.asarray(goal, dtype=np.float64)
        self._state = np.zeros(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state = np.zeros(2)
        return self._state.astype(np.float32), {}

    def step(self, action):
        self._state, reward, terminated = _move(
            self._state, self.goal, np.asarray(action, dtype=np.float64)
        )
        return self._state.astype(np.float32), float(reward), bool(terminated), False, {}


class Navigation2DVectorEnv(TaskVectorEnv):
    """All episodes as arrays: one numpy expression per step for every env."""

    def __init__(self, tasks: Sequence[Task]):
        self.observation_space = _observation_space()
        self.action_space = _action_space()
        self.set_tasks(tasks)

    @property
    def num_envs(self) -> int:
        return len(self._goals)

    def set_tasks(self, tasks):
        self._goals = np.array([t.params["goal"] for t in tasks], dtype=np.float64)
        self._state = np.zeros_like(self._goals)

    def reset(self, seeds):
        self._state = np.zeros_like(self._goals)
        return self._state.astype(np.float32)

    def step(self, actions, active):
        state, reward, terminated = _move(
            self._state, self._goals, np.asarray(actions, dtype=np.float64)
        )
        self._state = np.where(active[:, None], state, self._state)
        truncated = np.zeros(len(self._goals), dtype=bool)
        return self._state.astype(np.float32), reward.astype(np.float32), terminated, truncated


class Navigation2D(TaskFamily):
    """Goals uniform in [-0.5, 0.5]^2 (MAML), horizon 100. Test goals come from held-out cells
    of that square; ood goals lie in [-1, 1]^2 outside it."""

    name = "Navigation2D"
    default_horizon = 100
    space = BoxTaskSpace({"goal": Range(-0.5, 0.5, size=2)}, cells=4, ood_margin=0.5)

    def make_env(self, task: Task) -> gym.Env:
        self.check_task(task)
        return gym.wrappers.TimeLimit(Navigation2DEnv(task.params["goal"]), self.horizon)

    def set_task(self, env: gym.Env, task: Task) -> None:
        self.check_task(task)
        env.unwrapped.goal = np.asarray(task.params["goal"], dtype=np.float64)

    def make_vector_env(self, tasks: Sequence[Task]) -> TaskVectorEnv:
        for task in tasks:
            self.check_task(task)
        return Navigation2DVectorEnv(tasks)
