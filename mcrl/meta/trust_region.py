"""TRPO's update for a list of parameters (Schulman et al. 2015), as MAML-TRPO uses it.

The search direction solves F·x = −g by conjugate gradient, with F·v a Hessian-vector product of
the mean KL (double backward, never the matrix itself); the step is scaled so that the quadratic
model of the KL equals ``max_kl``, then shrunk until the loss improves and the KL really is
below ``max_kl``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

BACKTRACK_RATIO = 0.8  # MAML-TRPO's line-search shrink factor


def flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def conjugate_gradient(
    matrix_vector: Callable[[Tensor], Tensor], b: Tensor, iterations: int, tolerance: float = 1e-10
) -> Tensor:
    """Approximately solve A·x = b for a symmetric positive-definite A given as ``A·v``."""
    x = torch.zeros_like(b)
    residual = b.clone()
    direction = b.clone()
    residual_norm = residual @ residual
    for _ in range(iterations):
        a_direction = matrix_vector(direction)
        alpha = residual_norm / (direction @ a_direction)
        x += alpha * direction
        residual -= alpha * a_direction
        new_norm = residual @ residual
        if new_norm < tolerance:
            break
        direction = residual + (new_norm / residual_norm) * direction
        residual_norm = new_norm
    return x


@dataclass(frozen=True)
class TrustRegionSettings:
    max_kl: float
    cg_iterations: int
    cg_damping: float
    line_search_steps: int


def trust_region_step(
    params: Sequence[Tensor],
    loss: Tensor,
    kl: Tensor,
    evaluate: Callable[[], tuple[float, float]],
    settings: TrustRegionSettings,
) -> dict[str, float]:
    """Update ``params`` in place with one TRPO step; returns what happened.

    ``loss`` and ``kl`` are scalars at the current parameters, with graphs (``kl`` twice
    differentiable); ``evaluate()`` recomputes (loss, kl) at the parameters' current values.
    If no step size passes the line search, the parameters are left unchanged.
    """
    params = list(params)
    gradient = flat(torch.autograd.grad(loss, params, retain_graph=True))
    kl_gradient = flat(torch.autograd.grad(kl, params, create_graph=True))

    def fisher_vector(v: Tensor) -> Tensor:
        hvp = torch.autograd.grad(kl_gradient @ v, params, retain_graph=True)
        return flat(hvp) + settings.cg_damping * v

    direction = conjugate_gradient(fisher_vector, -gradient, settings.cg_iterations)
    curvature = direction @ fisher_vector(direction)
    if not torch.isfinite(curvature) or curvature <= 0:
        return {"trpo_step_fraction": 0.0, "kl_outer": 0.0}
    full_step = direction * torch.sqrt(2 * settings.max_kl / curvature)
    old_values = [p.detach().clone() for p in params]
    old_loss = float(loss.detach())
    fraction = 1.0
    for _ in range(settings.line_search_steps):
        _assign(params, old_values, full_step * fraction)
        new_loss, new_kl = evaluate()
        if new_loss < old_loss and new_kl <= settings.max_kl:
            return {"trpo_step_fraction": fraction, "kl_outer": new_kl}
        fraction *= BACKTRACK_RATIO
    _assign(params, old_values, torch.zeros_like(full_step))
    return {"trpo_step_fraction": 0.0, "kl_outer": 0.0}


def _assign(params: list[Tensor], base: list[Tensor], step: Tensor) -> None:
    with torch.no_grad():
        offset = 0
        for p, b in zip(params, base, strict=True):
            p.copy_(b + step[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
