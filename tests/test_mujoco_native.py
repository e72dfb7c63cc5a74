"""The natively vectorised MuJoCo envs: Gymnasium's v5 envs step for step, dynamics that reach
the simulation, and the same episodes whatever the threads or the chunking."""

from __future__ import annotations

import numpy as np
import pytest

import mcrl
from tests.conftest import make_policy_for, perturbed_params
from tests.test_sampler import assert_same_batches

NATIVE = [
    "HalfCheetahVel",
    "HalfCheetahDir",
    "HalfCheetahParams",
    "HopperParams",
    "Walker2dParams",
    "AntDir",
    "AntGoal",
]


@pytest.mark.parametrize("name", NATIVE)
def test_the_shipped_family_is_native(name):
    assert mcrl.make_family(name).has_native_vector_env


@pytest.mark.parametrize("name", NATIVE)
def test_whole_episodes_equal_gymnasiums_for_several_tasks(name):
    """Up to the horizon's truncation, observations, rewards and flags of every episode."""
    family = mcrl.make_family(name, horizon=120)
    policy = make_policy_for(family)
    tasks = family.sample_tasks(3, seed=4)
    if family.space is not None and family.space.has_ood:
        tasks += family.sample_tasks(2, split="ood", seed=4)
    params = perturbed_params(policy, len(tasks), scale=1.0)
    native = mcrl.LocalSampler(family, policy).sample(tasks, params, 3, seed=2, iteration=0)
    gymnasium = mcrl.LocalSampler(family, policy, native_vector=False).sample(
        tasks, params, 3, seed=2, iteration=0
    )
    assert_same_batches(native, gymnasium)
    for b in native:  # every episode ends once, at the horizon or when the robot falls
        assert np.array_equal((b.terminated | b.truncated).sum(axis=0), np.ones(3))
    if name in ("HopperParams", "Walker2dParams", "AntDir", "AntGoal"):  # health checks too
        assert any(b.terminated.any() for b in native)


def _final_states(family, tasks, actions, threads=1):
    env = family.make_vector_env(tasks)
    env.set_threads(threads)
    env.reset(list(range(len(tasks))))
    active = np.ones(len(tasks), dtype=bool)
    for a in actions:
        obs, *_ = env.step(a, active)
    env.close()
    return obs


def test_dynamics_reach_the_native_simulation_and_a_b_a_reproduces_a():
    family = mcrl.make_family("HalfCheetahParams")
    a, b = family.sample_tasks(2, seed=5)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(30, 1, 6))
    obs_a = _final_states(family, [a], actions)
    obs_b = _final_states(family, [b], actions)
    assert not np.allclose(obs_a, obs_b)  # same seed and actions, other physics
    env = family.make_vector_env([a])
    for task in (b, a):  # re-targeted in place: the models are written from the defaults
        env.set_tasks([task])
    env.reset([0])
    for act in actions:
        obs, *_ = env.step(act, np.ones(1, dtype=bool))
    np.testing.assert_array_equal(obs, obs_a)


def test_one_and_two_threads_step_the_same_episodes():
    family = mcrl.make_family("HalfCheetahVel")
    tasks = family.sample_tasks(8, seed=1)
    actions = np.random.default_rng(1).uniform(-1, 1, size=(25, 8, 6))
    np.testing.assert_array_equal(
        _final_states(family, tasks, actions, threads=1),
        _final_states(family, tasks, actions, threads=2),
    )


def test_chunks_of_the_episodes_step_exactly_as_the_whole():
    """What Ray workers do: each steps a contiguous chunk of the episodes in its own env."""
    family = mcrl.make_family("HalfCheetahParams")
    tasks = family.sample_tasks(6, seed=3)
    actions = np.random.default_rng(2).uniform(-1, 1, size=(40, 6, 6))

    def run(chunk):
        env = family.make_vector_env([tasks[k] for k in chunk])
        env.reset(list(chunk))
        for a in actions:
            obs, rewards, *_ = env.step(a[chunk], np.ones(len(chunk), dtype=bool))
        env.close()
        return obs, rewards

    whole = run(np.arange(6))
    parts = [run(np.arange(0, 4)), run(np.arange(4, 6))]
    for got, part in zip(whole, zip(*parts, strict=True), strict=True):
        np.testing.assert_array_equal(got, np.concatenate(part))


def test_an_unstable_simulation_ends_its_own_episode_only():
    family = mcrl.make_family("HalfCheetahVel", horizon=20)
    policy = make_policy_for(family)
    tasks = family.sample_tasks(2, seed=0)
    params = perturbed_params(policy, 2)
    sampler = mcrl.LocalSampler(family, policy, threads=1)
    healthy = sampler.sample(tasks, params, 2, seed=0, iteration=0)
    env = sampler.engine._env
    step_envs, calls = env._step_envs, []

    def poisoned(*args):  # the 6th step of episode 1 (task 0) gets a NaN velocity
        calls.append(1)
        if len(calls) == 6:
            env._datas[1].qvel[0] = np.nan
        step_envs(*args)

    env._step_envs = poisoned
    batches = sampler.sample(tasks, params, 2, seed=0, iteration=0)
    assert sampler.pop_counters()["unstable_episodes"] == 1
    cut = batches[0]
    assert cut.mask[:, 1].sum() == 6 and cut.truncated[5, 1] and not cut.terminated.any()
    for b in batches:
        assert np.isfinite(b.observations).all() and np.isfinite(b.rewards).all()
    # Every other episode is exactly what it was without the instability.
    np.testing.assert_array_equal(cut.observations[:, 0], healthy[0].observations[:, 0])
    np.testing.assert_array_equal(batches[1].rewards, healthy[1].rewards)
    sampler.close()


def test_a_declared_family_is_native_only_as_gymnasium_configures_the_robot():
    params = {"m": mcrl.EnvParam(0.5, 2.0, target="model.body_mass", scale=True, log=True)}
    assert mcrl.GymFamily(env_id="Hopper-v5", params=params).has_native_vector_env
    custom = mcrl.GymFamily(
        env_id="Hopper-v5",
        params=params,
        env_kwargs={"exclude_current_positions_from_observation": False},
    )
    assert not custom.has_native_vector_env  # its observation differs: the generic path
    batches = mcrl.LocalSampler(custom, make_policy_for(custom)).sample(
        custom.sample_tasks(1, seed=0),
        perturbed_params(make_policy_for(custom), 1),
        1,
        seed=0,
        iteration=0,
    )
    assert batches[0].observations.shape[-1] == 12  # x included
