"""The control cost inside a locomotion checkpoint's held-out returns, and those returns
re-scored with another control-cost weight.

Gymnasium's v5 runners charge ``ctrl_cost_weight · |a|²`` a step (0.1 for HalfCheetah and
Ant), on the clipped action; the envs behind MAML's published HalfCheetah curves (rllab's
``HalfCheetahEnvRand``, and pytorch-maml-rl's copy) charge 0.05·|a|². This adapts a checkpoint
as ``mcrl evaluate`` does (the same tasks, episodes and seed), splits each phase's mean episode
return into the control cost and the rest, and prints the return with ``--weight`` instead:
a re-scoring of the same episodes, not what a policy trained on that reward would reach.

    python experiments/control_cost.py experiments/results/benchmarks_full/HalfCheetahVel/kronecker/seed0 --tasks 40
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mcrl.common.validation import check_non_negative_int, check_positive_int
from mcrl.rollout.episodes import EpisodeBatch
from mcrl.rollout.sampler import LocalSampler
from mcrl.training.adaptation import MetaPolicy
from mcrl.training.evaluation import run_adaptation


class RecordingSampler:
    """A sampler that keeps every phase's episodes."""

    def __init__(self, sampler: LocalSampler):
        self.sampler = sampler
        self.phases: list[list[EpisodeBatch]] = []

    def sample(self, *args, **kwargs) -> list[EpisodeBatch]:
        batches = self.sampler.sample(*args, **kwargs)
        self.phases.append(batches)
        return batches


def control_cost(batches: list[EpisodeBatch], weight: float, low, high) -> float:
    """Mean over tasks of the mean episode control cost (negative), on the clipped actions
    the env was given."""
    per_task = []
    for b in batches:
        squared = np.square(np.clip(b.actions, low, high)).sum(axis=-1)  # [horizon, episodes]
        per_task.append(-weight * (squared * b.mask).sum(axis=0).mean())
    return float(np.mean(per_task))


def table(run: str | Path, *, split: str, tasks: int, episodes: int, steps: int, weight: float):
    """Rows (steps, return, control cost, return re-scored with ``weight``) and the env's own
    control-cost weight."""
    # The checks of ``mcrl evaluate``, before the checkpoint is loaded.
    tasks, episodes = check_positive_int("tasks", tasks), check_positive_int("episodes", episodes)
    steps = check_non_negative_int("steps", steps)
    meta = MetaPolicy.load(run)
    family, seed = meta.family, meta.config.seed
    env = family.make_env(family.sample_tasks(1, split=split, seed=seed)[0])
    env_weight = getattr(env.unwrapped, "_ctrl_cost_weight", None)
    low, high = env.action_space.low, env.action_space.high
    env.close()
    if env_weight is None:
        raise ValueError(f"{family.name}'s env has no control cost (no ctrl_cost_weight)")
    sampler = RecordingSampler(LocalSampler(family, meta.learner.policy))
    try:
        adaptation = run_adaptation(
            meta.learner,
            sampler,
            family.sample_tasks(tasks, split=split, seed=seed),
            steps=steps,
            episodes=episodes,
            seed=seed,
        )
    finally:
        sampler.sampler.close()
    rows = []
    for step, batches in enumerate(sampler.phases):
        ret = float(adaptation.returns[step].mean())
        cost = control_cost(batches, env_weight, low, high)
        rows.append((step, ret, cost, ret - cost + cost * weight / env_weight))
    return rows, float(env_weight)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run directory or checkpoint file")
    parser.add_argument("--split", default="test")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--weight", type=float, default=0.05, help="the control-cost weight to re-score with"
    )
    args = parser.parse_args(argv)
    try:
        rows, env_weight = table(
            args.run,
            split=args.split,
            tasks=args.tasks,
            episodes=args.episodes,
            steps=args.steps,
            weight=args.weight,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"control_cost: {error}", file=sys.stderr)
        return 2
    print(
        f"| steps | return | control cost ({env_weight:g}·\\|a\\|²) | return with {args.weight:g}·\\|a\\|² |"
    )
    print("|---|---|---|---|")
    for step, ret, cost, rescored in rows:
        print(f"| {step} | {ret:.1f} | {cost:.1f} | {rescored:.1f} |")
    print(
        "command: python experiments/control_cost.py "
        + " ".join(sys.argv[1:] if argv is None else argv)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
