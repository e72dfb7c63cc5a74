"""The shipped families' specifics, and the API for declaring your own."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

import mcrl
from mcrl.cli.main import main as cli_main
from mcrl.tasks.gym_family import EnvParam, GymFamily, declare_family
from tests.conftest import CORE_FAMILIES, make_policy_for, tiny_config

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


@pytest.mark.parametrize("name", ["HalfCheetahParams", "HopperParams", "Walker2dParams"])
def test_physics_are_written_from_the_defaults_never_compounded(name):
    family = mcrl.make_family(name)
    a, b = family.sample_tasks(2, seed=0)
    env = family.make_env(a)
    model = env.unwrapped.model
    defaults = env.unwrapped._mcrl_defaults
    for task in (b, a, b, a):
        family.set_task(env, task)
    for key, field in [
        ("body_mass", model.body_mass),
        ("dof_damping", model.dof_damping),
        ("geom_friction", model.geom_friction),
    ]:
        expected = defaults[key] * np.reshape(a.params[key], defaults[key].shape)
        np.testing.assert_allclose(field, expected, rtol=1e-12)
    # mj_setConst ran: the subtree mass of the root follows the new masses.
    assert model.body_subtreemass[0] == pytest.approx(model.body_mass.sum())


def test_gravity_scale_is_optional_and_reaches_the_model():
    family = mcrl.make_family("HalfCheetahParams", gravity_scale=(0.5, 1.5))
    task = family.sample_tasks(1, seed=0)[0]
    env = family.make_env(task)
    assert env.unwrapped.model.opt.gravity[2] == pytest.approx(-9.81 * task.params["gravity_scale"])


def test_cartpole_keeps_derived_quantities_consistent():
    family = mcrl.make_family("CartPoleDynamics")
    env = family.make_env(family.sample_tasks(1, seed=0)[0])
    cp = env.unwrapped
    assert cp.total_mass == pytest.approx(cp.masspole + cp.masscart)
    assert cp.polemass_length == pytest.approx(cp.masspole * cp.length)


def test_goal_families_ood_lies_beyond_training():
    angles = [
        t.params["angle"] for t in mcrl.make_family("AntDir").sample_tasks(100, split="ood", seed=0)
    ]
    assert all(abs(a) > math.pi / 2 for a in angles)
    radii = [
        t.params["goal_radius"]
        for t in mcrl.make_family("AntGoal").sample_tasks(100, split="ood", seed=0)
    ]
    assert all(r > 3.0 for r in radii)
    velocities = [
        t.params["velocity"]
        for t in mcrl.make_family("HalfCheetahVel", velocity_range=(0.0, 3.0)).sample_tasks(
            50, split="ood"
        )
    ]
    assert all(v < 0 or v > 3 for v in velocities)


def test_half_cheetah_vel_rewards_tracking_the_target():
    family = mcrl.make_family("HalfCheetahVel")
    env = family.make_env(family.task({"velocity": 1.0}))
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(6, dtype=np.float32))
    assert reward == pytest.approx(-abs(info["x_velocity"] - 1.0) + info["reward_ctrl"])


# -- your own family ------------------------------------------------------------------------------
def test_a_declared_family_runs_end_to_end_through_sampling():
    declare_family(
        "MountainCarPowerTest",
        "MountainCarContinuous-v0",
        {"power": EnvParam(0.001, 0.002)},
        horizon=50,
    )
    family = mcrl.make_family("MountainCarPowerTest")
    tasks = family.sample_tasks(3, seed=0) + family.sample_tasks(2, split="ood", seed=0)
    assert all(family.split_of(t.params) == t.split for t in tasks)
    env = family.make_env(tasks[0])
    assert env.unwrapped.power == pytest.approx(tasks[0].params["power"])
    policy = make_policy_for(family)
    batches = mcrl.LocalSampler(family, policy).sample(
        tasks, {k: v.detach().numpy() for k, v in policy.params().items()}, 2, seed=0, iteration=0
    )
    assert [b.task for b in batches] == tasks and all(
        b.observations.shape == (50, 2, 2) for b in batches
    )


def test_setters_and_model_fields_can_be_declared():
    seen = []
    family = GymFamily(
        env_id="Hopper-v5",
        params={
            "torso_mass": EnvParam(0.5, 2.0, target="model.body_mass", scale=True, log=True),
            "anything": EnvParam(0.0, 1.0, setter=lambda env, value: seen.append(value)),
        },
    )
    task = family.sample_tasks(1, seed=0)[0]
    env = family.make_env(task)
    np.testing.assert_allclose(
        env.unwrapped.model.body_mass,
        env.unwrapped._mcrl_defaults["torso_mass"] * task.params["torso_mass"],
    )
    assert seen == [task.params["anything"]]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"horsepower": EnvParam(0.001, 0.002)},
            "'horsepower' targets 'horsepower', which is not an attribute",
        ),
        ({"power": EnvParam(0.002, 0.001)}, "low < high"),
    ],
)
def test_bad_declarations_fail_when_declared(params, message):
    with pytest.raises(ValueError, match=message):
        declare_family("BadMountainCar", "MountainCarContinuous-v0", params, horizon=50)


@pytest.mark.parametrize(
    ("field", "bound"),
    [
        ("body_mass", "> 0"),
        ("body_inertia", "> 0"),
        ("dof_damping", ">= 0"),
        ("geom_friction", ">= 0"),
        ("dof_armature", ">= 0"),
    ],
)
def test_a_physical_quantity_that_could_leave_its_domain_is_refused(field, bound):
    with pytest.raises(
        ValueError, match=f"'m' \\(model.{field}\\): its values must be finite and {bound}"
    ):
        GymFamily(
            env_id="Hopper-v5",
            params={"m": EnvParam(-0.5, 2.0, target=f"model.{field}", scale=True)},
        )
    # A linear ood range that reaches below zero (0.2 - 0.5 * 1.8 < 0): refused ...
    with pytest.raises(
        ValueError,
        match=f"ood split of 'm' reaches -0.7, but its values must be finite and {bound}",
    ):
        GymFamily(
            env_id="Hopper-v5",
            params={"m": EnvParam(0.2, 2.0, target=f"model.{field}", scale=True)},
        )
    # ... unless it is multiplicative (log) or only leaves the range above.
    for ok in (
        EnvParam(0.2, 2.0, target=f"model.{field}", scale=True, log=True),
        EnvParam(0.2, 2.0, target=f"model.{field}", scale=True, ood="above"),
    ):
        family = GymFamily(env_id="Hopper-v5", params={"m": ok})
        assert family.sample_tasks(1, split="ood", seed=0)


def test_a_misnamed_model_field_is_refused():
    with pytest.raises(ValueError, match="not a MuJoCo model field of Hopper-v5"):
        GymFamily(
            env_id="Hopper-v5",
            params={"m": EnvParam(0.5, 2.0, target="model.body_masses", scale=True)},
        )


def test_a_family_class_in_a_user_module_can_be_named_in_a_config(tmp_path, monkeypatch):
    module = tmp_path / "my_families.py"
    module.write_text(
        "from mcrl.tasks.gym_family import EnvParam, GymFamily\n"
        "class PowerCar(GymFamily):\n"
        "    name = 'PowerCar'\n"
        "    env_id = 'MountainCarContinuous-v0'\n"
        "    default_horizon = 20\n"
        "    params = {'power': EnvParam(0.001, 0.002)}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = mcrl.load_config(
        None,
        [
            "family=my_families:PowerCar",
            "iterations=1",
            "sampler.backend=local",
            "meta_batch_size=2",
            "episodes_per_task=2",
            "eval_every=0",
            "policy.hidden_sizes=[8]",
        ],
    )
    trainer = mcrl.train(config, tmp_path / "run")
    assert trainer.family.name == "PowerCar" and (tmp_path / "run" / "metrics.csv").is_file()


@pytest.mark.parametrize("path", sorted(str(p) for p in EXPERIMENTS.glob("*.yaml")))
def test_every_experiment_config_loads_and_builds_its_family(path):
    config = mcrl.load_config(path)
    assert mcrl.make_family(config.family, **config.family_kwargs).name == config.family


@pytest.mark.parametrize("name", CORE_FAMILIES)
def test_every_family_meta_trains_for_an_iteration(tmp_path, name):
    overrides = [
        f"family={name}",
        "iterations=1",
        "meta_batch_size=2",
        "eval_every=1",
        "outer_epochs=1",
    ]
    trainer = mcrl.train(tiny_config(*overrides), tmp_path / "run")
    evaluation = trainer.latest_eval
    assert all(np.isfinite(evaluation["returns"]))
    assert len(evaluation["returns"]) == trainer.config.inner_steps + 1


@pytest.mark.parametrize("name", ["MetaWorldML1", "MetaWorldML10", "MetaWorldML45"])
def test_without_the_extra_meta_world_families_are_listed_and_name_the_install(
    name, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "metaworld", None)  # as if not installed
    assert name in mcrl.list_families()
    with pytest.raises(ValueError, match=r'pip install "mcrl\[metaworld\]"'):
        mcrl.make_family(name)
    assert cli_main(["families"]) == 0
    listed = capsys.readouterr().out
    assert name in listed and "mcrl[metaworld]" in listed


def test_a_folder_named_metaworld_on_the_path_is_named_in_the_error(tmp_path, monkeypatch):
    (tmp_path / "metaworld").mkdir()  # a namespace package that shadows the real one
    monkeypatch.delitem(sys.modules, "metaworld", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="not the Meta-World package"):
        mcrl.make_family("MetaWorldML1")


def test_a_family_whose_env_has_discrete_observations_is_refused_with_its_spaces():
    family = GymFamily(
        env_id="FrozenLake-v1", params={"anything": EnvParam(0.0, 1.0, setter=lambda env, v: None)}
    )
    with pytest.raises(ValueError, match=r"needs Box observations .* got Discrete\(16\)"):
        family.make_vector_env(family.sample_tasks(2, seed=0))
