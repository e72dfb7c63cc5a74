"""Natively vectorised MuJoCo locomotion: every episode of a phase stepped in MuJoCo's C code,
its observations and reward terms computed as arrays, equal to Gymnasium's v5 envs.

Each episode keeps its own ``MjData`` (its solver warm start included, which is what makes
whole episodes equal Gymnasium's: a MuJoCo state restored without it drifts apart within ~100
steps), and the episodes are stepped by a few threads (``mj_step`` releases the GIL). Per-task
dynamics are per-task ``MjModel`` copies written from the saved defaults, never compounded.

A robot is described by a :class:`Robot`: how Gymnasium's env resets it, observes it, which
reward terms its ``info`` reports, and when it is unhealthy.
"""

from __future__ import annotations

import abc
import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

from mcrl.tasks.mujoco_warnings import filter_mujoco_warnings
from mcrl.tasks.task import Task
from mcrl.tasks.vector_env import TaskVectorEnv

RewardFn = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], np.ndarray]


State = dict[str, np.ndarray]


class Robot(abc.ABC):
    """What one of Gymnasium's v5 MuJoCo envs computes around ``mj_step``, as arrays over envs.

    :meth:`views` names what the robot needs from one env's ``MjData`` (``qpos`` and ``qvel``
    by default); the vector env gathers those of every env into a :data:`State` of arrays
    ``[n, ...]``, and the other methods compute from such states.
    """

    contact_forces = False
    """Whether the env calls ``mj_rnePostConstraint`` after stepping (for ``cfrc_ext``)."""

    def __init__(self, env: gym.Env):
        # A Gymnasium v5 MuJoCo env: the robot reads its env class's own (untyped) attributes.
        unwrapped: Any = env.unwrapped
        self.env = unwrapped
        self.dt = float(unwrapped.dt)

    @classmethod
    def supports(cls, env: gym.Env) -> bool:
        """Whether the env is configured as this robot computes it (its default observation)."""
        return bool(getattr(env.unwrapped, "_exclude_current_positions_from_observation", False))

    def views(self, data: Any) -> State:
        """Views into one env's ``MjData`` of what the robot reads (valid while it lives)."""
        return {"qpos": data.qpos, "qvel": data.qvel}

    @abc.abstractmethod
    def reset_state(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """qpos and qvel after a reset, drawing from ``rng`` exactly as the env's reset_model."""

    @abc.abstractmethod
    def observe(self, state: State) -> np.ndarray:
        """Observations ``[n, obs_dim]``."""

    @abc.abstractmethod
    def info(self, before: State, after: State, actions: np.ndarray) -> dict[str, np.ndarray]:
        """The env's ``info`` after a step, each entry ``[n]`` (reward terms as ``reward_*``)."""

    def healthy(self, state: State) -> np.ndarray | None:
        """Which envs are healthy (None: the robot has no health check)."""
        return None

    def unhealthy(self, state: State) -> np.ndarray:
        """Which envs terminate: unhealthy ones, where the env terminates them."""
        healthy = self.healthy(state)
        if healthy is None or not self.env._terminate_when_unhealthy:
            return np.zeros(len(state["qpos"]), dtype=bool)
        return ~healthy

    def reset_noise(self, rng: np.random.Generator, velocity: str) -> tuple[np.ndarray, np.ndarray]:
        """Gymnasium's reset: uniform noise on qpos, then ``normal`` (scaled) or ``uniform``
        noise on qvel, drawn in that order."""
        env = self.env
        scale = env._reset_noise_scale
        qpos = env.init_qpos + rng.uniform(low=-scale, high=scale, size=env.model.nq)
        if velocity == "normal":
            qvel = env.init_qvel + scale * rng.standard_normal(env.model.nv)
        else:
            qvel = env.init_qvel + rng.uniform(low=-scale, high=scale, size=env.model.nv)
        return qpos, qvel

    def common_terms(self, velocity: np.ndarray, healthy: np.ndarray | None, actions) -> State:
        """The reward terms the runners share: forward velocity, control cost, survival."""
        env = self.env
        terms = {
            "reward_forward": env._forward_reward_weight * velocity,
            "reward_ctrl": -env._ctrl_cost_weight * np.sum(np.square(actions), axis=1),
        }
        if healthy is not None:
            terms["reward_survive"] = healthy * env._healthy_reward
        return terms


class PlanarRobot(Robot):
    """The planar runners of Gymnasium's v5 envs (HalfCheetah, Hopper, Walker2d): observations
    qpos[1:] and qvel (clipped for the hoppers), reward terms forward velocity, control cost and,
    for those with a health check, a survival bonus."""

    velocity_noise = "normal"  # how reset_model draws qvel: "normal" (scaled) or "uniform"
    velocity_clip: float | None = None

    def reset_state(self, rng):
        return self.reset_noise(rng, self.velocity_noise)

    def observe(self, state):
        qvel = state["qvel"]
        if self.velocity_clip is not None:
            qvel = np.clip(qvel, -self.velocity_clip, self.velocity_clip)
        return np.concatenate([state["qpos"][:, 1:], qvel], axis=1)

    def info(self, before, after, actions):
        x_velocity = (after["qpos"][:, 0] - before["qpos"][:, 0]) / self.dt
        return {
            "x_position": after["qpos"][:, 0],
            "x_velocity": x_velocity,
            **self.common_terms(x_velocity, self.healthy(after), actions),
        }


def _inside(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    return (bounds[0] < values) & (values < bounds[1])


class HalfCheetahRobot(PlanarRobot):
    """HalfCheetah-v5: no health check, normal velocity noise, unclipped velocities."""


class HopperRobot(PlanarRobot):
    """Hopper-v5: healthy while the torso's height and angle, and every other state entry,
    stay in their ranges."""

    velocity_noise = "uniform"
    velocity_clip = 10.0

    def healthy(self, state):
        env, qpos = self.env, state["qpos"]
        rest = np.concatenate([qpos, state["qvel"]], axis=1)[:, 2:]
        return (
            np.all(_inside(rest, env._healthy_state_range), axis=1)
            & _inside(qpos[:, 1], env._healthy_z_range)
            & _inside(qpos[:, 2], env._healthy_angle_range)
        )


class Walker2dRobot(HopperRobot):
    """Walker2d-v5: healthy while the torso's height and angle stay in their ranges."""

    def healthy(self, state):
        env, qpos = self.env, state["qpos"]
        return _inside(qpos[:, 1], env._healthy_z_range) & _inside(
            qpos[:, 2], env._healthy_angle_range
        )


class AntRobot(Robot):
    """Ant-v5 (without contact forces in the observation): observations qpos[2:], qvel; the
    torso's planar velocity from its body position; a contact cost from the clipped external
    forces; healthy while the state is finite and the torso's height in range (inclusive)."""

    contact_forces = True

    @classmethod
    def supports(cls, env):
        unwrapped: Any = env.unwrapped
        return (
            super().supports(env)
            and not unwrapped._include_cfrc_ext_in_observation
            and unwrapped._main_body == 1
        )

    def views(self, data):
        return super().views(data) | {
            "xy": data.xpos[self.env._main_body, :2],
            "cfrc_ext": data.cfrc_ext,
        }

    def reset_state(self, rng):
        return self.reset_noise(rng, "normal")

    def observe(self, state):
        return np.concatenate([state["qpos"][:, 2:], state["qvel"]], axis=1)

    def healthy(self, state):
        qpos = state["qpos"]
        finite = np.isfinite(qpos).all(axis=1) & np.isfinite(state["qvel"]).all(axis=1)
        low, high = self.env._healthy_z_range
        return finite & (low <= qpos[:, 2]) & (qpos[:, 2] <= high)

    def info(self, before, after, actions):
        env = self.env
        velocity = (after["xy"] - before["xy"]) / self.dt
        forces = np.clip(after["cfrc_ext"], *env._contact_force_range)
        qpos = after["qpos"]
        return {
            "x_position": qpos[:, 0],
            "y_position": qpos[:, 1],
            "distance_from_origin": np.linalg.norm(qpos[:, :2], axis=1),
            "x_velocity": velocity[:, 0],
            "y_velocity": velocity[:, 1],
            **self.common_terms(velocity[:, 0], self.healthy(after), actions),
            "reward_contact": -env._contact_cost_weight * np.sum(np.square(forces), axis=(1, 2)),
        }


ROBOTS: dict[str, type[Robot]] = {
    "HalfCheetah-v5": HalfCheetahRobot,
    "Hopper-v5": HopperRobot,
    "Walker2d-v5": Walker2dRobot,
    "Ant-v5": AntRobot,
}


def env_reward(info: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray]) -> np.ndarray:
    """The env's own reward: the sum of its ``reward_*`` terms."""
    return functools.reduce(operator.add, (v for k, v in info.items() if k.startswith("reward_")))


class MuJoCoVectorEnv(TaskVectorEnv):
    """One ``MjData`` per episode, stepped ``frame_skip`` substeps at a time by ``threads``
    threads; observations, rewards and terminations as arrays.

    ``models_for(env, tasks)`` gives each task's ``MjModel`` from ``env``'s (tasks that only
    change the reward share ``env``'s own); ``reward(info, params)`` turns the robot's ``info`` arrays and the tasks'
    parameters (stacked per env) into rewards.
    """

    def __init__(
        self,
        make_env: Callable[[], gym.Env],
        tasks: Sequence[Task],
        *,
        reward: RewardFn,
        models_for: Callable[[gym.Env, Sequence[Task]], list[Any]] | None = None,
        threads: int = 1,
    ):
        filter_mujoco_warnings()
        self._probe = make_env()
        unwrapped: Any = self._probe.unwrapped
        env_id = self._probe.spec.id if self._probe.spec is not None else ""
        if env_id not in ROBOTS or not ROBOTS[env_id].supports(self._probe):
            raise ValueError(
                f"no native vectorised env for {env_id!r} with these arguments; native robots "
                f"(default observations): {sorted(ROBOTS)}"
            )
        self.robot = ROBOTS[env_id](self._probe)
        observation_space, action_space = self._probe.observation_space, self._probe.action_space
        assert isinstance(observation_space, gym.spaces.Box)  # as in every v5 MuJoCo env
        assert isinstance(action_space, gym.spaces.Box)
        self.observation_space, self.action_space = observation_space, action_space
        self.frame_skip = int(unwrapped.frame_skip)
        self._reward = reward
        self._models_for = models_for or (lambda env, tasks: [unwrapped.model] * len(tasks))
        self._datas: list[Any] = []
        # Per MjData: its ctrl and what the robot reads, as (name, view) pairs. Cached because
        # each attribute access builds a new array, and the threads read each env's state
        # right after stepping it, while it is still in the CPU's cache.
        self._ctrls: list[np.ndarray] = []
        self._views: list[list[tuple[str, np.ndarray]]] = []
        self._pool: ThreadPoolExecutor | None = None
        self.threads = 1
        self.set_threads(threads)
        self.set_tasks(tasks)

    @property
    def num_envs(self) -> int:
        return len(self._models)

    def set_threads(self, threads: int) -> None:
        """Step the envs with ``threads`` threads (MuJoCo releases the GIL while stepping)."""
        self.threads = max(1, int(threads))
        if self._pool is not None:
            self._pool.shutdown()
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        import mujoco

        self._models = self._models_for(self._probe, tasks)
        # Less than a step's worth of simulated time: the clock was reset during the step.
        self._clock = [(self.frame_skip - 0.5) * m.opt.timestep for m in self._models]
        # An MjData depends on its model's sizes only, which per-task copies share: reused.
        while len(self._datas) < len(tasks):
            data = mujoco.MjData(self._models[len(self._datas)])
            self._datas.append(data)
            self._ctrls.append(data.ctrl)
            self._views.append(list(self.robot.views(data).items()))
        self._params = {
            name: np.array([t.params[name] for t in tasks])
            for name in (tasks[0].params if tasks else {})
        }

    def _read(self, index: Sequence[int], state: State) -> None:
        """Copy the robot's views of the envs in ``index`` into their rows of ``state``."""
        views = self._views
        for k in index:
            for name, view in views[k]:
                state[name][k] = view

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        import mujoco

        for k, seed in enumerate(seeds):
            model, data = self._models[k], self._datas[k]
            mujoco.mj_resetData(model, data)
            qpos, qvel = self.robot.reset_state(seeding.np_random(int(seed))[0])
            data.qpos[:] = qpos
            data.qvel[:] = qvel
            mujoco.mj_forward(model, data)
        n = self.num_envs
        # The next step's "before"; each step writes a new state.
        self._last = {name: np.empty((n, *view.shape)) for name, view in self._views[0]}
        self._read(range(n), self._last)
        return self.robot.observe(self._last).astype(np.float32)

    def _step_envs(
        self, index: np.ndarray, actions: np.ndarray, state: State, reset: list[int]
    ) -> None:
        """Step the envs in ``index`` and read them into ``state``; append to ``reset`` those
        MuJoCo reset on the way (it resets a simulation whose state became non-finite or huge,
        which its clock shows)."""
        import mujoco

        models, datas, ctrls, views = self._models, self._datas, self._ctrls, self._views
        frame_skip, clock = self.frame_skip, self._clock
        contact_forces = self.robot.contact_forces
        for k in index:
            data = datas[k]
            before = data.time
            ctrls[k][:] = actions[k]
            mujoco.mj_step(models[k], data, frame_skip)
            if contact_forces:
                mujoco.mj_rnePostConstraint(models[k], data)
            if data.time < before + clock[k]:
                reset.append(k)
            for name, view in views[k]:
                state[name][k] = view

    def step(self, actions, active):
        actions = np.asarray(actions, dtype=np.float64)
        before = self._last
        index = np.flatnonzero(active)
        after = self._last = {name: rows.copy() for name, rows in before.items()}
        reset: list[int] = []
        if self._pool is None or len(index) < 2 * self.threads:
            self._step_envs(index, actions, after, reset)
        else:
            for future in [
                self._pool.submit(self._step_envs, chunk, actions, after, reset)
                for chunk in np.array_split(index, self.threads)
            ]:
                future.result()
        # An episode whose simulation MuJoCo had to reset ends here, truncated, without passing
        # on the reset state or a NaN.
        self.unstable = np.zeros(len(active), dtype=bool)
        self.unstable[reset] = True
        info = self.robot.info(before, after, actions)
        rewards = np.where(self.unstable, 0.0, self._reward(info, self._params))
        observations = self.robot.observe(after)
        observations[self.unstable] = 0.0
        terminated = self.robot.unhealthy(after) & active & ~self.unstable
        return (
            observations.astype(np.float32),
            rewards.astype(np.float32),
            terminated,
            self.unstable.copy(),
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._probe.close()
