"""The Meta-Curvature learner: holds θ and C, adapts, and takes meta-steps.

One meta-iteration, given the pre-adaptation episodes of each inner step and the
post-adaptation episodes (see design §2-§3):

- adaptation: θ'_i = θ − inner_lr · C(∇θ L_in_i(θ)), repeated ``inner_steps`` times;
- θ-step (C frozen): minimise mean_i L_out_i(θ'_i) + inner_kl_weight·KL + alignment_weight·𝒞(θ);
- C-step (θ frozen): minimise mean_i L_out_i(θ'_i) with its own optimiser (``curvature_lr``);
  or, with ``schedule: joint``, one optimiser over both on the θ-step's loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from mcrl.curvature import adapt, make_curvature
from mcrl.episodes import EpisodeBatch
from mcrl.losses import (
    TaskTensors,
    affinity_matrix,
    alignment_loss,
    inner_loss,
    kl_penalty,
    outer_loss,
)
from mcrl.policies import MLPPolicy, Params, params_to_numpy

if TYPE_CHECKING:
    from mcrl.config import TrainConfig


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite."""

    def __init__(self, term: str, value: float):
        super().__init__(f"loss term {term!r} became {value}")
        self.term = term


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def flatten_per_task(grads: Mapping[str, Tensor]) -> Tensor:
    """Per-task gradients ``{name: [T, ...]}`` as one ``[T, d]`` matrix."""
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1)


