"""Regenerate the adaptation results table of experiments/README.md, with ``mcrl sweep``.

For every family: one sweep (``RESULTS/<family>.yaml``, written here from the budget, variants
and seeds asked for) of the family's config under every curvature variant and seed, each trial
evaluated on the test and ood splits after 0..3 steps; optionally the SB3 PPO baselines
(experiments/baselines/sb3_ppo.py) on the same tasks. Resumable, and extendable with more seeds
or variants: finished trials are not redone. Failed trials are shown as failed in the table.
``--ray-address`` runs each family's trials across a Ray cluster, the same way.

    python experiments/run_benchmarks.py --budget reduced --seeds 0 1 2
    python experiments/run_benchmarks.py --budget full --families Navigation2D --seeds 0 1 2
    python experiments/run_benchmarks.py --table-only      # rebuild the table from results
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

import yaml

from mcrl.rollout.ray_cluster import shutdown_embedded_ray
from mcrl.sweeps.runner import run_sweep
from mcrl.sweeps.spec import load_sweep
from mcrl.sweeps.summary import format_mean_ci, mean_and_t95, summarize

HERE = Path(__file__).parent
CONFIGS = {
    "Navigation2D": "navigation2d.yaml",
    "HalfCheetahDir": "halfcheetah_dir.yaml",
    "HalfCheetahVel": "halfcheetah_vel.yaml",
    "AntDir": "ant_dir.yaml",
    "HopperParams": "hopper_params.yaml",
    "PendulumDynamics": "pendulum_dynamics.yaml",
    "CartPoleDynamics": "cartpole_dynamics.yaml",
}
VARIANTS = {
    "identity (MAML)": {"curvature": "identity"},
    "diagonal (Meta-SGD)": {"curvature": "diagonal"},
    "kronecker (MC)": {"curvature": "kronecker"},
    "kronecker + alignment": {"curvature": "kronecker", "alignment_weight": 1e-4},
}
# What fits the 2-core development machine in a few hours for all families; the table says
# which budget each row used. "full" is each config file as written.
BUDGETS = {
    "reduced": {
        "Navigation2D": {"iterations": 60, "meta_batch_size": 10, "episodes_per_task": 10},
        "PendulumDynamics": {"iterations": 40, "meta_batch_size": 10, "episodes_per_task": 10},
        "CartPoleDynamics": {"iterations": 40, "meta_batch_size": 10, "episodes_per_task": 10},
        "*": {"iterations": 10, "meta_batch_size": 8, "episodes_per_task": 8},
    },
    "full": {"*": {}},
}
EVALUATE = {"splits": ["test", "ood"], "tasks": 10, "steps": 3}
MCRL = [sys.executable, "-m", "mcrl"]  # the `mcrl` command of this interpreter
# Published numbers after 0/1/2/3 steps (design §7): MAML-TRPO.
LITERATURE = {
    "Navigation2D": ("MAML (Finn et al. 2017)", [-40.41, -11.68, -3.33, -3.23]),
    "HalfCheetahDir": ("MAML (Finn et al. 2017)", [-50.69, 293.19, 313.48, 315.65]),
}


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()


def sweep_file(family: str, variants: list[str], seeds: list[int], budget: str, root: Path) -> Path:
    """The family's sweep file; the budget's overrides go in ``set`` (evaluations only at the
    end: the table's numbers come from each trial's final evaluation)."""
    budget_set = BUDGETS[budget].get(family, BUDGETS[budget]["*"])
    base = os.path.relpath(HERE / CONFIGS[family], root)
    sweep = {
        "base": base,
        "set": budget_set | {"eval_every": 0},
        "variants": {name: VARIANTS[name] for name in variants},
        "seeds": seeds,
        "evaluate": EVALUATE,
        "max_failures": 0,  # a failure here is a finding for the table, not bad luck
    }
    path = root / f"{family}.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# budget: {budget}\n" + yaml.safe_dump(sweep, sort_keys=False))
    return path


def run_family(
    family: str, variants: list[str], seeds: list[int], budget: str, root: Path, address: str | None
) -> None:
    held = root / family / "sweep.json"
    if held.exists():  # keep the held trials' variants and seeds: a resumed sweep only adds
        record = json.loads(held.read_text())
        variants = list(
            dict.fromkeys([t["assignments"]["variant"] for t in record["trials"]] + variants)
        )
        seeds = sorted({t["seed"] for t in record["trials"]} | set(seeds))
    spec = load_sweep(sweep_file(family, variants, seeds, budget, root))
    run_sweep(spec, root / family, ray_address=address, resume=held.exists())


def evaluate(command: list[str], split: str, out: Path) -> None:
    """Run a baseline that prints its eval.json record last, into ``out``; a family without
    that split gets ``{"unavailable": why}``."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode == 0:
        out.write_text(result.stdout.strip().splitlines()[-1])
    elif f"has no {split} split" in result.stderr:
        why = result.stderr.strip().splitlines()[-1]
        out.write_text(json.dumps({"split": split, "unavailable": why}))
    else:
        raise subprocess.CalledProcessError(result.returncode, command, stderr=result.stderr)


def baseline(family: str, kind: str, seed: int, root: Path) -> None:
    run_dir = root / "baselines" / family / f"sb3_ppo_{kind}" / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    for split in ("test", "ood"):
        out = run_dir / f"eval_{split}.json"
        if out.exists():
            continue
        command = [sys.executable, str(HERE / "baselines" / "sb3_ppo.py"), kind]
        command += ["--family", family, "--split", split, "--tasks", "10", "--steps", "3"]
        command += ["--episodes", "10", "--seed", str(seed), "--out", str(out)]
        command += ["--pretrain-steps", "100000"] if kind == "multitask" else []
        try:
            evaluate(command, split, out)
        except subprocess.CalledProcessError as exc:
            error = (exc.stderr.strip().splitlines() or ["?"])[-1]
            (run_dir / "failed.json").write_text(json.dumps({"command": command, "error": error}))


