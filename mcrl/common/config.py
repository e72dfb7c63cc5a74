"""Training configuration: dataclasses with one docstring per field, loaded from YAML.

Every key is checked when a config is built: unknown keys, wrong types and out-of-range values
raise :class:`ConfigError` naming the key and what would be valid.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class ConfigError(ValueError):
    """A config key with a bad name, type or value."""


def _positive(x: float) -> bool:
    return x > 0


def _non_negative(x: float) -> bool:
    return x >= 0


def _unit_interval(x: float) -> bool:
    return 0 <= x <= 1


def check(
    predicate: Callable[[Any], bool], valid: str, default: Any = dataclasses.MISSING, **kwargs: Any
) -> Any:
    """A dataclass field whose value must satisfy ``predicate`` (``valid`` says what is valid)."""
    if default is dataclasses.MISSING and "default_factory" not in kwargs:
        raise TypeError("check() needs a default")
    return field(default=default, metadata={"check": predicate, "valid": valid}, **kwargs)


def positive(default: Any) -> Any:
    return check(_positive, "> 0", default)


def non_negative(default: Any) -> Any:
    return check(_non_negative, ">= 0", default)


@dataclass
class PolicyConfig:
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the policy MLP's hidden layers."""
    activation: Literal["tanh", "relu"] = "tanh"
    """Hidden-layer nonlinearity."""
    init_log_std: float = 0.0
    """Initial log standard deviation of Gaussian policies (state-independent)."""
    action_scaling: Literal["auto", "none", "range"] = "auto"
    """Units of a Gaussian policy's mean and σ: the env's own (``none``; actions beyond the
    action space are clipped), or half the action range around its middle (``range``), so that
    ``init_log_std`` means the same in every family (σ = half the range at 0). ``auto``: range
    when every action dimension is bounded, none otherwise."""


@dataclass
class SamplerConfig:
    backend: Literal["auto", "ray", "local"] = "auto"
    """Where rollouts run: ``ray`` (Ray rollout workers; an embedded Ray unless ``address`` is
    given), ``local`` (in-process, all envs in lockstep), or ``auto``: Ray when joining a cluster
    (``address`` or ``RAY_ADDRESS``) or when the family steps one Gymnasium env per episode on a
    machine with several CPUs, in-process otherwise (a natively vectorised env). A run's
    ``config.yaml`` records the backend ``auto`` chose."""
    workers: int | None = positive(None)
    """Ray rollout workers (one CPU each); default: the CPUs of this machine or cluster."""
    threads: int | None = positive(None)
    """Threads that step a natively vectorised MuJoCo env in-process; default: the CPUs this
    process may use (Ray workers use one each)."""
    address: str | None = check(
        lambda a: a == "auto" or a.startswith("ray://") or bool(re.fullmatch(r"[^:\s]+:\d+", a)),
        "HOST:PORT, auto or ray://HOST:PORT",
        None,
    )
    """Ray cluster to join (``HOST:PORT``, ``auto``); default: ``RAY_ADDRESS``, else embedded."""
    timeout_s: float = positive(600.0)
    """A sampling phase that takes longer is an error, not a hang."""
    max_chunk_retries: int = non_negative(3)
    """Re-submissions of a chunk whose worker died or raised before the run stops."""
    object_store_mb: int = positive(512)
    """Object store size of an embedded Ray, in MiB."""
    dashboard: bool = False
    """Start the Ray dashboard with an embedded Ray."""


@dataclass
class LearnerConfig:
    device: str = "auto"
    """Torch device of the learner: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1``..."""
    task_batching: bool = True
    """Compute all tasks' inner gradients with one batched backward (true) or one per task."""
    num_threads: int | None = positive(None)
    """Torch intra-op threads for the learner; default: the CPUs this process may use."""
    placement: Literal["auto", "driver", "ray"] = "auto"
    """Where the learner runs: ``auto`` is the driver, unless the driver has no CUDA device and
    ``num_gpus`` > 0; then a Ray actor on a cluster node with GPUs."""
    num_gpus: float = non_negative(0.0)
    """GPUs for a learner that runs as a Ray actor."""
    keep_freed_memory: bool = True
    """Keep freed memory in the learner's process (glibc's malloc) so that its large tensors
    reuse mapped pages instead of page-faulting afresh: about 2x faster meta-steps on CPU, at the
    cost of a resident memory that stays near the peak (about 1.8x the live peak)."""


