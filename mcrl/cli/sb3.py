"""Hand a policy to stable-baselines3: a ``PPO`` model whose actor carries mcrl's weights.

The actor network maps one to one (see :mod:`mcrl.common.policies` for the key table). The value
network starts fresh: meta-training fits a linear baseline per task, not a value function.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from torch import nn

from mcrl.common.policies import GaussianMLPPolicy, spaces_from_description
from mcrl.training.adaptation import AdaptedPolicy, MetaPolicy

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def sb3_key(name: str) -> str:
    """An mcrl parameter name as the key of SB3's ``ActorCriticPolicy`` state dict."""
    layer = re.fullmatch(r"layers\.(\d+)\.(weight|bias)", name)
    if layer:
        return f"mlp_extractor.policy_net.{2 * int(layer[1])}.{layer[2]}"
    if name.startswith("head."):
        return "action_net." + name.removeprefix("head.")
    return name  # log_std


class SpacesOnlyEnv(gym.Env):
    """Carries the spaces a PPO model is built for; it cannot be stepped."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space):
        self.observation_space = observation_space
        self.action_space = action_space

    NOT_STEPPABLE = "this env only carries spaces; train with PPO.load(path, env=<your env>)"

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        raise RuntimeError(self.NOT_STEPPABLE)

    def step(self, action):
        raise RuntimeError(self.NOT_STEPPABLE)


def to_sb3(policy: AdaptedPolicy, env: gym.Env | None = None, **ppo_kwargs: Any) -> PPO:
    """A ``PPO`` model (on ``env``, or on the policy's spaces alone) with ``policy``'s actor."""
    net = list(policy.hidden_sizes)
    model = PPO(
        "MlpPolicy",
        env if env is not None else SpacesOnlyEnv(*spaces_from_description(policy.spaces)),
        policy_kwargs={
            "net_arch": {"pi": net, "vf": net},
            "activation_fn": ACTIVATIONS[policy.activation],
        },
        device="cpu",
        **ppo_kwargs,
    )
    state = model.policy.state_dict()
    for name, value in env_unit_params(policy).items():
        state[sb3_key(name)] = torch.as_tensor(value).reshape(state[sb3_key(name)].shape)
    model.policy.load_state_dict(state)
    return model


def env_unit_params(policy: AdaptedPolicy) -> dict[str, np.ndarray]:
    """The parameters with the action scaling folded into the head and log-std: SB3 acts in
    the env's own units (an affine map of the mean is an affine map of the head)."""
    params = {k: np.asarray(v) for k, v in policy.params.items()}
    actor = policy.policy
    if not isinstance(actor, GaussianMLPPolicy) or not actor.scaled:  # discrete: never scaled
        return params
    middle, log_half_range = actor.action_middle.cpu().numpy(), actor.log_half_range.cpu().numpy()
    half_range = np.exp(log_half_range)
    params["head.weight"] = half_range[:, None] * params["head.weight"]
    params["head.bias"] = middle + half_range * params["head.bias"]
    params["log_std"] = params["log_std"] + log_half_range
    return params


def export_sb3(
    checkpoint: str | Path, out: str | Path, *, adapted: str | Path | None = None
) -> Path:
    """Write ``out`` (a ``.zip`` loadable with ``PPO.load``) with θ of ``checkpoint``, or with
    the adapted policy in ``adapted`` (which must come from the same architecture)."""
    meta = MetaPolicy.load(checkpoint)
    policy = meta.initial()
    if adapted is not None:
        policy = AdaptedPolicy.load(adapted)
        expected = (tuple(meta.config.policy.hidden_sizes), meta.config.policy.activation)
        if (policy.hidden_sizes, policy.activation) != expected:
            raise ValueError(
                f"adapted policy {str(adapted)!r} has hidden sizes {policy.hidden_sizes} and "
                f"activation {policy.activation!r}; checkpoint {str(checkpoint)!r} has "
                f"{expected[0]} and {expected[1]!r}"
            )
    out = Path(out)
    if out.suffix != ".zip":
        out = out.with_name(out.name + ".zip")
    if out.exists():
        raise ValueError(f"{out} already exists; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    to_sb3(policy).save(out)
    return out
