"""A sweep file and the trials it stands for.

A sweep is one training config (``base``) run under every combination of ``grid`` values and
``search`` samples (a *configuration*), once per seed (a *trial*)::

    base: navigation2d.yaml          # relative to the sweep file
    set: {iterations: 100}           # overrides for every trial (or a list of key=value)
    grid: {curvature: [identity, kronecker]}
    seeds: [0, 1, 2]
    search: {inner_lr: loguniform(0.01, 0.3)}
    samples: 4                       # search draws per grid point
    metric: eval_return_1            # what a scheduler compares
    mode: max
    scheduler: asha

Search draws are made here, once, from ``search_seed``, and stored in the sweep directory, so
that a resumed sweep runs the same configurations.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mcrl.common.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    from_dict,
    read_yaml_mapping,
    to_dict,
)

DISTRIBUTIONS = ("uniform", "loguniform", "randint")
SCHEDULERS = ("none", "asha")


@dataclass(frozen=True)
class Distribution:
    """A search space for one numeric key: ``uniform(low, high)``, ``loguniform(low, high)``
    (uniform in log space) or ``randint(low, high)`` (integers, ``high`` excluded)."""

    kind: str
    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float | int:
        if self.kind == "randint":
            return int(rng.integers(int(self.low), int(self.high)))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def __str__(self) -> str:
        return f"{self.kind}({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class Trial:
    """One training run of the sweep: a configuration with one seed."""

    configuration: str
    """Directory name of the configuration: its index and the values it sets."""
    assignments: dict[str, Any]
    """The grid values and search draws of the configuration (dotted config keys)."""
    seed: int
    config: dict[str, Any]
    """The full training config of this trial, as ``config.yaml`` would hold it."""

    @property
    def name(self) -> str:
        return f"{self.configuration}/seed{self.seed}"


@dataclass
class SweepSpec:
    """A parsed, checked sweep file."""

    path: Path
    base_config: dict[str, Any]
    """The base training config file's keys, read once."""
    overrides: list[str]
    grid: dict[str, list[Any]]
    seeds: list[int]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    search: dict[str, Distribution] = field(default_factory=dict)
    samples: int = 1
    search_seed: int = 0
    metric: str = "eval_return_1"
    mode: str = "max"
    scheduler: str = "none"
    max_failures: int = 1
    max_concurrent: int | None = None
    evaluate: dict[str, Any] = field(default_factory=dict)

    def trials(self) -> list[Trial]:
        """Every trial, configurations in grid order, seeds innermost."""
        grid_points = [
            dict(zip(self.grid, values, strict=True))
            for values in itertools.product(*self.grid.values())
        ]
        rng = np.random.default_rng(self.search_seed)
        configurations = []
        for variant in self.variants or [None]:
            named = {} if variant is None else {"variant": variant}
            for point in grid_points:
                for _ in range(self.samples if self.search else 1):
                    draws = {key: space.sample(rng) for key, space in self.search.items()}
                    configurations.append(named | point | draws)
        trials = []
        for index, assignments in enumerate(configurations):
            name = f"{index:03d}" + "".join(
                f"_{_slug(key)}={_slug(_short(value))}" if key != "variant" else f"_{_slug(value)}"
                for key, value in assignments.items()
            )
            variant_overrides = self.variants.get(assignments.get("variant", ""), {})
            for seed in self.seeds:
                sets = [_override(key, value) for key, value in variant_overrides.items()]
                sets += [_override(k, v) for k, v in assignments.items() if k != "variant"]
                config = _build(self, [*self.overrides, *sets, f"seed={seed}"], where=name)
                trials.append(Trial(name[:120], assignments, seed, to_dict(_as_trial(config))))
        return trials


def _as_trial(config: TrainConfig) -> TrainConfig:
    """The config with what the trial uses made explicit, so that it can ask Ray Tune for
    exactly that: the learner's CPUs (``learner.num_threads``, default 1) and GPUs
    (``learner.num_gpus``; the learner then runs in the trial's own process), and either
    in-process sampling on those CPUs or ``sampler.workers`` Ray workers (default 1) of one CPU
    each. ``sampler.backend: auto`` means Ray workers only where ``sampler.workers`` is set: a
    sweep spreads over the cluster by its trials."""
    cpus = config.learner.num_threads or 1
    sampler = config.sampler
    backend = sampler.backend
    if backend == "auto":
        backend = "ray" if sampler.workers else "local"
    sampler = dataclasses.replace(
        sampler,
        backend=backend,
        address=None,  # a trial runs inside the sweep's Ray
        threads=(sampler.threads or cpus) if backend == "local" else None,
        workers=(sampler.workers or 1) if backend == "ray" else None,
    )
    learner = dataclasses.replace(config.learner, num_threads=cpus, placement="driver")
    return dataclasses.replace(config, sampler=sampler, learner=learner)


