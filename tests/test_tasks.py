from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import mcrl
from mcrl.tasks import BoxTaskSpace, Range
from tests.conftest import CORE_FAMILIES

FAMILIES = CORE_FAMILIES


def rollout(env, actions, seed=0):
    """Observations and rewards of a fixed action sequence (a goal may change only rewards)."""
    obs, _ = env.reset(seed=seed)
    steps = [np.append(obs, 0.0)]
    for a in actions:
        obs, reward, *_ = env.step(a)
        steps.append(np.append(obs, reward))
    return np.array(steps)


def available_splits(family):
    has_ood = family.space.has_ood if family.space is not None else False
    return ["train", "test"] + (["ood"] if has_ood else [])


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_passes_check_env(name):
    family = mcrl.make_family(name)
    for split in available_splits(family):
        env = family.make_env(family.sample_tasks(1, split=split, seed=1)[0])
        check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("split", ["test", "ood"])
def test_held_out_splits_never_produce_training_tasks(name, split):
    family = mcrl.make_family(name)
    if split not in available_splits(family):
        with pytest.raises(ValueError, match="no ood split"):
            family.sample_tasks(1, split=split)
        return
    if not family.held_out_test:
        # Documented: a two-task family's test tasks are its training tasks.
        test_params = {t.params["direction"] for t in family.sample_tasks(50, split="test", seed=3)}
        assert (
            test_params
            == {t.params["direction"] for t in family.sample_tasks(50, seed=3)}
            == {-1.0, 1.0}
        )
        return
    held_out = family.sample_tasks(300, split=split, seed=3)
    assert all(family.split_of(t.params) == split for t in held_out)
    train = family.sample_tasks(300, split="train", seed=3)
    assert all(family.split_of(t.params) == "train" for t in train)

    def keys(tasks):
        return {tuple(sorted(t.params.items())) for t in tasks}

    assert not keys(held_out) & keys(train)


def test_navigation_split_geometry_is_what_the_docs_say(nav):
    # Independent of the sampler: the corner cell (0, 0) of the 4x4 grid is held out, (3, 3) is not.
    assert nav.split_of({"goal": (-0.45, -0.45)}) == "test"
    assert nav.split_of({"goal": (0.45, 0.45)}) == "train"
    assert nav.split_of({"goal": (0.9, 0.0)}) == "ood"
    assert nav.split_of({"goal": (2.0, 0.0)}) is None
    goals = np.array([t.params["goal"] for t in nav.sample_tasks(500, split="ood", seed=0)])
    assert np.all(np.abs(goals) <= 1.0) and np.all(np.abs(goals).max(axis=1) > 0.5)
    test_goals = np.array([t.params["goal"] for t in nav.sample_tasks(500, split="test", seed=0)])
    cells = np.floor((test_goals + 0.5) * 4).astype(int)
    assert np.all(cells.sum(axis=1) % 4 == 0)
    # Spread over the box, not bunched in one corner.
    assert test_goals.min(axis=0).max() < -0.3 and test_goals.max(axis=0).min() > 0.3


@pytest.mark.parametrize("name", FAMILIES)
def test_changing_the_task_changes_the_env(name):
    family = mcrl.make_family(name)
    tasks = family.sample_tasks(10, seed=5)
    a = tasks[0]
    b = next(t for t in tasks if t.params != a.params)
    env = family.make_env(a)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(20)]
    traj_a = rollout(env, actions)
    family.set_task(env, b)
    traj_b = rollout(env, actions)
    assert not np.allclose(traj_a, traj_b)
    # Re-targeting is the same as building the env for that task.
    np.testing.assert_array_equal(traj_b, rollout(family.make_env(b), actions))
    family.set_task(env, a)
    np.testing.assert_array_equal(traj_a, rollout(env, actions))


def test_tasks_are_picklable_hashable_and_reproducible(nav):
    tasks = nav.sample_tasks(3, seed=7)
    assert pickle.loads(pickle.dumps(tasks)) == tasks
    assert len({*tasks}) == 3
    assert nav.sample_tasks(3, seed=7) == tasks
    assert nav.sample_tasks(3, seed=8) != tasks
    assert [t.index for t in tasks] == [0, 1, 2]
    assert tasks[0].to_dict()["params"]["goal"] == list(tasks[0].params["goal"])


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(ValueError, match="Navigation2D") as err:
        mcrl.make_family("NoSuchFamily")
    assert "NoSuchFamily" in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be a positive integer"),
        ({"n": -3}, "n must be"),
        ({"n": 2, "split": "validation"}, "split must be one of"),
    ],
)
def test_bad_sampling_arguments_name_the_argument(nav, kwargs, match):
    n = kwargs.pop("n")
    with pytest.raises(ValueError, match=match):
        nav.sample_tasks(n, **kwargs)


def test_a_task_of_another_family_is_refused(nav):
    pendulum_task = mcrl.make_family("PendulumDynamics").sample_tasks(1)[0]
    with pytest.raises(ValueError, match="PendulumDynamics"):
        nav.make_env(pendulum_task)


def test_explicit_task_parameters_are_checked(nav):
    assert nav.task({"goal": [0.2, 0.1]}).params["goal"] == (0.2, 0.1)
    with pytest.raises(ValueError, match="unknown task parameter"):
        nav.task({"goal": [0, 0], "speed": 1.0})


def test_ranges_reject_bad_bounds():
    with pytest.raises(ValueError, match="low < high"):
        Range(1.0, 0.5)
    with pytest.raises(ValueError, match="low > 0"):
        Range(0.0, 1.0, log=True)
    with pytest.raises(ValueError, match="cells"):
        BoxTaskSpace({"x": Range(0, 1)}, cells=1)


def test_user_families_register_and_resolve_from_module_path():
    class Tiny(mcrl.TaskFamily):
        name = "TinyTest"
        space = BoxTaskSpace({"goal": Range(-1, 1)})

        def make_env(self, task):
            return gym.make("MountainCarContinuous-v0")

        def set_task(self, env, task):
            pass

    mcrl.register_family("TinyTest", Tiny)
    assert "TinyTest" in mcrl.list_families()
    assert isinstance(mcrl.make_family("TinyTest"), Tiny)
    with pytest.raises(ValueError, match="already registered"):
        mcrl.register_family("TinyTest", lambda: None)
    assert type(mcrl.make_family("mcrl_envs.navigation:Navigation2D")).__name__ == "Navigation2D"
    with pytest.raises(ValueError, match="no attribute"):
        mcrl.make_family("mcrl_envs.navigation:Nope")
