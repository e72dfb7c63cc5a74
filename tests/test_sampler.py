from __future__ import annotations

import csv

import gymnasium as gym
import numpy as np
import pytest
import torch
from mcrl_envs.navigation import Navigation2D

import mcrl
from mcrl.cli.plots import plot_learning_curve
from mcrl.common.policies import params_to_numpy, stack_params
from mcrl.rollout.episodes import EpisodeBatch
from tests.conftest import make_policy_for, perturbed_params, tiny_config

FAMILIES = ["Navigation2D", "PendulumDynamics", "CartPoleDynamics"]


def assert_same_batches(a: list[EpisodeBatch], b: list[EpisodeBatch]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.task == y.task
        for name in EpisodeBatch._ARRAYS:
            np.testing.assert_allclose(
                getattr(x, name), getattr(y, name), rtol=1e-5, atol=1e-6, err_msg=name
            )


def sampler_and_params(name: str, num_tasks: int, *, horizon: int = 30):
    family = mcrl.make_family(name, horizon=horizon)
    policy = make_policy_for(family)
    tasks = family.sample_tasks(num_tasks, seed=1)
    return mcrl.LocalSampler(family, policy), tasks, perturbed_params(policy, num_tasks)


@pytest.mark.parametrize("name", FAMILIES)
def test_batches_have_the_documented_layout(name):
    sampler, tasks, params = sampler_and_params(name, 3)
    batches = sampler.sample(tasks, params, 4, seed=0, iteration=0)
    assert [b.task for b in batches] == tasks
    horizon = sampler.family.horizon
    for b in batches:
        assert b.observations.shape[:2] == (horizon, 4) and b.observations.dtype == np.float32
        assert b.rewards.shape == b.mask.shape == b.log_probs.shape == (horizon, 4)
        assert b.returns.shape == (4,)
        # Every episode ends exactly once, by termination or truncation, at its last real step.
        ends = (b.terminated | b.truncated).sum(0)
        np.testing.assert_array_equal(ends, 1)
        last = b.lengths - 1
        assert np.all(b.terminated[last, np.arange(4)] | b.truncated[last, np.arange(4)])


@pytest.mark.parametrize("name", FAMILIES)
def test_same_seed_same_batches_other_iteration_other_batches(name):
    sampler, tasks, params = sampler_and_params(name, 3)
    first = sampler.sample(tasks, params, 3, seed=4, iteration=2)
    assert_same_batches(first, sampler.sample(tasks, params, 3, seed=4, iteration=2))
    other = sampler.sample(tasks, params, 3, seed=4, iteration=3)
    assert not np.allclose(first[0].actions, other[0].actions)
    other_phase = sampler.sample(tasks, params, 3, seed=4, iteration=2, phase=1)
    assert not np.allclose(first[0].actions, other_phase[0].actions)


@pytest.mark.parametrize("name", FAMILIES)
def test_chunking_invariance(name):
    """Sampling all tasks at once equals sampling two halves separately (what makes workers exact)."""
    sampler, tasks, params = sampler_and_params(name, 4)
    whole = sampler.sample(tasks, params, 3, seed=9, iteration=1)
    halves = sampler.sample(tasks[:2], params[:2], 3, seed=9, iteration=1) + sampler.sample(
        tasks[2:], params[2:], 3, seed=9, iteration=1
    )
    assert_same_batches(whole, halves)
    # Uneven chunks of (task, episode) slots, which take the per-env parameter path.
    from mcrl.rollout.sampler import EpisodeSlot, assemble_batches

    slots = [EpisodeSlot(i, e) for i in range(4) for e in range(3)]
    engine = sampler.engine
    arrays = [
        engine.run(tasks, params, chunk, seed=9, iteration=1, phase=0)
        for chunk in (slots[:5], slots[5:])
    ]
    merged = {k: np.concatenate([a[k] for a in arrays], axis=1) for k in arrays[0]}
    assert_same_batches(whole, assemble_batches(tasks, slots, merged))


def test_shared_params_equal_identical_per_task_params():
    sampler, tasks, params = sampler_and_params("Navigation2D", 3)
    shared = sampler.sample(tasks, params[0], 2, seed=0, iteration=0)
    per_task = sampler.sample(tasks, [params[0]] * 3, 2, seed=0, iteration=0)
    assert_same_batches(shared, per_task)


def test_log_probs_are_those_of_the_sampling_policy():
    family = mcrl.make_family("PendulumDynamics", horizon=20)
    policy = make_policy_for(family)
    tasks = family.sample_tasks(2, seed=0)
    params = perturbed_params(policy, 2)
    batches = mcrl.LocalSampler(family, policy).sample(tasks, params, 2, seed=0, iteration=0)
    for b, p in zip(batches, params, strict=True):
        p_t = {k: torch.as_tensor(v) for k, v in p.items()}
        logp = policy.log_prob(p_t, torch.as_tensor(b.observations), torch.as_tensor(b.actions))
        np.testing.assert_allclose(logp.numpy(), b.log_probs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_native_vector_envs_give_the_single_env_transitions(name):
    """A family's own vectorised env must reproduce its Gymnasium env step for step."""
    family = mcrl.make_family(name, horizon=40)
    policy = make_policy_for(family)
    tasks = family.sample_tasks(3, seed=2) + family.sample_tasks(2, split="ood", seed=2)
    params = perturbed_params(policy, 5, scale=1.0)
    fast = mcrl.LocalSampler(family, policy).sample(tasks, params, 4, seed=1, iteration=0)
    slow = mcrl.LocalSampler(family, policy, native_vector=False).sample(
        tasks, params, 4, seed=1, iteration=0
    )
    assert_same_batches(fast, slow)
    if name == "CartPoleDynamics":  # the pole falls: terminations are compared too
        assert any(b.terminated.any() for b in fast)


def test_episodes_that_end_early_are_padded_and_masked():
    family = Navigation2D(horizon=50)
    policy = make_policy_for(family)
    # A goal on the path of a policy that always moves by (+0.1, +0.1) ends the episode early.
    task = family.task({"goal": [0.3, 0.3]}, split="train")
    params = params_to_numpy(policy.params())
    params = {k: np.zeros_like(v) for k, v in params.items()}
    params["head.bias"] = np.array([5.0, 5.0], dtype=np.float32)
    params["log_std"] = np.array([-20.0, -20.0], dtype=np.float32)
    (batch,) = mcrl.LocalSampler(family, policy).sample([task], params, 2, seed=0, iteration=0)
    np.testing.assert_array_equal(batch.lengths, [3, 3])
    assert batch.terminated[2].all() and not batch.truncated.any()
    assert (
        batch.mask[3:].sum() == 0
        and np.all(batch.observations[3:] == 0)
        and np.all(batch.rewards[3:] == 0)
    )
    np.testing.assert_allclose(
        batch.returns, -(np.sqrt(0.08) + np.sqrt(0.02)) * np.ones(2), rtol=1e-5
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda s, t, p: s.sample(t, p, 0, seed=0, iteration=0),
            "episodes_per_task must be a positive integer",
        ),
        (lambda s, t, p: s.sample([], p, 1, seed=0, iteration=0), "non-empty list of Task"),
        (lambda s, t, p: s.sample(t, p[:1], 1, seed=0, iteration=0), "one per task"),
        (
            lambda s, t, p: s.sample(
                mcrl.make_family("PendulumDynamics").sample_tasks(2), p, 1, seed=0, iteration=0
            ),
            "PendulumDynamics",
        ),
    ],
)
def test_bad_sampler_input_is_a_clear_value_error(call, match):
    sampler, tasks, params = sampler_and_params("Navigation2D", 2)
    with pytest.raises(ValueError, match=match):
        call(sampler, tasks, params)


