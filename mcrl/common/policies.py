"""Policies usable functionally: parameters come in as a dict of tensors.

Every function accepts parameters with optional leading batch dimensions (one parameter set per
task or per env, stacked) together with observations that carry the same leading dimensions
plus one sample dimension: ``W [*B, out, in]`` with ``obs [*B, N, in]``. This is what lets the
sampler run one forward for all tasks' envs, and the learner compute every task's inner loss at
once.

Parameter names and their stable-baselines3 ``ActorCriticPolicy`` counterparts:

=====================  ==========================================
mcrl                   stable-baselines3
=====================  ==========================================
``layers.{i}.weight``  ``mlp_extractor.policy_net.{2*i}.weight``
``layers.{i}.bias``    ``mlp_extractor.policy_net.{2*i}.bias``
``head.weight``        ``action_net.weight``
``head.bias``          ``action_net.bias``
``log_std``            ``log_std`` (Gaussian policies only)
=====================  ==========================================
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

Params = Mapping[str, Tensor]

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x @ weight.T + bias`` with matching leading batch dimensions on all three.

    Shared parameters (no batch dimension) take ``F.linear``; one batch dimension takes
    ``baddbmm``; both fuse the bias into the matrix product.
    """
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    if weight.dim() == 3 and x.dim() == 3:
        return torch.baddbmm(bias.unsqueeze(-2), x, weight.mT)
    return x @ weight.mT + bias.unsqueeze(-2)


def mlp(params: Params, x: Tensor, num_layers: int, activation: str = "tanh") -> Tensor:
    """Hidden layers ``layers.0 .. layers.{num_layers-1}`` then the linear ``head``."""
    act = ACTIVATIONS[activation]
    for i in range(num_layers):
        x = act(linear(x, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]))
    return linear(x, params["head.weight"], params["head.bias"])


class MLPPolicy(nn.Module, abc.ABC):
    """θ as an ``nn.Module``: a tanh MLP body and a linear head (SB3's default layout)."""

    def __init__(self, obs_dim: int, out_dim: int, hidden_sizes: Sequence[int], activation: str):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.obs_dim = obs_dim
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.activation = activation
        sizes = (obs_dim, *self.hidden_sizes)
        layers = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(sizes[-1], out_dim)
        # SB3's initialisation, so an exported policy starts where SB3's PPO would.
        for layer in layers:
            nn.init.orthogonal_(layer.weight, gain=math.sqrt(2))
            nn.init.zeros_(layer.bias)
        nn.init.orthogonal_(self.head.weight, gain=0.01)
        nn.init.zeros_(self.head.bias)

    def params(self) -> dict[str, Tensor]:
        """θ as a dict (the live parameters, so gradients flow back to the module)."""
        return dict(self.named_parameters())

    def _body(self, params: Params, obs: Tensor) -> Tensor:
        return mlp(params, obs, len(self.hidden_sizes), self.activation)

    @abc.abstractmethod
    def noise(self, rng: np.random.Generator, steps: int, count: int) -> np.ndarray:
        """Exploration noise for ``count`` episodes of ``steps`` steps, ``[steps, count, ...]``:
        what :meth:`sample` turns into actions."""

    @abc.abstractmethod
    def distribution(self, params: Params, obs: Tensor) -> tuple[Tensor, ...]:
        """The action distribution's parameters at ``obs``."""

    @abc.abstractmethod
    def log_prob_of(self, distribution: tuple[Tensor, ...], actions: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def kl_between(self, old: tuple[Tensor, ...], new: tuple[Tensor, ...]) -> Tensor:
        """KL(old ‖ new) per observation."""

    @abc.abstractmethod
    def sample(self, params: Params, obs: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """Actions and their log-probabilities, a deterministic function of ``noise``."""

    @abc.abstractmethod
    def act(self, params: Params, obs: Tensor) -> Tensor:
        """The deterministic action (mean or arg-max)."""

    def log_prob(self, params: Params, obs: Tensor, actions: Tensor) -> Tensor:
        return self.log_prob_of(self.distribution(params, obs), actions)


class GaussianMLPPolicy(MLPPolicy):
    """Diagonal Gaussian with a state-independent log standard deviation.

    With ``action_range`` (the action space's ``(low, high)``), the network works in units of
    half the range around its middle: the env's action is ``middle + half_range · (mean + σ·ε)``.
    Then ``init_log_std = 0`` means σ = half the range in every family, and a narrow range
    (clipped beyond) does not turn the same σ into noise that saturates every action.
    """

    action_middle: Tensor  # buffers, with ``action_range`` only
    log_half_range: Tensor

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        init_log_std: float = 0.0,
        action_range: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        super().__init__(obs_dim, action_dim, hidden_sizes, activation)
        self.action_dim = action_dim
        self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))
        self.scaled = action_range is not None
        if action_range is not None:
            low, high = (torch.as_tensor(np.asarray(b, dtype=np.float32)) for b in action_range)
            # Not in the state dict: they follow from the config and the env's spaces.
            self.register_buffer("action_middle", (high + low) / 2, persistent=False)
            self.register_buffer("log_half_range", torch.log((high - low) / 2), persistent=False)

    def noise(self, rng, steps, count):
        return rng.standard_normal((steps, count, self.action_dim), dtype=np.float32)

    def distribution(self, params, obs):
        mean = self._body(params, obs)
        log_std = params["log_std"].unsqueeze(-2).expand_as(mean)
        if self.scaled:
            # The buffers live with the learner's module; the sampler calls it with CPU params.
            middle, log_half_range = (
                b.to(mean.device) for b in (self.action_middle, self.log_half_range)
            )
            mean = middle + torch.exp(log_half_range) * mean
            log_std = log_std + log_half_range
        return mean, log_std

    def _log_density(self, z: Tensor, log_std: Tensor) -> Tensor:
        return (
            -0.5 * (z * z).sum(-1) - log_std.sum(-1) - 0.5 * self.action_dim * math.log(2 * math.pi)
        )

    def log_prob_of(self, distribution, actions):
        mean, log_std = distribution
        return self._log_density((actions - mean) * torch.exp(-log_std), log_std)

    def kl_between(self, old, new):
        (old_mean, old_log_std), (mean, log_std) = old, new
        var_ratio = torch.exp(2 * (old_log_std - log_std))
        mahalanobis = ((old_mean - mean) * torch.exp(-log_std)) ** 2
        return 0.5 * (var_ratio + mahalanobis - 1 - 2 * (old_log_std - log_std)).sum(-1)

    def sample(self, params, obs, noise):
        mean, log_std = self.distribution(params, obs)
        return mean + torch.exp(log_std) * noise, self._log_density(noise, log_std)

    def act(self, params, obs):
        return self.distribution(params, obs)[0]


