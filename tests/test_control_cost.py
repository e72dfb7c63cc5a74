"""experiments/control_cost.py: a checkpoint's held-out returns split into control cost and the
rest, and re-scored with another control-cost weight."""

from __future__ import annotations

import pytest

import mcrl
from mcrl.training.adaptation import evaluate_checkpoint
from tests.conftest import load_experiment_script, tiny_config


@pytest.fixture(scope="module")
def cheetah_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "cheetah"
    mcrl.train(tiny_config("family=HalfCheetahVel", "iterations=1"), run)
    return run


def test_returns_are_evaluations_and_rescoring_moves_only_the_control_cost(cheetah_run):
    script = load_experiment_script("control_cost")
    sizes = {"split": "test", "tasks": 2, "episodes": 2, "steps": 1}
    own, env_weight = script.table(cheetah_run, weight=0.1, **sizes)
    half, _ = script.table(cheetah_run, weight=0.05, **sizes)
    none, _ = script.table(cheetah_run, weight=0.0, **sizes)
    record, _ = evaluate_checkpoint(cheetah_run, num_tasks=2, episodes=2, steps=1)
    assert env_weight == 0.1  # HalfCheetah-v5's own
    assert [row[1] for row in own] == pytest.approx(record["returns"], abs=1e-4)
    for (_, ret, cost, same), (_, _, _, halved), (_, _, _, free) in zip(
        own, half, none, strict=True
    ):
        assert cost < 0  # random actions cost something at every step
        assert same == pytest.approx(ret)
        assert halved == pytest.approx(ret - cost / 2)
        assert free == pytest.approx(ret - cost)


def test_the_command_prints_the_table_and_refuses_a_family_without_control_cost(
    cheetah_run, tmp_path, capsys
):
    script = load_experiment_script("control_cost")
    args = ["--tasks", "2", "--episodes", "2", "--steps", "1"]
    assert script.main([str(cheetah_run), *args]) == 0
    out = capsys.readouterr().out
    assert "| steps | return | control cost (0.1·\\|a\\|²) | return with 0.05·\\|a\\|² |" in out
    assert "\n| 0 | " in out and "\n| 1 | " in out and "\n| 2 | " not in out  # 0..steps
    assert "command: python experiments/control_cost.py" in out

    mcrl.train(tiny_config("iterations=1"), tmp_path / "nav")
    assert script.main([str(tmp_path / "nav"), *args]) == 2
    assert "Navigation2D's env has no control cost" in capsys.readouterr().err
    assert script.main([str(tmp_path / "missing"), *args]) == 2
    assert script.main([str(cheetah_run), "--tasks", "0"]) == 2
    assert "tasks" in capsys.readouterr().err