@dataclass
class TrainConfig:
    """Everything ``mcrl train`` needs; ``config.yaml`` in a run directory is this, resolved."""

    family: str = "Navigation2D"
    """Task family: a registered name (``mcrl families``) or ``module:Class``."""
    family_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the family's constructor."""
    horizon: int | None = positive(None)
    """Episode horizon; default: the family's."""
    iterations: int = positive(500)
    """Meta-iterations to run."""
    meta_batch_size: int = positive(20)
    """Tasks sampled per meta-iteration."""
    episodes_per_task: int = positive(20)
    """Episodes per task in each sampling phase (before and after each adaptation step)."""
    seed: int = non_negative(0)
    """Run seed: θ's initialisation, task sampling and every episode's randomness derive from it."""
    inner_lr: float = positive(0.1)
    """α: step size of the adaptation step θ' = θ − α·C(∇L_in)."""
    inner_steps: int = positive(2)
    """Adaptation steps; fresh episodes are sampled with each intermediate θ'."""
    first_order: bool = False
    """Drop the second-order terms (do not differentiate through the inner gradient)."""
    inner_estimator: Literal["vpg", "lvc", "dice"] = "lvc"
    """Policy-gradient estimator of the inner loss (design §3)."""
    curvature: Literal["identity", "diagonal", "kronecker"] = "kronecker"
    """C: ``identity`` (MAML), ``diagonal`` (Meta-SGD) or ``kronecker`` (Meta-Curvature)."""
    curvature_parametrization: Literal["free", "pd"] = "free"
    """Kronecker factors as free matrices, or positive definite (M = L·Lᵀ + 0.01·I, starting
    at I): every adaptation step is then a descent direction."""
    curvature_per_step: bool = False
    """One curvature C_k per inner step, each starting at the identity and learned with the
    others in the C-step (design §3); adapting beyond ``inner_steps`` reuses the last one.
    False: one C for every step."""
    learn_inner_lr: bool = True
    """Learn one step size per inner step, α_k = inner_lr·exp(s_k) with s_k starting at 0,
    updated with C (MAML++); adapting beyond ``inner_steps`` reuses the last one."""
    adapt_log_std: bool = True
    """The adaptation step changes a Gaussian policy's log σ too (MAML-RL adapts every
    parameter); false keeps each task's σ at θ's, so that exploration after adaptation is
    meta-learned, not adapted."""
    multi_step_loss: bool = False
    """Meta-train on the return after every inner step, not only the last: the outer loss is
    the mean over steps k of the loss of the parameters after k steps on the episodes they
    sampled (MAML++'s multi-step loss; ``ppo`` outer step only)."""
    meta_lr: float = positive(1e-3)
    """Adam step size of the θ-step."""
    curvature_lr: float = positive(1e-3)
    """γ: Adam step size of the C-step."""
    curvature_lr_scaling: Literal["factor_size", "none"] = "factor_size"
    """``factor_size``: an n×n Kronecker factor (or its root) steps with ``curvature_lr / n``,
    so that an update moves its spectrum by about ``curvature_lr`` whatever n (Adam moves every
    entry by about its step size; entries that move together move the spectrum n times as
    far, which let 100×100 factors reach eigenvalues of −18 on HalfCheetahDir). ``none``: every
    entry with ``curvature_lr``, as before this key existed."""
    alignment_weight: float = non_negative(0.0)
    """β: weight of the gradient-alignment loss 𝒞(θ) = Σ_{i≠j}‖g_i − g_j‖² in the θ-step."""
    alignment_estimator: Literal["plugin", "split"] = "plugin"
    """‖g_i‖² from all episodes (plugin) or ⟨g_i^A, g_i^B⟩ from two halves of them (split)."""
    emaml_weight: float = non_negative(0.0)
    """Weight of E-MAML's exploration term in the θ-step (Stadie et al. 2018, as ProMP's code
    adds it): −mean_i R̃_i · mean log π_θ(pre-adaptation actions of task i), R̃_i task i's mean
    post-adaptation return standardised over the meta-batch. It credits a task's
    pre-adaptation episodes, as a whole, with the return their adaptation step led to. 0: off."""
    schedule: Literal["alternate", "joint"] = "alternate"
    """Alternate θ-step then C-step, or one optimiser over both."""
    outer: Literal["ppo", "trpo"] = "ppo"
    """The θ-step: ``ppo`` (ProMP: clipped surrogate, Adam with ``meta_lr``) or ``trpo``
    (MAML-TRPO: natural-gradient step in a KL trust region, line search)."""
    outer_epochs: int = positive(5)
    """Meta-updates per iteration on the same episodes (ProMP's PPO steps; with ``trpo``, TRPO
    steps that all stay within ``max_kl`` of the policies that sampled the episodes)."""
    max_kl: float = positive(0.01)
    """TRPO: largest mean KL(π'_sampling ‖ π'_θ) of the adapted policies on their episodes."""
    cg_iterations: int = positive(10)
    """TRPO: conjugate-gradient iterations for the search direction."""
    fisher_episode_fraction: float = check(lambda x: 0 < x <= 1, "in (0, 1]", 1.0)
    """TRPO: share of every task's episodes (pre- and post-adaptation) in the KL Hessian-vector
    products of the conjugate gradient, the costly part (OpenAI's TRPO uses a fifth of the
    samples). The step's scale and the line search use all episodes."""
    cg_damping: float = non_negative(1e-5)
    """TRPO: damping added to the KL Hessian-vector products."""
    line_search_steps: int = positive(15)
    """TRPO: step sizes tried (each 0.8 of the last) before the θ-step is skipped."""
    clip_ratio: float = check(lambda x: 0 < x < 1, "in (0, 1)", 0.2)
    """PPO clipping of the outer surrogate."""
    inner_kl_weight: float = non_negative(5e-4)
    """η: weight of KL(π_θ_old ‖ π_θ) on the pre-adaptation states in the θ-step."""
    gamma: float = check(_unit_interval, "in [0, 1]", 0.99)
    """Discount factor of the advantages."""
    gae_lambda: float = check(_unit_interval, "in [0, 1]", 1.0)
    """GAE λ."""
    baseline: Literal["linear", "none"] = "linear"
    """Value baseline of the advantages: a linear fit on (obs, obs², t, t², t³) refit on each
    task's own episodes (Duan et al. 2016, as MAML-RL and ProMP), or none (returns-to-go)."""
    normalize_advantages: bool = True
    """Standardise each task's advantages (zero mean, unit std over its episodes) in the inner
    and outer losses; without, the size of an adaptation step scales with the rewards."""
    checkpoint_every: int = positive(25)
    """Iterations between checkpoints (one is also written at the end and on Ctrl-C)."""
    log_every: int = positive(10)
    """Iterations between saved task-affinity matrices."""
    eval_every: int = non_negative(50)
    """Iterations between held-out evaluations on the test split (0: never)."""
    eval_tasks: int = positive(20)
    """Tasks in each held-out evaluation."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)


# -- building and checking --------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list of " + _type_name(typing.get_args(tp)[0])
    if origin is dict:
        return "a mapping"
    return {
        int: "an integer",
        float: "a finite number",
        bool: "true or false",
        str: "a string",
        type(None): "null",
    }.get(tp, str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """``value`` as type ``tp``, or a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"config key {key!r} must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                continue
        raise bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        return tuple(_coerce(key, v, typing.get_args(tp)[0]) for v in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        return dict(value)
    if tp is type(None):
        if value is not None:
            raise bad
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config type {tp}")


ConfigT = TypeVar("ConfigT", bound="DataclassInstance")


def from_dict(cls: type[ConfigT], data: Mapping[str, Any], prefix: str = "") -> ConfigT:
    """Build config dataclass ``cls`` from a mapping, checking every key."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config section {prefix.rstrip('.') or '(top level)'!r} must be a mapping, got {data!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix + str(unknown[0])!r}; valid keys here: {', '.join(fields)}"
        )
    values = {}
    for name, value in data.items():
        key, tp = prefix + name, hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            values[name] = from_dict(tp, value, key + ".")
            continue
        value = _coerce(key, value, tp)
        predicate = fields[name].metadata.get("check")
        if predicate is not None and value is not None and not predicate(value):
            raise ConfigError(
                f"config key {key!r} must be {fields[name].metadata['valid']}, got {value!r}"
            )
        values[name] = value
    config = cls(**values)
    _check_cross_field(config, prefix)
    return config


def _check_cross_field(config: Any, prefix: str) -> None:
    if (
        isinstance(config, TrainConfig)
        and config.alignment_estimator == "split"
        and config.episodes_per_task < 2
    ):
        raise ConfigError("config key 'alignment_estimator' = split needs episodes_per_task >= 2")
    if isinstance(config, TrainConfig) and config.outer == "trpo" and config.multi_step_loss:
        raise ConfigError(
            "config key 'multi_step_loss' = true needs outer: ppo (TRPO's step is on the last "
            "adaptation step's episodes)"
        )
    if isinstance(config, TrainConfig) and config.outer == "trpo" and config.schedule == "joint":
        raise ConfigError(
            "config key 'outer' = trpo needs schedule: alternate (the C-step stays an Adam step)"
        )
    if isinstance(config, PolicyConfig) and (
        not config.hidden_sizes or min(config.hidden_sizes) <= 0
    ):
        raise ConfigError(
            f"config key '{prefix}hidden_sizes' must be a non-empty list of positive integers, got {list(config.hidden_sizes)}"
        )


def to_dict(config: Any) -> dict[str, Any]:
    """Plain YAML-safe data (tuples as lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(config)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings (dotted keys for nested sections, values parsed as YAML)."""
    data = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"config key {part!r} is not a section; cannot set {key!r}")
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return data


# What a config saved by an earlier mcrl (a checkpoint, a run's config.yaml, a sweep record)
# ran with for a key it lacks: the behaviour from before the key existed, not today's default.
# A key whose default changes after it was added is always written, so it needs no entry.
BEFORE_THE_KEY: dict[str, Any] = {
    "curvature_parametrization": "free",
    "curvature_lr_scaling": "none",
    "learn_inner_lr": False,
    "policy.action_scaling": "none",
}


def from_saved_dict(data: Mapping[str, Any]) -> TrainConfig:
    """The TrainConfig that a saved config ran with (see :data:`BEFORE_THE_KEY`)."""
    data = copy.deepcopy(dict(data))
    for dotted_key, value in BEFORE_THE_KEY.items():
        *sections, name = dotted_key.split(".")
        node: Any = data
        for section in sections:
            node = node.setdefault(section, {}) if isinstance(node, dict) else None
        if isinstance(node, dict):  # not a mapping: from_dict says so
            node.setdefault(name, value)
    return from_dict(TrainConfig, data)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """A TrainConfig from a YAML file (or the defaults) plus ``key=value`` overrides."""
    data = {} if path is None else read_yaml_mapping(path, "config file")
    return from_dict(TrainConfig, apply_overrides(data, overrides))


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping of keys a YAML file holds (an empty file: none), or a one-line error naming
    the file as ``what``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {exc}") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(
            f"{what} {str(path)!r} must hold a mapping of keys, got {type(loaded).__name__}"
        )
    return loaded or {}
