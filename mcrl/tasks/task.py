"""Task records and the boxes of parameters that task families sample them from.

A :class:`Task` is a small frozen record (family name, split, index, parameters) that crosses
process boundaries freely. A :class:`BoxTaskSpace` gives a family its train, test and ood
splits over ranges of parameters, and checks parameters that a user gives by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mcrl.common.validation import check_positive_int

SPLITS = ("train", "test", "ood")

ParamValue = float | tuple[float, ...] | str


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Task:
    """One member of a task family: picklable, hashable, JSON-friendly.

    ``index`` is the task's position in the meta-batch it was sampled for; together with the run
    seed and the iteration it determines the randomness of the task's episodes.
    """

    family: str
    split: str
    index: int
    params: Mapping[str, ParamValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.params, Mapping):
            raise ValueError(f"task parameters must be a mapping, got {self.params!r}")
        frozen = {str(k): self.freeze(str(k), v) for k, v in self.params.items()}
        object.__setattr__(self, "params", frozen)

    @staticmethod
    def freeze(name: str, value: Any) -> ParamValue:
        """A number, or a flat list of numbers, as a float or a tuple of floats; a name (such
        as a Meta-World task type) as a string."""
        if isinstance(value, str) and value:
            return value
        if isinstance(value, np.ndarray) and value.ndim <= 1:
            value = value.tolist()
        if _is_number(value):
            return float(value)
        if isinstance(value, (list, tuple)) and value and all(_is_number(v) for v in value):
            return tuple(float(v) for v in value)
        raise ValueError(
            f"task parameter {name!r} must be a number, a non-empty list of numbers or a name, "
            f"got {value!r}"
        )

    def __hash__(self) -> int:
        return hash((self.family, self.split, self.index, tuple(sorted(self.params.items()))))

    def to_dict(self) -> dict[str, Any]:
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}
        return {"family": self.family, "split": self.split, "index": self.index, "params": params}


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return split


OOD_SIDES = ("both", "above", "below", "none")
DOMAINS = ("real", "positive", "non_negative")
DOMAIN_TEXT = {"real": "finite", "positive": "finite and > 0", "non_negative": "finite and >= 0"}


@dataclass(frozen=True)
class Range:
    """The training range of one task parameter.

    ``log`` samples uniformly in log space (for positive scales such as masses); ``size`` > 1
    makes the parameter a vector whose coordinates each lie in the range (a 2D goal, say).
    ``ood`` says on which sides the out-of-distribution split may leave the range: ``both``,
    ``above``, ``below`` or ``none`` (an angle that wraps around, a radius that cannot go below 0).
    ``domain`` is where the family can simulate a value at all: ``real``, ``positive`` (masses,
    lengths; implied by ``log``) or ``non_negative`` (a radius, a damping). Parameters given by
    hand outside it are refused, and so is an ood split that would leave it.
    """

    low: float
    high: float
    log: bool = False
    size: int = 1
    ood: str = "both"
    domain: str = "real"

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"a range needs low < high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scaled range needs low > 0, got low={self.low}")
        check_positive_int("size", self.size)
        if self.ood not in OOD_SIDES:
            raise ValueError(f"ood must be one of {', '.join(OOD_SIDES)}; got {self.ood!r}")
        if self.domain not in DOMAINS:
            raise ValueError(f"domain must be one of {', '.join(DOMAINS)}; got {self.domain!r}")
        if self.log and self.domain == "real":
            object.__setattr__(self, "domain", "positive")  # a log-uniform value is positive
        if not self.in_domain(np.array([self.low])).all():
            raise ValueError(
                f"its values must be {DOMAIN_TEXT[self.domain]}, but the range starts at {self.low}"
            )

    def in_domain(self, values: np.ndarray) -> np.ndarray:
        """Which of ``values`` the family can simulate (finite, and of the right sign)."""
        finite = np.isfinite(values)
        if self.domain == "positive":
            return finite & (values > 0)
        if self.domain == "non_negative":
            return finite & (values >= 0)
        return finite

    def check_value(self, name: str, value: ParamValue) -> None:
        """A one-line error naming ``name`` unless ``value`` has this range's size and domain."""
        shown = list(value) if isinstance(value, tuple) else value
        if isinstance(value, str):
            raise ValueError(f"task parameter {name!r} must be a number, got {value!r}")
        if self.size == 1 and isinstance(value, tuple):
            raise ValueError(f"task parameter {name!r} must be one number, got {shown}")
        if self.size > 1 and (not isinstance(value, tuple) or len(value) != self.size):
            raise ValueError(
                f"task parameter {name!r} must be a list of {self.size} numbers, got {shown}"
            )
        if not self.in_domain(np.atleast_1d(np.asarray(value, dtype=float))).all():
            raise ValueError(
                f"task parameter {name!r} must be {DOMAIN_TEXT[self.domain]}, got {shown}"
            )

    def _to_unit(self, x: np.ndarray) -> np.ndarray:
        if self.log:
            return (np.log(x) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (x - self.low) / (self.high - self.low)

    def _from_unit(self, u: np.ndarray) -> np.ndarray:
        if self.log:
            return np.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)

    def ood_bounds(self, margin: float) -> tuple[float, float]:
        """The ood range in unit coordinates (the training range is [0, 1])."""
        low = -margin if self.ood in ("both", "below") else 0.0
        high = 1 + margin if self.ood in ("both", "above") else 1.0
        return low, high

    def describe(self, margin: float) -> tuple[str, str]:
        """Text for the training range and for the out-of-distribution range."""
        lo, hi = self._from_unit(np.array(self.ood_bounds(margin)))
        dims = f"^{self.size}" if self.size > 1 else ""
        scale = " log" if self.log else ""
        inner = f"[{self.low:.3g}, {self.high:.3g}]{dims}{scale}"
        outer = (
            inner + " (not varied out of range)"
            if self.ood == "none"
            else f"[{lo:.3g}, {hi:.3g}]{dims}{scale} outside train box"
        )
        return inner, outer


