"""mcrl's shipped task families (import name ``mcrl_envs``); importing registers them."""

from mcrl_envs.dynamics import CartPoleDynamics, HalfCheetahParams, HopperParams, Walker2dParams
from mcrl_envs.locomotion import AntDir, AntGoal, HalfCheetahDir, HalfCheetahVel
from mcrl_envs.metaworld import MetaWorldML1, MetaWorldML10, MetaWorldML45
from mcrl_envs.navigation import Navigation2D, Navigation2DEnv
from mcrl_envs.pendulum import PendulumDynamics

from mcrl.tasks import register_family

FAMILIES = (
    Navigation2D,
    PendulumDynamics,
    CartPoleDynamics,
    HalfCheetahVel,
    HalfCheetahDir,
    AntDir,
    AntGoal,
    HalfCheetahParams,
    HopperParams,
    Walker2dParams,
    MetaWorldML1,  # the optional extra mcrl[metaworld]; listed, and named in the error, without it
    MetaWorldML10,
    MetaWorldML45,
)
for _family in FAMILIES:
    register_family(_family.name, _family)

__all__ = [f.name for f in FAMILIES] + ["Navigation2DEnv"]
