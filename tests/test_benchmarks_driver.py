"""experiments/run_benchmarks.py trains, evaluates, tabulates, and reports failed runs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "experiments" / "run_benchmarks.py"


def load_driver():
    spec = importlib.util.spec_from_file_location("run_benchmarks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_driver_runs_resumes_and_reports_failures(tmp_path, monkeypatch, capsys):
    driver = load_driver()
    tiny = ["iterations=1", "meta_batch_size=2", "episodes_per_task=2", "horizon=10"]
    tiny += ["policy.hidden_sizes=[8]", "sampler.backend=local", "outer_epochs=1"]
    monkeypatch.setitem(driver.BUDGETS, "tiny", {"*": tiny})
    monkeypatch.setitem(driver.VARIANTS, "broken", ["curvature=spherical"])
    monkeypatch.setattr(driver, "EVAL", ["--tasks", "2", "--steps", "1", "--episodes", "2"])
    args = ["--families", "Navigation2D", "--variants", "identity (MAML)", "broken"]
    args += ["--seeds", "0", "--budget", "tiny", "--out", str(tmp_path)]
    assert driver.main(args) == 0
    table = (tmp_path / "table.md").read_text()
    row = next(line for line in table.splitlines() if "identity (MAML)" in line)
    assert "| Navigation2D | identity (MAML) | 1 |" in row and " / " in row
    assert "broken **failed:" in table and "spherical" in table
    assert "MAML (Finn et al. 2017) | – | -40.41 / -11.68 / -3.33 / -3.23" in table
    assert "kronecker ≥ identity on 0 of 0 families" in table  # no kronecker run here

    done = tmp_path / "Navigation2D" / driver.slug("identity (MAML)") / "seed0"
    stamp = (done / "eval_test.json").stat().st_mtime_ns
    assert driver.main(args) == 0  # resumable: the finished run is not redone
    assert (done / "eval_test.json").stat().st_mtime_ns == stamp


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
