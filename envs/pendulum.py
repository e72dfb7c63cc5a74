"""Gymnasium's Pendulum with varied pole mass, pole length and gravity."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

from mcrl.tasks import BoxTaskSpace, Range, Task, TaskFamily
from mcrl.tasks.vector_env import TaskVectorEnv, gym_spaces

MAX_SPEED = 8.0
MAX_TORQUE = 2.0
DT = 0.05


def _angle_normalize(x):
    return ((x + np.pi) % (2 * np.pi)) - np.pi


class PendulumVectorEnv(TaskVectorEnv):
    """Pendulum-v1's dynamics for every episode at once, transition for transition the same as
    Gymnasium's (including its float32 torque arithmetic and its reset distribution)."""

    def __init__(self, tasks: Sequence[Task]):
        self.observation_space, self.action_space = gym_spaces("Pendulum-v1")
        self.set_tasks(tasks)

    @property
    def num_envs(self) -> int:
        return len(self._mass)

    def set_tasks(self, tasks):
        self._mass = np.array([t.params["mass"] for t in tasks])
        self._length = np.array([t.params["length"] for t in tasks])
        self._gravity = np.array([t.params["gravity"] for t in tasks])
        self._state = np.zeros((len(tasks), 2))

    def _observations(self) -> np.ndarray:
        th, thdot = self._state[:, 0], self._state[:, 1]
        return np.stack([np.cos(th), np.sin(th), thdot], axis=1).astype(np.float32)

    def reset(self, seeds):
        high = np.array([np.pi, 1.0])
        self._state = np.stack(
            [seeding.np_random(int(s))[0].uniform(low=-high, high=high) for s in seeds]
        )
        return self._observations()

    def step(self, actions, active):
        th, thdot = self._state[:, 0], self._state[:, 1]
        u = np.clip(np.asarray(actions, dtype=np.float32), -MAX_TORQUE, MAX_TORQUE)[:, 0]
        costs = _angle_normalize(th) ** 2 + 0.1 * thdot**2 + (0.001 * (u**2)).astype(np.float32)
        # Gymnasium multiplies a Python float by the float32 torque: a float32 product.
        torque_term = (3.0 / (self._mass * self._length**2)).astype(np.float32) * u
        newthdot = thdot + (3 * self._gravity / (2 * self._length) * np.sin(th) + torque_term) * DT
        newthdot = np.clip(newthdot, -MAX_SPEED, MAX_SPEED)
        newth = th + newthdot * DT
        self._state = np.where(active[:, None], np.stack([newth, newthdot], axis=1), self._state)
        done = np.zeros(len(u), dtype=bool)
        return self._observations(), (-costs).astype(np.float32), done, done.copy()


class PendulumDynamics(TaskFamily):
    """Pendulum-v1 whose pole mass ``m``, length ``l`` and gravity ``g`` vary per task
    (defaults 1, 1, 10). Swing-up torque stays limited to 2, so heavy, long poles are harder."""

    name = "PendulumDynamics"
    default_horizon = 200
    space = BoxTaskSpace(
        {
            "mass": Range(0.5, 2.0, log=True),
            "length": Range(0.5, 1.5, log=True),
            "gravity": Range(8.0, 12.0),
        },
        cells=4,
        ood_margin=0.5,
    )

    def make_env(self, task: Task) -> gym.Env:
        env = gym.make("Pendulum-v1", max_episode_steps=self.horizon)
        self.set_task(env, task)
        return env

    def set_task(self, env: gym.Env, task: Task) -> None:
        self.check_task(task)
        # Pendulum reads m, l and g on every step, so assigning them re-targets the env.
        pendulum = env.unwrapped
        pendulum.m = task.params["mass"]
        pendulum.l = task.params["length"]
        pendulum.g = task.params["gravity"]

    def make_vector_env(self, tasks: Sequence[Task]) -> TaskVectorEnv:
        for task in tasks:
            self.check_task(task)
        return PendulumVectorEnv(tasks)
