"""Shared fixtures. mcrl sets torch's thread counts itself; tests only pin the seed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

# Every Ray process the tests start stays on loopback (set before Ray is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np  # noqa: E402
import pytest
import torch

import mcrl
from mcrl.common.policies import params_to_numpy

# The families every generic test builds: all but those over an optional extra (Meta-World's
# have tests of their own, tests/test_metaworld.py, run with the extra installed).
CORE_FAMILIES = [name for name in mcrl.list_families() if not name.startswith("MetaWorld")]


@pytest.fixture
def nav():
    return mcrl.make_family("Navigation2D")


def tiny_config(*overrides: str):
    """A config small enough for a test to train in seconds (local sampler unless overridden)."""
    base = [
        "sampler.backend=local",
        "horizon=10",
        "meta_batch_size=3",
        "episodes_per_task=2",
        "iterations=2",
        "policy.hidden_sizes=[8]",
        "eval_every=2",
        "eval_tasks=2",
        "outer_epochs=2",
    ]
    return mcrl.load_config(None, [*base, *overrides])


def make_policy_for(family, seed: int = 0):
    torch.manual_seed(seed)
    env = family.make_env(family.sample_tasks(1, seed=0)[0])
    return mcrl.make_policy(env.observation_space, env.action_space, hidden_sizes=(16, 16))


def perturbed_params(policy, count: int, scale: float = 0.3, seed: int = 0):
    """``count`` different parameter sets around the policy's (one per task)."""
    rng = np.random.default_rng(seed)
    base = params_to_numpy(policy.params())
    return [
        {k: v + scale * rng.standard_normal(v.shape).astype(np.float32) for k, v in base.items()}
        for _ in range(count)
    ]


def _mcrl_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mcrl", *args]


def _mcrl_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def run_mcrl(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real ``mcrl`` command of this interpreter, run in ``cwd``."""
    return subprocess.run(
        _mcrl_command(*args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_mcrl_env(),
    )


def start_mcrl(*args: str, cwd: Path) -> subprocess.Popen:
    """The real ``mcrl`` command started in ``cwd`` and left running, to signal it."""
    return subprocess.Popen(
        _mcrl_command(*args),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_mcrl_env(),
    )


def load_experiment_script(name: str):
    """A script of experiments/ (not a package) imported as a module, to call its functions."""
    path = Path(__file__).parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
