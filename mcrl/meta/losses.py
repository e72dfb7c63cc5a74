"""Losses of the meta-objective, on tensors stacked over tasks.

:class:`TaskTensors` holds one sampling phase of every task as ``[tasks, steps, ...]`` tensors
(steps = horizon × episodes, flattened time-major). The loss functions accept either that
batched form with per-task parameters ``[tasks, ...]``, or one task's slice with unbatched
parameters, and return one value per task (or a scalar).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mcrl.common.policies import MLPPolicy, Params
from mcrl.meta.advantages import compute_advantages
from mcrl.rollout.episodes import EpisodeBatch

INNER_ESTIMATORS = ("vpg", "lvc", "dice")


@dataclass(frozen=True)
class TaskTensors:
    """One phase's episodes of all tasks, on the learner's device.

    Observations are ``[T, H*E, obs_dim]`` with step index ``h*E + e``; ``log_probs`` are those
    of the policy that sampled the episodes; ``advantages`` are per task (normalised unless
    ``normalize_advantages`` is off); ``episode_returns`` ``[T, E]`` are the episodes'
    undiscounted returns.
    """

    observations: Tensor
    actions: Tensor
    log_probs: Tensor
    advantages: Tensor
    mask: Tensor
    episode_returns: Tensor
    horizon: int
    episodes: int

    @classmethod
    def from_batches(
        cls,
        batches: Sequence[EpisodeBatch],
        *,
        gamma: float,
        gae_lambda: float,
        baseline: str = "linear",
        normalize_advantages: bool = True,
        device: torch.device | str = "cpu",
    ) -> TaskTensors:
        def stack(arrays: list[np.ndarray], dtype: torch.dtype) -> Tensor:
            x = np.stack(arrays)  # [T, H, E, ...]
            return torch.as_tensor(
                x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:]),
                dtype=dtype,
                device=device,
            )

        action_dtype = torch.long if batches[0].actions.dtype.kind in "iu" else torch.float32
        return cls(
            observations=stack([b.observations for b in batches], torch.float32),
            actions=stack([b.actions for b in batches], action_dtype),
            log_probs=stack([b.log_probs for b in batches], torch.float32),
            advantages=stack(
                [
                    compute_advantages(
                        b, gamma, gae_lambda, baseline=baseline, normalized=normalize_advantages
                    )
                    for b in batches
                ],
                torch.float32,
            ),
            mask=stack([b.mask for b in batches], torch.float32),
            episode_returns=torch.as_tensor(
                np.stack([b.returns for b in batches]), dtype=torch.float32, device=device
            ),
            horizon=batches[0].horizon,
            episodes=batches[0].num_episodes,
        )

    @property
    def num_tasks(self) -> int:
        return self.observations.shape[0]

    def tasks(self, index: slice) -> TaskTensors:
        """The tasks in ``index``, keeping the task dimension."""
        return replace(
            self,
            observations=self.observations[index],
            actions=self.actions[index],
            log_probs=self.log_probs[index],
            advantages=self.advantages[index],
            mask=self.mask[index],
            episode_returns=self.episode_returns[index],
        )

    def first_episodes(self, count: int) -> TaskTensors:
        """Every task's first ``count`` episodes (a smaller batch with the same layout)."""

        def keep(x: Tensor) -> Tensor:
            per_step = x.reshape(x.shape[0], self.horizon, self.episodes, *x.shape[2:])
            return per_step[:, :, :count].reshape(x.shape[0], self.horizon * count, *x.shape[2:])

        fields = ("observations", "actions", "log_probs", "advantages", "mask")
        kept: dict[str, Any] = {f: keep(getattr(self, f)) for f in fields}
        return replace(
            self, **kept, episode_returns=self.episode_returns[:, :count], episodes=count
        )

    def episode_halves(self) -> tuple[TaskTensors, TaskTensors]:
        """The same data masked to the first and to the second half of the episodes."""
        if self.episodes < 2:
            raise ValueError("the split alignment estimator needs at least 2 episodes per task")
        episode = (
            torch.arange(self.horizon * self.episodes, device=self.mask.device) % self.episodes
        )
        first = (episode < self.episodes // 2).to(self.mask.dtype)
        return replace(self, mask=self.mask * first), replace(self, mask=self.mask * (1 - first))


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over the step dimension (the last), counting real steps only."""
    return (x * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def inner_loss(policy: MLPPolicy, params: Params, data: TaskTensors, estimator: str) -> Tensor:
    """The adaptation loss L_in of ``params`` on ``data``, one value per task."""
    return inner_loss_from_log_probs(
        policy.log_prob(params, data.observations, data.actions), data, estimator
    )


def inner_loss_from_log_probs(logp: Tensor, data: TaskTensors, estimator: str) -> Tensor:
    """L_in given the current policy's log-probabilities of the data's actions.

    All three estimators have the same gradient at the sampling policy; they differ in their
    second derivatives. Ratios are taken against the *sampling* log-probabilities (a constant),
    which equals stop-gradient of the current ones at the sampling parameters, so the loss is a
    well-defined function of the parameters (its meta-gradients can be checked by finite
    differences).

    - ``vpg``: −mean log π(a|s)·Â.
    - ``lvc``: −mean [π(a|s) / π_sampling(a|s)]·Â (ProMP's low-variance curvature).
    - ``dice``: DiCE's magic box with causal dependencies (Loaded DiCE with λ = 1):
      −mean [□(Σ_{t'≤t} ℓ_t') − □(Σ_{t'<t} ℓ_t')]·Â_t with ℓ the log-ratio to the sampling policy.
    """
    if estimator == "vpg":
        surrogate = logp * data.advantages
    elif estimator == "lvc":
        surrogate = torch.exp(logp - data.log_probs) * data.advantages
    elif estimator == "dice":
        log_ratio = (logp - data.log_probs) * data.mask
        shape = (*log_ratio.shape[:-1], data.horizon, data.episodes)
        through_t = torch.cumsum(log_ratio.reshape(shape), dim=-2).reshape(log_ratio.shape)
        before_t = through_t - log_ratio
        surrogate = (torch.exp(through_t) - torch.exp(before_t)) * data.advantages
    else:
        raise ValueError(
            f"inner_estimator must be one of {', '.join(INNER_ESTIMATORS)}; got {estimator!r}"
        )
    return -masked_mean(surrogate, data.mask)


def outer_loss(policy: MLPPolicy, adapted: Params, data: TaskTensors, clip_ratio: float) -> Tensor:
    """PPO's clipped surrogate of the adapted policies on their own post-adaptation episodes."""
    ratio = torch.exp(policy.log_prob(adapted, data.observations, data.actions) - data.log_probs)
    clipped = torch.clamp(ratio, 1 - clip_ratio, 1 + clip_ratio)
    return -masked_mean(
        torch.minimum(ratio * data.advantages, clipped * data.advantages), data.mask
    )


def emaml_loss(pre_log_probs: Tensor, pre: TaskTensors, post: TaskTensors) -> Tensor:
    """E-MAML's exploration term per task (Stadie et al. 2018, in ProMP's code's form):
    −R̃_i · mean_t log π(a_t|s_t) over task i's pre-adaptation steps, ``pre_log_probs`` being
    the log-probabilities of ``pre``'s actions under θ, and R̃_i task i's mean
    post-adaptation return standardised over the tasks (a constant). The pre-adaptation
    episodes of a task whose adaptation did better than the others' become more likely."""
    returns = post.episode_returns.mean(-1)
    standardised = (returns - returns.mean()) / (returns.std(correction=0) + 1e-8)
    return -standardised * masked_mean(pre_log_probs, pre.mask)


def surrogate_and_kl(
    policy: MLPPolicy, adapted: Params, data: TaskTensors, sampling: tuple[Tensor, ...]
) -> tuple[Tensor, Tensor]:
    """TRPO's terms per task: the unclipped surrogate −mean ratio·Â of the adapted policies on
    their post-adaptation episodes, and KL(π_sampling ‖ π_adapted) on those episodes' states."""
    distribution = policy.distribution(adapted, data.observations)
    ratio = torch.exp(policy.log_prob_of(distribution, data.actions) - data.log_probs)
    surrogate = -masked_mean(ratio * data.advantages, data.mask)
    return surrogate, kl_penalty(policy, sampling, distribution, data)


def kl_penalty(
    policy: MLPPolicy, old: tuple[Tensor, ...], new: tuple[Tensor, ...], data: TaskTensors
) -> Tensor:
    """Mean KL(π_old ‖ π_new) on the data's states, per task, from the two distributions there."""
    return masked_mean(policy.kl_between(old, new), data.mask)


def alignment_loss(grads: Tensor, self_similarity: Tensor | None = None) -> Tensor:
    """Σ_{i≠j} ‖g_i − g_j‖² for per-task gradients ``grads`` [n, d], in O(n·d).

    Uses Σ_{i≠j}‖g_i − g_j‖² = 2n·Σ‖g_i‖² − 2‖Σ g_i‖². ``self_similarity`` [n] replaces the
    ‖g_i‖² where they appear alone (``split`` estimator: ⟨g_i^A, g_i^B⟩ of two disjoint halves
    of a task's episodes, which is free of the noise variance that inflates ‖ĝ_i‖²); the
    cross-task terms ⟨g_i, g_j⟩ keep using the full gradients.
    """
    n = grads.shape[0]
    squared_norms = (grads * grads).sum(-1)
    total = grads.sum(0)
    cross = (total * total).sum() - squared_norms.sum()  # Σ_{i≠j} ⟨g_i, g_j⟩
    own = squared_norms if self_similarity is None else self_similarity
    return 2 * (n - 1) * own.sum() - 2 * cross


def affinity_matrix(grads: Tensor) -> Tensor:
    """D_ij = ‖g_i − g_j‖², the task-affinity map, [n, n]."""
    squared_norms = (grads * grads).sum(-1)
    d = squared_norms[:, None] + squared_norms[None, :] - 2 * grads @ grads.T
    d = d.clamp_min(0.0)
    return d.fill_diagonal_(0.0)
