"""The Meta-Curvature learner: holds θ and C, adapts, and takes meta-steps.

One meta-iteration, given the pre-adaptation episodes of each inner step and the
post-adaptation episodes (see design §2-§3):

- adaptation: θ'_i = θ − inner_lr · C(∇θ L_in_i(θ)), repeated ``inner_steps`` times;
- θ-step (C frozen): minimise mean_i L_out_i(θ'_i) + inner_kl_weight·KL + alignment_weight·𝒞(θ)
  (+ emaml_weight · E-MAML's exploration term);
- C-step (θ frozen): minimise mean_i L_out_i(θ'_i) with its own optimiser (``curvature_lr``);
  or, with ``schedule: joint``, one optimiser over both on the θ-step's loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from mcrl.common.memory import keep_freed_memory
from mcrl.common.policies import MLPPolicy, Params, params_to_numpy
from mcrl.meta.curvature import Curvature, adapt, make_curvature
from mcrl.meta.losses import (
    TaskTensors,
    affinity_matrix,
    alignment_loss,
    emaml_loss,
    inner_loss_from_log_probs,
    kl_penalty,
    outer_loss,
    surrogate_and_kl,
)
from mcrl.meta.trust_region import TrustRegionSettings, trust_region_step
from mcrl.rollout.episodes import EpisodeBatch

if TYPE_CHECKING:
    from mcrl.common.config import TrainConfig


class NonFiniteLossError(RuntimeError):
    """A loss term (or, with ``what``, another quantity of the meta-step) became NaN or infinite."""

    def __init__(self, term: str, value: float, what: str = "loss term"):
        super().__init__(f"{what} {term!r} became {value}")
        self.term = term


def resolve_device(name: str) -> torch.device:
    """The learner's device (``auto``: CUDA when present). A name torch does not know, or a CUDA
    device this machine lacks, is a one-line error naming the config key."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"config key 'learner.device' must be auto, cpu, cuda or cuda:N, got {name!r}"
        ) from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        raise ValueError(
            f"config key 'learner.device' is {name!r}, but torch sees {count} CUDA device(s)"
        )
    return device


def curvature_for(config: TrainConfig, params: Params) -> Curvature:
    """C as ``config`` describes it, for parameters shaped like ``params``."""
    return make_curvature(
        config.curvature,
        params,
        steps=config.inner_steps,
        learn_step_sizes=config.learn_inner_lr,
        positive_definite=config.curvature_parametrization == "pd",
        per_step=config.curvature_per_step,
    )


def curvature_groups(curvature: Curvature, config: TrainConfig) -> list[dict]:
    """The C-step's Adam parameter groups: one per parameter of C, with ``curvature_lr``
    divided by n for an n×n Kronecker factor under ``curvature_lr_scaling: factor_size``."""
    sizes = curvature.factor_sizes() if config.curvature_lr_scaling == "factor_size" else {}
    return [
        {"params": [p], "lr": config.curvature_lr / sizes.get(name, 1)}
        for name, p in curvature.named_parameters()
    ]


def flatten_per_task(grads: Mapping[str, Tensor]) -> Tensor:
    """Per-task gradients ``{name: [T, ...]}`` as one ``[T, d]`` matrix."""
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1)


@dataclass(frozen=True)
class InnerGradients:
    """One adaptation step's ingredients for every task: ∇L_in at the task's parameters, the
    losses, and the action distribution at the step's states (the KL penalty reuses it)."""

    grads: dict[str, Tensor]
    losses: Tensor
    distribution: tuple[Tensor, ...]

    def detached(self) -> InnerGradients:
        return InnerGradients(
            {n: g.detach() for n, g in self.grads.items()},
            self.losses.detach(),
            tuple(d.detach() for d in self.distribution),
        )


def per_task(theta: Params, num_tasks: int) -> dict[str, Tensor]:
    """θ viewed as ``num_tasks`` identical parameter sets (no copy); gradients with respect to
    the view are per task."""
    return {n: p.expand(num_tasks, *p.shape) for n, p in theta.items()}


