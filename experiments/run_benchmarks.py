"""Regenerate the adaptation results table of experiments/README.md.

For every family, curvature variant and seed: ``mcrl train`` the family's config (with the
budget's overrides), then ``mcrl evaluate`` on the test and ood splits after 0..3 steps.
Optionally the SB3 PPO baselines (experiments/baselines/sb3_ppo.py) on the same tasks.
Resumable: a run whose evaluations exist is skipped, an interrupted one resumes from its
checkpoint. A run that fails is recorded (``failed.json``) and shown as failed in the table.

    python experiments/run_benchmarks.py --budget reduced --seeds 0 1 2
    python experiments/run_benchmarks.py --budget full --families Navigation2D --seeds 0 1 2
    python experiments/run_benchmarks.py --table-only      # rebuild the table from results
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

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
    "identity (MAML)": ["curvature=identity"],
    "diagonal (Meta-SGD)": ["curvature=diagonal"],
    "kronecker (MC)": ["curvature=kronecker"],
    "kronecker + alignment": ["curvature=kronecker", "alignment_weight=1e-4"],
}
# What fits the 2-core development machine in a few hours for all families; the table says
# which budget each row used. "full" is each config file as written.
# On 2 cores one process steps every env faster than Ray workers would: "reduced" samples locally.
LOCAL = "sampler.backend=local"
BUDGETS = {
    "reduced": {
        "Navigation2D": ["iterations=60", "meta_batch_size=10", "episodes_per_task=10", LOCAL],
        "PendulumDynamics": ["iterations=40", "meta_batch_size=10", "episodes_per_task=10", LOCAL],
        "CartPoleDynamics": ["iterations=40", "meta_batch_size=10", "episodes_per_task=10", LOCAL],
        "*": ["iterations=10", "meta_batch_size=8", "episodes_per_task=8", LOCAL],
    },
    "full": {"*": []},
}
EVAL = ["--tasks", "10", "--steps", "3"]
MCRL = [sys.executable, "-m", "mcrl"]  # the `mcrl` command of this interpreter
# Published numbers after 0/1/2/3 steps (design §7): MAML-TRPO.
LITERATURE = {
    "Navigation2D": ("MAML (Finn et al. 2017)", [-40.41, -11.68, -3.33, -3.23]),
    "HalfCheetahDir": ("MAML (Finn et al. 2017)", [-50.69, 293.19, 313.48, 315.65]),
}


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()


def run(command: list[str], log: Path) -> None:
    with log.open("a") as f:
        f.write("$ " + " ".join(command) + "\n")
        f.flush()
        subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, check=True)


def evaluate(command: list[str], split: str, out: Path) -> None:
    """Run an evaluation that prints its eval.json record last, into ``out``; a family without
    that split gets ``{"unavailable": why}``."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode == 0:
        out.write_text(result.stdout.strip().splitlines()[-1])
    elif f"has no {split} split" in result.stderr:
        why = result.stderr.strip().splitlines()[-1]
        out.write_text(json.dumps({"split": split, "unavailable": why}))
    else:
        raise subprocess.CalledProcessError(result.returncode, command, stderr=result.stderr)


