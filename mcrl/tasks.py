"""Tasks, task families and the family registry.

A :class:`Task` is a small frozen record (family name, split, index, parameters) that crosses
process boundaries freely. A :class:`TaskFamily` knows how its tasks are distributed in each
split, builds a Gymnasium env for a task, and re-targets an existing env to another task.
"""

from __future__ import annotations

import abc
import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import gymnasium as gym

    from mcrl.vector_env import TaskVectorEnv

SPLITS = ("train", "test", "ood")

ParamValue = float | tuple[float, ...]


def _freeze_value(name: str, value: Any) -> ParamValue:
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(float(v) for v in np.asarray(value).ravel())
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"task parameter {name!r} must be a float or a list of floats, got {value!r}")


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
        frozen = {str(k): _freeze_value(str(k), v) for k, v in dict(self.params).items()}
        object.__setattr__(self, "params", frozen)

    def __hash__(self) -> int:
        return hash((self.family, self.split, self.index, tuple(sorted(self.params.items()))))

    def to_dict(self) -> dict[str, Any]:
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}
        return {"family": self.family, "split": self.split, "index": self.index, "params": params}


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return split


def check_non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


OOD_SIDES = ("both", "above", "below", "none")


@dataclass(frozen=True)
class Range:
    """The training range of one task parameter.

    ``log`` samples uniformly in log space (for positive scales such as masses); ``size`` > 1
    makes the parameter a vector whose coordinates each lie in the range (a 2D goal, say).
    ``ood`` says on which sides the out-of-distribution split may leave the range: ``both``,
    ``above``, ``below`` or ``none`` (an angle that wraps around, a radius that cannot go below 0).
    """

    low: float
    high: float
    log: bool = False
    size: int = 1
    ood: str = "both"

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"a range needs low < high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scaled range needs low > 0, got low={self.low}")
        check_positive_int("size", self.size)
        if self.ood not in OOD_SIDES:
            raise ValueError(f"ood must be one of {', '.join(OOD_SIDES)}; got {self.ood!r}")

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
            if name not in params:
                raise ValueError(f"task parameters lack {name!r}; expected {sorted(self.ranges)}")
            parts.append(rng._to_unit(np.atleast_1d(np.asarray(params[name], dtype=float))))
        return np.concatenate(parts)

    def _is_test_cell(self, u: np.ndarray) -> bool:
        cell = np.clip(np.floor(u * self.cells), 0, self.cells - 1).astype(int)
        return int(cell.sum()) % self.test_every == 0

    @property
    def has_ood(self) -> bool:
        return bool(np.any(self._ood_low < 0) or np.any(self._ood_high > 1))

    def split_of(self, params: Mapping[str, ParamValue]) -> str | None:
        """Which split can produce these parameters (None: none of them)."""
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


