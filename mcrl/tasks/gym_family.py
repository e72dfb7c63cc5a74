"""Turning any Gymnasium env into a task family by declaring its varied parameters.

Each parameter is an :class:`EnvParam`: its training range, and how it reaches the env:
an attribute of ``env.unwrapped`` (``"power"``), a MuJoCo model field (``"model.body_mass"``,
``"model.opt.gravity"``), or a setter function. Values either replace the env's default or
scale it (``scale=True``), per element if asked. Defaults are saved once per env and every task
writes from them in place, so tasks never compound.

Declared problems surface when the family is built, not deep inside a rollout: an unknown
attribute or model field, a range with low > high, a multiplier that can make a mass
non-positive.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from mcrl.common.validation import check_positive_int
from mcrl.tasks.family import TaskFamily
from mcrl.tasks.mujoco_vector_env import ROBOTS, MuJoCoVectorEnv, env_reward
from mcrl.tasks.mujoco_warnings import filter_mujoco_warnings
from mcrl.tasks.registry import register_family
from mcrl.tasks.task import BoxTaskSpace, Range, Task
from mcrl.tasks.vector_env import TaskVectorEnv

# The values a MuJoCo model field can be simulated with, by the field's name: no mass, inertia
# or size of zero or less; no negative damping, friction, armature or stiffness. A multiplier of
# such a field (``scale=True``) has the same domain, since the defaults lie in it.
FIELD_DOMAINS = {
    "body_mass": "positive",
    "body_inertia": "positive",
    "geom_size": "positive",
    "dof_damping": "non_negative",
    "dof_armature": "non_negative",
    "dof_frictionloss": "non_negative",
    "geom_friction": "non_negative",
    "jnt_stiffness": "non_negative",
}

Setter = Callable[[gym.Env, Any], None]


@dataclass(frozen=True)
class EnvParam:
    """One varied parameter of a :class:`GymFamily`.

    ``target``: an attribute of ``env.unwrapped`` or ``"model.<field>"`` (a MuJoCo model array,
    dots allowed: ``"model.opt.gravity"``); default: the parameter's own name. Ignored when a
    ``setter(env, value)`` is given. ``scale``: the value multiplies the env's default instead of
    replacing it. ``per_element``: one value per element of the target array (the size is read
    from the env). ``log``, ``ood`` as in :class:`mcrl.Range`.
    """

    low: float
    high: float
    target: str | None = None
    scale: bool = False
    per_element: bool = False
    log: bool = False
    ood: str = "both"
    setter: Setter | None = None


def _resolve(env: gym.Env, path: str) -> tuple[Any, str]:
    """The object owning the last attribute of a dotted ``path`` under ``env.unwrapped``."""
    return _resolve_from(env.unwrapped, path)


def _resolve_from(root: Any, path: str) -> tuple[Any, str]:
    owner = root
    *parents, leaf = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    return owner, leaf


class GymFamily(TaskFamily):
    """A family over one Gymnasium env id with declared parameters (see :func:`declare_family`).

    Subclasses set ``env_id``, ``env_kwargs``, ``params`` (a mapping name → :class:`EnvParam`)
    and optionally ``cells`` and ``ood_margin``; or pass them to the constructor.
    """

    env_id: str = ""
    env_kwargs: Mapping[str, Any] = {}
    params: Mapping[str, EnvParam] = {}
    cells: int = 4
    ood_margin: float = 0.5

    def __init__(
        self,
        horizon: int | None = None,
        *,
        env_id: str | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        params: Mapping[str, EnvParam] | None = None,
    ):
        super().__init__(horizon)
        self.env_id = env_id or self.env_id
        self.env_kwargs = dict(self.env_kwargs if env_kwargs is None else env_kwargs)
        self.params = dict(self.params if params is None else params)
        if not self.env_id:
            raise ValueError(f"{type(self).__name__} needs an env_id")
        if not self.params:
            raise ValueError(f"{type(self).__name__} needs at least one parameter")
        probe = self._make_raw_env()
        try:
            ranges = {name: self._range(probe, name, p) for name, p in self.params.items()}
        finally:
            probe.close()
        try:
            self.space = BoxTaskSpace(ranges, cells=self.cells, ood_margin=self.ood_margin)
        except ValueError as exc:
            raise ValueError(f"family {self.name!r}: {exc}") from None

    def _make_raw_env(self) -> gym.Env:
        try:
            filter_mujoco_warnings()
            return gym.make(self.env_id, max_episode_steps=self.horizon, **self.env_kwargs)
        except gym.error.Error as exc:
            raise ValueError(
                f"cannot make env {self.env_id!r} for family {self.name!r}: {exc}"
            ) from exc

    def _range(self, env: gym.Env, name: str, param: EnvParam) -> Range:
        """The declared parameter's range, checked against a real env: its target exists, its
        size is read off the env, and its domain follows from the model field it writes."""
        target = param.target or name
        size, domain = 1, "real"
        if param.setter is None:
            try:
                owner, leaf = _resolve(env, target)
                current = getattr(owner, leaf)
            except AttributeError:
                where = "a MuJoCo model field" if target.startswith("model.") else "an attribute"
                raise ValueError(
                    f"family {self.name!r}: parameter {name!r} targets {target!r}, which is not {where} of "
                    f"{self.env_id} (give target='attribute', target='model.<field>' or a setter)"
                ) from None
            size = int(np.asarray(current).size) if param.per_element else 1
            domain = FIELD_DOMAINS.get(target.rsplit(".", 1)[-1], "real")
        try:
            return Range(
                param.low, param.high, log=param.log, size=size, ood=param.ood, domain=domain
            )
        except ValueError as exc:
            raise ValueError(
                f"family {self.name!r}: parameter {name!r} ({target}): {exc}"
            ) from None

    def make_env(self, task: Task) -> gym.Env:
        self.check_task(task)
        env = self._make_raw_env()
        self._save_defaults(env)
        self.set_task(env, task)
        return env

    def _save_defaults(self, env: gym.Env) -> None:
        defaults = {}
        for name, param in self.params.items():
            if param.setter is None:
                owner, leaf = _resolve(env, param.target or name)
                defaults[name] = np.array(getattr(owner, leaf), dtype=np.float64, copy=True)
        base: Any = env.unwrapped
        base._mcrl_defaults = defaults

    def set_task(self, env: gym.Env, task: Task) -> None:
        self.check_task(task)
        base: Any = env.unwrapped
        defaults = base._mcrl_defaults
        touched_model = False
        for name, param in self.params.items():
            value = task.params[name]
            if param.setter is not None:
                param.setter(env, value)
                continue
            target = param.target or name
            _write(*_resolve(env, target), _new_value(param, value, defaults[name]))
            touched_model |= target.startswith("model.")
        if touched_model:
            _refresh_mujoco_constants(env)

    # -- the native vectorised env (families that only write model fields of a known robot) --
    @property
    def has_native_vector_env(self) -> bool:
        if type(self).make_vector_env is not GymFamily.make_vector_env:
            return True
        # A known robot with Gymnasium's default arguments, whose tasks only write model fields.
        return (
            self.env_id in ROBOTS
            and not self.env_kwargs
            and all(
                p.setter is None and (p.target or name).startswith("model.")
                for name, p in self.params.items()
            )
        )

    def make_vector_env(self, tasks: Sequence[Task]) -> TaskVectorEnv:
        if not self.has_native_vector_env:
            return super().make_vector_env(tasks)
        for task in tasks:
            self.check_task(task)
        return MuJoCoVectorEnv(
            self._make_raw_env, tasks, reward=env_reward, models_for=self._models_for
        )

    def _models_for(self, env: gym.Env, tasks: Sequence[Task]) -> list[Any]:
        """A copy of ``env``'s model per distinct task, its fields written from the defaults
        (saved on ``env`` the first time)."""
        import mujoco

        base: Any = env.unwrapped
        if not hasattr(base, "_mcrl_defaults"):
            self._save_defaults(env)
        scratch = mujoco.MjData(base.model)
        models: dict[tuple, Any] = {}
        for task in tasks:
            key = tuple(sorted(task.params.items()))
            if key not in models:
                model = copy.deepcopy(base.model)
                for name, param in self.params.items():
                    path = (param.target or name).removeprefix("model.")
                    default = base._mcrl_defaults[name]
                    _write(
                        *_resolve_from(model, path), _new_value(param, task.params[name], default)
                    )
                mujoco.mj_setConst(model, scratch)
                models[key] = model
        return [models[tuple(sorted(t.params.items()))] for t in tasks]


def _new_value(param: EnvParam, value: Any, default: np.ndarray) -> np.ndarray:
    """The value a task writes: its own, or the default scaled by it; never compounded."""
    new = np.asarray(value, dtype=np.float64).reshape(default.shape if param.per_element else ())
    return default * new if param.scale else new


def _write(owner: Any, leaf: str, new: np.ndarray) -> None:
    current = getattr(owner, leaf)
    if isinstance(current, np.ndarray):
        current[...] = new  # in place: MuJoCo arrays are views into the model
    else:
        setattr(owner, leaf, float(new) if np.ndim(new) == 0 else new)


def _refresh_mujoco_constants(env: gym.Env) -> None:
    """Recompute the model's derived constants (subtree masses, ...) after a parameter write."""
    import mujoco

    unwrapped: Any = env.unwrapped
    mujoco.mj_setConst(unwrapped.model, unwrapped.data)


def declare_family(
    name: str,
    env_id: str,
    params: Mapping[str, EnvParam],
    *,
    horizon: int,
    env_kwargs: Mapping[str, Any] | None = None,
    cells: int = 4,
    ood_margin: float = 0.5,
    register: bool = True,
) -> type[GymFamily]:
    """Declare (and by default register) a family over ``env_id`` varying ``params``.

    Returns the family class; ``mcrl.make_family(name)`` builds it once registered. The
    declaration is checked against a real env right away.
    """
    check_positive_int("horizon", horizon)
    family_cls = type(
        name,
        (GymFamily,),
        {
            "name": name,
            "env_id": env_id,
            "env_kwargs": dict(env_kwargs or {}),
            "params": dict(params),
            "default_horizon": horizon,
            "cells": cells,
            "ood_margin": ood_margin,
            "__doc__": f"{name}: {env_id} with {', '.join(params)} varied (declared with mcrl.declare_family).",
        },
    )
    family_cls()  # validate now, with a real env
    if register:
        register_family(name, family_cls, overwrite=True)
    return family_cls
