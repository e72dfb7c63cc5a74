"""Dynamics-varied families: MuJoCo robots with randomised physics, CartPole with varied masses.

The MuJoCo families follow the rand_param_envs used by ProMP and PEARL: every element of the
body masses, body inertias and geom frictions is multiplied by 1.5^U(−l, l), every dof damping
by 1.3^U(−l, l), l = 3 by default; gravity can be scaled too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

from mcrl.tasks import Task, TaskVectorEnv
from mcrl.tasks.gym_family import EnvParam, GymFamily
from mcrl.tasks.vector_env import gym_spaces


def random_physics(log_scale: float) -> dict[str, EnvParam]:
    mass, damping = 1.5**log_scale, 1.3**log_scale

    def multiplier(field: str, bound: float) -> EnvParam:
        return EnvParam(
            1 / bound, bound, target=f"model.{field}", scale=True, per_element=True, log=True
        )

    return {
        "body_mass": multiplier("body_mass", mass),
        "body_inertia": multiplier("body_inertia", mass),
        "dof_damping": multiplier("dof_damping", damping),
        "geom_friction": multiplier("geom_friction", mass),
    }


class MuJoCoParams(GymFamily):
    """A MuJoCo robot with randomised physics (subclasses set ``name`` and ``env_id``).

    ``log_scale`` is l above; ``gravity_scale=(low, high)`` also varies gravity. ood tasks take
    multipliers up to a quarter of the log range beyond it.
    """

    default_horizon = 200
    ood_margin = 0.25

    def __init__(
        self,
        horizon: int | None = None,
        *,
        log_scale: float = 3.0,
        gravity_scale: tuple[float, float] | None = None,
    ):
        if log_scale <= 0:
            raise ValueError(f"log_scale must be > 0, got {log_scale}")
        params = random_physics(log_scale)
        if gravity_scale is not None:
            params["gravity_scale"] = EnvParam(
                *gravity_scale, target="model.opt.gravity", scale=True, log=True
            )
        super().__init__(horizon, params=params)


class HalfCheetahParams(MuJoCoParams):
    name = "HalfCheetahParams"
    env_id = "HalfCheetah-v5"


class HopperParams(MuJoCoParams):
    name = "HopperParams"
    env_id = "Hopper-v5"


class Walker2dParams(MuJoCoParams):
    name = "Walker2dParams"
    env_id = "Walker2d-v5"


class CartPoleVectorEnv(TaskVectorEnv):
    """CartPole-v1's dynamics (Euler integration, force ±10, termination at |x| > 2.4 or
    |θ| > 12°) for every episode at once, with per-task masses and pole length; transition for
    transition the same as Gymnasium's env, reset noise included."""

    GRAVITY = 9.8
    FORCE = 10.0
    TAU = 0.02
    X_LIMIT = 2.4
    THETA_LIMIT = 12 * 2 * math.pi / 360

    def __init__(self, tasks: Sequence[Task]):
        self.observation_space, self.action_space = gym_spaces("CartPole-v1")
        self.set_tasks(tasks)

    @property
    def num_envs(self) -> int:
        return len(self._length)

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        self._length = np.array([t.params["length"] for t in tasks])
        self._masspole = np.array([t.params["masspole"] for t in tasks])
        total = self._masspole + np.array([t.params["masscart"] for t in tasks])
        self._total_mass = total
        self._polemass_length = self._masspole * self._length
        self._state = np.zeros((len(tasks), 4))

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        self._state = np.stack(
            [seeding.np_random(int(s))[0].uniform(low=-0.05, high=0.05, size=(4,)) for s in seeds]
        )
        return self._state.astype(np.float32)

    def step(self, actions, active):
        x, x_dot, theta, theta_dot = self._state.T
        force = np.where(np.asarray(actions).reshape(-1) == 1, self.FORCE, -self.FORCE)
        costheta, sintheta = np.cos(theta), np.sin(theta)
        temp = (force + self._polemass_length * np.square(theta_dot) * sintheta) / self._total_mass
        thetaacc = (self.GRAVITY * sintheta - costheta * temp) / (
            self._length * (4.0 / 3.0 - self._masspole * np.square(costheta) / self._total_mass)
        )
        xacc = temp - self._polemass_length * thetaacc * costheta / self._total_mass
        new = np.stack(
            [
                x + self.TAU * x_dot,
                x_dot + self.TAU * xacc,
                theta + self.TAU * theta_dot,
                theta_dot + self.TAU * thetaacc,
            ],
            axis=1,
        )
        self._state = np.where(active[:, None], new, self._state)
        x, theta = self._state[:, 0], self._state[:, 2]
        terminated = (np.abs(x) > self.X_LIMIT) | (np.abs(theta) > self.THETA_LIMIT)
        rewards = np.ones(len(x), dtype=np.float32)  # +1 per step, the terminating one too
        return self._state.astype(np.float32), rewards, terminated, np.zeros_like(terminated)


class CartPoleDynamics(GymFamily):
    """CartPole-v1 (discrete actions) with varied pole half-length, pole mass and cart mass
    (defaults 0.5, 0.1, 1.0); the derived total mass and pole mass·length follow."""

    name = "CartPoleDynamics"
    env_id = "CartPole-v1"
    default_horizon = 200
    params = {
        "length": EnvParam(0.25, 1.0, log=True),
        "masspole": EnvParam(0.05, 0.2, log=True),
        "masscart": EnvParam(0.5, 2.0, log=True),
    }

    def set_task(self, env: gym.Env, task: Task) -> None:
        super().set_task(env, task)
        cartpole = env.unwrapped
        cartpole.total_mass = cartpole.masspole + cartpole.masscart
        cartpole.polemass_length = cartpole.masspole * cartpole.length

    def make_vector_env(self, tasks: Sequence[Task]) -> TaskVectorEnv:
        for task in tasks:
            self.check_task(task)
        return CartPoleVectorEnv(tasks)
