"""Benchmark-scale runs of one family: evaluate, draw the learning curves, print the table.

Each run is a plain ``mcrl train`` run in ``FAMILY_DIR/VARIANT/seedN`` (continued with
``mcrl train CONFIG --out FAMILY_DIR/VARIANT/seedN --set curvature=VARIANT --set seed=N
--resume``). This script evaluates every run's latest checkpoint on the family's held-out splits
after 0..3 adaptation steps (``seedN/eval_SPLIT.json``, redone only when the checkpoint moved
on), writes ``learning_curves.png`` and prints the markdown of experiments/README.md: per
variant the mean over seeds ± a 95% t-interval, per run the mean over tasks ± a 95% interval,
published numbers beside them, and kronecker − identity paired by seed (by task where the
two variants share one seed and its evaluation tasks). ``machines.json``
(optional) names the machine each run's iterations ran on, from a first iteration on, so that
the wall-clock is told per machine; a run's own ``seedN/machines.json`` overrides it.
Baselines evaluated on the same splits (``experiments/baselines/sb3_ppo.py`` records in
``FAMILY_DIR/../baselines/FAMILY/METHOD/seedN/eval_SPLIT.json``) get rows of their own; their
"steps" are PPO updates on as many episodes as one adaptation step.

    python experiments/benchmark_scale.py experiments/results/benchmarks_full/HalfCheetahDir
    python experiments/benchmark_scale.py DIR --no-evaluate   # table and curves from what is there
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import statistics
import sys
from pathlib import Path

from mcrl.sweeps.summary import format_mean_ci, mean_and_t95
from mcrl.training.adaptation import evaluate_checkpoint
from mcrl.training.checkpoints import load_checkpoint

# Published returns after 0/1/2/3 steps (design §7), with their source. MAML gives HalfCheetahVel
# as a curve only (Fig. 5, "half-cheetah, goal velocity"); the values are read off it, ±10.
# MAML's Ant task is forward/backward, not AntDir's half-circle of directions: no row for it.
PUBLISHED = {
    "HalfCheetahDir": ("MAML (Finn et al. 2017, appendix)", [-50.69, 293.19, 313.48, 315.65]),
    "HalfCheetahVel": (
        "MAML (Finn et al. 2017, Fig. 5, read off the curve, ±10)",
        [-130, -75, -65, -60],
    ),
}
SPLITS = ("test", "ood")


def _paired_table(dir_a: Path, dir_b: Path, splits: list[str]) -> str:
    """experiments/paired_difference.py's table (a script beside this one, not a package)."""
    path = Path(__file__).with_name("paired_difference.py")
    spec = importlib.util.spec_from_file_location("paired_difference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.table(dir_a, dir_b, splits)


def runs_of(family_dir: Path) -> dict[str, list[Path]]:
    """``{variant: [seed directories]}`` for every run that has finished an iteration."""
    return {
        variant.name: sorted(p for p in variant.glob("seed*") if (p / "metrics.csv").is_file())
        for variant in sorted(family_dir.iterdir())
        if variant.is_dir() and any(variant.glob("seed*/metrics.csv"))
    }


def read_metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def evaluate(run: Path, tasks: int, steps: int) -> None:
    """``eval_SPLIT.json`` for the run's latest checkpoint, unless it already holds that one."""
    iteration = load_checkpoint(run)["iteration"]
    for split in SPLITS:
        out = run / f"eval_{split}.json"
        if out.is_file() and json.loads(out.read_text()).get("iteration") == iteration:
            continue
        try:
            record, _ = evaluate_checkpoint(run, split=split, num_tasks=tasks, steps=steps)
        except ValueError as exc:
            if f"has no {split} split" in str(exc):
                continue
            raise
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"{run}: {split} at iteration {iteration}", file=sys.stderr)


