"""Adapting a meta-trained policy to one environment (``mcrl adapt`` and :func:`load`), or to
many held-out tasks (``mcrl evaluate``).

::

    meta = mcrl.load("runs/navigation2d")                 # θ and C of the latest checkpoint
    adapted = meta.adapt({"goal": [0.7, -0.2]}, steps=2)  # a task of the training family,
    adapted = meta.adapt("Pendulum-v1", steps=2)          # or any env with the same spaces
    action = adapted.act(obs)

Episodes are collected and adaptation steps taken exactly as in meta-training and evaluation:
the same sampler, inner loss, baseline and learned curvature.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mcrl.common.config import TrainConfig, from_saved_dict
from mcrl.common.policies import (
    check_spaces_match,
    describe_spaces,
    make_policy,
    params_to_numpy,
    spaces_from_description,
)
from mcrl.common.validation import check_non_negative_int, check_positive_int, first_line
from mcrl.meta.learner import MetaLearner
from mcrl.rollout.sampler import LocalSampler
from mcrl.tasks import SPLITS, Task, TaskFamily, make_family
from mcrl.tasks.mujoco_warnings import filter_mujoco_warnings
from mcrl.training.build import build_family, build_learner, build_policy, family_spaces
from mcrl.training.checkpoints import atomic_save, load_checkpoint, load_weights_only
from mcrl.training.evaluation import evaluate_adaptation, run_adaptation

ADAPTED_FORMAT = 1
ADAPTED_FILE = "adapted.pt"

AdaptTarget = Task | Mapping[str, Any] | gym.Env | str | Callable[[], gym.Env]


class EnvFamily(TaskFamily):
    """One env as a one-task family, so that its episodes are collected like any task's."""

    held_out_test = False

    def __init__(self, make_env: Callable[[], gym.Env], *, horizon: int, name: str):
        super().__init__(horizon)
        self.name = name
        self._make_env = make_env

    def sample_params(self, rng, split):
        return {}

    def split_of(self, params):
        return "test"

    def describe(self):
        return {split: {} for split in SPLITS}

    def make_env(self, task):
        return self._make_env()

    def set_task(self, env, task):
        pass  # a single task: nothing to re-target


class _Borrowed(gym.Wrapper):
    """A user's env instance: episodes run in it, and closing the sampler leaves it open."""

    def close(self) -> None:
        pass


