from __future__ import annotations

import csv
import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mcrl_envs.navigation import Navigation2D

import mcrl
from mcrl.common.config import ConfigError, load_config
from mcrl.training.evaluation import group_records
from mcrl.training.trainer import Trainer, TrainingError, load_checkpoint
from tests.conftest import run_mcrl, start_mcrl

TINY = [
    "family=Navigation2D",
    "sampler.backend=local",
    "horizon=10",
    "meta_batch_size=3",
    "episodes_per_task=3",
    "policy.hidden_sizes=[8]",
    "outer_epochs=2",
    "eval_every=2",
    "eval_tasks=2",
    "log_every=1",
    "checkpoint_every=1",
]


def tiny_config(*extra: str, iterations: int = 2):
    return load_config(None, [*TINY, f"iterations={iterations}", *extra])


def read_metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def without_timings(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rows]


def test_same_seed_gives_identical_metrics(tmp_path):
    for name in ("a", "b"):
        mcrl.train(tiny_config("alignment_weight=0.1"), tmp_path / name)
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert len(a) == 2 and without_timings(a) == without_timings(b)
    mcrl.train(tiny_config("alignment_weight=0.1", "seed=1"), tmp_path / "c")
    assert without_timings(read_metrics(tmp_path / "c")) != without_timings(a)


@pytest.mark.parametrize("schedule", ["alternate", "joint"])
def test_resume_continues_exactly(tmp_path, schedule):
    straight = mcrl.train(tiny_config(f"schedule={schedule}", iterations=4), tmp_path / "straight")
    mcrl.train(tiny_config(f"schedule={schedule}", iterations=2), tmp_path / "split")
    resumed = mcrl.train(
        tiny_config(f"schedule={schedule}", iterations=4), tmp_path / "split", resume=True
    )
    for a, b in [
        (straight.learner.policy, resumed.learner.policy),
        (straight.learner.curvature, resumed.learner.curvature),
    ]:
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            torch.testing.assert_close(x, y, msg=name)
    assert without_timings(read_metrics(tmp_path / "straight")) == without_timings(
        read_metrics(tmp_path / "split")
    )


def test_resume_from_the_committed_small_state_alone(tmp_path):
    """What experiments/results/ keeps of a run (config, metrics, eval, latest checkpoint;
    no affinity dumps, events or numbered checkpoints) is enough to continue it."""
    straight = mcrl.train(tiny_config(iterations=3), tmp_path / "straight")
    run = tmp_path / "split"
    mcrl.train(tiny_config(iterations=2), run)
    shutil.rmtree(run / "affinity")
    for path in [*run.glob("events.out.*"), *run.glob("checkpoints/iteration_*.pt")]:
        path.unlink()
    resumed = mcrl.train(tiny_config(iterations=3), run, resume=True)
    for (name, x), (_, y) in zip(
        straight.learner.policy.state_dict().items(),
        resumed.learner.policy.state_dict().items(),
        strict=True,
    ):
        torch.testing.assert_close(x, y, msg=name)
    assert (run / "affinity" / "iteration_000002.npz").is_file()


