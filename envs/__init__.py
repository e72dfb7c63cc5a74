"""mcrl's shipped task families (import name ``mcrl_envs``); importing registers them."""

from mcrl_envs.navigation import Navigation2D, Navigation2DEnv
from mcrl_envs.pendulum import PendulumDynamics

from mcrl.tasks import register_family

register_family("Navigation2D", Navigation2D)
register_family("PendulumDynamics", PendulumDynamics)

__all__ = ["Navigation2D", "Navigation2DEnv", "PendulumDynamics"]
