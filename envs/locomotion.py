"""Goal-varied MuJoCo locomotion on Gymnasium's v5 envs: the standard meta-RL benchmarks.

The env's own dynamics are untouched; a wrapper replaces the reward with the task's, built from
the quantities Gymnasium reports in ``info`` (velocities, positions, and the control, contact
and survival terms, which are kept as they are).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from mcrl.tasks import BoxTaskSpace, ParamValue, Range, Task, TaskFamily, TaskVectorEnv
from mcrl.tasks.mujoco_vector_env import ROBOTS, MuJoCoVectorEnv
from mcrl.tasks.mujoco_warnings import filter_mujoco_warnings

TaskReward = Callable[[Mapping[str, Any], Mapping[str, ParamValue]], float]


class TaskRewardWrapper(gym.Wrapper):
    """Rewards ``reward_fn(info, task_params)`` instead of the env's reward."""

    def __init__(self, env: gym.Env, reward_fn: TaskReward, task_params: Mapping[str, ParamValue]):
        super().__init__(env)
        self.reward_fn = reward_fn
        self.task_params = dict(task_params)

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        return obs, self.reward_fn(info, self.task_params), terminated, truncated, info


def _ant_penalties(info: Mapping[str, Any]) -> float:
    return info["reward_ctrl"] + info["reward_contact"] + info["reward_survive"]


class GoalLocomotion(TaskFamily):
    """A Gymnasium MuJoCo env whose reward depends on the task (subclasses set the pieces)."""

    env_id: ClassVar[str]
    env_kwargs: ClassVar[dict[str, Any]] = {}
    default_horizon = 200

    @staticmethod
    @abc.abstractmethod
    def reward(info: Mapping[str, Any], params: Mapping[str, ParamValue]) -> float:
        """The task's reward from the env's ``info`` after a step."""

    def make_env(self, task: Task) -> gym.Env:
        self.check_task(task)
        filter_mujoco_warnings()
        env = gym.make(self.env_id, max_episode_steps=self.horizon, **self.env_kwargs)
        return TaskRewardWrapper(env, self.reward, task.params)

    def set_task(self, env: gym.Env, task: Task) -> None:
        self.check_task(task)
        env.task_params = dict(task.params)

    @property
    def has_native_vector_env(self) -> bool:
        return self.env_id in ROBOTS

    def make_vector_env(self, tasks: Sequence[Task]) -> TaskVectorEnv:
        if not self.has_native_vector_env:
            return super().make_vector_env(tasks)
        for task in tasks:
            self.check_task(task)
        return MuJoCoVectorEnv(
            lambda: gym.make(self.env_id, max_episode_steps=self.horizon, **self.env_kwargs),
            tasks,
            reward=self.reward,
        )


class HalfCheetahVel(GoalLocomotion):
    """Run at a target velocity: reward −|v − v_goal| − control cost (MAML; ProMP uses [0, 3]).
    Test velocities are held-out slices of the training range; ood ones lie beyond it."""

    name = "HalfCheetahVel"
    env_id = "HalfCheetah-v5"

    def __init__(
        self, horizon: int | None = None, velocity_range: tuple[float, float] = (0.0, 2.0)
    ):
        super().__init__(horizon)
        low, high = velocity_range
        self.space = BoxTaskSpace({"velocity": Range(low, high)}, cells=8, test_every=4)

    @staticmethod
    def reward(info, params):
        return -abs(info["x_velocity"] - params["velocity"]) + info["reward_ctrl"]


class HalfCheetahDir(GoalLocomotion):
    """Run forward (+1) or backward (−1): reward direction·v − control cost (MAML).

    The benchmark has exactly two tasks, so nothing can be held out: the test split is the
    same two directions and there is no ood split.
    """

    name = "HalfCheetahDir"
    env_id = "HalfCheetah-v5"
    held_out_test = False

    def sample_params(self, rng, split):
        if split == "ood":
            raise ValueError("HalfCheetahDir has no ood split: its two tasks are the whole family")
        return {"direction": float(rng.choice([-1.0, 1.0]))}

    def split_of(self, params):
        self.check_params(params)
        return "train" if params["direction"] in (-1.0, 1.0) else None

    def check_params(self, params):
        super().check_params(params)  # the name, a finite value
        if isinstance(Task.freeze("direction", params["direction"]), tuple):
            raise ValueError(
                f"task parameter 'direction' must be one number, got {params['direction']}"
            )

    def describe(self):
        return {
            "train": {"direction": "±1"},
            "test": {"direction": "±1 (the same two tasks)"},
            "ood": {"direction": "none"},
        }

    @staticmethod
    def reward(info, params):
        return params["direction"] * info["x_velocity"] + info["reward_ctrl"]


class AntDir(GoalLocomotion):
    """Run in a direction (angle in radians): reward v·(cos a, sin a) plus Ant's control, contact
    and survival terms. Training directions cover the front half-circle; ood ones the back."""

    name = "AntDir"
    env_id = "Ant-v5"
    env_kwargs = {"include_cfrc_ext_in_observation": False}
    space = BoxTaskSpace({"angle": Range(-math.pi / 2, math.pi / 2)}, cells=8, test_every=4)

    @staticmethod
    def reward(info, params):
        a = params["angle"]
        return (
            info["x_velocity"] * np.cos(a) + info["y_velocity"] * np.sin(a) + _ant_penalties(info)
        )


class AntGoal(GoalLocomotion):
    """Reach a goal position in a disk of radius 3 (polar coordinates): reward −distance plus
    Ant's control, contact and survival terms. ood goals lie beyond the disk."""

    name = "AntGoal"
    env_id = "Ant-v5"
    env_kwargs = {"include_cfrc_ext_in_observation": False}
    space = BoxTaskSpace(
        {
            "goal_angle": Range(-math.pi, math.pi, ood="none"),
            "goal_radius": Range(0.0, 3.0, ood="above", domain="non_negative"),
        },
        cells=4,
    )

    @staticmethod
    def reward(info, params):
        dx = info["x_position"] - params["goal_radius"] * np.cos(params["goal_angle"])
        dy = info["y_position"] - params["goal_radius"] * np.sin(params["goal_angle"])
        return -np.sqrt(dx * dx + dy * dy) + _ant_penalties(info)