def test_batched_policy_forward_equals_per_task_forward():
    policy = make_policy_for(mcrl.make_family("PendulumDynamics"))
    params = perturbed_params(policy, 3)
    obs = torch.randn(3, 5, 3)
    stacked = policy.log_prob(stack_params(params), obs, torch.randn(3, 5, 1) * 0 + 0.5)
    for i, p in enumerate(params):
        single = policy.log_prob(
            {k: torch.as_tensor(v) for k, v in p.items()}, obs[i], torch.full((5, 1), 0.5)
        )
        torch.testing.assert_close(stacked[i], single)


def test_gaussian_and_categorical_match_torch_distributions():
    torch.manual_seed(0)
    gauss = mcrl.GaussianMLPPolicy(3, 2, hidden_sizes=(8,), init_log_std=-0.5)
    obs, actions = torch.randn(6, 3), torch.randn(6, 2)
    mean, log_std = gauss.distribution(gauss.params(), obs)
    ref = torch.distributions.Normal(mean, log_std.exp())
    torch.testing.assert_close(
        gauss.log_prob(gauss.params(), obs, actions), ref.log_prob(actions).sum(-1)
    )
    cat = mcrl.CategoricalMLPPolicy(3, 4, hidden_sizes=(8,))
    (logits,) = cat.distribution(cat.params(), obs)
    acts = torch.tensor([0, 1, 2, 3, 1, 0])
    torch.testing.assert_close(
        cat.log_prob(cat.params(), obs, acts),
        torch.distributions.Categorical(logits=logits).log_prob(acts),
    )
    # Inverse-CDF sampling follows the probabilities.
    many = torch.rand(20000)
    sampled, _ = cat.sample(cat.params(), obs[:1].expand(20000, 3), many)
    freq = torch.bincount(sampled, minlength=4).float() / 20000
    torch.testing.assert_close(freq, logits[0].softmax(-1), atol=0.02, rtol=0)
    # KL of a policy with itself is zero.
    assert torch.allclose(
        gauss.kl_between((mean, log_std), gauss.distribution(gauss.params(), obs)),
        torch.zeros(6),
        atol=1e-6,
    )