def trial_resources(config: dict[str, Any]) -> list[dict[str, float]]:
    """Ray Tune placement-group bundles of a trial's config (see :func:`_as_trial`): the trial's
    process first, then one CPU bundle per Ray rollout worker, which Tune schedules inside the
    trial's placement group."""
    learner, sampler = config["learner"], config["sampler"]
    process = {"CPU": float(max(learner["num_threads"], sampler["threads"] or 0))}
    if learner["num_gpus"]:
        process["GPU"] = float(learner["num_gpus"])
    workers = sampler["workers"] if sampler["backend"] == "ray" else 0
    return [process, *({"CPU": 1.0} for _ in range(workers))]


def _override(key: str, value: Any) -> str:
    """``key=value`` as ``--set`` takes it (JSON is YAML's flow style)."""
    return f"{key}={json.dumps(value)}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _build(spec: SweepSpec, overrides: list[str], where: str) -> TrainConfig:
    try:
        return from_dict(TrainConfig, apply_overrides(spec.base_config, overrides))
    except ConfigError as exc:
        raise ConfigError(f"sweep file {str(spec.path)!r}, configuration {where}: {exc}") from None


# -- parsing ---------------------------------------------------------------------------------
KEYS = {
    "base": "the training config file (YAML), relative to the sweep file",
    "set": "overrides for every trial: a mapping or a list of key=value",
    "variants": "name -> overrides: named settings, each combined with every grid point",
    "grid": "config key -> list of values; every combination is a configuration",
    "seeds": "list of run seeds; each configuration runs once per seed",
    "search": "config key -> uniform(a, b), loguniform(a, b) or randint(a, b)",
    "samples": "search draws per grid point",
    "search_seed": "seed of the search draws",
    "metric": "what a scheduler compares: return_pre, return_post or eval_return_K",
    "mode": "max or min",
    "scheduler": "asha or none",
    "max_failures": "retries of a failed trial, each from its last checkpoint",
    "max_concurrent": "trials running at once (default: as many as the cluster fits)",
    "evaluate": "final held-out evaluation: {splits: [test, ood], tasks: N, steps: K}",
}


def load_sweep(path: str | Path) -> SweepSpec:
    """Parse and check a sweep file; every trial's config is built, so a bad key or value is
    reported now, naming the sweep file, before anything runs."""
    path = Path(path)
    data = read_yaml_mapping(path, "sweep file")
    where = f"sweep file {str(path)!r}"
    unknown = [key for key in data if key not in KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(KEYS)}")
    if "base" not in data or not isinstance(data["base"], str):
        raise ConfigError(f"{where} needs 'base': {KEYS['base']}")
    base = (path.parent / data["base"]).resolve()
    if not base.is_file():
        raise FileNotFoundError(f"{where}: base config {str(base)!r} does not exist")
    spec = SweepSpec(
        path=path,
        base_config=read_yaml_mapping(base, "base config"),
        overrides=_overrides(where, data.get("set", {})),
        grid=_grid(where, data.get("grid", {})),
        variants=_variants(where, data.get("variants", {})),
        seeds=_int_list(where, "seeds", data.get("seeds", [0])),
        search=_search(where, data.get("search", {})),
        samples=_positive_int(where, "samples", data.get("samples", 1)),
        search_seed=_non_negative_int(where, "search_seed", data.get("search_seed", 0)),
        metric=_choice(where, "metric", data.get("metric", "eval_return_1"), None),
        mode=_choice(where, "mode", data.get("mode", "max"), ("max", "min")),
        scheduler=_choice(where, "scheduler", str(data.get("scheduler", "none")), SCHEDULERS),
        max_failures=_non_negative_int(where, "max_failures", data.get("max_failures", 1)),
        max_concurrent=(
            _positive_int(where, "max_concurrent", data["max_concurrent"])
            if data.get("max_concurrent") is not None
            else None
        ),
        evaluate=_evaluate(where, data.get("evaluate", {})),
    )
    overlap = set(spec.grid) & set(spec.search)
    if overlap:
        raise ConfigError(f"{where}: key {sorted(overlap)[0]!r} is in both grid and search")
    if "samples" in data and not spec.search:
        raise ConfigError(f"{where}: 'samples' needs a 'search' to draw from")
    for key, space in spec.search.items():
        _check_numeric(where, key, space)
    trials = spec.trials()
    _check_metric(where, spec, trials)
    return spec


def _overrides(where: str, value: Any) -> list[str]:
    if isinstance(value, dict):
        return [_override(key, v) for key, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value):
        return list(value)
    raise ConfigError(f"{where}: 'set' must be a mapping or a list of key=value, got {value!r}")


def _grid(where: str, value: Any) -> dict[str, list[Any]]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: 'grid' must map config keys to lists of values")
    for key, values in value.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"{where}: grid key {key!r} must have a non-empty list of values, got {values!r}"
            )
    return {str(k): v for k, v in value.items()}


