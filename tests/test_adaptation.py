"""Using a trained run: adapt to one env, plot, export to stable-baselines3; and bad input."""

from __future__ import annotations

import json

import gymnasium as gym
import matplotlib.image
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

import mcrl
from mcrl.cli import main
from tests.conftest import tiny_config


def trained_run(path, family, *extra):
    mcrl.train(tiny_config(f"family={family}", "outer_epochs=1", *extra), path)
    return path


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory):
    return trained_run(tmp_path_factory.mktemp("runs") / "pendulum", "PendulumDynamics")


@pytest.fixture(scope="module")
def scaled_pendulum_run(tmp_path_factory):
    """Pendulum's actions span [-2, 2]: the policy works in units of half that range."""
    return trained_run(
        tmp_path_factory.mktemp("runs") / "scaled",
        "PendulumDynamics",
        "policy.action_scaling=range",
    )


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    return trained_run(
        tmp_path_factory.mktemp("runs") / "cartpole", "CartPoleDynamics", "curvature=diagonal"
    )


def test_adapt_to_a_family_task_an_out_of_range_task_and_a_plain_env_id(pendulum_run):
    meta = mcrl.load(pendulum_run)
    inside = meta.adapt({"length": 1.0, "mass": 1.0, "gravity": 10.0}, steps=2)
    outside = meta.adapt({"length": 5.0, "mass": 0.1, "gravity": 10.0}, steps=1)
    plain = meta.adapt("Pendulum-v1", env_kwargs={"g": 5.0}, steps=2, episodes=3)
    for adapted, steps in ((inside, 2), (outside, 1), (plain, 2)):
        assert len(adapted.returns) == steps + 1 and np.isfinite(adapted.returns).all()
        theta = meta.initial().params
        assert any(not np.allclose(adapted.params[k], theta[k]) for k in theta)
    assert outside.info["target"].startswith("PendulumDynamics task")
    assert plain.info["target"] == "env 'Pendulum-v1'" and plain.info["env_steps"] == 3 * 3 * 10
    action = plain.act(np.zeros(3, dtype=np.float32))
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0


def test_adapting_in_an_env_instance_runs_in_it_and_leaves_it_open(pendulum_run):
    env = gym.make("Pendulum-v1")
    adapted = mcrl.load(pendulum_run).adapt(env, steps=1, episodes=2)
    assert len(adapted.returns) == 2
    obs, _ = env.reset(seed=0)  # still usable: closing the sampler did not close it
    env.step(adapted.act(obs))


def test_adaptation_is_deterministic_for_a_seed(pendulum_run):
    meta = mcrl.load(pendulum_run)
    first = meta.adapt("Pendulum-v1", steps=1, seed=3)
    second = meta.adapt("Pendulum-v1", steps=1, seed=3)
    assert first.returns == second.returns
    for k in first.params:
        np.testing.assert_array_equal(first.params[k], second.params[k])


