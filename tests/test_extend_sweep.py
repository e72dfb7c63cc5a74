"""experiments/extend_sweep.py: a longer sweep started from a shorter sweep's trials trains what
the longer sweep would have trained from scratch, and refuses trials that ran another config."""

from __future__ import annotations

import pytest
import torch

from mcrl.common.config import ConfigError
from tests.conftest import load_experiment_script, run_mcrl
from tests.test_sweep import TINY, metrics, write_sweep

extend_sweep = load_experiment_script("extend_sweep")


def policy_of(run_dir):
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)
    return state["learner"]["policy"]


def training_columns(rows):
    """Rows without timings and evaluations (the shorter run evaluated at its last iteration)."""
    return [{k: v for k, v in row.items() if not k.startswith(("time_", "eval_"))} for row in rows]


def test_an_extended_sweep_trains_what_the_longer_sweep_trains_from_scratch(tmp_path):
    short = write_sweep(
        tmp_path / "short.yaml", set=TINY | {"iterations": 2}, evaluate={"steps": 1}
    )
    long = write_sweep(tmp_path / "long.yaml", set=TINY | {"iterations": 4}, evaluate={"steps": 1})
    more_seeds = write_sweep(
        tmp_path / "more_seeds.yaml",
        set=TINY | {"iterations": 4},
        evaluate={"steps": 1},
        seeds=[0, 1],
    )
    for sweep, out in [(short, "short"), (long, "scratch")]:
        result = run_mcrl("sweep", str(sweep), "--out", out, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]

    (configuration,) = [p.name for p in (tmp_path / "short" / "runs").iterdir()]
    extend_sweep.extend(
        str(long),
        tmp_path / "extended",
        {configuration: tmp_path / "short" / "runs" / configuration},
        allowed=set(),
    )
    copied = tmp_path / "extended" / "runs" / configuration / "seed0"
    assert not (copied / "trial.json").exists() and not list(copied.glob("eval_*.json"))
    assert len(metrics(copied)) == 2

    result = run_mcrl("sweep", str(long), "--out", "extended", "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    scratch = tmp_path / "scratch" / "runs" / configuration / "seed0"
    assert training_columns(metrics(copied)) == training_columns(metrics(scratch))
    assert metrics(copied)[-1]["eval_return_1"] == metrics(scratch)[-1]["eval_return_1"] != ""
    for name, tensor in policy_of(scratch).items():
        assert torch.equal(policy_of(copied)[name], tensor), name
    assert (copied / "eval_test.json").is_file()

    # A seed the shorter sweep does not have trains from scratch.
    extend_sweep.extend(
        str(more_seeds),
        tmp_path / "more",
        {configuration: tmp_path / "short" / "runs" / configuration},
        allowed=set(),
    )
    assert (tmp_path / "more" / "runs" / configuration / "seed0" / "metrics.csv").is_file()
    assert not (tmp_path / "more" / "runs" / configuration / "seed1").exists()


def test_a_trial_that_ran_another_config_is_refused_naming_the_key(tmp_path):
    short = write_sweep(tmp_path / "short.yaml", set=TINY | {"iterations": 2})
    long = write_sweep(tmp_path / "long.yaml", set=TINY | {"iterations": 4, "inner_lr": 0.2})
    assert run_mcrl("sweep", str(short), "--out", "short", cwd=tmp_path).returncode == 0
    (configuration,) = [p.name for p in (tmp_path / "short" / "runs").iterdir()]
    sources = {configuration: tmp_path / "short" / "runs" / configuration}

    with pytest.raises(ConfigError, match="inner_lr=0.1.*--allow inner_lr"):
        extend_sweep.extend(str(long), tmp_path / "extended", sources, allowed=set())
    assert not (tmp_path / "extended").exists()  # nothing written

    extend_sweep.extend(str(long), tmp_path / "extended", sources, allowed={"inner_lr"})
    assert (tmp_path / "extended" / "sweep.json").is_file()
    with pytest.raises(ConfigError, match="not empty"):
        extend_sweep.extend(str(long), tmp_path / "extended", sources, allowed={"inner_lr"})