def _variants(where: str, value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not all(
        isinstance(name, str) and isinstance(sets, dict) for name, sets in value.items()
    ):
        raise ConfigError(
            f"{where}: 'variants' must map names to mappings of config overrides, got {value!r}"
        )
    return value


def _int_list(where: str, key: str, value: Any) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        or len(set(value)) != len(value)
    ):
        raise ConfigError(
            f"{where}: {key!r} must be a non-empty list of distinct non-negative integers, got {value!r}"
        )
    return value


def _positive_int(where: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: {key!r} must be a positive integer, got {value!r}")
    return value


def _non_negative_int(where: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: {key!r} must be a non-negative integer, got {value!r}")
    return value


def _choice(where: str, key: str, value: Any, valid: tuple[str, ...] | None) -> str:
    if not isinstance(value, str) or (valid is not None and value not in valid):
        expected = " or ".join(valid) if valid else "a string"
        raise ConfigError(f"{where}: {key!r} must be {expected}, got {value!r}")
    return value


DISTRIBUTION_PATTERN = re.compile(r"\s*(\w+)\s*\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)\s*")


def _search(where: str, value: Any) -> dict[str, Distribution]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: 'search' must map config keys to distributions")
    spaces = {}
    for key, text in value.items():
        bad = ConfigError(
            f"{where}: search key {key!r} must be uniform(a, b), loguniform(a, b) or "
            f"randint(a, b) with numbers a < b, got {text!r}"
        )
        if "(" in str(text) and ")" not in str(text):
            raise ConfigError(f"{str(bad)}; inside a {{flow: mapping}} quote it: '{text}, ...)'")
        match = DISTRIBUTION_PATTERN.fullmatch(str(text))
        if not match or match[1] not in DISTRIBUTIONS:
            raise bad
        try:
            low, high = float(match[2]), float(match[3])
        except ValueError:
            raise bad from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise bad
        if match[1] == "loguniform" and low <= 0:
            raise ConfigError(
                f"{where}: search key {key!r}: loguniform needs 0 < a < b, got {text!r}"
            )
        if match[1] == "randint" and not (low.is_integer() and high.is_integer()):
            raise ConfigError(
                f"{where}: search key {key!r}: randint needs whole numbers a < b, got {text!r}"
            )
        spaces[str(key)] = Distribution(match[1], low, high)
    return spaces


def _check_numeric(where: str, key: str, space: Distribution) -> None:
    """A search space is only for an int or float config key (``randint`` for an int one)."""
    cls: Any = TrainConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if not dataclasses.is_dataclass(cls) or part not in hints:
            raise ConfigError(f"{where}: search key {key!r} is not a config key")
        cls = hints[part]
        if depth < len(parts) - 1 and not dataclasses.is_dataclass(cls):
            raise ConfigError(f"{where}: search key {key!r} is not a config key")
    numeric = {t for t in typing.get_args(cls) or (cls,) if t in (int, float)}
    if not numeric:
        raise ConfigError(
            f"{where}: search key {key!r} is not a number; put its values in 'grid' instead"
        )
    if numeric == {int} and space.kind != "randint":
        raise ConfigError(f"{where}: search key {key!r} is an integer; use randint(a, b)")


def _evaluate(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: 'evaluate' must be a mapping: {KEYS['evaluate']}")
    valid = {"splits", "tasks", "steps", "episodes"}
    unknown = [k for k in value if k not in valid]
    if unknown:
        raise ConfigError(
            f"{where}: unknown evaluate key {unknown[0]!r}; valid: {', '.join(sorted(valid))}"
        )
    splits = value.get("splits", ["test"])
    if not isinstance(splits, list) or not splits or not set(splits) <= {"train", "test", "ood"}:
        raise ConfigError(
            f"{where}: evaluate.splits must be a list of train, test, ood; got {splits!r}"
        )
    checked: dict[str, Any] = {"splits": splits, "steps": 3}
    for key in ("tasks", "steps", "episodes"):
        if key in value:
            checked[key] = _positive_int(where, f"evaluate.{key}", value[key])
    return checked


def _check_metric(where: str, spec: SweepSpec, trials: list[Trial]) -> None:
    metric = spec.metric
    fewest_steps = min(t.config["inner_steps"] for t in trials)
    valid = ["return_pre", "return_post", *(f"eval_return_{k}" for k in range(fewest_steps + 1))]
    if metric not in valid:
        raise ConfigError(f"{where}: 'metric' must be one of {', '.join(valid)}; got {metric!r}")
    if (
        spec.scheduler != "none"
        and metric.startswith("eval_")
        and any(not t.config["eval_every"] for t in trials)
    ):
        raise ConfigError(
            f"{where}: the scheduler's metric {metric!r} needs held-out evaluations during "
            "training; "
            "set eval_every > 0 (in 'set') or use return_post"
        )
