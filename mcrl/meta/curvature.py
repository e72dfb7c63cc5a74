"""The meta-curvature C: a learned preconditioner of the inner (adaptation) gradient.

Each kind maps a dict of gradients (one per policy parameter, optionally with a leading task
dimension) to a dict of preconditioned gradients of the same shapes:

- ``identity``: C(g) = g. Adaptation is plain MAML.
- ``diagonal``: C(g) = c ⊙ g, c initialised to 1 (Meta-SGD).
- ``kronecker``: C(G) = M_out · G · M_in for a weight matrix G [out, in], c ⊙ g for vectors
  (Park & Oliva 2019). All factors start at the identity, so at initialisation it is MAML.
  The full Kronecker product M_in ⊗ M_out is never built. ``positive_definite`` parametrises
  each factor as M = L·Lᵀ + εI (L starts at √(1−ε)·I, so M starts at I): every adaptation
  step is then a descent direction, whatever the updates do to L.

Every kind can also learn one step size per inner step (``learn_step_sizes``, MAML++):
α_k = inner_lr · exp(s_k), s_k starting at 0; steps beyond the last learned one reuse it.
``per_step`` learns one curvature C_k per inner step the same way (:class:`PerStepCurvature`);
``curvature.at_step(k)`` is the one that preconditions step k.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import cast

import torch
from torch import Tensor, nn

CURVATURES = ("identity", "diagonal", "kronecker")


def _key(name: str) -> str:
    # nn.ParameterDict keys may not contain dots; policy parameter names do.
    return name.replace(".", "__")


class Curvature(nn.Module, abc.ABC):
    """Base class: ``curvature(grads) -> preconditioned grads``."""

    kind: str

    def __init__(
        self, shapes: Mapping[str, torch.Size], *, steps: int = 1, learn_step_sizes: bool = False
    ):
        super().__init__()
        self.shapes = {name: torch.Size(shape) for name, shape in shapes.items()}
        if learn_step_sizes:
            self.log_step_scales = nn.Parameter(torch.zeros(steps))

    @abc.abstractmethod
    def forward(self, grads: Mapping[str, Tensor]) -> dict[str, Tensor]: ...

    def at_step(self, step: int) -> Curvature:
        """The curvature that preconditions inner step ``step``: this one, at every step."""
        return self

    def step_scale(self, step: int) -> Tensor | float:
        """The learned multiplier of inner step ``step`` (1 when step sizes are not learned);
        steps past the last learned one reuse it."""
        scales = getattr(self, "log_step_scales", None)
        if scales is None:
            return 1.0
        return torch.exp(scales[min(step, len(scales) - 1)])

    def factors(self) -> dict[str, Tensor]:
        """The matrices C multiplies gradients by, by parameter name (Kronecker factors)."""
        return {}

    def factor_sizes(self) -> dict[str, int]:
        """n for each parameter that is (the root of) an n×n matrix factor, by parameter name.
        Adam moves every entry of such a factor by about its step size; when the entries move
        together, the factor's spectrum moves n times as far."""
        return {}

    def vector_scales(self) -> list[Tensor]:
        """The per-entry scales c that multiply gradients (diagonal C, and Kronecker C's
        vectors)."""
        scales = getattr(self, "scales", None)
        return [] if scales is None else list(scales.values())

    def stats(self) -> dict[str, float]:
        """Summary numbers for the metrics: how far C has moved from the identity, and the
        extremes of its spectrum (a negative eigenvalue turns that direction of an adaptation
        step into ascent; a large singular value makes the step overshoot)."""
        with torch.no_grad():
            matrices = list(self.factors().values())
            scales = [c.detach() for c in self.vector_scales()]
            deviations = [
                (m - torch.eye(m.shape[0], device=m.device)).norm() / m.numel() ** 0.5
                for m in matrices
            ] + [(c - 1).norm() / c.numel() ** 0.5 for c in scales]
            diagonals = [m.diagonal() for m in matrices] + [c.flatten() for c in scales]
            # A diagonal C's entries are its eigenvalues and (in absolute value) singular values.
            # On the CPU: small matrices, and a non-symmetric eigensolver on every device.
            on_cpu = [m.float().cpu() for m in matrices]
            eigenvalues = [torch.linalg.eigvals(m).real for m in on_cpu]
            singular_values = [torch.linalg.svdvals(m) for m in on_cpu]
            eigenvalues += [c.flatten().cpu() for c in scales]
            singular_values += [c.abs().flatten().cpu() for c in scales]
            stats = {
                "curvature_rms_from_identity": float(torch.stack(deviations).mean())
                if deviations
                else 0.0,
                "curvature_mean_diagonal": float(torch.cat(diagonals).mean()) if diagonals else 1.0,
                "curvature_min_eigenvalue": float(torch.cat(eigenvalues).min())
                if eigenvalues
                else 1.0,
                "curvature_max_singular_value": float(torch.cat(singular_values).max())
                if singular_values
                else 1.0,
            }
            scales_per_step = getattr(self, "log_step_scales", None)
            if scales_per_step is not None:
                for k, s in enumerate(torch.exp(scales_per_step.detach()).tolist()):
                    stats[f"inner_lr_scale_{k + 1}"] = s
        return stats


class IdentityCurvature(Curvature):
    kind = "identity"

    def forward(self, grads):
        return dict(grads)


class DiagonalCurvature(Curvature):
    kind = "diagonal"

    def __init__(self, shapes, **kwargs):
        super().__init__(shapes, **kwargs)
        self.scales = nn.ParameterDict(
            {_key(n): nn.Parameter(torch.ones(s)) for n, s in self.shapes.items()}
        )

    def forward(self, grads):
        return {name: self.scales[_key(name)] * g for name, g in grads.items()}