class MetaObjective(nn.Module):
    """The meta-objective's terms for one iteration's data, as a dict of named scalars."""

    def __init__(self, policy: MLPPolicy, curvature: Curvature, config: TrainConfig):
        super().__init__()
        self.policy = policy
        self.curvature = curvature
        self.config = config

    def inner_grads(
        self, params: Params, data: TaskTensors, *, create_graph: bool
    ) -> InnerGradients:
        """∇L_in of every task at its own parameters ``params`` [T, ...].

        Batched: one loss for all tasks and one backward (task i's loss only depends on row i).
        Loop: one backward per task (``learner.task_batching: false``, slower on CPU here).
        """
        if self.config.learner.task_batching:
            return self._inner_grads(params, data, create_graph)
        steps = [
            self._inner_grads(
                {n: p[i : i + 1] for n, p in params.items()},
                data.tasks(slice(i, i + 1)),
                create_graph,
            )
            for i in range(data.num_tasks)
        ]
        return InnerGradients(
            {n: torch.cat([s.grads[n] for s in steps]) for n in params},
            torch.cat([s.losses for s in steps]),
            tuple(torch.cat(parts) for parts in zip(*(s.distribution for s in steps), strict=True)),
        )

    def _inner_grads(self, params: Params, data: TaskTensors, create_graph: bool) -> InnerGradients:
        """One backward for all tasks in ``data``."""
        names = list(params)
        distribution = self.policy.distribution(params, data.observations)
        logp = self.policy.log_prob_of(distribution, data.actions)
        losses = inner_loss_from_log_probs(logp, data, self.config.inner_estimator)
        # retain_graph: the distribution (and the losses) stay differentiable for the KL term
        # even when the gradient itself is not (first_order).
        # A parameter that does not depend on anything being differentiated (θ's σ with
        # adapt_log_std off, in the C-step) has a zero gradient here.
        varying = [n for n in names if params[n].requires_grad]
        grads = dict(
            zip(
                varying,
                torch.autograd.grad(
                    losses.sum(),
                    [params[n] for n in varying],
                    create_graph=create_graph,
                    retain_graph=True,
                ),
                strict=True,
            )
        )
        return InnerGradients(
            {n: grads[n] if n in grads else torch.zeros_like(params[n]) for n in names},
            losses,
            distribution,
        )

    def first_step(self, theta: Params, data: TaskTensors, *, create_graph: bool) -> InnerGradients:
        """The inner gradients at θ on the pre-adaptation episodes."""
        return self.inner_grads(per_task(theta, data.num_tasks), data, create_graph=create_graph)

    def adapt_steps(
        self,
        theta: Params,
        pre: Sequence[TaskTensors],
        first: InnerGradients,
        *,
        differentiable: bool = True,
    ) -> list[dict[str, Tensor]]:
        """Each task's parameters [T, ...] after each of ``len(pre)`` adaptation steps from θ.

        ``differentiable=False`` (sampling, evaluation) gives the same values without a graph
        from one step to the next: each step's parameters are new leaves, so a later step's
        inner gradient is a plain backward instead of one that records a double-backward graph.
        """
        second_order = differentiable and not self.config.first_order
        params = per_task(theta, pre[0].num_tasks)
        step, after = first, []
        for k, data in enumerate(pre):
            if k > 0:
                step = self.inner_grads(params, data, create_graph=second_order)
            grads = step.grads if second_order else step.detached().grads
            with torch.set_grad_enabled(differentiable):
                stepped = adapt(params, grads, self.curvature, self.config.inner_lr, step=k)
            if not self.config.adapt_log_std and "log_std" in params:
                stepped["log_std"] = params["log_std"]
            if not differentiable:
                stepped = {n: p.detach().requires_grad_() for n, p in stepped.items()}
            params = stepped
            after.append(params)
        return after

    def adapt(
        self,
        theta: Params,
        pre: Sequence[TaskTensors],
        first: InnerGradients,
        *,
        differentiable: bool = True,
    ) -> dict[str, Tensor]:
        """Each task's parameters [T, ...] after ``len(pre)`` adaptation steps from θ."""
        return self.adapt_steps(theta, pre, first, differentiable=differentiable)[-1]

    def outer(
        self, theta: Params, pre: Sequence[TaskTensors], post: TaskTensors, first: InnerGradients
    ) -> Tensor:
        """Mean post-adaptation loss L_out over tasks; with ``multi_step_loss``, the mean over
        every adaptation step k of the loss of the parameters after k steps on the episodes
        they sampled (``pre[k]`` before the last step, ``post`` after it)."""
        after = self.adapt_steps(theta, pre, first)
        if not self.config.multi_step_loss:
            return outer_loss(self.policy, after[-1], post, self.config.clip_ratio).mean()
        sampled_by = [*pre[1:], post]  # the episodes the parameters after step k+1 sampled
        losses = [
            outer_loss(self.policy, params, data, self.config.clip_ratio).mean()
            for params, data in zip(after, sampled_by, strict=True)
        ]
        return torch.stack(losses).mean()

    def forward(
        self,
        theta: Params,
        pre: Sequence[TaskTensors],
        post: TaskTensors,
        old_distribution: tuple[Tensor, ...],
        first: InnerGradients,
        *,
        alignment: bool,
        sampling: tuple[Tensor, ...] | None = None,
    ) -> dict[str, Tensor]:
        """The θ-step's terms; ``first`` must be :meth:`first_step` at this θ (with its graph
        where θ is differentiated through it). Given the distribution of the policies that
        sampled ``post`` (``sampling``), ``loss_outer`` is TRPO's unclipped surrogate and
        ``kl_outer`` the KL from those policies to the adapted ones. With ``emaml_weight`` > 0,
        ``loss_emaml`` is E-MAML's exploration term on ``pre[0]`` (θ's own episodes)."""
        terms = {
            "loss_inner": first.losses.mean(),
            "kl_inner": kl_penalty(
                self.policy, old_distribution, first.distribution, pre[0]
            ).mean(),
        }
        if sampling is None:
            terms["loss_outer"] = self.outer(theta, pre, post, first)
        else:
            adapted = self.adapt(theta, pre, first)
            surrogate, kl = surrogate_and_kl(self.policy, adapted, post, sampling)
            terms |= {"loss_outer": surrogate.mean(), "kl_outer": kl.mean()}
        if alignment:
            self_similarity = None
            if self.config.alignment_estimator == "split":
                half_a, half_b = (
                    flatten_per_task(self.first_step(theta, half, create_graph=True).grads)
                    for half in pre[0].episode_halves()
                )
                self_similarity = (half_a * half_b).sum(-1)
            terms["loss_alignment"] = alignment_loss(flatten_per_task(first.grads), self_similarity)
        if self.config.emaml_weight > 0:
            pre_log_probs = self.policy.log_prob_of(first.distribution, pre[0].actions)
            terms["loss_emaml"] = emaml_loss(pre_log_probs, pre[0], post).mean()
        return terms


