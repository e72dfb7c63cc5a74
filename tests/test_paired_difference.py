"""experiments/paired_difference.py: two configurations of a sweep compared seed by seed."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import load_experiment_script


def load_script():
    return load_experiment_script("paired_difference")


def write_evals(sweep: Path, config: str, returns_by_seed: dict[int, list[float]]) -> None:
    for seed, returns in returns_by_seed.items():
        run = sweep / "runs" / config / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "eval_test.json").write_text(json.dumps({"returns": returns}))


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