class KroneckerCurvature(Curvature):
    kind = "kronecker"

    def __init__(self, shapes, *, positive_definite: bool = False, epsilon: float = 0.01, **kwargs):
        super().__init__(shapes, **kwargs)
        self.positive_definite = positive_definite
        self.epsilon = epsilon
        # Free factors M are parameters themselves (``out_factors``, ``in_factors``); positive-
        # definite ones are M = L·Lᵀ + εI with L the parameter (``out_roots``, ``in_roots``), so
        # a checkpoint's keys say which it holds.
        self._side = "roots" if positive_definite else "factors"
        start = (1 - epsilon) ** 0.5 if positive_definite else 1.0
        self.add_module(f"out_{self._side}", nn.ParameterDict())
        self.add_module(f"in_{self._side}", nn.ParameterDict())
        self.scales = nn.ParameterDict()
        for name, shape in self.shapes.items():
            if len(shape) == 2:
                self.out_params[_key(name)] = nn.Parameter(start * torch.eye(shape[0]))
                self.in_params[_key(name)] = nn.Parameter(start * torch.eye(shape[1]))
            else:
                self.scales[_key(name)] = nn.Parameter(torch.ones(shape))

    @property
    def out_params(self) -> nn.ParameterDict:
        return getattr(self, f"out_{self._side}")

    @property
    def in_params(self) -> nn.ParameterDict:
        return getattr(self, f"in_{self._side}")

    def _matrix(self, p: Tensor) -> Tensor:
        if not self.positive_definite:
            return p
        return p @ p.mT + self.epsilon * torch.eye(p.shape[0], dtype=p.dtype, device=p.device)

    def factor_sizes(self):
        return {
            f"{side}_{self._side}.{key}": p.shape[0]
            for side, params in (("out", self.out_params), ("in", self.in_params))
            for key, p in params.items()
        }

    def factors(self):
        out = {}
        for key in self.out_params:
            out[f"out.{key}"] = self._matrix(self.out_params[key])
            out[f"in.{key}"] = self._matrix(self.in_params[key])
        return out

    def forward(self, grads):
        out = {}
        for name, g in grads.items():
            key = _key(name)
            if key in self.out_params:
                m_out = self._matrix(self.out_params[key])
                m_in = self._matrix(self.in_params[key])
                out[name] = m_out @ g @ m_in
            else:
                out[name] = self.scales[key] * g
        return out


class PerStepCurvature(Curvature):
    """One curvature C_k of one kind per inner step, each starting at the identity (so this
    too is MAML at initialisation); steps beyond the last learned one reuse it. The learned
    step sizes, if any, are this module's, as for a single C."""

    def __init__(self, shapes, per_step: list[Curvature], **kwargs):
        super().__init__(shapes, **kwargs)
        self.kind = per_step[0].kind
        self.per_step = nn.ModuleList(per_step)

    def forward(self, grads):
        raise TypeError(
            "a per-step curvature preconditions one inner step at a time: "
            "use curvature.at_step(k)(grads)"
        )

    def curvatures(self) -> list[Curvature]:
        """C_1, C_2, ...: one per trained inner step."""
        return [cast(Curvature, curvature) for curvature in self.per_step]

    def at_step(self, step):
        curvatures = self.curvatures()
        return curvatures[min(step, len(curvatures) - 1)]

    def factors(self):
        return {
            f"step{k + 1}.{key}": m
            for k, curvature in enumerate(self.curvatures())
            for key, m in curvature.factors().items()
        }

    def factor_sizes(self):
        return {
            f"per_step.{k}.{name}": n
            for k, curvature in enumerate(self.curvatures())
            for name, n in curvature.factor_sizes().items()
        }

    def vector_scales(self):
        return [c for curvature in self.curvatures() for c in curvature.vector_scales()]


def make_curvature(
    kind: str,
    params: Mapping[str, Tensor],
    *,
    steps: int = 1,
    learn_step_sizes: bool = False,
    positive_definite: bool = False,
    per_step: bool = False,
) -> Curvature:
    """The curvature of ``kind`` for parameters shaped like ``params`` (θ's dict); with
    ``learn_step_sizes``, one learned step size per inner step (``steps`` of them); with
    ``per_step``, one curvature per inner step; ``positive_definite`` applies to Kronecker
    factors."""
    classes = {
        "identity": IdentityCurvature,
        "diagonal": DiagonalCurvature,
        "kronecker": KroneckerCurvature,
    }
    if kind not in classes:
        raise ValueError(f"curvature must be one of {', '.join(CURVATURES)}; got {kind!r}")
    shapes = {name: p.shape for name, p in params.items()}
    options = {"positive_definite": positive_definite} if kind == "kronecker" else {}
    step_sizes = {"steps": steps, "learn_step_sizes": learn_step_sizes}
    if not per_step:
        return classes[kind](shapes, **options, **step_sizes)
    curvatures = [classes[kind](shapes, **options) for _ in range(steps)]
    return PerStepCurvature(shapes, curvatures, **step_sizes)


def adapt(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    curvature: Curvature,
    inner_lr: float,
    step: int = 0,
) -> dict[str, Tensor]:
    """Inner step ``step``: θ' = θ − inner_lr · scale_step · C_step(g)."""
    preconditioned = curvature.at_step(step)(grads)
    lr = inner_lr * curvature.step_scale(step)
    return {name: params[name] - lr * preconditioned[name] for name in params}
