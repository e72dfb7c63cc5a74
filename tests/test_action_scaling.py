"""policy.action_scaling: a Gaussian policy in units of half the action range."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import mcrl
from mcrl.common.config import ConfigError
from tests.conftest import tiny_config

SPACE = gym.spaces.Box(np.array([-0.1, 0.0], np.float32), np.array([0.1, 4.0], np.float32))
OBS = gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)


def policies():
    torch.manual_seed(0)
    plain = mcrl.make_policy(OBS, SPACE, (8,), init_log_std=0.3)
    torch.manual_seed(0)
    scaled = mcrl.make_policy(OBS, SPACE, (8,), init_log_std=0.3, action_scaling="range")
    return plain, scaled


def test_the_scaled_policy_is_the_plain_one_with_an_affine_head():
    plain, scaled = policies()
    middle, half = torch.tensor([0.0, 2.0]), torch.tensor([0.1, 2.0])
    folded = {k: v.detach().clone() for k, v in plain.params().items()}
    folded["head.weight"] *= half[:, None]
    folded["head.bias"] = middle + half * folded["head.bias"]
    folded["log_std"] += torch.log(half)
    obs = torch.randn(5, 3)
    for a, b in zip(
        scaled.distribution(scaled.params(), obs), plain.distribution(folded, obs), strict=True
    ):
        torch.testing.assert_close(a, b)
    # init_log_std = 0.3 means σ = e^0.3 half-ranges, whatever the range.
    std = torch.exp(scaled.distribution(scaled.params(), obs)[1][0]).detach().numpy()
    np.testing.assert_allclose(std, np.exp(0.3) * half.numpy(), rtol=1e-6)


def test_sampled_actions_have_the_log_probability_the_policy_gives_them():
    _, scaled = policies()
    params, obs = scaled.params(), torch.randn(4, 3)
    actions, logp = scaled.sample(params, obs, torch.randn(4, 2))
    torch.testing.assert_close(scaled.log_prob(params, obs, actions), logp)
    assert scaled.state_dict().keys() == policies()[0].state_dict().keys()  # θ is unchanged


def test_an_unbounded_action_space_cannot_be_scaled_and_says_so():
    unbounded = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
    with pytest.raises(ValueError, match="needs a bounded action space"):
        mcrl.make_policy(OBS, unbounded, action_scaling="range")
    with pytest.raises(ConfigError, match="'policy.action_scaling' must be one of"):
        tiny_config("policy.action_scaling=squash")


def test_a_scaled_run_trains_and_resuming_it_unscaled_is_refused(tmp_path):
    config = tiny_config("policy.action_scaling=range")
    trainer = mcrl.train(config, tmp_path)
    assert np.isfinite(trainer.latest_eval["returns"]).all()
    assert mcrl.load(tmp_path).initial().action_scaling == "range"
    with pytest.raises(ConfigError, match="checkpoint has policy.action_scaling='range'"):
        mcrl.train(tiny_config("iterations=3", "policy.action_scaling=none"), tmp_path, resume=True)
    # auto is range on Navigation2D's bounded actions: the same policy, so it resumes.
    mcrl.train(tiny_config("iterations=3", "policy.action_scaling=auto"), tmp_path, resume=True)


def test_auto_scaling_is_range_for_bounded_actions_and_env_units_otherwise():
    unbounded = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
    assert mcrl.make_policy(OBS, SPACE, action_scaling="auto").scaled
    assert not mcrl.make_policy(OBS, unbounded, action_scaling="auto").scaled
    assert tiny_config().policy.action_scaling == "auto"  # the default


def test_sb3_export_of_a_discrete_policy_ignores_range_scaling():
    from mcrl.cli.sb3 import env_unit_params
    from mcrl.common.policies import describe_spaces, params_to_numpy

    cartpole = gym.make("CartPole-v1")
    policy = mcrl.make_policy(cartpole.observation_space, cartpole.action_space, (8,))
    adapted = mcrl.AdaptedPolicy(
        params_to_numpy(policy.params()),
        describe_spaces(cartpole.observation_space, cartpole.action_space),
        (8,),
        "tanh",
        "range",
    )
    exported = env_unit_params(adapted)
    assert exported.keys() == adapted.params.keys()
    for name, value in adapted.params.items():
        np.testing.assert_array_equal(exported[name], value)
