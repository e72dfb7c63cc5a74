"""Running a sweep's trials with Ray Tune, each an ordinary mcrl run directory.

The sweep directory holds ``sweep.json`` (the sweep file's trials, exactly), ``runs/<configuration>/
seed<k>/`` (one run directory per trial, the same files as ``mcrl train`` writes, plus
``trial.json``: finished, stopped early or failed, and ``eval_<split>.json``), ``tune/`` (Ray
Tune's own state and each trial's log) and the summary (``summary.csv``, ``summary.md``).

A trial checkpoints through mcrl's own checkpoints: when it fails, Tune retries it
(``max_failures``) and it resumes from its run directory's latest checkpoint; ``--resume``
skips finished trials and continues the others from theirs.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcrl.common.config import ConfigError, TrainConfig, from_dict, from_saved_dict, to_dict
from mcrl.common.validation import first_line
from mcrl.rollout.ray_cluster import connect_ray
from mcrl.sweeps.spec import SweepSpec, Trial, trial_resources
from mcrl.training.adaptation import evaluate_checkpoint
from mcrl.training.trainer import Trainer

SWEEP_FILE = "sweep.json"
TRIAL_FILE = "trial.json"
DONE = ("finished", "stopped early")


def run_dir_of(sweep_dir: Path, trial: Trial) -> Path:
    return sweep_dir / "runs" / trial.configuration / f"seed{trial.seed}"


def read_status(run_dir: Path) -> dict[str, Any]:
    """A trial's ``trial.json``: ``{"status": ...}``, ``pending`` if it has not ended yet."""
    path = run_dir / TRIAL_FILE
    return json.loads(path.read_text()) if path.exists() else {"status": "pending"}


def trial_status(sweep_dir: Path, trial: Trial) -> dict[str, Any]:
    return read_status(run_dir_of(sweep_dir, trial))


def _write_status(run_dir: Path, status: str, **details: Any) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / TRIAL_FILE).write_text(json.dumps({"status": status, **details}, indent=2))


def sweep_record(spec: SweepSpec, trials: list[Trial]) -> dict[str, Any]:
    """What ``sweep.json`` holds: enough to tell this sweep from another one, and to summarise."""
    return {
        "sweep_file": str(spec.path),
        "metric": spec.metric,
        "mode": spec.mode,
        "keys": ["variant"] * bool(spec.variants) + list(spec.grid) + list(spec.search),
        "trials": [
            {
                "configuration": t.configuration,
                "assignments": t.assignments,
                "seed": t.seed,
                "config": t.config,
            }
            for t in trials
        ],
    }


def write_sweep_record(sweep_dir: Path, spec: SweepSpec, trials: list[Trial]) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / SWEEP_FILE).write_text(json.dumps(sweep_record(spec, trials), indent=1))


def _with_keys_added_since(trial: dict[str, Any]) -> dict[str, Any]:
    """A recorded trial with the config keys added to mcrl since, at the values it ran with
    (see ``BEFORE_THE_KEY``), so that a newer mcrl still recognises its own sweep."""
    try:
        config = to_dict(from_saved_dict(trial["config"]))
    except ConfigError:
        return trial  # a key that no longer exists: the comparison will say it differs
    return trial | {"config": json.loads(json.dumps(config))}


def check_sweep_dir(spec: SweepSpec, sweep_dir: Path, *, resume: bool) -> list[Trial]:
    """The sweep's trials, once ``sweep_dir`` is known to be free for them or, with ``resume``,
    to hold this sweep or one that it extends by more trials. Writes nothing."""
    trials = spec.trials()
    path = sweep_dir / SWEEP_FILE
    if path.exists():
        held = json.loads(path.read_text())
        held["trials"] = [_with_keys_added_since(t) for t in held["trials"]]
        ours = json.loads(json.dumps(sweep_record(spec, trials)["trials"]))
        # A resumed sweep may add trials (more seeds, say), never change one that exists.
        if not all(trial in ours for trial in held["trials"]) or (
            not resume and held["trials"] != ours
        ):
            raise ConfigError(
                f"sweep directory {str(sweep_dir)!r} holds a different sweep (from "
                f"{held['sweep_file']!r}); choose another --out"
            )
        if not resume:
            raise ConfigError(
                f"sweep directory {str(sweep_dir)!r} already holds this sweep; pass --resume to "
                "continue it, or --summary to summarise it"
            )
    elif resume:
        raise ConfigError(f"no sweep to resume in {str(sweep_dir)!r} (it has no {SWEEP_FILE})")
    elif sweep_dir.exists() and any(sweep_dir.iterdir()):
        raise ConfigError(
            f"{str(sweep_dir)!r} is not empty and holds no sweep; choose another --out"
        )
    return trials


