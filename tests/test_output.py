"""What a user sees: progress and results, not library noise; and the backend ``auto`` picks."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

import mcrl
from mcrl.common.config import SamplerConfig
from mcrl.training import build
from tests.conftest import tiny_config

NOISE = re.compile(r"warn|error|traceback|NIL_ID|settotalmass|deprecat", re.IGNORECASE)


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_train_shows_progress_and_results_and_no_ray_or_mujoco_noise(tmp_path, backend):
    # HalfCheetah: every model load used to print MuJoCo's 'settotalmass' deprecation.
    config = tmp_path / "c.yaml"
    config.write_text(
        "family: HalfCheetahDir\nhorizon: 5\niterations: 2\nmeta_batch_size: 2\n"
        "episodes_per_task: 2\neval_every: 2\neval_tasks: 2\npolicy: {hidden_sizes: [4]}\n"
        f"sampler: {{backend: {backend}, workers: 2}}\nouter_epochs: 1\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mcrl", "train", str(config), "--out", "run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = (result.stderr + result.stdout).splitlines()
    assert [line for line in lines if NOISE.search(line)] == []
    assert lines[0].startswith("mcrl: HalfCheetahDir into run | sampler: " + backend)
    assert any(line.startswith("iteration 2/2 | return") for line in lines)
    assert any(line.startswith("done: run") for line in lines)
    assert any(line.startswith("held-out return after 0..2 adaptation steps") for line in lines)


def test_auto_backend_is_local_for_a_native_vector_env_on_one_machine(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    nav = mcrl.make_family("Navigation2D")
    backend, reason = build.resolve_backend(SamplerConfig(), nav)
    assert backend == "local" and "vectorised" in reason


def test_auto_backend_is_ray_when_an_address_is_given(monkeypatch):
    nav = mcrl.make_family("Navigation2D")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert build.resolve_backend(SamplerConfig(address="10.0.0.1:6379"), nav)[0] == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    backend, reason = build.resolve_backend(SamplerConfig(), nav)
    assert backend == "ray" and "auto" in reason
    # An explicit choice is never overridden.
    assert build.resolve_backend(SamplerConfig(backend="local"), nav)[0] == "local"


def test_auto_backend_spreads_one_env_per_episode_families_over_cpus(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # A user's family over an env mcrl has no native version of (every shipped one has).
    family = mcrl.GymFamily(env_id="Pendulum-v1", params={"g": mcrl.EnvParam(8.0, 12.0)})
    assert not family.has_native_vector_env
    monkeypatch.setattr(build, "available_cpus", lambda: 4)
    assert build.resolve_backend(SamplerConfig(), family)[0] == "ray"
    monkeypatch.setattr(build, "available_cpus", lambda: 1)
    assert build.resolve_backend(SamplerConfig(), family)[0] == "local"


def test_the_run_records_the_backend_auto_chose(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    trainer = mcrl.train(tiny_config("sampler.backend=auto", "iterations=1"), tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["sampler"]["backend"] == "local"
    assert "sampler: local (auto: Navigation2D ships a vectorised env)" in trainer.summary


def test_an_incompatible_resume_is_refused_before_ray_starts(tmp_path, capsys):
    import ray

    from mcrl.cli import main

    mcrl.train(tiny_config("iterations=1"), tmp_path / "run")
    config = tmp_path / "c.yaml"
    config.write_text(
        "family: Navigation2D\npolicy: {hidden_sizes: [16]}\nsampler: {backend: ray}\n"
    )
    args = ["train", str(config), "--out", str(tmp_path / "run"), "--resume", "--no-progress"]
    assert main(args) == 2
    assert "cannot resume: policy parameter" in capsys.readouterr().err
    assert not ray.is_initialized()
