"""Is a run's learned step size the best one at test time? Held-out return after 1..K steps when
one inner step's learned step size is multiplied by a factor (everything else as ``mcrl
evaluate``: the same tasks, episodes and seed for every factor).

    python experiments/step_size_sensitivity.py RUN_DIR [RUN_DIR ...] --step 1 --factors 0.5 0.7 1 1.4 2

Needs a run trained with ``learn_inner_lr: true`` (the default). Prints one line per run and
factor: the return after 1..K steps, and the mean over runs per factor.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from mcrl.rollout.sampler import LocalSampler
from mcrl.training.adaptation import MetaPolicy
from mcrl.training.evaluation import evaluate_adaptation


def returns_by_factor(
    run_dir: str, *, step: int, factors: list[float], split: str, tasks: int, steps: int
) -> dict[float, list[float]]:
    meta = MetaPolicy.load(run_dir)
    log_scales = getattr(meta.learner.curvature, "log_step_scales", None)
    if log_scales is None:
        raise SystemExit(f"{run_dir}: no learned step sizes (trained with learn_inner_lr: false)")
    if not 1 <= step <= len(log_scales):
        raise SystemExit(f"--step must be 1..{len(log_scales)} (the run's trained steps)")
    learned = log_scales.detach().clone()
    results = {}
    sampler = LocalSampler(meta.family, meta.learner.policy)  # one for every factor: same tasks
    try:
        for factor in factors:
            with torch.no_grad():
                log_scales.copy_(learned)
                log_scales[step - 1] += math.log(factor)
            record = evaluate_adaptation(
                meta.learner,
                sampler,
                meta.family,
                split=split,
                num_tasks=tasks,
                steps=steps,
                episodes=meta.config.episodes_per_task,
                seed=meta.config.seed,
            )
            results[factor] = record["returns"][1:]
    finally:
        sampler.close()
    scales = ", ".join(f"{s:.2f}" for s in np.exp(learned.numpy()))
    print(f"{run_dir}: learned step-size scales {scales}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--step", type=int, default=1, help="the inner step whose size is scaled")
    parser.add_argument("--factors", type=float, nargs="+", default=[0.5, 0.7, 1.0, 1.4, 2.0])
    parser.add_argument("--split", default="test")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--steps", type=int, default=2, help="adaptation steps evaluated")
    args = parser.parse_args()
    per_run = [
        returns_by_factor(
            run_dir,
            step=args.step,
            factors=args.factors,
            split=args.split,
            tasks=args.tasks,
            steps=args.steps,
        )
        for run_dir in args.run_dirs
    ]
    for factor in args.factors:
        rows = np.array([results[factor] for results in per_run])
        each = "; ".join(" / ".join(f"{r:.2f}" for r in row) for row in rows)
        mean = " / ".join(f"{m:.2f}" for m in rows.mean(axis=0))
        print(f"step {args.step} x {factor:g}: after 1..{args.steps} steps, mean {mean} ({each})")


if __name__ == "__main__":
    main()
