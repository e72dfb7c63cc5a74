from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcrl.cli import main


def test_families_lists_every_family_with_its_splits(capsys):
    assert main(["families"]) == 0
    out = capsys.readouterr().out
    for text in ("Navigation2D", "PendulumDynamics", "train", "test", "ood", "goal", "mass"):
        assert text in out


@pytest.mark.parametrize("serial", [False, True])
def test_bench_sampler_json_has_the_documented_keys(capsys, serial):
    args = [
        "bench",
        "sampler",
        "--family",
        "PendulumDynamics",
        "--tasks",
        "2",
        "--episodes",
        "2",
        "--repeats",
        "1",
        "--json",
    ]
    assert main(args + (["--serial"] if serial else [])) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"sampler_steps_per_s", "raw_steps_per_s", "ratio", "command"} <= set(result)
    assert result["sampler_steps_per_s"] > 0 and result["raw_steps_per_s"] > 0
    # The ratio is printed to 3 decimals: on a loaded machine it can be small enough (0.034)
    # for that rounding to exceed 1%.
    assert result["ratio"] == pytest.approx(
        result["sampler_steps_per_s"] / result["raw_steps_per_s"], rel=0.01, abs=5e-4
    )
    assert result["vector_env"] == ("serial" if serial else "native")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["bench", "sampler", "--family", "Nope"],
            "unknown family 'Nope'; known families: AntDir, AntGoal",
        ),
        (
            ["bench", "sampler", "--family", "Navigation2D", "--tasks", "0"],
            "tasks must be a positive integer",
        ),
        (["train", "does-not-exist.yaml"], "config file 'does-not-exist.yaml' does not exist"),
        (
            ["bench", "sampler", "--family", "Navigation2D", "--repeats", "0"],
            "repeats must be a positive integer, got 0",
        ),
        (
            ["bench", "sampler", "--family", "Navigation2D", "--seed", "-1"],
            "seed must be a non-negative integer, got -1",
        ),
        (
            ["train", "experiments/navigation2d.yaml", "--out", "no-such-run", "--resume"],
            "no run to resume in 'no-such-run'",
        ),
        (
            ["train", "experiments/navigation2d.yaml", "--ray-address", "nope"],
            "config key 'sampler.address' must be HOST:PORT, auto or ray://HOST:PORT",
        ),
    ],
)
def test_bad_cli_input_is_one_line_and_exit_2(capsys, monkeypatch, args, message):
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bench_learner_reports_ms_per_meta_step(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "family: Navigation2D\nhorizon: 10\nmeta_batch_size: 2\nepisodes_per_task: 2\npolicy: {hidden_sizes: [8]}\n"
    )
    assert (
        main(
            [
                "bench",
                "learner",
                str(config),
                "--set",
                "learner.task_batching=false",
                "--repeats",
                "1",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert (
        result["ms_per_meta_step"] > 0 and result["task_batching"] is False and result["tasks"] == 2
    )


def test_bench_learner_times_the_meta_step_of_every_inner_step(capsys, tmp_path, monkeypatch):
    from mcrl.meta.learner import MetaLearner

    seen = []
    real_meta_step = MetaLearner.meta_step

    def spy(self, pre, post):
        seen.append(len(pre))
        return real_meta_step(self, pre, post)

    monkeypatch.setattr(MetaLearner, "meta_step", spy)
    config = tmp_path / "c.yaml"
    config.write_text(
        "family: Navigation2D\nhorizon: 5\nmeta_batch_size: 2\nepisodes_per_task: 2\n"
        "inner_steps: 3\nouter_epochs: 1\npolicy: {hidden_sizes: [8]}\n"
    )
    assert main(["bench", "learner", str(config), "--repeats", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inner_steps"] == 3
    assert seen == [3, 3]  # a warm-up and one timed meta-step, each on 3 pre-adaptation phases


def test_bench_e2e_reports_seconds_per_iteration_and_peak_memory(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "family: Navigation2D\nhorizon: 10\nmeta_batch_size: 2\nepisodes_per_task: 2\n"
        "policy: {hidden_sizes: [8]}\nsampler: {backend: local}\nouter: trpo\nouter_epochs: 1\n"
    )
    assert main(["bench", "e2e", str(config), "--iterations", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["seconds_per_iteration"] > 0 and result["iterations"] == 2
    assert result["seconds_min"] <= result["seconds_per_iteration"] <= result["seconds_max"]
    assert result["outer"] == "trpo" and result["backend"] == "local"
    # before and after each of the 2 default inner steps: 3 phases of 2 tasks x 2 episodes x 10
    assert 0 < result["env_steps_per_iteration"] <= 3 * 2 * 2 * 10
    assert 100 < result["peak_rss_mb"] < 10_000
    assert {"time_sample_pre", "time_meta_step", "command"} <= set(result)


def test_bench_e2e_with_an_unknown_family_is_one_line_and_exit_2(capsys):
    from pathlib import Path

    config = Path(__file__).parents[1] / "experiments" / "navigation2d.yaml"
    assert main(["bench", "e2e", str(config), "--set", "family=Nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown family 'Nope'" in err and len(err.strip().splitlines()) == 1


def test_bench_learner_counts_the_ops_of_a_meta_step(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "family: Navigation2D\nhorizon: 5\nmeta_batch_size: 2\nepisodes_per_task: 4\n"
        "inner_steps: 1\nouter_epochs: 1\npolicy: {hidden_sizes: [16]}\n"
    )
    args = ["bench", "learner", str(config), "--repeats", "1", "--count-ops", "64", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    # The 16-wide hidden layer's activations over 2 tasks x 4 episodes x 5 steps have >= 64
    # elements, so its products are counted; the table keeps the 20 longest, largest first.
    rows = result["ops"]
    assert 0 < len(rows) <= 20
    assert sum(row["count"] for row in rows) <= result["ops_counted"]
    assert len(rows) == 20 or sum(row["count"] for row in rows) == result["ops_counted"]
    assert any(row["op"].startswith(("mm(", "bmm(", "addmm(", "baddbmm(")) for row in rows)
    times = [row["ms"] for row in rows]
    assert times == sorted(times, reverse=True)
    assert main(["bench", "learner", str(config), "--count-ops", "0"]) == 2
