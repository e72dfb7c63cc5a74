"""``mcrl sweep``: trials on Ray Tune as ordinary run directories, resume, retries, ASHA, clusters,
the summary, and one-line errors for bad sweep files."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import mcrl
from mcrl.common.config import ConfigError
from mcrl.sweeps.spec import load_sweep, trial_resources
from tests.conftest import run_mcrl, start_mcrl

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "experiments" / "navigation2d.yaml"
# A few seconds a trial: the sweep machinery is under test, not meta-learning.
TINY = {
    "iterations": 3,
    "meta_batch_size": 3,
    "episodes_per_task": 4,
    "horizon": 20,
    "eval_every": 3,
    "eval_tasks": 3,
    "policy.hidden_sizes": [8],
}


def write_sweep(path: Path, **keys) -> Path:
    data = {"base": str(BASE), "set": TINY} | keys
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "trial.json").read_text())


# -- the sweep file ------------------------------------------------------------------------------
def test_a_grid_with_seeds_expands_to_one_trial_per_configuration_and_seed(tmp_path):
    spec = load_sweep(
        write_sweep(
            tmp_path / "s.yaml",
            grid={"curvature": ["identity", "kronecker"]},
            seeds=[0, 1],
            search={"inner_lr": "loguniform(0.01, 0.3)"},
            samples=2,
        )
    )
    trials = spec.trials()
    assert len(trials) == 2 * 2 * 2
    assert len({t.name for t in trials}) == 8
    draws = [t.config["inner_lr"] for t in trials]
    assert all(0.01 <= d <= 0.3 for d in draws)
    assert spec.trials() == trials  # the search draws are fixed by search_seed
    assert [t.config["seed"] for t in trials[:2]] == [0, 1]
    assert {t.config["curvature"] for t in trials[:4]} == {"identity"}
    # Every trial says what it uses, so that Tune can reserve exactly that.
    assert trials[0].config["sampler"]["backend"] == "local"
    assert trial_resources(trials[0].config) == [{"CPU": 1.0}]


def test_trial_resources_count_rollout_workers_and_gpus(tmp_path):
    spec = load_sweep(
        write_sweep(
            tmp_path / "s.yaml",
            set=TINY | {"sampler.workers": 3, "learner.num_threads": 2, "learner.num_gpus": 0.5},
        )
    )
    (trial,) = spec.trials()
    assert trial.config["sampler"]["backend"] == "ray"
    assert trial.config["learner"]["placement"] == "driver"  # the trial's process holds the GPU
    assert trial_resources(trial.config) == [{"CPU": 2.0, "GPU": 0.5}, *[{"CPU": 1.0}] * 3]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"gird": {"curvature": ["identity"]}},
            "unknown key 'gird'; valid keys: base, set, variants, grid",
        ),
        ({"search": {"family": "uniform(0, 1)"}}, "search key 'family' is not a number"),
        ({"search": {"inner_steps": "uniform(1, 3)"}}, "'inner_steps' is an integer; use randint"),
        ({"search": {"inner_lr": "normal(0, 1)"}}, "must be uniform(a, b), loguniform(a, b)"),
        ({"search": {"inner_lr": "loguniform(0, 1)"}}, "loguniform needs 0 < a < b"),
        ({"search": {"inner_steps": "randint(1, 3.5)"}}, "randint needs whole numbers a < b"),
        ({"search": {"nope": "uniform(0, 1)"}}, "search key 'nope' is not a config key"),
        ({"grid": {"curvature": "identity"}}, "grid key 'curvature' must have a non-empty list"),
        ({"grid": {"curvatur": ["identity"]}}, "unknown config key 'curvatur'"),
        ({"grid": {"inner_lr": [0.1, -1]}}, "config key 'inner_lr' must be > 0, got -1"),
        ({"seeds": [0, 0]}, "'seeds' must be a non-empty list of distinct"),
        ({"samples": 3}, "'samples' needs a 'search'"),
        ({"metric": "loss"}, "'metric' must be one of return_pre, return_post, eval_return_0"),
        ({"scheduler": "hyperband"}, "'scheduler' must be none or asha"),
        ({"evaluate": {"splits": ["val"]}}, "evaluate.splits must be a list of train, test, ood"),
        ({"base": "missing.yaml"}, "base config"),
    ],
)
def test_a_bad_sweep_file_is_one_line_naming_the_key(tmp_path, keys, message):
    path = write_sweep(tmp_path / "s.yaml", **keys)
    with pytest.raises((ConfigError, FileNotFoundError)) as error:
        load_sweep(path)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_distribution_cut_by_a_flow_mapping_says_to_quote_it(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(f"base: {BASE}\nsearch: {{inner_lr: loguniform(0.01, 0.3)}}\n")
    with pytest.raises(ConfigError, match="quote it"):
        load_sweep(path)


def test_cli_bad_input_exits_2_in_one_line_and_writes_nothing(tmp_path):
    bad = write_sweep(tmp_path / "bad.yaml", search={"family": "uniform(0, 1)"})
    result = run_mcrl("sweep", str(bad), "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "is not a number" in result.stderr
    assert not (tmp_path / "out").exists()

    good = write_sweep(tmp_path / "good.yaml")
    result = run_mcrl(
        "sweep", str(good), "--out", "out", "--ray-address", "127.0.0.1:1", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "cannot reach a Ray cluster at '127.0.0.1:1'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()

    result = run_mcrl("sweep", str(good), "--out", "out", "--resume", cwd=tmp_path)
    assert result.returncode == 2 and "no sweep to resume" in result.stderr

    # A trial bigger than the whole (embedded) cluster would wait forever.
    big = write_sweep(tmp_path / "big.yaml", set=TINY | {"learner.num_threads": 64})
    result = run_mcrl("sweep", str(big), "--out", "out", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "needs 64 CPUs but the Ray cluster has" in result.stderr
    assert not (tmp_path / "out").exists()


def test_without_ray_tune_the_error_names_the_extra(tmp_path):
    sweep = write_sweep(tmp_path / "s.yaml")
    code = (
        "import sys; sys.modules['ray.tune'] = None\n"  # as if ray[tune] were not installed
        "from mcrl.cli.main import main\n"
        f"sys.exit(main(['sweep', {str(sweep)!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2
    assert "pip install 'mcrl[sweep]'" in result.stderr and "Traceback" not in result.stderr


# -- running sweeps (an embedded Ray in the CLI's process) -----------------------------------------
@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory):
    """Two curvature kinds x two seeds, run by the real CLI."""
    root = tmp_path_factory.mktemp("sweep")
    sweep = write_sweep(
        root / "s.yaml",
        grid={"curvature": ["identity", "kronecker"]},
        seeds=[0, 1],
        evaluate={"splits": ["test", "ood"], "tasks": 3, "steps": 2},
    )
    result = run_mcrl("sweep", str(sweep), "--out", "out", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_a_two_by_two_sweep_makes_four_ordinary_run_directories(two_by_two, tmp_path):
    root, result = two_by_two
    run_dirs = sorted((root / "out" / "runs").glob("*/seed*"))
    assert [d.relative_to(root / "out" / "runs").as_posix() for d in run_dirs] == [
        "000_curvature=identity/seed0",
        "000_curvature=identity/seed1",
        "001_curvature=kronecker/seed0",
        "001_curvature=kronecker/seed1",
    ]
    for run_dir in run_dirs:
        assert status(run_dir)["status"] == "finished"
        assert status(run_dir)["attempts"] == 1
        for name in ("config.yaml", "metrics.csv", "eval.json", "checkpoints/latest.pt"):
            assert (run_dir / name).exists(), name
        for split in ("test", "ood"):
            record = json.loads((run_dir / f"eval_{split}.json").read_text())
            assert record["split"] == split and len(record["returns"]) == 3  # 0..2 steps
    assert "Traceback" not in result.stderr

    # Each trial is the run that `mcrl train` makes of its config.yaml.
    for run_dir in run_dirs[::3]:
        direct = mcrl.train(run_dir / "config.yaml", tmp_path / run_dir.parent.name)
        swept, trained = metrics(run_dir), metrics(direct.run_dir)
        assert len(swept) == len(trained) == TINY["iterations"]
        for a, b in zip(swept, trained, strict=True):
            assert {k: v for k, v in a.items() if not k.startswith("time_")} == {
                k: v for k, v in b.items() if not k.startswith("time_")
            }
        sweep_theta = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)
        for name, tensor in direct.learner.state_dict()["policy"].items():
            np.testing.assert_array_equal(
                sweep_theta["learner"]["policy"][name].numpy(), tensor.numpy(), err_msg=name
            )


def test_the_summary_has_one_row_per_configuration_with_intervals_over_seeds(two_by_two):
    root, result = two_by_two
    with (root / "out" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["curvature"] for r in rows] == ["identity", "kronecker"]
    for row in rows:
        assert row["finished"] == "2" and row["failed"] == "0"
        returns = [
            json.loads(p.read_text())["returns"][1]
            for p in (root / "out" / "runs" / row["configuration"]).glob("seed*/eval_test.json")
        ]
        assert float(row["test_return_1"]) == pytest.approx(np.mean(returns))
        assert float(row["test_return_1_ci95"]) == pytest.approx(
            12.706 * np.std(returns, ddof=1) / np.sqrt(2)
        )
        assert float(row["env_steps"]) > 0 and float(row["wall_s"]) > 0
    markdown = (root / "out" / "summary.md").read_text()
    assert "| 000_curvature=identity | identity | 2 |" in markdown
    assert "ood: return after 0..K steps" in markdown and markdown in result.stdout

    # --summary rewrites it from the run directories alone, without Ray.
    (root / "out" / "summary.md").unlink()
    again = run_mcrl("sweep", "s.yaml", "--out", "out", "--summary", cwd=root)
    assert again.returncode == 0 and (root / "out" / "summary.md").read_text() == markdown


def test_a_directory_holding_a_different_sweep_is_refused_untouched(two_by_two):
    root, _ = two_by_two
    before = (root / "out" / "sweep.json").read_text()
    other = write_sweep(root / "other.yaml", grid={"curvature": ["diagonal"]})
    for extra in ([], ["--resume"]):
        result = run_mcrl("sweep", str(other), "--out", "out", *extra, cwd=root)
        assert result.returncode == 2 and "holds a different sweep" in result.stderr
    same = run_mcrl("sweep", "s.yaml", "--out", "out", cwd=root)
    assert same.returncode == 2 and "pass --resume" in same.stderr
    assert (root / "out" / "sweep.json").read_text() == before


def test_an_interrupted_sweep_resumed_finishes_every_trial_exactly_once(tmp_path):
    sweep = write_sweep(
        tmp_path / "s.yaml",
        set=TINY | {"iterations": 6, "checkpoint_every": 1},
        grid={"curvature": ["identity", "kronecker"]},
        seeds=[0, 1],
        evaluate={"tasks": 2, "steps": 1},
    )
    process = start_mcrl("sweep", str(sweep), "--out", "out", cwd=tmp_path)
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob("out/runs/*/*/trial.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)  # Ctrl-C, once the first trial has ended
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0, stderr[-2000:]
    ended = {
        p.parent: p.parent.joinpath("metrics.csv").read_bytes()
        for p in tmp_path.glob("out/runs/*/*/trial.json")
        if status(p.parent)["status"] == "finished"
    }
    assert 1 <= len(ended) < 4, stderr[-2000:]
    assert "--resume" in stderr

    result = run_mcrl("sweep", str(sweep), "--out", "out", "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"({len(ended)} already ended)" in result.stderr
    for run_dir in tmp_path.glob("out/runs/*/seed*"):
        assert status(run_dir)["status"] == "finished"
        assert [int(r["iteration"]) for r in metrics(run_dir)] == list(range(6))
        if run_dir in ended:  # not run again
            assert run_dir.joinpath("metrics.csv").read_bytes() == ended[run_dir]
            assert status(run_dir)["attempts"] == 1


def test_a_failing_trial_is_retried_then_reported_failed_and_the_others_finish(tmp_path):
    # An inner step of 1e30 sends the adapted policy to inf: NaN parameters at iteration 0.
    sweep = write_sweep(tmp_path / "s.yaml", grid={"inner_lr": [0.1, 1e30]}, max_failures=2)
    result = run_mcrl("sweep", str(sweep), "--out", "out", cwd=tmp_path)
    assert result.returncode == 1
    good, bad = sorted((tmp_path / "out" / "runs").glob("*/seed0"))
    assert status(good)["status"] == "finished"
    assert status(bad) | {"node_id": None} == {
        "status": "failed",
        "error": status(bad)["error"],
        "attempts": 3,  # the first try and max_failures retries
        "node_id": None,
    }
    assert "became nan" in status(bad)["error"]
    assert "1 of 2 trials failed: 001_inner_lr=1e+30/seed0" in result.stderr
    assert "**1 failed**: adapted parameter" in (tmp_path / "out" / "summary.md").read_text()
    assert "Traceback" not in result.stderr


def test_asha_stops_a_deliberately_bad_trial_early(tmp_path):
    # Navigation2D pays the distance to the goal every step: 40 steps return far less than 5.
    sweep = write_sweep(
        tmp_path / "s.yaml",
        set=TINY | {"iterations": 8, "eval_every": 0},
        grid={"horizon": [5, 40]},
        metric="return_pre",
        scheduler="asha",
        max_concurrent=1,  # the good trial sets the bar first
    )
    result = run_mcrl("sweep", str(sweep), "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    good, bad = sorted((tmp_path / "out" / "runs").glob("*/seed0"))
    assert {k: status(good)[k] for k in ("status", "iterations", "attempts")} == {
        "status": "finished",
        "iterations": 8,
        "attempts": 1,
    }
    assert status(bad)["status"] == "stopped early"
    assert status(bad)["iterations"] == len(metrics(bad)) < 8
    assert status(bad)["env_steps"] == int(metrics(bad)[-1]["env_steps"])


CLUSTER_SCRIPT = textwrap.dedent(
    """
    import json, subprocess, sys
    from pathlib import Path
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    sweep, out = sys.argv[1], Path(sys.argv[2])
    command = ["mcrl", "sweep", sweep, "--out", str(out), "--ray-address", cluster.address]
    result = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True)
    cluster.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]
    nodes = [json.loads(p.read_text())["node_id"] for p in out.glob("runs/*/*/trial.json")]
    print(json.dumps(nodes))
    """
)


@pytest.mark.slow
def test_on_a_two_node_cluster_trials_run_on_both_nodes(tmp_path):
    """``mcrl sweep --ray-address`` on a two-node cluster (ray.cluster_utils.Cluster, one CPU a
    node): its two one-CPU trials run at once, so one on each node."""
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0, 1], set=TINY | {"iterations": 4})
    script = tmp_path / "cluster.py"
    script.write_text(CLUSTER_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(sweep), str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    nodes = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(nodes) == 2 and len(set(nodes)) == 2


def test_a_sweep_recorded_before_a_config_key_existed_still_resumes(tmp_path):
    from mcrl.sweeps.runner import SWEEP_FILE, check_sweep_dir, sweep_record

    spec = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0, 1]))
    record = sweep_record(spec, spec.trials())
    for trial in record["trials"]:
        del trial["config"]["multi_step_loss"]  # as an older mcrl wrote it: the default applies
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / SWEEP_FILE).write_text(json.dumps(record))
    assert check_sweep_dir(spec, tmp_path / "out", resume=True) == spec.trials()
    record["trials"][0]["config"]["inner_lr"] = 0.5  # a trial that really differs
    (tmp_path / "out" / SWEEP_FILE).write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="holds a different sweep"):
        check_sweep_dir(spec, tmp_path / "out", resume=True)


@pytest.mark.parametrize(("learn_inner_lr", "same_sweep"), [(False, True), (None, False)])
def test_a_recorded_trial_without_a_key_ran_with_its_value_from_before_the_key(
    tmp_path, learn_inner_lr, same_sweep
):
    """A trial recorded before ``learn_inner_lr`` existed ran without learned step sizes: it is
    the same trial as one that sets it false, not as one at today's default (true)."""
    from mcrl.sweeps.runner import SWEEP_FILE, check_sweep_dir, sweep_record

    keys = {} if learn_inner_lr is None else {"grid": {"learn_inner_lr": [learn_inner_lr]}}
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", **keys))
    record = sweep_record(spec, spec.trials())
    for trial in record["trials"]:
        trial["config"]["learn_inner_lr"] = False
    recorded_before = json.loads(json.dumps(record))
    for trial in recorded_before["trials"]:
        del trial["config"]["learn_inner_lr"]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / SWEEP_FILE).write_text(json.dumps(recorded_before))
    if same_sweep:
        assert check_sweep_dir(spec, tmp_path / "out", resume=True) == spec.trials()
    else:
        with pytest.raises(ConfigError, match="holds a different sweep"):
            check_sweep_dir(spec, tmp_path / "out", resume=True)