class CategoricalMLPPolicy(MLPPolicy):
    """Categorical over ``num_actions`` discrete actions."""

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
    ):
        super().__init__(obs_dim, num_actions, hidden_sizes, activation)
        self.num_actions = num_actions

    def noise(self, rng, steps, count):
        return rng.random((steps, count), dtype=np.float32)

    def distribution(self, params, obs):
        return (torch.log_softmax(self._body(params, obs), dim=-1),)

    def log_prob_of(self, distribution, actions):
        (log_probs,) = distribution
        return log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def kl_between(self, old, new):
        (old_log_probs,), (log_probs,) = old, new
        return (old_log_probs.exp() * (old_log_probs - log_probs)).sum(-1)

    def sample(self, params, obs, noise):
        # Inverse-CDF sampling from uniform noise keeps sampling a pure function of the noise.
        distribution = self.distribution(params, obs)
        cdf = distribution[0].exp().cumsum(-1)
        actions = torch.searchsorted(cdf, noise.unsqueeze(-1).contiguous()).squeeze(-1)
        actions = actions.clamp_(max=self.num_actions - 1)
        return actions, self.log_prob_of(distribution, actions)

    def act(self, params, obs):
        return self._body(params, obs).argmax(-1)


def make_policy(
    observation_space: gym.Space,
    action_space: gym.Space,
    hidden_sizes: Sequence[int] = (64, 64),
    activation: str = "tanh",
    init_log_std: float = 0.0,
    action_scaling: str = "none",
) -> MLPPolicy:
    """The policy that fits an env's spaces: Gaussian for Box actions, categorical for Discrete.
    ``action_scaling="range"``: a Gaussian policy's mean and σ in units of half the action
    range (see :class:`GaussianMLPPolicy`); ``"auto"``: range when the action space is bounded,
    the env's units otherwise; a Discrete action space ignores it."""
    observation_space, action_space = supported_spaces(observation_space, action_space)
    obs_dim = observation_space.shape[0]
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalMLPPolicy(obs_dim, int(action_space.n), hidden_sizes, activation)
    if action_scaling not in ("auto", "none", "range"):
        raise ValueError(f"action_scaling must be auto, none or range, got {action_scaling!r}")
    bounded = bool(np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all())
    if action_scaling == "range" and not bounded:
        raise ValueError(
            f"policy.action_scaling: range needs a bounded action space, got {action_space}; "
            "use action_scaling: none or auto"
        )
    scaled = action_scaling == "range" or (action_scaling == "auto" and bounded)
    action_range = (action_space.low, action_space.high) if scaled else None
    return GaussianMLPPolicy(
        obs_dim, action_space.shape[0], hidden_sizes, activation, init_log_std, action_range
    )