def wall_clock(rows: list[dict[str, str]], machines: list[dict]) -> list[str]:
    """Hours and median seconds per iteration on each machine the run's iterations ran on."""
    parts = []
    bounds = [m["from_iteration"] for m in machines[1:]] + [len(rows)]
    for machine, end in zip(machines, bounds, strict=True):
        seconds = [
            sum(float(v) for k, v in row.items() if k.startswith("time_") and v)
            for row in rows[machine["from_iteration"] : end]
        ]
        if seconds:
            parts.append(
                f"{len(seconds)} its on {machine['machine']}: {sum(seconds) / 3600:.2f} h, "
                f"{statistics.median(seconds):.1f} s/it"
            )
    return parts


def machines_of(run: Path, family_machines: list[dict]) -> list[dict]:
    """Where a run's iterations ran: its own ``machines.json`` if it has one (a run started
    later than the others, elsewhere), else the family's."""
    own = run / "machines.json"
    return json.loads(own.read_text()) if own.is_file() else family_machines


def learning_curves(
    family: str, runs: dict[str, list[Path]], metrics: dict[Path, list[dict]], out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (train_ax, eval_ax) = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True, sharey=True)
    for colour, (variant, seed_dirs) in zip(("C0", "C3", "C2", "C1"), runs.items(), strict=False):
        for style, run in zip(("-", "--", ":", "-."), seed_dirs, strict=False):
            rows = metrics[run]
            steps = [float(r["env_steps"]) for r in rows]
            label = f"{variant} {run.name}"
            train_ax.plot(
                steps,
                [float(r["return_pre"]) for r in rows],
                style,
                color=colour,
                alpha=0.45,
                label=f"{label}, before adaptation",
            )
            train_ax.plot(
                steps,
                [float(r["return_post"]) for r in rows],
                style,
                color=colour,
                label=f"{label}, after adaptation",
            )
            evals = [r for r in rows if r.get("eval_return_1")]
            for k, alpha in ((0, 0.45), (1, 1.0)):
                eval_ax.plot(
                    [float(r["env_steps"]) for r in evals],
                    [float(r[f"eval_return_{k}"]) for r in evals],
                    style + "o",
                    color=colour,
                    alpha=alpha,
                    markersize=3,
                    label=f"{label}, after {k} step{'s' * (k != 1)}",
                )
    if family in PUBLISHED:
        name, published = PUBLISHED[family]
        eval_ax.axhline(published[1], color="k", lw=0.8, label=f"{name}, after 1 step")
    config = _config(next(iter(runs.values()))[0])
    train_ax.set_title(f"{family}: training tasks (after {config['inner_steps']} inner steps)")
    eval_ax.set_title(f"{family}: held-out test tasks (periodic evaluation)")
    for ax in (train_ax, eval_ax):
        ax.set_xlabel("env steps (meta-training)")
        ax.grid(alpha=0.3)
        # Below the panel: with several seeds a legend inside covers the curves.
        ax.legend(fontsize=6, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    train_ax.set_ylabel("mean episode return")
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _config(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def report(
    family_dir: Path,
    runs: dict[str, list[Path]],
    metrics: dict[Path, list[dict]],
    machines: list[dict],
) -> str:
    family = family_dir.name
    lines = []
    for split in SPLITS:
        evals = {  # variant: [(run, its eval record)]
            variant: [
                (run, json.loads(path.read_text()))
                for run in dirs
                if (path := run / f"eval_{split}.json").is_file()
            ]
            for variant, dirs in runs.items()
        }
        found = [e for pairs in evals.values() for _, e in pairs]
        if not found:
            continue
        baselines = baselines_of(family_dir, split)
        steps = range(min(len(e["returns"]) for e in found))
        header = " | ".join(str(k) for k in steps)
        lines += [
            f"\n{family}, {split} split: return after 0..{steps[-1]} steps, "
            "mean over seeds ± 95% t-interval\n",
            f"| variant | seeds | iterations | env steps | {header} |",
            "|---|---|---|---|" + "---|" * len(steps),
        ]
        for variant, pairs in evals.items():
            if not pairs:
                continue
            returns = [e["returns"] for _, e in pairs]
            cells = [format_mean_ci(*mean_and_t95([r[k] for r in returns])) for k in steps]
            iterations = "/".join(str(e["iteration"] + 1) for _, e in pairs)
            env_steps = "/".join(
                f"{_env_steps(metrics[run], e['iteration']) / 1e6:.1f}M" for run, e in pairs
            )
            lines.append(
                f"| {variant} | {len(pairs)} | {iterations} | {env_steps} | {' | '.join(cells)} |"
            )
        for method, records in baselines.items():
            returns = [e["returns"] for _, e in records]
            cells = [format_mean_ci(*mean_and_t95([r[k] for r in returns])) for k in steps]
            pretrain = "/".join(f"{e.get('pretrain_env_steps', 0) / 1e6:.1f}M" for _, e in records)
            lines.append(
                f"| {method} (PPO updates) | {len(records)} | | {pretrain} | {' | '.join(cells)} |"
            )
        if family in PUBLISHED and split == "test":
            name, published = PUBLISHED[family]
            cells = " | ".join(f"{published[k]:.1f}" for k in steps if k < len(published))
            lines.append(f"| {name} | | 500 | | {cells} |")
        lines += [
            "",
            "Per run (mean over tasks ± 95% interval over tasks):",
            "",
            f"| run | {header} |",
            "|---|" + "---|" * len(steps),
        ]
        for variant, pairs in evals.items():
            for run, e in pairs:
                cells = [format_mean_ci(e["returns"][k], e["ci95"][k]) for k in steps]
                lines.append(f"| {variant} {run.name} | {' | '.join(cells)} |")
        for method, records in baselines.items():
            for seed, e in records:
                cells = [format_mean_ci(e["returns"][k], e["ci95"][k]) for k in steps]
                lines.append(f"| {method} {seed} | {' | '.join(cells)} |")
        if {"identity", "kronecker"} <= set(runs):
            lines += ["", _paired_table(family_dir / "kronecker", family_dir / "identity", [split])]
    lines += ["", "Wall-clock (sum of the phase timings in metrics.csv):", ""]
    for variant, dirs in runs.items():
        for run in dirs:
            spent = "; ".join(wall_clock(metrics[run], machines_of(run, machines)))
            lines.append(f"- {variant} {run.name}: {spent}")
    return "\n".join(lines)


def baselines_of(family_dir: Path, split: str) -> dict[str, list[tuple[str, dict]]]:
    """``{method: [(seed directory name, eval record)]}`` of the family's baselines on ``split``."""
    root = family_dir.parent / "baselines" / family_dir.name
    methods = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    found = {
        method.name: [
            (path.parent.name, json.loads(path.read_text()))
            for path in sorted(method.glob(f"seed*/eval_{split}.json"))
        ]
        for method in methods
    }
    return {method: records for method, records in found.items() if records}


def _env_steps(rows: list[dict], iteration: int) -> float:
    return float(rows[min(iteration, len(rows) - 1)]["env_steps"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family_dir", type=Path)
    parser.add_argument("--no-evaluate", action="store_true", help="use the eval files there")
    parser.add_argument("--tasks", type=int, default=40, help="held-out tasks per split")
    parser.add_argument("--steps", type=int, default=3, help="adaptation steps")
    args = parser.parse_args(argv)
    if not args.family_dir.is_dir():
        print(f"benchmark_scale: no directory {str(args.family_dir)!r}", file=sys.stderr)
        return 2
    runs = runs_of(args.family_dir)
    if not runs:
        print(
            f"benchmark_scale: no VARIANT/seedN runs in {str(args.family_dir)!r}", file=sys.stderr
        )
        return 2
    machines_file = args.family_dir / "machines.json"
    machines = (
        json.loads(machines_file.read_text())
        if machines_file.is_file()
        else [{"from_iteration": 0, "machine": "this machine"}]
    )
    if not args.no_evaluate:
        for dirs in runs.values():
            for run in dirs:
                evaluate(run, args.tasks, args.steps)
    metrics = {run: read_metrics(run) for dirs in runs.values() for run in dirs}
    curves = args.family_dir / "learning_curves.png"
    learning_curves(args.family_dir.name, runs, metrics, curves)
    print(report(args.family_dir, runs, metrics, machines))
    print(
        f"\nCurves: {curves}. "
        f"`python experiments/benchmark_scale.py {' '.join(argv or sys.argv[1:])}`"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