class MetaObjective(nn.Module):
    """The meta-objective's terms for one iteration's data, as a dict of named scalars."""

    def __init__(self, policy: MLPPolicy, curvature: nn.Module, config: TrainConfig):
        super().__init__()
        self.policy = policy
        self.curvature = curvature
        self.config = config

    def inner_grads(
        self, params: Params, data: TaskTensors, *, create_graph: bool
    ) -> tuple[dict[str, Tensor], Tensor]:
        """∇ L_in of every task at its own parameters ``params`` [T, ...]; and the losses [T].

        Batched: one loss for all tasks and one backward (task i's loss only depends on row i).
        Loop: one backward per task (kept for comparison, ``learner.task_batching: false``).
        """
        estimator = self.config.inner_estimator
        names = list(params)
        if self.config.learner.task_batching:
            losses = inner_loss(self.policy, params, data, estimator)
            grads = torch.autograd.grad(
                losses.sum(), [params[n] for n in names], create_graph=create_graph
            )
            return dict(zip(names, grads, strict=True)), losses
        per_task, losses = [], []
        for i in range(data.num_tasks):
            task_params = {n: params[n][i] for n in names}
            loss = inner_loss(self.policy, task_params, data.task(i), estimator)
            per_task.append(
                torch.autograd.grad(loss, list(task_params.values()), create_graph=create_graph)
            )
            losses.append(loss)
        return {n: torch.stack([g[k] for g in per_task]) for k, n in enumerate(names)}, torch.stack(
            losses
        )

    def adapt(
        self,
        theta: Params,
        pre: Sequence[TaskTensors],
        *,
        second_order: bool,
        alignment: bool = False,
        through_theta: bool = True,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        """Adapted parameters [T, ...] after ``len(pre)`` steps, the first step's gradients, and
        the first step's inner losses.

        ``second_order``: differentiate through the inner gradients (not ``first_order``).
        ``alignment``: keep the first gradients differentiable in θ for the alignment loss.
        ``through_theta``: False treats θ as a constant (the C-step, or adapting for sampling).
        """
        num_tasks = pre[0].num_tasks
        if not through_theta:
            theta = {n: p.detach().requires_grad_() for n, p in theta.items()}
        params = {n: p.expand(num_tasks, *p.shape) for n, p in theta.items()}
        first_grads: dict[str, Tensor] = {}
        first_losses = torch.zeros(())
        for step, data in enumerate(pre):
            # The gradient's own graph is only needed where something differentiates through it:
            # θ at second order, C through later steps, or the alignment loss.
            graph = (second_order and (step > 0 or through_theta)) or (alignment and step == 0)
            grads, losses = self.inner_grads(params, data, create_graph=graph)
            if step == 0:
                first_grads, first_losses = grads, losses
            if not second_order:
                grads = {n: g.detach() for n, g in grads.items()}
            params = adapt(params, grads, self.curvature, self.config.inner_lr)
        return params, first_grads, first_losses

    def forward(
        self,
        theta: Params,
        pre: Sequence[TaskTensors],
        post: TaskTensors,
        old_distribution: tuple[Tensor, ...],
        *,
        alignment: bool,
        through_theta: bool = True,
    ) -> dict[str, Tensor]:
        cfg = self.config
        adapted, first_grads, inner_losses = self.adapt(
            theta,
            pre,
            second_order=not cfg.first_order,
            alignment=alignment,
            through_theta=through_theta,
        )
        terms = {
            "loss_inner": inner_losses.mean(),
            "loss_outer": outer_loss(self.policy, adapted, post, cfg.clip_ratio).mean(),
            "kl_inner": kl_penalty(self.policy, theta, old_distribution, pre[0]).mean(),
        }
        if alignment:
            grads = flatten_per_task(first_grads)
            self_similarity = None
            if cfg.alignment_estimator == "split":
                params = {n: p.expand(pre[0].num_tasks, *p.shape) for n, p in theta.items()}
                half_a, half_b = (
                    flatten_per_task(self.inner_grads(params, half, create_graph=True)[0])
                    for half in pre[0].episode_halves()
                )
                self_similarity = (half_a * half_b).sum(-1)
            terms["loss_alignment"] = alignment_loss(grads, self_similarity)
        return terms


class MetaLearner:
    """θ (the policy's parameters), the curvature C, and their optimisers."""

    def __init__(self, policy: MLPPolicy, config: TrainConfig):
        self.config = config
        self.device = resolve_device(config.learner.device)
        self.policy = policy.to(self.device)
        self.curvature = make_curvature(config.curvature, self.policy.params()).to(self.device)
        self.objective = MetaObjective(self.policy, self.curvature, config)
        theta = list(self.policy.parameters())
        curvature = list(self.curvature.parameters())
        if config.schedule == "joint":
            groups = [{"params": theta, "lr": config.meta_lr}]
            if curvature:
                groups.append({"params": curvature, "lr": config.curvature_lr})
            self.optimizers = {"joint": torch.optim.Adam(groups)}
        else:
            self.optimizers = {"theta": torch.optim.Adam(theta, lr=config.meta_lr)}
            if curvature:
                self.optimizers["curvature"] = torch.optim.Adam(curvature, lr=config.curvature_lr)

    # -- data and parameters -------------------------------------------------------------------
    def prepare(self, batches: Sequence[EpisodeBatch]) -> TaskTensors:
        """Advantages and tensors on the learner's device for one sampling phase."""
        return TaskTensors.from_batches(
            batches, gamma=self.config.gamma, gae_lambda=self.config.gae_lambda, device=self.device
        )

    def theta_numpy(self) -> dict[str, np.ndarray]:
        return params_to_numpy(self.policy.params())

    def adapted_params(self, pre: Sequence[TaskTensors]) -> list[dict[str, np.ndarray]]:
        """Each task's adapted parameters after ``len(pre)`` steps, for sampling."""
        adapted, _, _ = self.objective.adapt(
            self.policy.params(), pre, second_order=False, through_theta=False
        )
        return [
            {n: p[i].detach().cpu().numpy() for n, p in adapted.items()}
            for i in range(pre[0].num_tasks)
        ]

    def task_affinity(self, pre: TaskTensors) -> np.ndarray:
        """D_ij = ‖g_i − g_j‖² between the tasks' inner gradients at θ (design §3)."""
        num_tasks = pre.num_tasks
        params = {
            n: p.detach().expand(num_tasks, *p.shape).requires_grad_()
            for n, p in self.policy.params().items()
        }
        grads, _ = self.objective.inner_grads(params, pre, create_graph=False)
        return affinity_matrix(flatten_per_task(grads)).cpu().numpy()

    # -- the meta-update -------------------------------------------------------------------------
    def meta_step(self, pre: Sequence[TaskTensors], post: TaskTensors) -> dict[str, float]:
        """``outer_epochs`` θ/C updates on one iteration's episodes; the mean of each term."""
        cfg = self.config
        use_alignment = cfg.alignment_weight > 0
        theta = self.policy.params()
        with torch.no_grad():  # a snapshot: the optimisers update θ in place
            old_distribution = tuple(
                t.clone() for t in self.policy.distribution(theta, pre[0].observations)
            )
        totals: dict[str, float] = {}
        for _ in range(cfg.outer_epochs):
            terms = self.objective(theta, pre, post, old_distribution, alignment=use_alignment)
            loss = terms["loss_outer"] + cfg.inner_kl_weight * terms["kl_inner"]
            if use_alignment:
                loss = loss + cfg.alignment_weight * terms["loss_alignment"]
            check_finite(terms)
            if cfg.schedule == "joint":
                self._step("joint", loss)
            else:
                self._step("theta", loss, inputs=list(theta.values()))
                if "curvature" in self.optimizers:
                    curvature_terms = self.objective(
                        theta, pre, post, old_distribution, alignment=False, through_theta=False
                    )
                    check_finite({"loss_outer (C-step)": curvature_terms["loss_outer"]})
                    self._step("curvature", curvature_terms["loss_outer"])
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / cfg.outer_epochs
        return totals | self.curvature.stats()

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
        self.policy.load_state_dict(state["policy"])
        self.curvature.load_state_dict(state["curvature"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])


def check_finite(terms: Mapping[str, Tensor]) -> None:
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            raise NonFiniteLossError(name, float(value.detach().float().mean()))
