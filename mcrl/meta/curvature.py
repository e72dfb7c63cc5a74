"""The meta-curvature C: a learned preconditioner of the inner (adaptation) gradient.

Each kind maps a dict of gradients (one per policy parameter, optionally with a leading task
dimension) to a dict of preconditioned gradients of the same shapes:

- ``identity``: C(g) = g. Adaptation is plain MAML.
- ``diagonal``: C(g) = c ⊙ g, c initialised to 1 (Meta-SGD).
- ``kronecker``: C(G) = M_out · G · M_in for a weight matrix G [out, in], c ⊙ g for vectors
  (Park & Oliva 2019). All factors start at the identity, so at initialisation it is MAML.
  The full Kronecker product M_in ⊗ M_out is never built.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

import torch
from torch import Tensor, nn

CURVATURES = ("identity", "diagonal", "kronecker")


def _key(name: str) -> str:
    # nn.ParameterDict keys may not contain dots; policy parameter names do.
    return name.replace(".", "__")


class Curvature(nn.Module, abc.ABC):
    """Base class: ``curvature(grads) -> preconditioned grads``."""

    kind: str

    def __init__(self, shapes: Mapping[str, torch.Size]):
        super().__init__()
        self.shapes = {name: torch.Size(shape) for name, shape in shapes.items()}

    @abc.abstractmethod
    def forward(self, grads: Mapping[str, Tensor]) -> dict[str, Tensor]: ...

    def stats(self) -> dict[str, float]:
        """Summary numbers for the metrics: how far C has moved from the identity."""
        params = {name: p.detach() for name, p in self.named_parameters()}
        if not params:
            return {"curvature_rms_from_identity": 0.0, "curvature_mean_diagonal": 1.0}
        with torch.no_grad():
            deviations, diagonals = [], []
            for name, p in params.items():
                if name.startswith(("out_factors.", "in_factors.")):  # Kronecker factor matrices
                    deviations.append(
                        (p - torch.eye(p.shape[0], device=p.device)).norm() / p.numel() ** 0.5
                    )
                    diagonals.append(p.diagonal())
                else:  # element-wise scales
                    deviations.append((p - 1).norm() / p.numel() ** 0.5)
                    diagonals.append(p.flatten())
        return {
            "curvature_rms_from_identity": float(torch.stack(deviations).mean()),
            "curvature_mean_diagonal": float(torch.cat(diagonals).mean()),
        }


class IdentityCurvature(Curvature):
    kind = "identity"

    def forward(self, grads):
        return dict(grads)


class DiagonalCurvature(Curvature):
    kind = "diagonal"

    def __init__(self, shapes):
        super().__init__(shapes)
        self.scales = nn.ParameterDict(
            {_key(n): nn.Parameter(torch.ones(s)) for n, s in self.shapes.items()}
        )

    def forward(self, grads):
        return {name: self.scales[_key(name)] * g for name, g in grads.items()}


class KroneckerCurvature(Curvature):
    kind = "kronecker"

    def __init__(self, shapes):
        super().__init__(shapes)
        self.out_factors = nn.ParameterDict()
        self.in_factors = nn.ParameterDict()
        self.scales = nn.ParameterDict()
        for name, shape in self.shapes.items():
            if len(shape) == 2:
                self.out_factors[_key(name)] = nn.Parameter(torch.eye(shape[0]))
                self.in_factors[_key(name)] = nn.Parameter(torch.eye(shape[1]))
            else:
                self.scales[_key(name)] = nn.Parameter(torch.ones(shape))

    def forward(self, grads):
        out = {}
        for name, g in grads.items():
            key = _key(name)
            if key in self.out_factors:
                out[name] = self.out_factors[key] @ g @ self.in_factors[key]
            else:
                out[name] = self.scales[key] * g
        return out


def make_curvature(kind: str, params: Mapping[str, Tensor]) -> Curvature:
    """The curvature of ``kind`` for parameters shaped like ``params`` (θ's dict)."""
    classes = {
        "identity": IdentityCurvature,
        "diagonal": DiagonalCurvature,
        "kronecker": KroneckerCurvature,
    }
    if kind not in classes:
        raise ValueError(f"curvature must be one of {', '.join(CURVATURES)}; got {kind!r}")
    return classes[kind]({name: p.shape for name, p in params.items()})


def adapt(
    params: Mapping[str, Tensor], grads: Mapping[str, Tensor], curvature: Curvature, inner_lr: float
) -> dict[str, Tensor]:
    """One adaptation step θ' = θ − inner_lr · C(g)."""
    preconditioned = curvature(grads)
    return {name: params[name] - inner_lr * preconditioned[name] for name in params}
