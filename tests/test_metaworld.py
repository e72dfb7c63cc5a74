"""Meta-World's ML1, ML10 and ML45 through mcrl's families. These need the extra
``mcrl[metaworld]`` (it moves mujoco to the 3.3.0 that metaworld pins), so CI runs them in a
second step with it installed: ``python -m pytest -m metaworld``."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import mcrl
from mcrl.common.policies import params_to_numpy
from tests.conftest import load_experiment_script, make_policy_for, tiny_config

pytestmark = pytest.mark.metaworld
EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"

FAMILIES = [("MetaWorldML1", {"task_name": "reach-v3"}), ("MetaWorldML10", {})]


@functools.cache
def built(name: str, **kwargs):
    """One family per test session: Meta-World builds every env type to make its task lists."""
    return mcrl.make_family(name, **kwargs)


@pytest.fixture(params=FAMILIES, ids=[f for f, _ in FAMILIES])
def family(request):
    name, kwargs = request.param
    return built(name, **kwargs)


def test_envs_pass_gymnasiums_checker_for_train_and_test_tasks(family):
    for split in ("train", "test"):
        (task,) = family.sample_tasks(1, split=split, seed=3)
        env = family.make_env(task)
        check_env(env, skip_render_check=True)
        env.close()


def test_test_tasks_are_never_training_tasks(family):
    train = {tuple(t.params.items()) for t in family.sample_tasks(300, split="train", seed=0)}
    test = {tuple(t.params.items()) for t in family.sample_tasks(300, split="test", seed=0)}
    assert train and test and not train & test
    assert {family.split_of(dict(p)) for p in train} == {"train"}
    assert {family.split_of(dict(p)) for p in test} == {"test"}
    if family.name != "MetaWorldML1":  # held-out types: no test type is a training type
        assert not {dict(p)["task_name"] for p in train} & {dict(p)["task_name"] for p in test}


def test_ml45_holds_out_five_types_never_trained_on():
    family = mcrl.make_family("MetaWorldML45")
    train = {t.params["task_name"] for t in family.sample_tasks(2000, split="train", seed=0)}
    test = {t.params["task_name"] for t in family.sample_tasks(200, split="test", seed=0)}
    assert len(train) == 45 and len(test) == 5 and not train & test


def test_a_task_type_switch_rebuilds_the_env_and_episodes_match_a_fresh_env():
    family = built("MetaWorldML10")
    policy = make_policy_for(family)
    params = params_to_numpy(policy.params())
    train = family.sample_tasks(2, split="train", seed=0)
    test = family.sample_tasks(2, split="test", seed=0)
    reused = mcrl.LocalSampler(family, policy)
    reused.sample(train, params, 1, seed=0, iteration=0)  # envs of the training types first
    again = reused.sample(test, params, 1, seed=0, iteration=0)
    fresh = mcrl.LocalSampler(family, policy).sample(test, params, 1, seed=0, iteration=0)
    for a, b in zip(again, fresh, strict=True):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.success, b.success)


def test_envs_move_between_positions_by_task_type_and_episodes_match_fresh_envs(monkeypatch):
    family = built("MetaWorldML10")
    policy = make_policy_for(family)
    params = params_to_numpy(policy.params())
    tasks = family.sample_tasks(20, split="train", seed=0)
    first = tasks[0]
    other = next(t for t in tasks if t.params["task_name"] != first.params["task_name"])
    reused = mcrl.LocalSampler(family, policy)
    reused.sample([first, other], params, 1, seed=0, iteration=0)
    builds, make_env = [], family.make_env
    monkeypatch.setattr(family, "make_env", lambda task: builds.append(task) or make_env(task))
    swapped = reused.sample([other, first], params, 1, seed=0, iteration=0)
    assert builds == []  # the two envs swapped positions, none was rebuilt
    monkeypatch.undo()
    fresh = mcrl.LocalSampler(family, policy).sample([other, first], params, 1, seed=0, iteration=0)
    for a, b in zip(swapped, fresh, strict=True):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.rewards, b.rewards)


def test_env_pool_script_counts_the_envs_built(capsys):
    script = load_experiment_script("env_pool")
    args = ["--iterations", "2", "--tasks", "2", "--episodes", "2", "--horizon", "5"]
    assert script.main(args) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["builds_first_iteration"] == record["envs_per_phase"] == 4
    assert 0 <= record["builds_per_later_iteration"] <= 4 and record["peak_rss_mb"] > 0


def test_success_is_recorded_and_reaches_metrics_and_eval_json(tmp_path):
    config = tiny_config(
        "family=MetaWorldML1", "horizon=20", "meta_batch_size=2", "iterations=1", "eval_every=1"
    )
    mcrl.train(config, tmp_path / "run")
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"success_pre", "success_post", "eval_success_0"} <= set(header)
    evaluation = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert len(evaluation["success"]) == len(evaluation["returns"]) == config.inner_steps + 1
    # ... and per task type (one here: ML1), as the whole.
    assert evaluation["group_by"] == "task_name" and list(evaluation["groups"]) == ["reach-v3"]
    assert evaluation["groups"]["reach-v3"]["success"] == pytest.approx(evaluation["success"])
    assert evaluation["mean_over_groups"]["success"] == pytest.approx(evaluation["success"])


def test_bad_task_parameters_are_one_line(family):
    with pytest.raises(ValueError, match="unknown task_name 'fly-v3'"):
        family.task({"task_name": "fly-v3", "position": 0})
    name = family.sample_tasks(1, seed=0)[0].params["task_name"]
    with pytest.raises(ValueError, match="whole number in 0..99|whole number in 0..49"):
        family.task({"task_name": name, "position": 1000})
    with pytest.raises(ValueError, match="no ood split"):
        family.sample_tasks(1, split="ood")


@pytest.mark.parametrize(
    "path",
    sorted(str(p) for p in (EXPERIMENTS / "meta_world").glob("*.yaml")),
    ids=lambda p: Path(p).name,
)
def test_every_meta_world_config_loads_and_builds_its_family(path):
    config = mcrl.load_config(path)
    assert mcrl.make_family(config.family, **config.family_kwargs).name == config.family