def supported_spaces(
    observation_space: gym.Space, action_space: gym.Space
) -> tuple[gym.spaces.Box, gym.spaces.Box | gym.spaces.Discrete]:
    """The two spaces, checked to be ones mcrl policies act in (and typed as such)."""
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(
            f"mcrl policies need a flat Box observation space, got {observation_space}"
        )
    if isinstance(action_space, gym.spaces.Discrete) or (
        isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1
    ):
        return observation_space, action_space
    raise ValueError(f"mcrl policies need a flat Box or Discrete action space, got {action_space}")


def params_to_numpy(params: Params) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in params.items()}


def stack_params(param_sets: Sequence[Mapping[str, np.ndarray]]) -> dict[str, Tensor]:
    """Per-task parameter sets (numpy) stacked along a new leading dimension, as tensors."""
    return {
        k: torch.from_numpy(np.stack([np.asarray(p[k], dtype=np.float32) for p in param_sets]))
        for k in param_sets[0]
    }


def describe_spaces(observation_space: gym.Space, action_space: gym.Space) -> dict[str, Any]:
    """The spaces a policy acts in, as plain numbers and lists (safe in a weights-only file)."""
    observation_space, action_space = supported_spaces(observation_space, action_space)
    description: dict[str, Any] = {
        "obs_dim": int(observation_space.shape[0]),
        "obs_low": np.asarray(observation_space.low, dtype=float).tolist(),
        "obs_high": np.asarray(observation_space.high, dtype=float).tolist(),
    }
    if isinstance(action_space, gym.spaces.Discrete):
        description["num_actions"] = int(action_space.n)
    else:
        description["action_low"] = np.asarray(action_space.low, dtype=float).tolist()
        description["action_high"] = np.asarray(action_space.high, dtype=float).tolist()
    return description


def spaces_from_description(description: Mapping[str, Any]) -> tuple[gym.Space, gym.Space]:
    """Observation and action spaces rebuilt from :func:`describe_spaces`."""
    observation_space = gym.spaces.Box(
        np.asarray(description["obs_low"], dtype=np.float32),
        np.asarray(description["obs_high"], dtype=np.float32),
        dtype=np.float32,
    )
    if "num_actions" in description:
        return observation_space, gym.spaces.Discrete(description["num_actions"])
    low = np.asarray(description["action_low"], dtype=np.float32)
    high = np.asarray(description["action_high"], dtype=np.float32)
    return observation_space, gym.spaces.Box(low, high, dtype=np.float32)


def check_spaces_match(
    expected: Mapping[str, Any], observation_space: gym.Space, action_space: gym.Space, what: str
) -> None:
    """Raise ``ValueError`` when an env's spaces do not fit a policy built for ``expected``
    (action bounds may differ: actions are clipped to the env's own)."""
    try:
        actual = describe_spaces(observation_space, action_space)
    except ValueError as exc:
        raise ValueError(f"{what} does not fit the policy: {exc}") from None
    if actual["obs_dim"] != expected["obs_dim"]:
        raise ValueError(
            f"{what} has {actual['obs_dim']}-dimensional observations; the policy takes "
            f"{expected['obs_dim']} ({observation_space})"
        )
    if ("num_actions" in actual) != ("num_actions" in expected) or actual.get(
        "num_actions"
    ) != expected.get("num_actions"):
        raise ValueError(f"{what}'s action space {action_space} does not match the policy's")
    if "action_low" in actual and len(actual["action_low"]) != len(expected["action_low"]):
        raise ValueError(
            f"{what} has {len(actual['action_low'])}-dimensional actions; the policy outputs "
            f"{len(expected['action_low'])}"
        )