def sweep_rows(root: Path, family: str) -> list[dict]:
    """The family's sweep summary (one row per variant), written beside its trials."""
    if not (root / family / "sweep.json").exists():
        return []
    rows, _ = summarize(root / family)
    budget = (root / f"{family}.yaml").read_text().splitlines()[0].removeprefix("# budget: ")
    for row in rows:
        row["budget"] = budget
        for split in ("test", "ood"):
            steps = [k for k in range(10) if f"{split}_return_{k}" in row]
            row[split] = [
                (row[f"{split}_return_{k}"], row[f"{split}_return_{k}_ci95"]) for k in steps
            ]
    return rows


def baseline_rows(root: Path, family: str) -> list[dict]:
    rows = []
    for method in sorted((root / "baselines" / family).glob("sb3_ppo_*")):
        runs = sorted(method.glob("seed*"))
        row = {
            "variant": method.name,
            "seeds": len(runs),
            "env_steps": math.nan,
            "wall_s": math.nan,
        }
        row["budget"] = "pretrain 100k" if "multitask" in method.name else "–"
        failed = [
            json.loads((r / "failed.json").read_text())["error"]
            for r in runs
            if (r / "failed.json").exists()
        ]
        row["status"] = f"**failed: {failed[0]}**" if failed else ""
        for split in ("test", "ood"):
            evals = [
                json.loads(p.read_text()) for r in runs if (p := r / f"eval_{split}.json").exists()
            ]
            row[f"{split}_unavailable"] = any("unavailable" in e for e in evals)
            evals = [e for e in evals if "returns" in e]
            steps = min((len(e["returns"]) for e in evals), default=0)
            row[split] = [mean_and_t95([e["returns"][k] for e in evals]) for k in range(steps)]
        rows.append(row)
    return rows


def comparison(rows: dict[str, list[dict]]) -> list[str]:
    """Where kronecker (Meta-Curvature) reaches at least identity (MAML) after one step."""
    lines = [
        "| family | identity, test, 1 step | kronecker, test, 1 step | kronecker ≥ identity |",
        "|---|---|---|---|",
    ]
    wins = total = 0
    for family, family_rows in rows.items():
        after_one = {r["variant"]: r["test"][1][0] for r in family_rows if len(r["test"]) > 1}
        identity, kronecker = after_one.get("identity (MAML)"), after_one.get("kronecker (MC)")
        if identity is None or kronecker is None:
            continue
        total += 1
        wins += kronecker >= identity
        verdict = "yes" if kronecker >= identity else "**no**"
        lines.append(f"| {family} | {identity:.1f} | {kronecker:.1f} | {verdict} |")
    lines += ["", f"kronecker ≥ identity on {wins} of {total} families (mean over seeds)."]
    return lines


def table(root: Path) -> str:
    """The markdown table: mean over seeds ± 95% t-interval over seeds, per number of steps."""
    lines = [
        "| family | method | seeds | test: 0 / 1 / 2 / 3 steps | ood: 0 / 1 / 2 / 3 steps "
        "| train env steps | train time (s) | budget |",
        "|---|---|---|---|---|---|---|---|",
    ]
    meta_rows = {}
    for family in CONFIGS:
        meta_rows[family] = sweep_rows(root, family)
        for row in meta_rows[family] + baseline_rows(root, family):
            status = row.get("status", "")
            if row.get("failed"):
                status = f"**failed: {row['errors']}**"
            cols = []
            for split in ("test", "ood"):
                missing = f"no {split} split" if row.get(f"{split}_unavailable") else "–"
                cols.append(" / ".join(format_mean_ci(m, c) for m, c in row[split]) or missing)
            steps = "–" if math.isnan(row["env_steps"]) else f"{row['env_steps']:,.0f}"
            wall = "–" if math.isnan(row["wall_s"]) else f"{row['wall_s']:.0f}"
            seeds = row.get("finished", row["seeds"])
            method = f"{row['variant']} {status}".strip()
            lines.append(
                f"| {family} | {method} | {seeds} | {cols[0]} | {cols[1]} | {steps} | {wall} | {row['budget']} |"
            )
        if family in LITERATURE:
            name, numbers = LITERATURE[family]
            lines.append(
                f"| {family} | {name} | – | {' / '.join(f'{x:.2f}' for x in numbers)} | – | – | – | paper |"
            )
    lines += ["", *comparison(meta_rows)]
    machine = f"{platform.node()}: {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    return (
        "\n".join(lines)
        + f"\n\nMean over seeds ± 95% t-interval over seeds. Generated by `python experiments/run_benchmarks.py --table-only` from `{os.path.relpath(root)}` ({machine}).\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", choices=list(BUDGETS), default="reduced")
    parser.add_argument("--baselines", nargs="*", choices=["scratch", "multitask"], default=[])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "benchmarks")
    parser.add_argument("--ray-address", help="run the trials on this Ray cluster")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.table_only:
        for family in args.families:
            print(
                f"{family}: {', '.join(args.variants)}; seeds {args.seeds}",
                file=sys.stderr,
                flush=True,
            )
            if args.variants:
                run_family(
                    family, args.variants, args.seeds, args.budget, args.out, args.ray_address
                )
            for seed in args.seeds:
                for kind in args.baselines:
                    baseline(family, kind, seed, args.out)
    shutdown_embedded_ray()
    text = table(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
