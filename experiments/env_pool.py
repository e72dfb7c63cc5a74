"""How many envs a family without a native vector env builds, and the memory it holds, when
each iteration samples new tasks (Meta-World ML10: an env serves one task type).

    python experiments/env_pool.py --family MetaWorldML10 --iterations 12

Prints JSON: env builds per iteration (the first iteration's apart), seconds per sampling
phase, and the process's peak resident memory (MB). Needs the metaworld extra for the
Meta-World families.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import mcrl
from mcrl.common.policies import params_to_numpy
from mcrl.training.build import build_policy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="MetaWorldML10")
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--tasks", type=int, default=10, help="tasks per iteration")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per task")
    parser.add_argument("--horizon", type=int, default=20)
    args = parser.parse_args(argv)

    family = mcrl.make_family(args.family, horizon=args.horizon)
    policy = build_policy(mcrl.TrainConfig(family=args.family), family)
    params = params_to_numpy(policy.params())
    builds: list[int] = []
    make_env = family.make_env

    def counted(task):
        builds[-1] += 1
        return make_env(task)

    family.make_env = counted  # type: ignore[method-assign]
    sampler = mcrl.LocalSampler(family, policy)
    seconds = []
    for iteration in range(args.iterations):
        tasks = family.sample_tasks(args.tasks, seed=iteration)
        builds.append(0)
        start = time.perf_counter()
        sampler.sample(tasks, params, args.episodes, seed=0, iteration=iteration)
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 1024
    later = builds[1:]
    print(
        json.dumps(
            {
                "family": args.family,
                "envs_per_phase": args.tasks * args.episodes,
                "builds_first_iteration": builds[0],
                "builds_per_later_iteration": sum(later) / len(later),
                "seconds_per_later_phase": sum(seconds[1:]) / len(later),
                "peak_rss_mb": round(peak_mb),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
