"""The SB3 baselines of experiments/baselines run and report in eval.json format."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parents[1] / "experiments" / "baselines" / "sb3_ppo.py"


def load_script():
    spec = importlib.util.spec_from_file_location("sb3_ppo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("baseline", ["scratch", "multitask"])
def test_ppo_baseline_writes_an_eval_record(tmp_path, baseline, capsys):
    out = tmp_path / "eval.json"
    args = [baseline, "--family", "Navigation2D", "--tasks", "2", "--steps", "2"]
    args += ["--episodes", "2", "--horizon", "10", "--pretrain-steps", "40", "--out", str(out)]
    assert load_script().main(args) == 0
    record = json.loads(out.read_text())
    assert {"returns", "ci95", "split", "tasks", "steps", "env_steps", "baseline"} <= set(record)
    assert len(record["returns"]) == 3 and np.isfinite(record["returns"]).all()
    assert record["baseline"] == f"sb3_ppo_{baseline}"
    # 2 tasks x (2 updates of 2 x 10 steps + 3 evaluations of at most 2 x 10 steps)
    assert 2 * 40 < record["env_steps"] <= 2 * (40 + 60)
    assert (record["pretrain_env_steps"] > 0) == (baseline == "multitask")
