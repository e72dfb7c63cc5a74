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


def test_multitask_pretraining_is_saved_continued_and_reused(tmp_path, capsys):
    script = load_script()
    common = ["multitask", "--family", "Navigation2D", "--tasks", "1", "--steps", "1"]
    common += ["--episodes", "2", "--horizon", "10", "--checkpoint-every", "20"]
    common += ["--pretrain-dir", str(tmp_path / "pre")]

    def run(pretrain_steps: int, *extra: str) -> dict:
        out = tmp_path / f"eval_{pretrain_steps}.json"
        args = [*common, "--pretrain-steps", str(pretrain_steps), *extra, "--out", str(out)]
        assert script.main(args) == 0
        return json.loads(out.read_text())

    assert run(40)["pretrain_env_steps"] == 40
    first = (tmp_path / "pre" / "pretrained.zip").read_bytes()
    assert "pretrain: 20/40 env steps" in capsys.readouterr().err  # saved after each chunk
    # More steps continue from the saved model; as many as it has reuse it untouched.
    assert run(80)["pretrain_env_steps"] == 80
    assert "pretrain: 60/80" in capsys.readouterr().err
    assert (tmp_path / "pre" / "pretrained.zip").read_bytes() != first
    kept = (tmp_path / "pre" / "pretrained.zip").read_bytes()
    assert run(80, "--split", "ood")["pretrain_env_steps"] == 80
    assert "pretrain:" not in capsys.readouterr().err
    assert (tmp_path / "pre" / "pretrained.zip").read_bytes() == kept
    # Another family's or horizon's model is refused in one line, and kept.
    args = [*common, "--horizon", "12", "--out", str(tmp_path / "x.json")]
    assert script.main(args) == 2
    assert "holds a model pre-trained with" in capsys.readouterr().err
    assert (tmp_path / "pre" / "pretrained.zip").read_bytes() == kept