def run_trial(
    tune_config: dict[str, Any],
    trials: dict[str, Trial],
    sweep_dir: Path,
    evaluate: dict[str, Any],
) -> None:
    """A Ray Tune function trainable: train one trial into its run directory, reporting every
    iteration, then evaluate it on the held-out splits."""
    import ray
    from ray import tune

    trial = trials[tune_config["trial"]]
    run_dir = run_dir_of(sweep_dir, trial)
    config = from_dict(TrainConfig, trial.config)
    resume = (run_dir / "checkpoints" / "latest.pt").exists()
    if not resume:
        # A try that died before its first checkpoint left rows of iterations it never saved.
        (run_dir / "metrics.csv").unlink(missing_ok=True)
    where = {
        "attempts": read_status(run_dir).get("attempts", 0) + 1,
        "node_id": ray.get_runtime_context().get_node_id(),
    }
    latest_eval = dict.fromkeys(
        (f"eval_return_{k}" for k in range(config.inner_steps + 1)), math.nan
    )

    def report(row: dict[str, Any]) -> None:
        # Between evaluations a scheduler compares the latest one (NaN before the first).
        latest_eval.update({k: v for k, v in row.items() if k in latest_eval and v != ""})
        numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and v != ""}
        tune.report(numbers | latest_eval)

    try:
        trainer = Trainer(config, run_dir, resume=resume, progress=False)
        try:
            trainer.train(on_iteration=report)
        finally:
            trainer.close()
        for split in evaluate["splits"]:
            _evaluate_split(run_dir, split, evaluate)
    except Exception as exc:
        _write_status(run_dir, "failed", error=first_line(exc), **where)
        raise
    _write_status(run_dir, "finished", **where, **train_record(run_dir))


def train_record(run_dir: Path) -> dict[str, Any]:
    """Iterations, env steps and training wall-clock of a run directory, from its metrics.csv
    (the sum of the per-phase timings: right across resumes and retries)."""
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {"iterations": 0, "env_steps": 0, "wall_s": 0.0}
    seconds = sum(float(v) for row in rows for k, v in row.items() if k.startswith("time_") and v)
    return {
        "iterations": len(rows),
        "env_steps": int(rows[-1]["env_steps"]),
        "wall_s": round(seconds, 2),
    }


def _evaluate_split(run_dir: Path, split: str, evaluate: dict[str, Any]) -> None:
    out = run_dir / f"eval_{split}.json"
    try:
        record, _ = evaluate_checkpoint(
            run_dir,
            split=split,
            num_tasks=evaluate.get("tasks"),
            steps=evaluate["steps"],
            episodes=evaluate.get("episodes"),
        )
    except ValueError as exc:
        if f"no {split} split" not in str(exc):
            raise
        record = {"split": split, "unavailable": first_line(exc)}
    out.write_text(json.dumps(record, indent=2))


