"""Test-only families for the Ray tests (shipped to workers by value)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mcrl_envs.navigation import Navigation2D, Navigation2DVectorEnv


class _CrashOnce(Navigation2DVectorEnv):
    def __init__(self, tasks, marker: str):
        self.marker = marker
        super().__init__(tasks)

    def step(self, actions, active):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)  # the worker process dies mid-phase, once
        return super().step(actions, active)


class CrashOnceNavigation(Navigation2D):
    """Navigation2D (same tasks) whose first env step anywhere kills its worker process."""

    def __init__(self, marker: str, horizon: int | None = None):
        super().__init__(horizon)
        self.marker = marker

    def make_vector_env(self, tasks):
        return _CrashOnce(tasks, self.marker)


class _Raises(Navigation2DVectorEnv):
    def step(self, actions, active):
        raise RuntimeError("this env always fails")


class BrokenNavigation(Navigation2D):
    def make_vector_env(self, tasks):
        return _Raises(tasks)


class _Slow(Navigation2DVectorEnv):
    def step(self, actions, active):
        time.sleep(0.05)
        return super().step(actions, active)


class SlowNavigation(Navigation2D):
    def make_vector_env(self, tasks):
        return _Slow(tasks)
