"""experiments/paired_difference.py: two configurations of a sweep compared seed by seed, or
task by task when they share one seed."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import load_experiment_script


def load_script():
    return load_experiment_script("paired_difference")


def write_evals(
    sweep: Path, config: str, returns_by_seed: dict[int, list[float]], **extra: object
) -> None:
    for seed, returns in returns_by_seed.items():
        run = sweep / "runs" / config / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "eval_test.json").write_text(json.dumps({"returns": returns} | extra))


def task_record(task_returns: list[list[float]], task_seed: int = 0) -> dict:
    """The fields evaluation writes for 3 tasks of a family's test split."""
    return {
        "task_returns": task_returns,
        "task_seed": task_seed,
        "family": "Navigation2D",
        "split": "test",
        "tasks": 3,
    }


def test_the_difference_is_paired_by_seed(tmp_path, capsys):
    script = load_script()
    # B varies a lot between seeds, A is B plus 1 or 2 after one step: unpaired intervals would
    # overlap, the paired difference is clearly positive.
    write_evals(tmp_path, "a", {0: [-40.0, -9.0], 1: [-20.0, 11.0], 2: [-30.0, 1.5]})
    write_evals(tmp_path, "b", {0: [-40.0, -10.0], 1: [-20.0, 9.0], 2: [-30.0, 0.0]})
    write_evals(tmp_path, "b", {3: [0.0, 0.0]})  # a seed only one side has is left out
    assert script.main([str(tmp_path), "a", "b", "--splits", "test"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| test | 0 | -30.0 ± 24.8 | -30.0 ± 24.8 | +0.0 ± 0.0 | 3 | no |"
    assert lines[3] == "| test | 1 | 1.2 ± 24.9 | -0.3 ± 23.6 | +1.5 ± 1.2 | 3 | yes |"


def test_an_unknown_configuration_is_one_line_naming_the_ones_there(tmp_path, capsys):
    script = load_script()
    write_evals(tmp_path, "a", {0: [-1.0]})
    assert script.main([str(tmp_path), "a", "c"]) == 2
    assert "no configuration 'c'; have ['a']" in capsys.readouterr().err


def test_one_common_seed_on_the_same_tasks_is_paired_task_by_task(tmp_path, capsys):
    script = load_script()
    # The tasks differ a lot (a wide interval over tasks for each side); A beats B on every task
    # by 1 to 2 after one step: the paired difference is clearly positive.
    b_tasks = [[-50.0, -20.0, -35.0], [-20.0, 10.0, -5.0]]
    a_tasks = [[-50.0, -20.0, -35.0], [-19.0, 12.0, -3.5]]
    write_evals(tmp_path, "a", {0: [-35.0, -3.5]}, **task_record(a_tasks))
    write_evals(tmp_path, "b", {0: [-35.0, -5.0]}, **task_record(b_tasks))
    assert script.main([str(tmp_path), "a", "b", "--splits", "test"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[3] == (
        "| test | 1 | -3.5 ± 38.5 | -5.0 ± 37.3 | +1.5 ± 1.2 | 1, paired over 3 tasks | yes |"
    )


def test_one_common_seed_on_different_tasks_has_no_interval(tmp_path, capsys):
    script = load_script()
    tasks = [[-50.0, -20.0, -35.0], [-20.0, 10.0, -5.0]]
    write_evals(tmp_path, "a", {0: [-35.0, -5.0]}, **task_record(tasks, task_seed=1))
    write_evals(tmp_path, "b", {0: [-35.0, -5.0]}, **task_record(tasks, task_seed=2))
    assert script.main([str(tmp_path), "a", "b", "--splits", "test"]) == 0
    assert capsys.readouterr().out.splitlines()[3] == "| test | 1 | -5.0 | -5.0 | +0.0 | 1 | – |"