class _SucceedsRight(gym.Wrapper):
    """Reports Meta-World's ``info["success"]`` at the second step only, where the goal lies to
    the right: success counts if reached at any step, not only at the last."""

    def __init__(self, env, goal):
        super().__init__(env)
        self.goal, self.steps = goal, 0

    def reset(self, **kwargs):
        self.steps = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        info["success"] = float(self.steps == 2 and self.goal[0] > 0)
        return obs, reward, terminated, truncated, info


class NavigationWithSuccess(Navigation2D):
    name = "NavigationWithSuccess"
    reports_success = True
    make_vector_env = mcrl.TaskFamily.make_vector_env  # the serial path, which reads the infos

    def make_env(self, task):
        return _SucceedsRight(super().make_env(task), task.params["goal"])


def test_success_is_recorded_per_episode_and_reaches_metrics_and_eval(tmp_path):
    family = NavigationWithSuccess(horizon=10)
    tasks = [
        family.task({"goal": [x, 0.2]}, split="train", index=i) for i, x in enumerate([0.3, -0.3])
    ]
    policy = make_policy_for(family)
    right, left = mcrl.LocalSampler(family, policy).sample(
        tasks, params_to_numpy(policy.params()), 3, seed=0, iteration=0
    )
    assert right.success.tolist() == [True] * 3 and left.success.tolist() == [False] * 3
    assert right.success_rate == 1.0 and left.success_rate == 0.0

    mcrl.register_family(family.name, NavigationWithSuccess, overwrite=True)
    trainer = mcrl.train(
        tiny_config(f"family={family.name}", "eval_every=1", "iterations=1"), tmp_path / "run"
    )
    with (tmp_path / "run" / "metrics.csv").open() as f:
        (row,) = csv.DictReader(f)
    assert 0 <= float(row["success_pre"]) <= 1 and row["eval_success_2"] != ""
    evaluation = trainer.latest_eval
    assert len(evaluation["success"]) == len(evaluation["success_ci95"]) == 3
    assert all(0 <= s <= 1 for s in evaluation["success"])
    # ... and the learning-curve plot and an adaptation's summary.
    assert plot_learning_curve([row], tmp_path / "curve.png").stat().st_size > 0
    adapted = mcrl.load(tmp_path / "run").adapt(tasks[0], steps=1, episodes=2)
    assert adapted.info["success"] == [1.0, 1.0]  # a goal to the right: success at step 2


