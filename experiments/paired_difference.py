"""Two configurations of one sweep compared seed by seed: the same seed means the same initial θ,
training tasks and held-out tasks, so the per-seed difference removes the seeds' shared luck.
Prints, per split and adaptation step, each configuration's mean over seeds and the mean
difference A − B with its 95% t-interval over seeds ("yes" where it excludes 0). With a single
seed in common, evaluated on the same tasks, the difference is paired task by task instead: its
interval then covers the tasks' and episodes' noise, not how much another seed would differ.

    python experiments/paired_difference.py experiments/results/defaults/navigation2d \
        001_curvature=kronecker 000_curvature=identity
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from mcrl.sweeps.summary import format_mean_ci, mean_and_t95


def records_by_seed(run_dir: Path, split: str) -> dict[str, dict]:
    found = {}
    for seed_dir in sorted(run_dir.glob("seed*")):
        path = seed_dir / f"eval_{split}.json"
        if path.is_file():
            found[seed_dir.name] = json.loads(path.read_text())
    return found


def same_tasks(a: dict, b: dict) -> bool:
    """Both records hold per-task returns of the same tasks (drawn with the same seed)."""
    keys = ("family", "split", "tasks", "task_seed")
    return "task_returns" in a and "task_returns" in b and all(a.get(k) == b.get(k) for k in keys)


def table(dir_a: Path, dir_b: Path, splits: list[str]) -> str:
    """The comparison of two configuration directories, each holding ``seedN/eval_SPLIT.json``."""
    a, b = dir_a.name, dir_b.name
    lines = [
        f"| split | steps | {a} | {b} | {a} − {b} (paired) | seeds | significant |",
        "|---|---|---|---|---|---|---|",
    ]
    for split in splits:
        runs_a = records_by_seed(dir_a, split)
        runs_b = records_by_seed(dir_b, split)
        seeds = sorted(set(runs_a) & set(runs_b))
        if not seeds:
            continue
        by_task = len(seeds) == 1 and same_tasks(runs_a[seeds[0]], runs_b[seeds[0]])
        steps = min(len(runs[s]["returns"]) for runs in (runs_a, runs_b) for s in seeds)
        for k in range(steps):
            if by_task:  # one value per task of the one seed
                values_a = runs_a[seeds[0]]["task_returns"][k]
                values_b = runs_b[seeds[0]]["task_returns"][k]
                paired_over = f"1, paired over {len(values_a)} tasks"
            else:  # one value (the mean over tasks) per seed
                values_a = [runs_a[s]["returns"][k] for s in seeds]
                values_b = [runs_b[s]["returns"][k] for s in seeds]
                paired_over = str(len(seeds))
            mean_a, ci_a = mean_and_t95(values_a)
            mean_b, ci_b = mean_and_t95(values_b)
            diff, ci = mean_and_t95([x - y for x, y in zip(values_a, values_b, strict=True)])
            significant = "–" if math.isnan(ci) else ("yes" if abs(diff) > ci else "no")
            lines.append(
                f"| {split} | {k} | {format_mean_ci(mean_a, ci_a)} | {format_mean_ci(mean_b, ci_b)} "
                f"| {diff:+.1f}{'' if math.isnan(ci) else f' ± {ci:.1f}'} | {paired_over} "
                f"| {significant} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument(
        "a", help="configuration directory under runs/, e.g. 001_curvature=kronecker"
    )
    parser.add_argument("b")
    parser.add_argument("--splits", nargs="+", default=["test", "ood"])
    args = parser.parse_args(argv)
    for name in (args.a, args.b):
        if not (args.sweep_dir / "runs" / name).is_dir():
            configs = sorted(p.name for p in (args.sweep_dir / "runs").glob("*"))
            print(f"paired_difference: no configuration {name!r}; have {configs}", file=sys.stderr)
            return 2
    runs = args.sweep_dir / "runs"
    print(table(runs / args.a, runs / args.b, args.splits))
    print(f"\n`python experiments/paired_difference.py {' '.join(argv or sys.argv[1:])}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