def test_cli_adapt_prints_each_step_and_saves_a_loadable_policy(pendulum_run, tmp_path, capsys):
    out = tmp_path / "adapted"
    task = json.dumps({"length": 3.0, "mass": 0.2, "gravity": 12.0})
    assert (
        main(["adapt", str(pendulum_run), "--task", task, "--steps", "2", "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "before adaptation" in printed and "after step 2" in printed
    adapted = mcrl.AdaptedPolicy.load(out)
    summary = json.loads((out / "adaptation.json").read_text())
    assert summary["returns"] == adapted.returns and len(adapted.returns) == 3
    assert summary["task_params"] == {"length": 3.0, "mass": 0.2, "gravity": 12.0}
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    assert adapted.act(obs).shape == (4, 1)


def _truncate(run):
    path = run / "checkpoints" / "latest.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _change_policy_shape(run):
    path = run / "checkpoints" / "latest.pt"
    state = torch.load(path, weights_only=True)
    state["config"]["policy"]["hidden_sizes"] = [16, 16]
    torch.save(state, path)


@pytest.mark.parametrize(
    ("damage", "args", "message"),
    [
        (None, ["--env-id", "CartPole-v1"], "env 'CartPole-v1' has 4-dimensional observations"),
        (None, ["--env-id", "NoSuchEnv-v0"], "cannot make env 'NoSuchEnv-v0'"),
        (None, ["--task", '{"lenght": 2.0}'], "unknown task parameter(s) ['lenght']"),
        (None, ["--task", "{length: 2}"], "--task is not valid JSON"),
        (None, ["--env-id", "Pendulum-v1", "--seed", "-1"], "seed must be a non-negative integer"),
        (None, ["--env-id", "Pendulum-v1", "--episodes", "0"], "episodes must be a positive"),
        (None, ["--env-id", "Pendulum-v1", "--horizon", "0"], "horizon must be a positive"),
        (None, ["--task", '{"length": 2.0}', "--env-id", "Pendulum-v1"], "give either --task"),
        (_truncate, ["--env-id", "Pendulum-v1"], "is unreadable (truncated"),
        (_change_policy_shape, ["--env-id", "Pendulum-v1"], "does not match the policy"),
    ],
)
def test_adapt_bad_input_is_one_line_and_exit_2(
    pendulum_run, tmp_path, capsys, damage, args, message
):
    run = pendulum_run
    if damage is not None:  # damage a copy: the module's run stays intact
        run = tmp_path / "copy"
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "latest.pt").write_bytes(
            (pendulum_run / "checkpoints" / "latest.pt").read_bytes()
        )
        damage(run)
    assert main(["adapt", str(run), *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "adapted.pt").exists()


def test_adapt_never_overwrites_an_adapted_policy(pendulum_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["adapt", str(pendulum_run), "--env-id", "Pendulum-v1", "--out", str(out)]) == 0
    # Without --steps: the steps the run was trained for (0..inner_steps returns).
    assert (
        len(mcrl.AdaptedPolicy.load(out).returns) == mcrl.load(pendulum_run).config.inner_steps + 1
    )
    before = (out / "adapted.pt").read_bytes()
    assert main(["adapt", str(pendulum_run), "--env-id", "Pendulum-v1", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "adapted.pt").read_bytes() == before


def _assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200 and image.std() > 0


@pytest.mark.parametrize("curvature", ["kronecker", "diagonal"])
def test_plot_writes_every_png_headless(tmp_path, capsys, curvature, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    run = trained_run(tmp_path / "run", "Navigation2D", f"curvature={curvature}")
    assert main(["plot", str(run)]) == 0
    for name in ("learning_curve", "adaptation", "affinity", "curvature"):
        _assert_png(run / "plots" / f"{name}.png")


def test_plot_says_what_it_skipped(tmp_path, capsys):
    run = trained_run(tmp_path / "run", "Navigation2D", "curvature=identity", "eval_every=0")
    assert main(["plot", str(run), "--out", str(tmp_path / "pngs")]) == 0
    out = capsys.readouterr().out
    assert "skipped adaptation.png" in out and "skipped curvature.png" in out
    _assert_png(tmp_path / "pngs" / "learning_curve.png")
    assert main(["plot", str(tmp_path / "not-a-run")]) == 2


@pytest.mark.parametrize("run_fixture", ["pendulum_run", "scaled_pendulum_run", "cartpole_run"])
def test_exported_ppo_acts_like_mcrl_and_trains(run_fixture, request, tmp_path):
    run = request.getfixturevalue(run_fixture)
    meta = mcrl.load(run)
    env_id = "CartPole-v1" if run_fixture == "cartpole_run" else "Pendulum-v1"
    adapted_dir = tmp_path / "adapted"
    meta.adapt(env_id, steps=1).save(adapted_dir)
    for source, args in (
        (meta.initial(), []),
        (mcrl.AdaptedPolicy.load(adapted_dir), ["--adapted", str(adapted_dir)]),
    ):
        out = tmp_path / f"model{len(args)}.zip"
        assert main(["export-sb3", str(run), *args, "--out", str(out)]) == 0
        model = PPO.load(out, env=gym.make(env_id), n_steps=32, batch_size=16)
        # Small observations: actions inside the range, where clipping cannot hide a mismatch.
        obs = np.random.default_rng(1).normal(size=(16, meta.spaces["obs_dim"])).astype(np.float32)
        np.testing.assert_allclose(
            model.predict(obs, deterministic=True)[0], source.act(obs), rtol=1e-5, atol=1e-6
        )
        model.learn(total_timesteps=32)


def test_export_refuses_an_adapted_policy_of_another_shape(
    pendulum_run, cartpole_run, tmp_path, capsys
):
    adapted_dir = tmp_path / "adapted"
    mcrl.load(cartpole_run).adapt("CartPole-v1", steps=0).save(adapted_dir)
    _change = torch.load(adapted_dir / "adapted.pt", weights_only=True)
    _change["hidden_sizes"] = [4]
    torch.save(_change, adapted_dir / "adapted.pt")
    args = [
        "export-sb3",
        str(pendulum_run),
        "--adapted",
        str(adapted_dir),
        "--out",
        str(tmp_path / "m"),
    ]
    assert main(args) == 2
    assert "hidden sizes (4,)" in capsys.readouterr().err


def test_export_refuses_a_corrupted_adapted_policy_in_one_line(pendulum_run, tmp_path, capsys):
    (tmp_path / "adapted").mkdir()
    (tmp_path / "adapted" / "adapted.pt").write_bytes(b"not a torch file")
    args = ["export-sb3", str(pendulum_run), "--adapted", str(tmp_path / "adapted")]
    assert main([*args, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "adapted policy" in err and "is unreadable (truncated" in err
    assert len(err.strip().splitlines()) == 1


def test_export_never_overwrites_a_model(pendulum_run, tmp_path, capsys):
    out = tmp_path / "model.zip"
    out.write_bytes(b"someone's model")
    assert main(["export-sb3", str(pendulum_run), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"someone's model"


def test_affinity_plot_orders_and_labels_named_task_parameters(tmp_path):
    # Meta-World's tasks carry their type's name beside numeric positions.
    from mcrl.cli.plots import plot_affinity, task_order

    params = [
        {"task_name": "reach-v3", "goal": [0.2, 0.8]},
        {"task_name": "push-v3", "goal": [0.1, 0.9]},
        {"task_name": "reach-v3", "goal": [-0.1, 0.7]},
        {"task_name": "push-v3", "goal": [0.1, -10.0]},
    ]
    assert task_order(params).tolist() == [3, 1, 2, 0]
    npz = tmp_path / "iteration_000000.npz"
    np.savez(
        npz,
        affinity=np.arange(16, dtype=float).reshape(4, 4),
        task_params=np.array([json.dumps(p) for p in params]),
    )
    _assert_png(plot_affinity(npz, tmp_path / "affinity.png"))
