"""experiments/run_benchmarks.py trains, evaluates, tabulates, and reports failed runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import load_experiment_script


def load_driver():
    return load_experiment_script("run_benchmarks")


def test_driver_runs_resumes_extends_and_reports_failures(tmp_path, monkeypatch):
    driver = load_driver()
    tiny = {"iterations": 1, "meta_batch_size": 2, "episodes_per_task": 2, "horizon": 10}
    tiny |= {"policy.hidden_sizes": [8], "outer_epochs": 1}
    monkeypatch.setitem(driver.BUDGETS, "tiny", {"*": tiny})
    # An inner step of 1e30 sends the adapted policy to inf: this trial always fails.
    monkeypatch.setitem(driver.VARIANTS, "broken", {"inner_lr": 1e30})
    monkeypatch.setattr(driver, "EVALUATE", {"splits": ["test", "ood"], "tasks": 2, "steps": 1})
    args = ["--families", "Navigation2D", "--budget", "tiny", "--out", str(tmp_path)]
    assert driver.main([*args, "--variants", "identity (MAML)", "broken", "--seeds", "0"]) == 0
    table = (tmp_path / "table.md").read_text()
    row = next(line for line in table.splitlines() if "identity (MAML)" in line)
    assert "| Navigation2D | identity (MAML) | 1 |" in row and " / " in row
    assert "broken **failed: adapted parameter after 2 inner step(s)" in table
    assert "MAML (Finn et al. 2017) | – | -40.41 / -11.68 / -3.33 / -3.23" in table
    assert "kronecker ≥ identity on 0 of 0 families" in table  # no kronecker run here
    sweep = yaml.safe_load((tmp_path / "Navigation2D.yaml").read_text())
    assert sweep["variants"]["broken"] == {"inner_lr": 1e30} and sweep["seeds"] == [0]

    done = tmp_path / "Navigation2D" / "runs" / "000_identity-MAML" / "seed0"
    stamp = (done / "eval_test.json").stat().st_mtime_ns
    # Resumed with one more seed: the finished trial is not redone, the new one runs.
    assert driver.main([*args, "--variants", "identity (MAML)", "--seeds", "1"]) == 0
    assert (done / "eval_test.json").stat().st_mtime_ns == stamp
    assert (done.parent / "seed1" / "eval_test.json").exists()
    table = (tmp_path / "table.md").read_text()
    assert "| Navigation2D | identity (MAML) | 2 |" in table


def test_a_family_without_the_split_is_recorded_not_failed(tmp_path):
    driver = load_driver()
    out = tmp_path / "eval_ood.json"
    no_split = "import sys; sys.stderr.write('mcrl: error: F has no ood split'); sys.exit(2)"
    driver.evaluate([sys.executable, "-c", no_split], "ood", out)
    assert json.loads(out.read_text())["unavailable"] == "mcrl: error: F has no ood split"
    crash = "import sys; sys.stderr.write('boom'); sys.exit(1)"
    with pytest.raises(subprocess.CalledProcessError) as error:
        driver.evaluate([sys.executable, "-c", crash], "ood", tmp_path / "other.json")
    assert error.value.stderr == "boom" and not (tmp_path / "other.json").exists()