def with_weighted_terms(loss: Tensor, terms: Mapping[str, Tensor], config: TrainConfig) -> Tensor:
    """The θ-step's ``loss`` plus β·𝒞 and E-MAML's term, for those of them in ``terms``."""
    if "loss_alignment" in terms:
        loss = loss + config.alignment_weight * terms["loss_alignment"]
    if "loss_emaml" in terms:
        loss = loss + config.emaml_weight * terms["loss_emaml"]
    return loss


class MetaLearner:
    """θ (the policy's parameters), the curvature C, and their optimisers."""

    def __init__(self, policy: MLPPolicy, config: TrainConfig):
        self.config = config
        self.device = resolve_device(config.learner.device)
        if config.learner.keep_freed_memory:
            keep_freed_memory()
        self.policy = policy.to(self.device)
        self.curvature = curvature_for(config, self.policy.params()).to(self.device)
        self.objective = MetaObjective(self.policy, self.curvature, config)
        theta = {"params": list(self.policy.parameters()), "lr": config.meta_lr}
        curvature = curvature_groups(self.curvature, config)
        if config.schedule == "joint":
            self.optimizers = {"joint": torch.optim.Adam([theta, *curvature])}
        else:
            self.optimizers = {"theta": torch.optim.Adam([theta])}
            if curvature:
                self.optimizers["curvature"] = torch.optim.Adam(curvature)

    # -- data and parameters -------------------------------------------------------------------
    def prepare(self, batches: Sequence[EpisodeBatch]) -> TaskTensors:
        """Advantages and tensors on the learner's device for one sampling phase."""
        cfg = self.config
        return TaskTensors.from_batches(
            batches,
            gamma=cfg.gamma,
            gae_lambda=cfg.gae_lambda,
            baseline=cfg.baseline,
            normalize_advantages=cfg.normalize_advantages,
            device=self.device,
        )

    def theta_numpy(self) -> dict[str, np.ndarray]:
        return params_to_numpy(self.policy.params())

    def adapted_params(self, pre: Sequence[TaskTensors]) -> list[dict[str, np.ndarray]]:
        """Each task's adapted parameters after ``len(pre)`` steps, for sampling."""
        theta = {n: p.detach().requires_grad_() for n, p in self.policy.params().items()}
        first = self.objective.first_step(theta, pre[0], create_graph=False)
        adapted = self.objective.adapt(theta, pre, first, differentiable=False)
        # Episodes sampled with non-finite parameters would fail later with a less clear error.
        check_finite(adapted, what=f"adapted parameter after {len(pre)} inner step(s)")
        return [
            {n: p[i].detach().cpu().numpy() for n, p in adapted.items()}
            for i in range(pre[0].num_tasks)
        ]

    def task_affinity(self, pre: TaskTensors) -> np.ndarray:
        """D_ij = ‖g_i − g_j‖² between the tasks' inner gradients at θ (design §3)."""
        theta = {n: p.detach().requires_grad_() for n, p in self.policy.params().items()}
        grads = self.objective.first_step(theta, pre, create_graph=False).grads
        return affinity_matrix(flatten_per_task(grads)).cpu().numpy()

    # -- the meta-update -------------------------------------------------------------------------
    def meta_step(self, pre: Sequence[TaskTensors], post: TaskTensors) -> dict[str, float]:
        """``outer_epochs`` θ/C updates on one iteration's episodes; the mean of each term.

        The first inner gradient at the current θ is computed once per θ update: the C-step
        (θ frozen) uses it detached, and the next θ-step uses it with its graph.
        """
        cfg = self.config
        use_alignment = cfg.alignment_weight > 0
        needs_graph = not cfg.first_order or use_alignment
        theta = self.policy.params()
        first = self.objective.first_step(theta, pre[0], create_graph=needs_graph)
        with torch.no_grad():  # a snapshot: the optimisers update θ in place
            old_distribution = tuple(d.detach().clone() for d in first.distribution)
        sampling = None
        if cfg.outer == "trpo":  # the adapted policies at this θ are the ones that sampled post
            adapted = self.objective.adapt(theta, pre, first)
            sampling = tuple(
                d.detach() for d in self.policy.distribution(adapted, post.observations)
            )
        totals: dict[str, float] = {}
        for epoch in range(cfg.outer_epochs):
            last = epoch == cfg.outer_epochs - 1
            if sampling is not None:
                terms = self._trpo_step(theta, pre, post, old_distribution, sampling, first)
            else:
                terms = self.objective(
                    theta, pre, post, old_distribution, first, alignment=use_alignment
                )
                check_finite(terms)
                loss = with_weighted_terms(
                    terms["loss_outer"] + cfg.inner_kl_weight * terms["kl_inner"], terms, cfg
                )
                if cfg.schedule == "joint":
                    self._step("joint", loss)
                else:
                    self._step("theta", loss, inputs=list(theta.values()))
            has_c_step = "curvature" in self.optimizers
            if not last or has_c_step:
                first = self.objective.first_step(
                    theta, pre[0], create_graph=needs_graph and not last
                )
            if has_c_step:
                frozen = {n: p.detach() for n, p in theta.items()}
                curvature_loss = self.objective.outer(frozen, pre, post, first.detached())
                check_finite({"loss_outer (C-step)": curvature_loss})
                self._step("curvature", curvature_loss)
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / cfg.outer_epochs
        return totals | self.curvature.stats()

    def _trpo_step(
        self,
        theta: Params,
        pre: Sequence[TaskTensors],
        post: TaskTensors,
        old_distribution: tuple[Tensor, ...],
        sampling: tuple[Tensor, ...],
        first: InnerGradients,
    ) -> dict[str, Tensor]:
        """One TRPO θ-step on the surrogate (plus β·𝒞 and E-MAML's term), KL measured through
        the adaptation."""
        cfg = self.config
        alignment = cfg.alignment_weight > 0

        def terms_at(params: Params, first: InnerGradients) -> tuple[dict[str, Tensor], Tensor]:
            terms = self.objective(
                params, pre, post, old_distribution, first, alignment=alignment, sampling=sampling
            )
            check_finite(terms)
            return terms, with_weighted_terms(terms["loss_outer"], terms, cfg)

        def evaluate() -> tuple[float, float]:
            current = {n: p.detach().requires_grad_() for n, p in theta.items()}
            new_first = self.objective.first_step(current, pre[0], create_graph=False)
            terms, loss = terms_at(current, new_first)
            return float(loss.detach()), float(terms["kl_outer"].detach())

        terms, loss = terms_at(theta, first)
        settings = TrustRegionSettings(
            cfg.max_kl, cfg.cg_iterations, cfg.cg_damping, cfg.line_search_steps
        )
        fisher_kl = terms["kl_outer"]
        fisher_episodes = max(1, round(cfg.fisher_episode_fraction * post.episodes))
        if fisher_episodes < post.episodes:
            fisher_kl = self._kl_on_fewer_episodes(theta, pre, post, fisher_episodes)
        outcome = trust_region_step(list(theta.values()), loss, fisher_kl, evaluate, settings)
        return terms | {name: torch.tensor(value) for name, value in outcome.items()}

    def _kl_on_fewer_episodes(
        self, theta: Params, pre: Sequence[TaskTensors], post: TaskTensors, episodes: int
    ) -> Tensor:
        """A KL whose Hessian at θ approximates TRPO's from every task's first ``episodes``
        episodes: the policies adapted on those, against themselves at this θ (so the KL and
        its gradient are 0 here, and its Hessian is a Fisher matrix)."""
        few_pre = [data.first_episodes(episodes) for data in pre]
        first = self.objective.first_step(
            theta, few_pre[0], create_graph=not self.config.first_order
        )
        adapted = self.objective.adapt(theta, few_pre, first)
        few_post = post.first_episodes(episodes)
        distribution = self.policy.distribution(adapted, few_post.observations)
        reference = tuple(d.detach() for d in distribution)
        return kl_penalty(self.policy, reference, distribution, few_post).mean()

    def _step(self, name: str, loss: Tensor, inputs: list[Tensor] | None = None) -> None:
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=inputs)
        optimizer.step()

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "curvature": self.curvature.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Load θ, C and the optimisers' moments; the step sizes stay the config's (a resumed
        run may change them), and so does the grouping of C's parameters (one group per
        parameter since ``curvature_lr_scaling``; one group before)."""
        self.policy.load_state_dict(state["policy"])
        self.curvature.load_state_dict(state["curvature"])
        for name, opt in self.optimizers.items():
            saved = state["optimizers"][name]
            groups = opt.state_dict()["param_groups"]
            saved_count = sum(len(group["params"]) for group in saved["param_groups"])
            count = sum(len(group["params"]) for group in groups)
            # The saved groups are replaced by this optimiser's below, which would hide a
            # different parameter count from torch's own check.
            if saved_count != count:
                raise ValueError(
                    f"the checkpoint's {name} optimiser holds {saved_count} parameters, "
                    f"this learner's {count}"
                )
            # Both number the parameters 0..count-1 in the same order, whatever the groups.
            opt.load_state_dict({"state": saved["state"], "param_groups": groups})


def check_finite(terms: Mapping[str, Tensor], what: str = "loss term") -> None:
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            raise NonFiniteLossError(name, float(value.detach().float().mean()), what)