def _status_callback(sweep_dir: Path, by_name: dict[str, Trial], say: Callable[[str], None]):
    """A Tune callback, in the driver: a progress line per trial every ``log_every`` iterations,
    one line per ended trial, and ``trial.json`` for trials that a scheduler stopped (their
    process is gone before it can write one)."""
    from ray import tune

    class TrialStatus(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            ours = by_name[trial.config["trial"]]
            done, total = int(result["iteration"]) + 1, ours.config["iterations"]
            if done % ours.config["log_every"] == 0 and done < total:
                say(
                    f"{ours.name}: iteration {done}/{total}, return "
                    f"{result['return_pre']:.1f} → {result['return_post']:.1f}"
                )

        def on_trial_complete(self, iteration, trials, trial, **info):
            ours = by_name[trial.config["trial"]]
            status = trial_status(sweep_dir, ours)
            if status["status"] != "finished":  # stopped by the scheduler
                run_dir = run_dir_of(sweep_dir, ours)
                status = {"status": "stopped early"} | train_record(run_dir)
                _write_status(run_dir, **status)
            say(f"{ours.name}: {status['status']} after {status['iterations']} iterations")

        def on_trial_error(self, iteration, trials, trial, **info):
            ours = by_name[trial.config["trial"]]
            status = trial_status(sweep_dir, ours)
            status["error"] = status.get("error", "see its log under tune/")
            _write_status(run_dir_of(sweep_dir, ours), **status | {"status": "failed"})
            say(
                f"{ours.name}: failed after {status.get('attempts', '?')} attempts: {status['error']}"
            )

    return TrialStatus()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _quiet(text: str) -> None:
    pass


def check_fits(trials: list[Trial], cluster: dict[str, float]) -> None:
    """A trial that needs more than the whole cluster has would wait forever: say so now."""
    for trial in trials:
        bundles = trial_resources(trial.config)
        for resource in ("CPU", "GPU"):
            needed = sum(b.get(resource, 0.0) for b in bundles)
            if needed > cluster.get(resource, 0.0):
                raise ConfigError(
                    f"trial {trial.name} needs {needed:g} {resource}s but the Ray cluster has "
                    f"{cluster.get(resource, 0.0):g} (lower learner.num_threads, "
                    "sampler.threads, sampler.workers or learner.num_gpus)"
                )


def require_tune() -> None:
    """Ray Tune needs packages that plain Ray does not (pandas, pyarrow): the ``sweep`` extra."""
    try:
        import ray.tune  # noqa: F401
    except ImportError as exc:
        raise ValueError(
            f"mcrl sweep needs Ray Tune: pip install 'mcrl[sweep]' ({first_line(exc)})"
        ) from None


def run_sweep(
    spec: SweepSpec,
    sweep_dir: str | Path,
    *,
    ray_address: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[Trial]:
    """Run every unfinished trial of ``spec`` on Ray Tune (an embedded Ray, or the cluster at
    ``ray_address``); returns all the sweep's trials. Statuses are in each ``trial.json``."""
    require_tune()
    sweep_dir = Path(sweep_dir).resolve()
    # A plain function: Tune pickles the callback that holds it (a rich Console cannot be).
    say = _say if progress else _quiet

    trials = check_sweep_dir(spec, sweep_dir, resume=resume)
    pending = [t for t in trials if trial_status(sweep_dir, t)["status"] not in DONE]
    if pending:
        # Trials log to their own files under tune/ (a worker's exit noise included); the
        # driver prints one line per event.
        connect_ray(ray_address, log_to_driver=False)
        import ray

        check_fits(pending, ray.cluster_resources())
    write_sweep_record(sweep_dir, spec, trials)
    say(
        f"mcrl sweep: {len(trials)} trials ({len(trials) - len(pending)} already ended) "
        f"into {sweep_dir}"
    )
    if not pending:
        return trials
    from ray import tune

    by_name = {t.name: t for t in pending}
    trainable = tune.with_parameters(
        run_trial,
        trials=by_name,
        sweep_dir=sweep_dir,
        evaluate=spec.evaluate,
    )
    trainable = tune.with_resources(
        trainable,
        lambda c: tune.PlacementGroupFactory(trial_resources(by_name[c["trial"]].config)),
    )
    scheduler = None
    if spec.scheduler == "asha":
        longest = max(t.config["iterations"] for t in pending)
        scheduler = tune.schedulers.ASHAScheduler(
            time_attr="training_iteration",
            # ASHA stops every trial at max_t: past the last report, so a trial that runs to
            # the end still writes its final evaluation.
            max_t=longest + 1,
            grace_period=max(1, longest // 10),
            reduction_factor=2,
        )
    # Tune logs each failed try's traceback at ERROR, and its newer console output prints a
    # table even at verbose=0; the callback says what happened to each trial in one line.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(list(by_name))},
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            scheduler=scheduler,
            max_concurrent_trials=spec.max_concurrent,
            trial_name_creator=lambda t: t.config["trial"],
            trial_dirname_creator=lambda t: t.config["trial"].replace("/", "_"),
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(sweep_dir),
            callbacks=[_status_callback(sweep_dir, by_name, say)],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            log_to_file=True,
            verbose=0,
        ),
    )
    tuner.fit()
    return trials