class TaskFamily(abc.ABC):
    """A family of related environments that differ in goals or dynamics.

    Subclasses set ``name`` and ``default_horizon``, give a :class:`BoxTaskSpace` as ``space``
    (or override :meth:`sample_params`, :meth:`split_of` and :meth:`describe`), and implement
    :meth:`make_env` and :meth:`set_task`. :meth:`make_vector_env` may be overridden with a
    natively vectorised implementation; the default steps one Gymnasium env per episode.
    """

    name: str = "TaskFamily"
    default_horizon: int = 100
    space: BoxTaskSpace | None = None
    held_out_test: bool = True
    """False for a family whose test tasks cannot differ from its training tasks (two-task
    benchmarks such as HalfCheetahDir); every other family holds its test tasks out."""

    def __init__(self, horizon: int | None = None):
        self.horizon = check_positive_int(
            "horizon", self.default_horizon if horizon is None else horizon
        )

    # -- task distribution -------------------------------------------------------------------
    def sample_tasks(self, n: int, *, split: str = "train", seed: int | None = None) -> list[Task]:
        """``n`` tasks of ``split``, indexed 0..n-1; the same seed gives the same tasks."""
        check_positive_int("n", n)
        check_split(split)
        rng = np.random.default_rng(seed)
        return [Task(self.name, split, i, self.sample_params(rng, split)) for i in range(n)]

    def sample_params(self, rng: np.random.Generator, split: str) -> dict[str, ParamValue]:
        return self._space().sample(rng, split)

    def split_of(self, params: Mapping[str, ParamValue]) -> str | None:
        """The split that can produce ``params``, or None when no split can."""
        return self._space().split_of(params)

    def describe(self) -> dict[str, dict[str, str]]:
        """For each split, a text per parameter describing its range."""
        return self._space().describe()

    def _space(self) -> BoxTaskSpace:
        if self.space is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no `space`; override sample_params, split_of and describe"
            )
        return self.space

    def check_task(self, task: Task) -> Task:
        if not isinstance(task, Task):
            raise ValueError(f"expected a Task, got {type(task).__name__}")
        if task.family != self.name:
            raise ValueError(f"task belongs to family {task.family!r}, not {self.name!r}")
        return task

    def task(self, params: Mapping[str, Any], *, split: str = "test", index: int = 0) -> Task:
        """A task of this family with explicit parameters (for adapting to one chosen env)."""
        expected = set(self.describe()["train"])
        unknown = set(params) - expected
        if unknown:
            raise ValueError(
                f"unknown task parameter(s) {sorted(unknown)}; {self.name} takes {sorted(expected)}"
            )
        missing = expected - set(params)
        if missing:
            raise ValueError(f"missing task parameter(s) {sorted(missing)} for {self.name}")
        return Task(self.name, check_split(split), index, params)

    # -- environments ------------------------------------------------------------------------
    @abc.abstractmethod
    def make_env(self, task: Task) -> gym.Env:
        """A Gymnasium env for ``task`` (time-limited to the family's horizon)."""

    @abc.abstractmethod
    def set_task(self, env: gym.Env, task: Task) -> None:
        """Re-target ``env`` (built by :meth:`make_env`) to ``task`` without rebuilding it."""

    @property
    def has_native_vector_env(self) -> bool:
        """Whether the family overrides :meth:`make_vector_env` with its own vectorised env."""
        return type(self).make_vector_env is not TaskFamily.make_vector_env

    def make_vector_env(self, tasks: Sequence[Task]) -> TaskVectorEnv:
        """Envs for a batch of episodes, one task each, stepped together."""
        from mcrl.vector_env import SerialTaskVectorEnv

        return SerialTaskVectorEnv(self, tasks)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(horizon={self.horizon})"


# -- registry ----------------------------------------------------------------------------------
FamilyFactory = Callable[..., TaskFamily]
_REGISTRY: dict[str, FamilyFactory] = {}
_BUILTINS_LOADED = False


def register_family(name: str, factory: FamilyFactory, *, overwrite: bool = False) -> None:
    """Make ``factory`` (a TaskFamily subclass or any callable returning one) known as ``name``."""
    if not callable(factory):
        raise ValueError(f"factory for family {name!r} must be callable, got {factory!r}")
    if name in _REGISTRY and not overwrite and _REGISTRY[name] is not factory:
        raise ValueError(
            f"family {name!r} is already registered; pass overwrite=True to replace it"
        )
    _REGISTRY[name] = factory


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("mcrl_envs")  # registers the shipped families


def list_families() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _import_factory(spec: str) -> FamilyFactory:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"cannot import module {module_name!r} for family {spec!r}: {exc}"
        ) from exc
    factory = getattr(module, attr, None)
    if factory is None:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r} (family {spec!r})")
    return factory


def make_family(name: str, **kwargs: Any) -> TaskFamily:
    """Build a registered family by name, or one given as ``"module:Attribute"``."""
    _load_builtins()
    if name in _REGISTRY:
        factory = _REGISTRY[name]
    elif ":" in name:
        factory = _import_factory(name)
    else:
        raise ValueError(
            f"unknown family {name!r}; known families: {', '.join(sorted(_REGISTRY))} "
            "(or give 'module:Class' for your own)"
        )
    family = factory(**kwargs)
    if not isinstance(family, TaskFamily):
        raise ValueError(
            f"family {name!r} factory returned {type(family).__name__}, not a TaskFamily"
        )
    return family
