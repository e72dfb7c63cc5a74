"""Gymnasium's Pendulum with varied pole mass, pole length and gravity."""

from __future__ import annotations

import gymnasium as gym

from mcrl.tasks import BoxTaskSpace, Range, Task, TaskFamily


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
