"""Dynamics-varied families: MuJoCo robots with randomised physics, CartPole with varied masses.

The MuJoCo families follow the rand_param_envs used by ProMP and PEARL: every element of the
body masses, body inertias and geom frictions is multiplied by 1.5^U(−l, l), every dof damping
by 1.3^U(−l, l), l = 3 by default; gravity can be scaled too.
"""

from __future__ import annotations

import gymnasium as gym

from mcrl.tasks import Task
from mcrl.tasks.gym_family import EnvParam, GymFamily


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