@dataclass
class AdaptedPolicy:
    """Fixed policy parameters (θ, or θ after adaptation steps) that act in an env.

    ``returns[k]`` is the mean episode return after k adaptation steps (empty for θ as loaded).
    """

    params: dict[str, np.ndarray]
    spaces: dict[str, Any]
    hidden_sizes: tuple[int, ...]
    activation: str
    action_scaling: str = "none"
    returns: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        observation_space, self.action_space = spaces_from_description(self.spaces)
        self.policy = make_policy(
            observation_space,
            self.action_space,
            self.hidden_sizes,
            self.activation,
            action_scaling=self.action_scaling,
        )
        self._tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in self.params.items()}

    def act(
        self, obs: Any, *, deterministic: bool = True, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """The action for one observation ``[obs_dim]`` or a batch ``[N, obs_dim]``; the mean
        (or arg-max) when ``deterministic``, else a sample. Box actions are clipped to the env's
        bounds, as the sampler does."""
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        single = obs_t.dim() == 1
        obs_t = obs_t.reshape(-1, self.spaces["obs_dim"])
        with torch.no_grad():
            if deterministic:
                actions = self.policy.act(self._tensors, obs_t)
            else:
                noise = self.policy.noise(rng or np.random.default_rng(), 1, len(obs_t))[0]
                actions, _ = self.policy.sample(self._tensors, obs_t, torch.from_numpy(noise))
        result = actions.numpy()
        if isinstance(self.action_space, gym.spaces.Box):
            result = np.clip(result, self.action_space.low, self.action_space.high)
        return result[0] if single else result

    def save(self, directory: str | Path) -> Path:
        """Write ``adapted.pt`` (weights only) and ``adaptation.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / ADAPTED_FILE
        atomic_save(
            {
                "format": ADAPTED_FORMAT,
                "kind": "adapted_policy",
                "params": {k: torch.as_tensor(np.asarray(v)) for k, v in self.params.items()},
                "spaces": self.spaces,
                "hidden_sizes": list(self.hidden_sizes),
                "activation": self.activation,
                "action_scaling": self.action_scaling,
                "returns": list(self.returns),
                "info": self.info,
            },
            path,
        )
        summary = {"returns": self.returns, **self.info}
        (directory / "adaptation.json").write_text(json.dumps(summary, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> AdaptedPolicy:
        """An adapted policy saved by :meth:`save` (its directory or its ``adapted.pt``)."""
        path = Path(path)
        if path.is_dir():
            path = path / ADAPTED_FILE
        state = load_weights_only(path, "adapted policy")
        if not isinstance(state, dict) or state.get("kind") != "adapted_policy":
            raise ValueError(f"{str(path)!r} is not an adapted policy written by mcrl adapt")
        try:
            return cls(
                params={k: v.numpy() for k, v in state["params"].items()},
                spaces=state["spaces"],
                hidden_sizes=tuple(state["hidden_sizes"]),
                activation=state["activation"],
                action_scaling=state.get("action_scaling", "none"),  # older files: unscaled
                returns=state["returns"],
                info=state["info"],
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(
                f"adapted policy {str(path)!r} is incomplete or from another mcrl version "
                f"({type(exc).__name__}: {exc})"
            ) from None


class MetaPolicy:
    """A checkpoint's θ and C, ready to act (θ) and to adapt to an env. See :func:`load`."""

    def __init__(
        self,
        learner: MetaLearner,
        config: TrainConfig,
        family: TaskFamily,
        *,
        iteration: int,
        source: str,
    ):
        self.learner = learner
        self.config = config
        self.family = family
        self.iteration = iteration
        self.source = source
        self.spaces = describe_spaces(*family_spaces(family))

    @classmethod
    def load(cls, path: str | Path) -> MetaPolicy:
        state = load_checkpoint(path)
        try:
            config = from_saved_dict(state["config"])
            config.learner.placement = "driver"  # adapting is small: no learner actor
            family = build_family(config)
            learner = build_learner(config, build_policy(config, family))
            assert isinstance(learner, MetaLearner)
            learner.load_state_dict(state["learner"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ValueError(
                f"checkpoint {str(path)!r} does not match the policy its config describes "
                f"(incompatible shapes or settings): {first_line(exc)}"
            ) from None
        return cls(learner, config, family, iteration=state["iteration"], source=str(path))

    def _fixed(
        self, params: dict[str, np.ndarray], spaces: dict[str, Any], **extra: Any
    ) -> AdaptedPolicy:
        p = self.config.policy
        return AdaptedPolicy(
            params, spaces, tuple(p.hidden_sizes), p.activation, p.action_scaling, **extra
        )

    def initial(self) -> AdaptedPolicy:
        """θ itself, before any adaptation, as a fixed policy."""
        return self._fixed(params_to_numpy(self.learner.policy.params()), self.spaces)

    def act(self, obs: Any, *, deterministic: bool = True) -> np.ndarray:
        """θ's action (no adaptation), as :meth:`AdaptedPolicy.act`."""
        return self.initial().act(obs, deterministic=deterministic)

    def adapt(
        self,
        env: AdaptTarget,
        *,
        steps: int | None = None,
        episodes: int | None = None,
        horizon: int | None = None,
        seed: int = 0,
        family: str | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> AdaptedPolicy:
        """Adapt θ to ``env`` with ``steps`` policy-gradient steps preconditioned by C.

        ``env`` is a task of the training family (a :class:`Task`, or its parameters as a
        dict: values outside the training ranges are allowed), a Gymnasium env id (with
        ``env_kwargs``), an env instance (its episodes run one after another in it) or a function
        that builds one. ``family`` names another family whose task the dict describes.
        ``steps`` defaults to the run's ``inner_steps`` (what θ and C were trained for).
        Each step samples ``episodes`` fresh episodes (default: the run's episodes per task) of
        ``horizon`` steps (default: the training family's); ``on_step(k, mean_return)`` reports
        the return after each step.
        """
        steps = check_non_negative_int("steps", self.config.inner_steps if steps is None else steps)
        seed = check_non_negative_int("seed", seed)
        target_family, task, max_envs, what = self._target(env, family, env_kwargs, horizon)
        probe = target_family.make_env(task)
        try:
            check_spaces_match(self.spaces, probe.observation_space, probe.action_space, what)
            spaces = describe_spaces(probe.observation_space, probe.action_space)
        finally:
            probe.close()
        episodes = check_positive_int(
            "episodes", self.config.episodes_per_task if episodes is None else episodes
        )
        sampler = LocalSampler(target_family, self.learner.policy, max_envs=max_envs)
        try:
            run = run_adaptation(
                self.learner,
                sampler,
                [task],
                steps=steps,
                episodes=episodes,
                seed=seed,
                on_step=None if on_step is None else lambda k, r: on_step(k, float(r[0])),
            )
        finally:
            sampler.close()
        info = {
            "target": what,
            "task_params": task.to_dict()["params"],
            "steps": steps,
            "episodes_per_step": episodes,
            "horizon": target_family.horizon,
            "seed": seed,
            "env_steps": run.env_steps,
            "checkpoint": self.source,
            "iteration": self.iteration,
            "family": self.family.name,
        }
        if run.successes is not None:  # the share of episodes that succeeded, after 0..K steps
            info["success"] = run.successes[:, 0].tolist()
        return self._fixed(run.params[0], spaces, returns=run.returns[:, 0].tolist(), info=info)

    def _target(
        self,
        env: AdaptTarget,
        family_name: str | None,
        env_kwargs: Mapping[str, Any] | None,
        horizon: int | None,
    ) -> tuple[TaskFamily, Task, int | None, str]:
        """The family and task to sample, how many envs at once (None: the family's default),
        and a description."""
        horizon = self.family.horizon if horizon is None else check_positive_int("horizon", horizon)
        if isinstance(env, str):
            kwargs = dict(env_kwargs or {})

            def make() -> gym.Env:
                try:
                    filter_mujoco_warnings()
                    return gym.make(env, **kwargs)
                except Exception as exc:  # unknown id, bad kwargs, missing extras
                    raise ValueError(f"cannot make env {env!r} with {kwargs}: {exc}") from None

            make().close()  # fail here, with that message, rather than inside the sampler
            target: TaskFamily = EnvFamily(make, horizon=horizon, name=env)
            return target, target.sample_tasks(1, split="test")[0], None, f"env {env!r}"
        if isinstance(env, gym.Env):
            target = EnvFamily(lambda: _Borrowed(env), horizon=horizon, name=str(env))
            return target, target.sample_tasks(1, split="test")[0], 1, f"env {env}"
        if isinstance(env, Task | Mapping):
            name = family_name or (env.family if isinstance(env, Task) else self.family.name)
            if name != self.family.name:
                target = make_family(name, horizon=horizon)
            elif horizon != self.family.horizon:
                target = build_family(dataclasses.replace(self.config, horizon=horizon))
            else:
                target = self.family
            if isinstance(env, Task):
                task = target.check_task(env)
            else:
                task = target.task(env)  # checks the parameter names first
                task = dataclasses.replace(task, split=target.split_of(task.params) or "ood")
            params = json.dumps(task.to_dict()["params"])
            return target, task, None, f"{target.name} task {params}"
        if callable(env):
            target = EnvFamily(env, horizon=horizon, name=getattr(env, "__name__", "env"))
            return (
                target,
                target.sample_tasks(1, split="test")[0],
                None,
                f"env built by {target.name}",
            )
        raise ValueError(
            f"cannot adapt to {env!r}: pass a Task, a dict of task parameters, a Gymnasium env "
            "id, an env, or a function that builds one"
        )


def load(path: str | Path) -> MetaPolicy:
    """θ and C of a run directory's latest checkpoint, or of a checkpoint file."""
    return MetaPolicy.load(path)


def evaluate_checkpoint(
    path: str | Path,
    *,
    split: str = "test",
    num_tasks: int | None = None,
    steps: int = 3,
    episodes: int | None = None,
    on_step: Callable[[int, np.ndarray], None] | None = None,
) -> tuple[dict[str, Any], Path]:
    """Evaluate a run directory's latest checkpoint (or a checkpoint file) in-process.

    Returns the ``eval.json`` record and the run directory it belongs in. Defaults: the run's
    ``eval_tasks`` tasks and ``episodes_per_task`` episodes, 3 adaptation steps (MAML's 0..3).
    ``on_step(k, returns)`` reports each task's mean return after step k as it comes in.
    """
    path = Path(path)
    meta = MetaPolicy.load(path)
    config, family = meta.config, meta.family
    sampler = LocalSampler(family, meta.learner.policy)
    try:
        record = evaluate_adaptation(
            meta.learner,
            sampler,
            family,
            split=split,
            num_tasks=check_positive_int(
                "tasks", config.eval_tasks if num_tasks is None else num_tasks
            ),
            steps=check_non_negative_int("steps", steps),
            episodes=check_positive_int(
                "episodes", config.episodes_per_task if episodes is None else episodes
            ),
            seed=config.seed,
            on_step=on_step,
        )
    finally:
        sampler.close()
    record |= {"family": family.name, "iteration": meta.iteration, "checkpoint": str(path)}
    run_dir = (
        path
        if path.is_dir()
        else path.parent.parent
        if path.parent.name == "checkpoints"
        else path.parent
    )
    return record, run_dir
