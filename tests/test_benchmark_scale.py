"""experiments/benchmark_scale.py: plain runs of one family evaluated, compared and drawn."""

from __future__ import annotations

import json

import mcrl
from tests.conftest import load_experiment_script, tiny_config


def test_runs_are_evaluated_once_per_checkpoint_and_reported(tmp_path, capsys):
    script = load_experiment_script("benchmark_scale")
    family = tmp_path / "Navigation2D"
    for variant in ("identity", "kronecker"):
        for seed in (0, 1):
            config = tiny_config(f"curvature={variant}", f"seed={seed}", "inner_steps=1")
            mcrl.train(config, family / variant / f"seed{seed}")
    (family / "machines.json").write_text(
        json.dumps(
            [{"from_iteration": 0, "machine": "box A"}, {"from_iteration": 1, "machine": "box B"}]
        )
    )
    # A run started later elsewhere names its own machine.
    (family / "kronecker" / "seed1" / "machines.json").write_text(
        json.dumps([{"from_iteration": 0, "machine": "box C"}])
    )
    # A baseline's record beside the runs (as experiments/baselines/sb3_ppo.py writes it).
    baseline = tmp_path / "baselines" / "Navigation2D" / "sb3_ppo_scratch" / "seed0"
    baseline.mkdir(parents=True)
    record = {"split": "test", "returns": [-40.0, -30.0], "ci95": [1.0, 1.0]}
    (baseline / "eval_test.json").write_text(json.dumps(record | {"pretrain_env_steps": 0}))
    assert script.main([str(family), "--tasks", "2", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "| sb3_ppo_scratch (PPO updates) | 1 | | 0.0M | -40.0 | -30.0 |" in out
    assert "| sb3_ppo_scratch seed0 | -40.0 ± 1.0 | -30.0 ± 1.0 |" in out
    evaluation = json.loads((family / "kronecker" / "seed1" / "eval_ood.json").read_text())
    assert evaluation["iteration"] == 1 and len(evaluation["returns"]) == 2
    assert (family / "learning_curves.png").stat().st_size > 0
    assert "| kronecker | 2 | 2/2 |" in out  # seeds, iterations of each seed's checkpoint
    assert "| ood | 1 |" in out  # kronecker − identity paired by seed
    assert "identity seed0: 1 its on box A" in out and "1 its on box B" in out
    assert "kronecker seed1: 2 its on box C" in out

    # The same checkpoint is not evaluated again.
    written = (family / "identity" / "seed0" / "eval_test.json").stat().st_mtime_ns
    assert script.main([str(family), "--tasks", "2", "--steps", "1"]) == 0
    assert (family / "identity" / "seed0" / "eval_test.json").stat().st_mtime_ns == written


def test_a_directory_without_runs_is_one_line(tmp_path, capsys):
    script = load_experiment_script("benchmark_scale")
    assert script.main([str(tmp_path)]) == 2
    assert "no VARIANT/seedN runs in" in capsys.readouterr().err
    assert script.main([str(tmp_path / "missing")]) == 2
    assert "no directory" in capsys.readouterr().err