class BoxTaskSpace:
    """Train, test and ood splits over a box of task parameters.

    Every coordinate of the box is cut into ``cells`` equal slices (in log space for log
    ranges). The held-out *test* cells are those whose slice indices sum to a multiple of
    ``test_every`` (default ``cells``): a diagonal lattice, so test tasks are spread over the
    whole box while never coinciding with a training task. *ood* tasks come from the box widened
    by ``ood_margin`` (a fraction of each range) on the sides each range allows, with at least
    one coordinate outside the box.
    """

    def __init__(
        self,
        ranges: Mapping[str, Range],
        *,
        cells: int = 4,
        ood_margin: float = 0.5,
        test_every: int | None = None,
    ):
        if not ranges:
            raise ValueError("a task space needs at least one parameter range")
        self.ranges = dict(ranges)
        self.cells = check_positive_int("cells", cells)
        if cells < 2:
            raise ValueError(f"cells must be >= 2 so that a test region exists, got {cells}")
        self.test_every = check_positive_int(
            "test_every", cells if test_every is None else test_every
        )
        if self.test_every < 2:
            raise ValueError(
                f"test_every must be >= 2 so that a training region exists, got {test_every}"
            )
        if ood_margin <= 0:
            raise ValueError(f"ood_margin must be > 0, got {ood_margin}")
        self.ood_margin = float(ood_margin)
        self._dim = sum(r.size for r in self.ranges.values())
        bounds = [
            r.ood_bounds(self.ood_margin) for r in self.ranges.values() for _ in range(r.size)
        ]
        self._ood_low = np.array([b[0] for b in bounds])
        self._ood_high = np.array([b[1] for b in bounds])
        for name, rng in self.ranges.items():
            lowest = rng._from_unit(np.array([rng.ood_bounds(self.ood_margin)[0]]))
            if not rng.in_domain(lowest).all():
                raise ValueError(
                    f"the ood split of {name!r} reaches {float(lowest[0]):.3g}, but its values "
                    f"must be {DOMAIN_TEXT[rng.domain]}; use log=True, ood='above' or a smaller "
                    "ood_margin"
                )

    def _unit_to_params(self, u: np.ndarray) -> dict[str, ParamValue]:
        params: dict[str, ParamValue] = {}
        start = 0
        for name, rng in self.ranges.items():
            values = rng._from_unit(u[start : start + rng.size])
            params[name] = float(values[0]) if rng.size == 1 else tuple(float(v) for v in values)
            start += rng.size
        return params

    def _params_to_unit(self, params: Mapping[str, ParamValue]) -> np.ndarray:
        parts = []
        for name, rng in self.ranges.items():
            parts.append(rng._to_unit(np.atleast_1d(np.asarray(params[name], dtype=float))))
        return np.concatenate(parts)

    def _is_test_cell(self, u: np.ndarray) -> bool:
        cell = np.clip(np.floor(u * self.cells), 0, self.cells - 1).astype(int)
        return int(cell.sum()) % self.test_every == 0

    @property
    def has_ood(self) -> bool:
        return bool(np.any(self._ood_low < 0) or np.any(self._ood_high > 1))

    def check_params(self, params: Mapping[str, Any]) -> None:
        """One-line errors for unknown or missing names, wrong sizes, non-numbers, NaN or
        infinity, and values outside a parameter's domain."""
        unknown = sorted(set(params) - set(self.ranges))
        if unknown:
            raise ValueError(f"unknown task parameter(s) {unknown}; valid: {sorted(self.ranges)}")
        missing = sorted(set(self.ranges) - set(params))
        if missing:
            raise ValueError(f"missing task parameter(s) {missing}; valid: {sorted(self.ranges)}")
        for name, rng in self.ranges.items():
            rng.check_value(name, Task.freeze(name, params[name]))

    def split_of(self, params: Mapping[str, ParamValue]) -> str | None:
        """Which split can produce these parameters (None: none of them)."""
        self.check_params(params)
        u = self._params_to_unit(params)
        if np.all((u >= 0) & (u <= 1)):
            return "test" if self._is_test_cell(u) else "train"
        if np.all((u >= self._ood_low) & (u <= self._ood_high)):
            return "ood"
        return None

    def sample(self, rng: np.random.Generator, split: str) -> dict[str, ParamValue]:
        if split == "ood" and not self.has_ood:
            raise ValueError(
                "this family has no ood split: none of its ranges may leave the training range"
            )
        # Rejection sampling: train accepts 1 - 1/test_every of the box, test 1/test_every.
        while True:
            if split == "ood":
                u = rng.uniform(self._ood_low, self._ood_high)
                if np.any((u < 0) | (u > 1)):
                    return self._unit_to_params(u)
            else:
                u = rng.uniform(0.0, 1.0, size=self._dim)
                if self._is_test_cell(u) == (split == "test"):
                    return self._unit_to_params(u)

    def describe(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {s: {} for s in SPLITS}
        for name, rng in self.ranges.items():
            inner, outer = rng.describe(self.ood_margin)
            out["train"][name] = f"{inner} minus test cells"
            out["test"][name] = f"test cells of {inner}"
            out["ood"][name] = outer
        return out