def test_a_run_resumed_by_a_newer_mcrl_logging_more_columns_keeps_metrics_aligned(tmp_path):
    run = tmp_path / "run"
    mcrl.train(tiny_config(iterations=2), run)
    path = run / "metrics.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    older = [c for c in rows[0] if c not in ("curvature_min_eigenvalue", "kl_inner")]
    with path.open("w", newline="") as f:  # as an mcrl without these columns wrote it
        writer = csv.DictWriter(f, fieldnames=older, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    mcrl.train(tiny_config(iterations=3), run, resume=True)
    with path.open(newline="") as f:
        table = list(csv.reader(f))
    header, body = table[0], table[1:]
    assert header[: len(older)] == older
    assert {"curvature_min_eigenvalue", "kl_inner"} <= set(header)
    assert all(len(row) == len(header) for row in body)
    resumed = [dict(zip(header, row, strict=True)) for row in body]
    assert [r["iteration"] for r in resumed] == ["0", "1", "2"]
    assert resumed[0]["kl_inner"] == "" and float(resumed[2]["kl_inner"]) >= 0
    assert 0.5 < float(resumed[2]["curvature_min_eigenvalue"]) <= 1.0  # near I after 3 steps
    assert resumed[2]["loss_outer"] != "" and resumed[0]["loss_outer"] == rows[0]["loss_outer"]


@pytest.mark.parametrize(
    "settings",
    [
        ("first_order=true",),
        ("first_order=true", "alignment_weight=0.1"),
        ("alignment_weight=0.1", "alignment_estimator=split"),
        ("inner_steps=2", "curvature=diagonal"),
        ("inner_estimator=dice", "schedule=joint"),
        ("curvature=identity", "inner_estimator=vpg"),
        ("outer=trpo", "alignment_weight=0.1"),
        ("outer=trpo", "first_order=true", "curvature=diagonal"),
        ("emaml_weight=0.5",),
        ("outer=trpo", "emaml_weight=0.5", "first_order=true"),
    ],
)
def test_every_learner_setting_trains(tmp_path, settings):
    trainer = mcrl.train(tiny_config(*settings), tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    logged = ("loss_outer", "kl_inner", "return_post")
    if any(s.startswith("emaml_weight") for s in settings):
        logged += ("loss_emaml",)
    assert len(rows) == 2 and all(np.isfinite(float(rows[-1][k])) for k in logged)
    assert np.isfinite(trainer.latest_eval["returns"]).all()


def test_run_directory_has_every_file(tmp_path):
    run = tmp_path / "run"
    mcrl.train(tiny_config(), run)
    assert (run / "config.yaml").is_file() and load_config(run / "config.yaml").horizon == 10
    rows = read_metrics(run)
    expected = {
        "iteration",
        "env_steps",
        "return_pre",
        "return_post",
        "loss_inner",
        "loss_outer",
        "kl_inner",
        "curvature_rms_from_identity",
        "time_sample_pre",
        "time_adapt",
        "time_sample_post",
        "time_meta_step",
        "eval_return_0",
        "eval_return_1",
        "eval_return_2",  # after 0..inner_steps steps (2 by default)
    }
    assert expected <= set(rows[0])
    state = load_checkpoint(run)
    assert state["iteration"] == 1 and (run / "checkpoints" / "iteration_000000.pt").is_file()
    evaluation = json.loads((run / "eval.json").read_text())
    assert (
        len(evaluation["returns"]) == len(evaluation["ci95"]) == 3 and evaluation["split"] == "test"
    )
    affinity = np.load(run / "affinity" / "iteration_000001.npz")
    assert affinity["affinity"].shape == (3, 3) and len(affinity["task_params"]) == 3


def test_existing_run_is_not_overwritten(tmp_path):
    mcrl.train(tiny_config(), tmp_path / "run")
    before = (tmp_path / "run" / "checkpoints" / "latest.pt").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(tiny_config(), tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "latest.pt").read_bytes() == before


def test_resume_with_another_policy_shape_is_refused_and_changes_nothing(tmp_path):
    run = tmp_path / "run"
    mcrl.train(tiny_config(), run)
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="policy parameter 'layers.0.weight'"):
        Trainer(tiny_config("policy.hidden_sizes=[16]", iterations=4), run, resume=True)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(iterations=4), run, progress=False)
    original = trainer.learner.meta_step

    def poisoned(pre, post):
        if trainer_iteration[0] == 2:
            post = type(post)(**{**post.__dict__, "advantages": post.advantages * float("nan")})
        return original(pre, post)

    trainer_iteration = [0]
    original_iteration = trainer.iteration

    def counting(it):
        trainer_iteration[0] = it
        return original_iteration(it)

    monkeypatch.setattr(trainer.learner, "meta_step", poisoned)
    monkeypatch.setattr(trainer, "iteration", counting)
    with pytest.raises(TrainingError, match=r"'loss_outer' became nan at iteration 2.*latest.pt"):
        trainer.train()
    assert load_checkpoint(run)["iteration"] == 1


