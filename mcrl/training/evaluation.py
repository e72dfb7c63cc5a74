"""Held-out evaluation: mean return after 0, 1, ..., K adaptation steps, with 95% CIs."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mcrl.rollout.sampler import Sampler
    from mcrl.tasks import Task, TaskFamily
    from mcrl.training.placement import Learner

# Evaluation episodes use their own phases, so they never share randomness with training.
EVAL_PHASE = 1_000_000


def mean_and_ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean over tasks and the half-width of its normal-approximation 95% interval."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, float("nan")
    return mean, float(1.96 * np.std(values, ddof=1) / math.sqrt(len(values)))


@dataclass
class AdaptationRun:
    """What adapting to a list of tasks gave: ``returns[k, i]`` is task i's mean episode return
    with the parameters after k steps; ``params[i]`` are task i's parameters after the last;
    ``successes[k, i]`` its episodes' success rate, where the family reports success."""

    returns: np.ndarray
    params: list[dict[str, np.ndarray]]
    env_steps: int
    successes: np.ndarray | None = None


def run_adaptation(
    learner: Learner,
    sampler: Sampler,
    tasks: Sequence[Task],
    *,
    steps: int,
    episodes: int,
    seed: int,
    iteration: int = 0,
    on_step: Callable[[int, np.ndarray], None] | None = None,
) -> AdaptationRun:
    """Adapt to each task for ``steps`` steps, sampling fresh episodes after each step (MAML's
    protocol). ``on_step(k, returns)`` is called after the episodes of step k are in."""
    returns = np.zeros((steps + 1, len(tasks)))
    successes = []  # per step, each task's success rate (families that report success)
    pre: list[Any] = []  # the learner's handles to each step's prepared episodes
    params: Any = learner.theta_numpy()
    env_steps = 0
    for step in range(steps + 1):
        if step > 0:
            params = learner.adapted_params(pre)
        batches = sampler.sample(
            tasks, params, episodes, seed=seed, iteration=iteration, phase=EVAL_PHASE + step
        )
        returns[step] = [b.returns.mean() for b in batches]
        if batches[0].success is not None:
            successes.append([b.success_rate for b in batches])
        env_steps += sum(b.num_steps for b in batches)
        if on_step is not None:
            on_step(step, returns[step])
        if step < steps:
            pre.append(learner.prepare(batches))
    per_task = params if isinstance(params, list) else [params] * len(tasks)
    return AdaptationRun(returns, per_task, env_steps, np.array(successes) if successes else None)


def evaluate_adaptation(
    learner: Learner,
    sampler: Sampler,
    family: TaskFamily,
    *,
    split: str,
    num_tasks: int,
    steps: int,
    episodes: int,
    seed: int,
    iteration: int = 0,
    on_step: Callable[[int, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Adapt to ``num_tasks`` tasks of ``split`` for ``steps`` steps; the ``eval.json`` record.
    ``on_step(k, returns)`` reports each task's mean return once the episodes of step k are in."""
    tasks = family.sample_tasks(num_tasks, split=split, seed=seed)
    run = run_adaptation(
        learner,
        sampler,
        tasks,
        steps=steps,
        episodes=episodes,
        seed=seed,
        iteration=iteration,
        on_step=on_step,
    )
    record = eval_record(
        run.returns,
        split=split,
        episodes=episodes,
        env_steps=run.env_steps,
        successes=run.successes,
    ) | {"task_seed": seed}
    if family.group_by is not None:
        record["group_by"] = family.group_by
        record |= group_records(
            [str(t.params[family.group_by]) for t in tasks], run.returns, run.successes
        )
    return record


def eval_record(
    returns: np.ndarray,
    *,
    split: str,
    episodes: int,
    env_steps: int,
    successes: np.ndarray | None = None,
) -> dict[str, Any]:
    """The ``eval.json`` record for per-task returns ``[steps + 1, tasks]`` (also used by the
    baselines in ``experiments/baselines``): their mean and 95% CI over tasks after each step,
    the returns themselves (``task_returns``), and the success rates where there are some."""
    stats = [mean_and_ci95(r) for r in returns]
    record = {
        "split": split,
        "tasks": returns.shape[1],
        "steps": returns.shape[0] - 1,
        "episodes_per_task": episodes,
        "returns": [m for m, _ in stats],
        "ci95": [c for _, c in stats],
        "env_steps": env_steps,
        # Per task, so that two policies evaluated on the same tasks can be compared task by task.
        "task_returns": returns.tolist(),
    }
    if successes is not None:
        success_stats = [mean_and_ci95(s) for s in successes]
        record["success"] = [m for m, _ in success_stats]
        record["success_ci95"] = [c for _, c in success_stats]
    return record


def group_records(
    labels: Sequence[str], returns: np.ndarray, successes: np.ndarray | None = None
) -> dict[str, Any]:
    """``groups``: per label (a task's kind), in sorted order, its number of tasks and their mean
    return (and success rate) after 0..K steps; ``mean_over_groups``: the mean of those over the
    kinds, each weighted alike (Meta-World averages its success rates over task types).
    ``returns`` and ``successes`` are ``[steps + 1, tasks]``."""
    measures = {"returns": returns} | ({} if successes is None else {"success": successes})
    groups: dict[str, dict[str, Any]] = {}
    for label in sorted(set(labels)):
        members = np.array([x == label for x in labels])
        groups[label] = {"tasks": int(members.sum())} | {
            name: values[:, members].mean(axis=1).tolist() for name, values in measures.items()
        }
    means = {
        name: np.mean([g[name] for g in groups.values()], axis=0).tolist() for name in measures
    }
    return {"groups": groups, "mean_over_groups": means}