def train_and_evaluate(family: str, variant: str, seed: int, budget: str, root: Path) -> None:
    run_dir = root / family / slug(variant) / f"seed{seed}"
    if (run_dir / "eval_test.json").exists() and (run_dir / "eval_ood.json").exists():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "failed.json").unlink(missing_ok=True)
    overrides = BUDGETS[budget].get(family, BUDGETS[budget]["*"])
    overrides = [*overrides, *VARIANTS[variant], f"seed={seed}", "eval_every=0"]
    command = [*MCRL, "train", str(HERE / CONFIGS[family]), "--out", str(run_dir / "run")]
    command += [arg for o in overrides for arg in ("--set", o)] + ["--no-progress"]
    if (run_dir / "run" / "checkpoints" / "latest.pt").exists():
        command.append("--resume")
    try:
        run(command, run_dir / "log.txt")
        for split in ("test", "ood"):
            evaluation = [*MCRL, "evaluate", str(run_dir / "run"), "--split", split, *EVAL]
            evaluate([*evaluation, "--json"], split, run_dir / f"eval_{split}.json")
    except subprocess.CalledProcessError as exc:
        output = exc.stderr or (run_dir / "log.txt").read_text()
        error = (output.strip().splitlines() or [str(exc)])[-1]
        (run_dir / "failed.json").write_text(json.dumps({"command": exc.cmd, "error": error}))
        print(f"FAILED {family} / {variant} / seed {seed}: {error}", file=sys.stderr)
        return
    with (run_dir / "run" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    # Training time from the run's own per-phase timings: right even when a rerun resumed it.
    seconds = sum(float(v) for row in rows for k, v in row.items() if k.startswith("time_"))
    record = {"command": command, "wall_s": round(seconds, 1), "budget": budget}
    (run_dir / "train.json").write_text(
        json.dumps(record | {"env_steps": int(rows[-1]["env_steps"])})
    )


def baseline(family: str, kind: str, seed: int, root: Path) -> None:
    run_dir = root / family / f"sb3_ppo_{kind}" / f"seed{seed}"
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


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean = float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {1.96 * float(np.std(values, ddof=1)) / math.sqrt(len(values)):.1f}"


def mean_after_one_step(root: Path, family: str, method: str) -> float | None:
    values = [
        json.loads(path.read_text())["returns"][1]
        for path in (root / family / slug(method)).glob("seed*/eval_test.json")
    ]
    return float(np.mean(values)) if values else None


def comparison(root: Path) -> list[str]:
    """Where kronecker (Meta-Curvature) reaches at least identity (MAML) after one step."""
    lines = [
        "| family | identity, test, 1 step | kronecker, test, 1 step | kronecker ≥ identity |",
        "|---|---|---|---|",
    ]
    wins = total = 0
    for family in CONFIGS:
        identity = mean_after_one_step(root, family, "identity (MAML)")
        kronecker = mean_after_one_step(root, family, "kronecker (MC)")
        if identity is None or kronecker is None:
            continue
        total += 1
        wins += kronecker >= identity
        verdict = "yes" if kronecker >= identity else "**no**"
        lines.append(f"| {family} | {identity:.1f} | {kronecker:.1f} | {verdict} |")
    lines += ["", f"kronecker ≥ identity on {wins} of {total} families (mean over seeds)."]
    return lines


def table(root: Path) -> str:
    """The markdown table: mean over seeds ± 95% CI over seeds, per number of steps."""
    lines = [
        "| family | method | seeds | test: 0 / 1 / 2 / 3 steps | ood: 0 / 1 / 2 / 3 steps "
        "| train env steps | train time (s) | budget |",
        "|---|---|---|---|---|---|---|---|",
    ]
    methods = [*VARIANTS, "sb3_ppo_scratch", "sb3_ppo_multitask"]
    for family in CONFIGS:
        for method in methods:
            runs = sorted((root / family / slug(method)).glob("seed*"))
            if not runs:
                continue
            evals = {s: [] for s in ("test", "ood")}
            unavailable = dict.fromkeys(evals, False)
            failed, trains = [], []
            for r in runs:
                if (r / "failed.json").exists():
                    failed.append(json.loads((r / "failed.json").read_text())["error"])
                for split in evals:
                    path = r / f"eval_{split}.json"
                    record = json.loads(path.read_text()) if path.exists() else {}
                    if "returns" in record:
                        evals[split].append(record)
                    unavailable[split] |= "unavailable" in record
                if (r / "train.json").exists():
                    trains.append(json.loads((r / "train.json").read_text()))
            cols = []
            for split in ("test", "ood"):
                steps = len(evals[split][0]["returns"]) if evals[split] else 0
                per_step = [[e["returns"][k] for e in evals[split]] for k in range(steps)]
                missing = f"no {split} split" if unavailable[split] else "–"
                cols.append(" / ".join(cell(v) for v in per_step) or missing)
            steps_used = f"{np.mean([t['env_steps'] for t in trains]):,.0f}" if trains else "–"
            wall = f"{np.mean([t['wall_s'] for t in trains]):.0f}" if trains else "–"
            budget = (
                trains[0]["budget"]
                if trains
                else ("pretrain 100k" if "multitask" in method else "–")
            )
            note = f" **failed: {failed[0]}**" if failed else ""
            lines.append(
                f"| {family} | {method}{note} | {len(evals['test'])} | {cols[0]} | {cols[1]} "
                f"| {steps_used} | {wall} | {budget} |"
            )
        if family in LITERATURE:
            name, numbers = LITERATURE[family]
            lines.append(
                f"| {family} | {name} | – | {' / '.join(f'{x:.2f}' for x in numbers)} | – | – | – | paper |"
            )
    lines += ["", *comparison(root)]
    machine = f"{platform.node()}: {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    return (
        "\n".join(lines)
        + f"\n\nGenerated by `python experiments/run_benchmarks.py --table-only` from `{os.path.relpath(root)}` ({machine}).\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", choices=list(BUDGETS), default="reduced")
    parser.add_argument("--baselines", nargs="*", choices=["scratch", "multitask"], default=[])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "benchmarks")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.table_only:
        for family in args.families:
            for seed in args.seeds:
                for variant in args.variants:
                    print(f"{family} / {variant} / seed {seed}", file=sys.stderr, flush=True)
                    train_and_evaluate(family, variant, seed, args.budget, args.out)
                for kind in args.baselines:
                    baseline(family, kind, seed, args.out)
    text = table(args.out)
    (args.out / "table.md").parent.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