class _OfKind(gym.Wrapper):
    """An env that serves one kind of task only (as a Meta-World env serves one task type)."""

    def __init__(self, env, kind: bool):
        super().__init__(env)
        self.kind, self.closed = kind, False

    def close(self):
        self.closed = True
        super().close()


class NavigationOfTwoKinds(Navigation2D):
    """Goals left and right of the start need envs of their own kind; counts what it builds."""

    name = "NavigationOfTwoKinds"
    make_vector_env = mcrl.TaskFamily.make_vector_env  # the serial path, which re-targets envs

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.built: list[_OfKind] = []

    def make_env(self, task):
        self.built.append(_OfKind(super().make_env(task), task.params["goal"][0] > 0))
        return self.built[-1]

    def can_retarget(self, env, task):
        return env.kind == (task.params["goal"][0] > 0)


def test_envs_are_reused_by_kind_whatever_their_position():
    def tasks_at(family, x, first_index):
        return [
            family.task({"goal": [x, y]}, split="train", index=first_index + i)
            for i, y in enumerate([0.1, 0.2])
        ]

    family = NavigationOfTwoKinds(horizon=10)
    right, left = tasks_at(family, 0.3, 0), tasks_at(family, -0.3, 2)
    policy = make_policy_for(family)
    params = params_to_numpy(policy.params())
    family.built.clear()  # the policy's probe for the spaces
    sampler = mcrl.LocalSampler(family, policy)
    sampler.sample(right + left, params, 1, seed=0, iteration=0)
    assert len(family.built) == 4
    # The kinds swap positions: no env is rebuilt, and the episodes are those of fresh envs.
    swapped = sampler.sample(left + right, params, 1, seed=0, iteration=1)
    assert len(family.built) == 4
    fresh = NavigationOfTwoKinds(horizon=10)
    assert_same_batches(
        swapped,
        mcrl.LocalSampler(fresh, policy).sample(
            tasks_at(fresh, -0.3, 2) + tasks_at(fresh, 0.3, 0), params, 1, seed=0, iteration=1
        ),
    )
    # Four right goals: the two right envs serve, two more are built, the left ones are spares.
    sampler.sample(right + right, params, 1, seed=0, iteration=2)
    assert len(family.built) == 6 and not any(env.closed for env in family.built)
    # A batch of one keeps as many spares as the largest batch had envs (four): the three other
    # right envs and one left one; the other left one, used longest ago, is closed.
    sampler.sample(right[:1], params, 1, seed=0, iteration=3)
    closed = [env for env in family.built if env.closed]
    assert len(closed) == 1 and not closed[0].kind
    sampler.sample(left, params, 1, seed=0, iteration=4)  # the left spare serves, one is built
    assert len(family.built) == 7


def test_families_without_success_report_none():
    sampler, tasks, params = sampler_and_params("Navigation2D", 2)
    batches = sampler.sample(tasks, params, 2, seed=0, iteration=0)
    assert batches[0].success is None and batches[0].success_rate is None


def test_serial_group_size_follows_the_family_and_does_not_change_the_episodes():
    """Envs stepped one by one go in groups of the family's ``serial_group`` (Meta-World's
    envs fall out of the CPU caches in larger groups), else 64, unless ``max_envs`` says; the
    episodes are the same whatever the grouping."""
    from mcrl.rollout.sampler import SERIAL_GROUP

    family = mcrl.make_family("PendulumDynamics", horizon=15)
    policy = make_policy_for(family)
    tasks = family.sample_tasks(3, seed=0)
    params = perturbed_params(policy, 3)

    def serial(family, **kwargs):
        return mcrl.LocalSampler(family, policy, native_vector=False, **kwargs)

    assert family.serial_group is None and serial(family).engine.max_envs == SERIAL_GROUP
    family.serial_group = 2  # on this instance only
    assert serial(family).engine.max_envs == 2
    assert serial(family, max_envs=5).engine.max_envs == 5
    reference = serial(family, max_envs=SERIAL_GROUP).sample(tasks, params, 3, seed=0, iteration=0)
    assert_same_batches(serial(family).sample(tasks, params, 3, seed=0, iteration=0), reference)