@pytest.mark.parametrize("interrupted_at", [3, 0])
def test_ctrl_c_saves_the_last_completed_iteration(tmp_path, monkeypatch, interrupted_at):
    run = tmp_path / "run"
    config = tiny_config("checkpoint_every=100", iterations=5)
    trainer = Trainer(config, run, progress=False)
    original = trainer.sampler.sample

    def interrupted(*args, **kwargs):
        if kwargs["iteration"] == interrupted_at:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer.sampler, "sample", interrupted)
    if interrupted_at == 0:
        with pytest.raises(KeyboardInterrupt, match="before the first iteration; nothing saved"):
            trainer.train()
        # Nothing to resume: the same command starts the run again.
        assert not (run / "checkpoints" / "latest.pt").exists()
        assert Trainer(config, run, progress=False).start_iteration == 0
        return
    with pytest.raises(KeyboardInterrupt, match="iteration 2 saved"):
        trainer.train()
    assert load_checkpoint(run)["iteration"] == 2
    resumed = Trainer(config, run, resume=True, progress=False)
    assert resumed.start_iteration == 3


def test_ctrl_c_while_a_row_is_written_saves_the_iteration_before_and_resume_redoes_it(
    tmp_path, monkeypatch
):
    """A signal can land between iterations too, e.g. while metrics.csv gets its row."""
    run = tmp_path / "run"
    config = tiny_config("checkpoint_every=100", iterations=5)
    trainer = Trainer(config, run, progress=False)
    original = trainer._write_metrics

    def interrupted(row):
        original(row)
        if row["iteration"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_write_metrics", interrupted)
    with pytest.raises(KeyboardInterrupt, match="iteration 1 saved"):
        trainer.train()
    assert load_checkpoint(run)["iteration"] == 1
    resumed = Trainer(config, run, resume=True, progress=False)
    assert resumed.start_iteration == 2
    assert [int(row["iteration"]) for row in read_metrics(run)] == [0, 1]


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_sigterm_stops_mcrl_train_like_ctrl_c_and_resume_continues(tmp_path, backend):
    """`kill` or a scheduler's preemption saves the last finished iteration, not the last
    periodic checkpoint (none is due here), and --resume continues right after it. With Ray
    too, whose ray.init installs a SIGTERM handler of its own in the driver."""
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"family: Navigation2D\nhorizon: 10\nsampler: {{backend: {backend}, workers: 1}}\n"
        "meta_batch_size: 2\nepisodes_per_task: 2\neval_every: 1000\ncheckpoint_every: 1000\n"
    )
    sets = ["--set", "policy.hidden_sizes=[8]"]
    process = start_mcrl(
        "train",
        str(config),
        *sets,
        "--set",
        "iterations=1000",
        "--out",
        "run",
        "--no-progress",
        cwd=tmp_path,
    )
    run = tmp_path / "run"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (
        not (run / "metrics.csv").is_file() or len(read_metrics(run)) < 2
    ):
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "saved to" in stderr and "Traceback" not in stderr
    saved = load_checkpoint(run)["iteration"]
    assert saved >= 1 and int(read_metrics(run)[-1]["iteration"]) == saved

    result = run_mcrl(
        "train",
        str(config),
        *sets,
        "--set",
        f"iterations={saved + 2}",
        "--out",
        "run",
        "--resume",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert [int(r["iteration"]) for r in read_metrics(run)] == list(range(saved + 2))


def test_cli_train_smoke_run_writes_the_run_directory(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "family: Navigation2D\nhorizon: 10\niterations: 2\nsampler: {backend: local}\nmeta_batch_size: 2\nepisodes_per_task: 2\neval_every: 1\neval_tasks: 2\n"
    )
    result = run_mcrl(
        "train", str(config), "--set", "policy.hidden_sizes=[8]", "--out", "out", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    for name in ("config.yaml", "metrics.csv", "eval.json", "checkpoints/latest.pt"):
        assert (tmp_path / "out" / name).is_file(), name
    assert "held-out return" in result.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("inner_lrr=0.1", "unknown config key 'inner_lrr'"),
        ("meta_lr=-1", "'meta_lr' must be > 0"),
        ("meta_lr=fast", "'meta_lr' must be a finite number, got 'fast'"),
        ("meta_batch_size=0", "'meta_batch_size' must be > 0"),
        ("first_order=maybe", "'first_order' must be true or false"),
        ("curvature=full", "'curvature' must be one of 'identity', 'diagonal', 'kronecker'"),
        ("learner.devices=cpu", "unknown config key 'learner.devices'"),
        ("family=Nope", "unknown family 'Nope'"),
    ],
)
def test_cli_bad_config_is_one_line_exit_2_and_writes_nothing(tmp_path, override, message):
    config = tmp_path / "c.yaml"
    config.write_text("family: Navigation2D\niterations: 1\n")
    result = run_mcrl("train", str(config), "--set", override, "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad)


def test_evaluate_writes_eval_json_with_k_plus_one_entries(tmp_path, capsys):
    from mcrl.cli import main

    run = tmp_path / "run"
    mcrl.train(tiny_config(), run)
    (run / "eval.json").unlink()
    assert (
        main(["evaluate", str(run), "--split", "ood", "--tasks", "3", "--steps", "2", "--json"])
        == 0
    )
    captured = capsys.readouterr()
    printed = json.loads(captured.out)  # --json: stdout holds the record alone
    written = json.loads((run / "eval.json").read_text())
    assert printed == written
    # Progress, one line per phase as it finishes, on stderr, with the record's means.
    lines = [line for line in captured.err.splitlines() if "mean return" in line]
    assert [line.split(":")[0].strip() for line in lines] == [
        "before adaptation",
        "after step 1/2",
        "after step 2/2",
    ]
    for line, mean in zip(lines, written["returns"], strict=True):
        assert f"mean return {mean:.2f} over 3 tasks" in line
    assert {"returns", "ci95", "split", "tasks", "steps", "env_steps"} <= set(written)
    assert (
        len(written["returns"]) == len(written["ci95"]) == 3
        and written["split"] == "ood"
        and written["tasks"] == 3
    )
    assert np.isfinite(written["returns"]).all() and written["env_steps"] > 0
    # Every task's return is kept (for comparisons task by task), and the means are theirs.
    assert np.allclose(np.mean(written["task_returns"], axis=1), written["returns"])
    assert np.shape(written["task_returns"]) == (3, 3) and "task_seed" in written


def test_evaluate_out_writes_elsewhere_and_keeps_the_runs_eval_json(tmp_path, capsys):
    from mcrl.cli import main

    run = tmp_path / "run"
    mcrl.train(tiny_config(), run)
    before = (run / "eval.json").read_bytes()
    out = tmp_path / "diagnostics" / "eval_ood.json"
    args = ["evaluate", str(run), "--split", "ood", "--tasks", "2", "--steps", "1"]
    assert main([*args, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["split"] == "ood"
    assert (run / "eval.json").read_bytes() == before
    capsys.readouterr()
    # A directory is refused before any evaluation, in one line.
    assert main([*args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "Traceback" not in err and "mean return" not in err
    assert (run / "eval.json").read_bytes() == before


class NavigationByGoal(Navigation2D):
    """Tasks grouped by their goal, as Meta-World's are by their type."""

    name = "NavigationByGoal"
    group_by = "goal"


def test_evaluate_reports_each_kind_of_task_where_the_family_groups_them(tmp_path, capsys):
    from mcrl.cli import main

    mcrl.register_family(NavigationByGoal.name, NavigationByGoal, overwrite=True)
    run = tmp_path / "run"
    mcrl.train(tiny_config(f"family={NavigationByGoal.name}"), run)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--tasks", "3", "--steps", "1"]) == 0
    record = json.loads((run / "eval.json").read_text())
    groups = record["groups"]
    assert record["group_by"] == "goal" and len(groups) == 3  # three goals, a task each
    assert all(g["tasks"] == 1 and len(g["returns"]) == 2 for g in groups.values())
    for means in (record["returns"], record["mean_over_groups"]["returns"]):
        np.testing.assert_allclose(
            np.mean([g["returns"] for g in groups.values()], axis=0), means, rtol=1e-6
        )
    assert "returns per goal" in capsys.readouterr().out


def test_group_records_average_each_kind_over_its_tasks_and_the_kinds_alike():
    returns = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 9.0]])  # [steps + 1, tasks]
    successes = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    record = group_records(["push", "reach", "push"], returns, successes)
    groups = record["groups"]
    assert list(groups) == ["push", "reach"]
    assert groups["push"] == {"tasks": 2, "returns": [2.0, 6.5], "success": [0.0, 0.5]}
    assert groups["reach"] == {"tasks": 1, "returns": [2.0, 5.0], "success": [1.0, 1.0]}
    # Each kind counts once, not each task: (0.0 + 1.0) / 2, not 1 / 3.
    assert record["mean_over_groups"] == {"returns": [2.0, 5.75], "success": [0.5, 0.75]}
    assert "success" not in group_records(["a"], returns[:, :1])["groups"]["a"]


@pytest.mark.parametrize(
    ("make_bad", "message"),
    [
        (lambda run: None, "does not exist"),
        (
            lambda run: (
                (run / "checkpoints").mkdir(parents=True)
                or (run / "checkpoints" / "latest.pt").write_bytes(b"garbage")
            ),
            "unreadable",
        ),
    ],
)
def test_evaluate_refuses_missing_or_corrupt_checkpoints(tmp_path, capsys, make_bad, message):
    from mcrl.cli import main

    run = tmp_path / "run"
    make_bad(run)
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def tensorboard_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_tensorboard_events_hold_the_metrics_and_resume_replaces_later_steps(tmp_path):
    from mcrl.training.trainer import tensorboard_tag

    run = tmp_path / "run"
    mcrl.train(tiny_config(iterations=3), run)
    scalars = tensorboard_scalars(run)
    rows = read_metrics(run)
    assert set(scalars) == {tensorboard_tag(k) for k in rows[0] if k != "iteration"}
    assert [step for step, _ in scalars["loss/outer"]] == [0, 1, 2]
    assert [v for _, v in scalars["return/pre"]] == pytest.approx(
        [float(r["return_pre"]) for r in rows]
    )
    assert [step for step, _ in scalars["eval/return_1"]] == [1, 2]  # eval_every=2 and the end

    # A crash after iteration 1's checkpoint: the resumed run's events replace iteration 2's.
    state = load_checkpoint(run / "checkpoints" / "iteration_000001.pt")
    torch.save(state, run / "checkpoints" / "latest.pt")
    mcrl.train(tiny_config(iterations=4), run, resume=True)
    steps = [step for step, _ in tensorboard_scalars(run)["loss/outer"]]
    assert steps == [0, 1, 2, 3]


def test_exponent_notation_without_a_dot_is_a_number():
    """YAML 1.1 reads 1e-4 as a string; config values of float keys accept it anyway."""
    config = load_config(None, ["alignment_weight=1e-4", "meta_lr=3E-4"])
    assert config.alignment_weight == 1e-4 and config.meta_lr == 3e-4
