"""Start a longer sweep from the trials of a shorter one, so that only the extra iterations run.

Training is deterministic per seed and resumes exactly, so a trial trained to N iterations and
continued to M is the trial that a sweep of M iterations would have trained (its metrics.csv
also holds the evaluation that ended the shorter run, at iteration N - 1). This writes the new
sweep's directory (its ``sweep.json``) and copies each source trial's run directory into it,
without the files of its end (``trial.json``, ``eval_<split>.json``), after checking that the
source trial ran the same config as the new one in everything but ``iterations`` (and the keys
named with ``--allow``); a seed that the shorter sweep lacks trains from scratch. Then
``mcrl sweep NEW.yaml --out NEW_DIR --resume`` trains the rest.

    python experiments/extend_sweep.py experiments/sweeps/navigation2d_500.yaml \
        experiments/results/defaults/navigation2d_500 \
        000_curvature=identity:experiments/results/defaults/navigation2d/runs/000_curvature=identity \
        --allow curvature_lr_scaling
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from mcrl.common.config import (
    ConfigError,
    TrainConfig,
    from_dict,
    from_saved_dict,
    read_yaml_mapping,
    to_dict,
)
from mcrl.sweeps.runner import TRIAL_FILE, run_dir_of, write_sweep_record
from mcrl.sweeps.spec import load_sweep


def differences(source: dict, target: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, source's value, target's value) wherever two nested configs differ."""
    found = []
    for key in sorted(set(source) | set(target)):
        a, b = source.get(key), target.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append((f"{prefix}{key}", a, b))
    return found


def extend(sweep_file: str, out: Path, sources: dict[str, Path], allowed: set[str]) -> None:
    spec = load_sweep(sweep_file)
    trials = spec.trials()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{str(out)!r} is not empty; choose another directory")
    configurations = {t.configuration for t in trials}
    unknown = set(sources) - configurations
    if unknown:
        raise ConfigError(
            f"no configuration {sorted(unknown)[0]!r} in {sweep_file}; it has {sorted(configurations)}"
        )
    plan = []
    for trial in trials:
        if trial.configuration not in sources:
            continue
        source = sources[trial.configuration] / f"seed{trial.seed}"
        if not source.exists():
            print(f"{trial.name}: no {source}, trains from scratch")
            continue
        saved = source / "config.yaml"
        if not (source / "checkpoints" / "latest.pt").is_file() or not saved.is_file():
            raise ConfigError(
                f"{str(source)!r} holds no run (config.yaml and checkpoints/latest.pt)"
            )
        # Both as the trainer reads them, so that only real differences remain.
        ran = to_dict(from_saved_dict(read_yaml_mapping(saved, "run config")))
        wanted = to_dict(from_dict(TrainConfig, trial.config))
        for key, had, wants in differences(ran, wanted):
            if key not in allowed | {"iterations"}:
                raise ConfigError(
                    f"{str(source)!r} ran with {key}={had!r}, the sweep's trial wants {wants!r}; "
                    f"pass --allow {key} if that cannot change the run"
                )
        if ran["iterations"] > wanted["iterations"]:
            raise ConfigError(
                f"{str(source)!r} already ran {ran['iterations']} iterations, more than the "
                f"sweep's {wanted['iterations']}"
            )
        plan.append((source, run_dir_of(out, trial)))
    write_sweep_record(out, spec, trials)
    for source, target in plan:
        shutil.copytree(source, target)
        for ended in [TRIAL_FILE, *(p.name for p in target.glob("eval_*.json"))]:
            (target / ended).unlink(missing_ok=True)
        print(f"{source} -> {target}")
    print(f"continue with: mcrl sweep {sweep_file} --out {out} --resume")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_file", help="the longer sweep's file")
    parser.add_argument("out", type=Path, help="its sweep directory (new)")
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="CONFIGURATION:DIR",
        help="a configuration of the new sweep and the shorter sweep's configuration directory "
        "(holding seedK/) whose trials it continues",
    )
    parser.add_argument(
        "--allow", nargs="*", default=[], metavar="KEY", help="config keys that may differ"
    )
    args = parser.parse_args()
    try:
        sources = {}
        for pair in args.sources:
            configuration, colon, directory = pair.partition(":")
            if not colon:
                raise ConfigError(f"{pair!r} is not CONFIGURATION:DIR")
            sources[configuration] = Path(directory)
        extend(args.sweep_file, args.out, sources, set(args.allow))
    except ConfigError as exc:
        sys.exit(f"extend_sweep: {exc}")


if __name__ == "__main__":
    main()
