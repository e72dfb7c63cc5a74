"""The ``mcrl`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from mcrl.rollout.ray_cluster import shutdown_embedded_ray
from mcrl.tasks import SPLITS, list_families, make_family
from mcrl.training.trainer import TrainingError

if TYPE_CHECKING:
    import numpy as np


def _families(args: argparse.Namespace, console: Console) -> int:
    table = Table(
        title="mcrl task families",
        caption="test cells: each range cut into equal slices; the cells whose slice indices sum to a "
        "multiple of the slice count are held out from training. 'log': uniform in log space.",
    )
    for column in ("family", "horizon", "parameter", *SPLITS):
        table.add_column(column, no_wrap=column in ("family", "parameter"))
    unavailable = []
    for name in list_families():
        try:
            family = make_family(name)
        except ValueError as exc:  # a family over an optional package that is not installed
            table.add_row(name, "", "(not installed)", "", "", "", end_section=True)
            unavailable.append(f"{name}: {exc}")
            continue
        ranges = family.describe()
        for k, param in enumerate(ranges["train"]):
            first = k == 0
            table.add_row(
                name if first else "",
                str(family.horizon) if first else "",
                param,
                *(ranges[split][param] for split in SPLITS),
                end_section=k == len(ranges["train"]) - 1,
            )
    console.print(table)
    for line in unavailable:
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    return 0


def _bench(args: argparse.Namespace, console: Console) -> int:
    from mcrl.cli.bench import bench_sampler

    family = make_family(args.family)
    command = " ".join(["mcrl", *sys.argv[1:]])
    if args.backend == "ray":
        settings = [{"workers": w} for w in args.workers]
    else:
        settings = [{"threads": t} for t in args.threads]
    raw = limit = None
    for setting in settings:
        result = bench_sampler(
            family,
            tasks=args.tasks,
            episodes=args.episodes,
            repeats=args.repeats,
            backend=args.backend,
            native_vector=not args.serial,
            raw_steps_per_s=raw,
            limit=limit,
            seed=args.seed,
            **setting,
        )
        # The single-env loop and the simulator limit: measured once, shared by every setting.
        raw, limit = result["raw_steps_per_s"], result.get("limit_steps_per_s")
        result["command"] = command
        if args.json:
            print(json.dumps(result), flush=True)
            continue
        where = (
            f"ray, {result['workers']} workers"
            if args.backend == "ray"
            else f"local, {result['vector_env']} envs, {result['threads']} threads"
        )
        table = Table(
            title=f"sampler benchmark: {family.name}, {args.tasks} tasks x {args.episodes} episodes, {where}"
        )
        table.add_column("measure")
        table.add_column("value", justify="right")
        for key in (
            "steps_per_phase",
            "sampler_steps_per_s",
            "raw_steps_per_s",
            "ratio",
            "limit_steps_per_s",
            "limit_ratio",
            "ray_overhead_ms",
        ):
            if key in result:
                table.add_row(key, f"{result[key]:,}")
        console.print(table)
    return 0


def _bench_config(args: argparse.Namespace, console: Console) -> int:
    """``bench learner`` and ``bench e2e``: measured on a training config."""
    from mcrl.cli.bench import bench_e2e, bench_learner
    from mcrl.common.config import load_config
    from mcrl.common.threads import available_cpus, configure_torch_threads

    config = load_config(args.config, args.set)
    configure_torch_threads(config.learner.num_threads or available_cpus())
    if args.what == "learner":
        result = bench_learner(
            config,
            repeats=args.repeats,
            sampled_tasks=args.sampled_tasks,
            count_ops=args.count_ops,
        )
    else:
        result = bench_e2e(config, iterations=args.iterations, warmup=args.warmup)
    result["command"] = " ".join(["mcrl", *sys.argv[1:]])
    if args.json:
        print(json.dumps(result))
    else:
        table = Table(title=f"{args.what} benchmark")
        table.add_column("setting")
        table.add_column("value", justify="right")
        for key, value in result.items():
            if key != "ops":
                table.add_row(key, str(value))
        console.print(table)
        if "ops" in result:
            ops = Table(
                title=f"ops touching ≥ {result['ops_min_elements']:,} elements, one meta-step"
            )
            for column in ("op (argument shapes)", "count", "ms"):
                ops.add_column(column, justify="left" if column.startswith("op") else "right")
            for row in result["ops"]:
                ops.add_row(row["op"], str(row["count"]), f"{row['ms']:,}")
            console.print(ops)
    return 0


def _phase_line(step: int, mean_return: float, of_steps: str = "") -> str:
    """The progress line of one adaptation phase (``mcrl evaluate``, ``mcrl adapt``)."""
    when = "before adaptation" if step == 0 else f"after step {step}{of_steps}"
    return f"{when:>20}: mean return {mean_return:.2f}"


def _evaluate(args: argparse.Namespace, console: Console) -> int:
    from mcrl.training.adaptation import evaluate_checkpoint

    # Progress goes to stderr, so that --json leaves stdout to the record; a large evaluation
    # (40 Ant tasks x 20 episodes x 4 phases) takes minutes.
    progress = Console(stderr=True, soft_wrap=True)
    if args.out and Path(args.out).is_dir():  # said before the evaluation, not after it
        raise ValueError(f"--out {args.out!r} is a directory; give the record's file path")
    start = time.perf_counter()

    def report(step: int, returns: np.ndarray) -> None:
        progress.print(
            f"{_phase_line(step, returns.mean(), f'/{args.steps}')} over {returns.size} tasks "
            f"({time.perf_counter() - start:.0f} s)",
            highlight=False,
        )

    record, run_dir = evaluate_checkpoint(
        args.path,
        split=args.split,
        num_tasks=args.tasks,
        steps=args.steps,
        episodes=args.episodes,
        on_step=report,
    )
    out = Path(args.out) if args.out else run_dir / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    if args.json:
        print(json.dumps(record))
        return 0
    table = Table(
        title=f"{record['family']} at iteration {record['iteration']}: {record['tasks']} {record['split']} tasks",
        caption=f"written to {out}",
    )
    success = record.get("success")  # families that report success (Meta-World)
    columns = ["adaptation steps", "mean return", "95% CI"] + ["success", "95% CI"] * bool(success)
    for column in columns:
        table.add_column(column, justify="right")
    for k, (mean, ci) in enumerate(zip(record["returns"], record["ci95"], strict=True)):
        cells = [str(k), f"{mean:.2f}", f"± {ci:.2f}"]
        if success:
            cells += [f"{success[k]:.2f}", f"± {record['success_ci95'][k]:.2f}"]
        table.add_row(*cells)
    console.print(table)
    if "groups" in record:  # families whose tasks are of several kinds (Meta-World's types)
        console.print(_group_table(record))
    return 0


def _group_table(record: dict) -> Table:
    """Per task kind, the success rate (or the mean return) after 0..K steps."""
    measure = "success" if "success" in record else "returns"
    table = Table(title=f"{measure} per {record['group_by']}")
    table.add_column(record["group_by"])
    table.add_column("tasks", justify="right")
    for k in range(record["steps"] + 1):
        table.add_column(f"{k} steps", justify="right")
    for label, group in record["groups"].items():
        table.add_row(label, str(group["tasks"]), *(f"{v:.2f}" for v in group[measure]))
    table.add_section()
    means = record["mean_over_groups"][measure]
    table.add_row("mean over kinds", str(record["tasks"]), *(f"{v:.2f}" for v in means))
    return table


def _json_object(option: str, text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{option} is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(
            f"{option} must be a JSON object such as '{{\"goal\": [0.3, 0.1]}}', got {text!r}"
        )
    return value


def _adapt(args: argparse.Namespace, console: Console) -> int:
    from mcrl.training.adaptation import ADAPTED_FILE, load

    out = Path(args.out)
    if (out / ADAPTED_FILE).exists():
        raise ValueError(f"{out / ADAPTED_FILE} already exists; choose another --out")
    if (args.task is None) == (args.env_id is None):
        raise ValueError("give either --task (with --family) or --env-id")
    task = _json_object("--task", args.task)
    env_kwargs = _json_object("--env-kwargs", args.env_kwargs)
    if env_kwargs is not None and args.env_id is None:
        raise ValueError("--env-kwargs goes with --env-id")
    if args.family is not None and task is None:
        raise ValueError("--family goes with --task")
    meta = load(args.checkpoint)

    def report(step: int, mean_return: float) -> None:
        console.print(_phase_line(step, mean_return), highlight=False)

    adapted = meta.adapt(
        task if task is not None else args.env_id,
        steps=args.steps,
        episodes=args.episodes,
        horizon=args.horizon,
        seed=args.seed,
        family=args.family,
        env_kwargs=env_kwargs,
        on_step=report,
    )
    if "success" in adapted.info:
        shown = " → ".join(f"{s:.2f}" for s in adapted.info["success"])
        console.print(f"success after 0..{len(adapted.info['success']) - 1} steps: {shown}")
    path = adapted.save(out)
    console.print(f"adapted policy: {path} (summary in {out / 'adaptation.json'})")
    return 0


def _plot(args: argparse.Namespace, console: Console) -> int:
    from mcrl.cli.plots import plot_run

    written, skipped = plot_run(args.run_dir, args.out)
    for path in written:
        console.print(f"wrote {path}", highlight=False)
    for reason in skipped:
        console.print(f"skipped {reason}", highlight=False)
    return 0


def _export_sb3(args: argparse.Namespace, console: Console) -> int:
    from mcrl.cli.sb3 import export_sb3

    path = export_sb3(args.checkpoint, args.out, adapted=args.adapted)
    console.print(
        f"wrote {path}: stable_baselines3.PPO.load({str(path)!r}, env=...) to use or train it",
        highlight=False,
    )
    return 0


def _train(args: argparse.Namespace, console: Console) -> int:
    from mcrl.common.config import load_config
    from mcrl.training.trainer import Trainer

    overrides = [*args.set, *([f"sampler.address={args.ray_address}"] if args.ray_address else [])]
    config = load_config(args.config, overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    trainer = Trainer(config, out, resume=args.resume, progress=not args.no_progress)
    if trainer.start_iteration >= config.iterations:
        console.print(
            f"{out} already has {config.iterations} iterations; raise 'iterations' to train further"
        )
        return 0
    try:
        trainer.train()
    finally:
        trainer.close()
    console.print(
        f"done: {out} (metrics.csv, checkpoints/, config.yaml{', eval.json' if trainer.latest_eval else ''})"
    )
    if trainer.latest_eval:
        returns = " → ".join(f"{r:.2f}" for r in trainer.latest_eval["returns"])
        console.print(
            f"held-out return after 0..{trainer.latest_eval['steps']} adaptation steps: {returns}"
        )
    return 0


def _sweep(args: argparse.Namespace, console: Console) -> int:
    from mcrl.sweeps.runner import run_sweep, trial_status
    from mcrl.sweeps.spec import load_sweep
    from mcrl.sweeps.summary import summarize

    out = Path(args.out) if args.out else Path("sweeps") / Path(args.sweep_file).stem
    if args.summary:
        _, markdown = summarize(out)
        console.print(markdown, highlight=False)
        return 0
    spec = load_sweep(args.sweep_file)
    try:
        trials = run_sweep(spec, out, ray_address=args.ray_address, resume=args.resume)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"interrupted; continue with: mcrl sweep {args.sweep_file} --out {out} --resume"
        ) from None
    _, markdown = summarize(out)
    console.print(markdown, highlight=False)
    console.print(f"summary: {out / 'summary.md'}, {out / 'summary.csv'}", highlight=False)
    statuses = {t.name: trial_status(out.resolve(), t)["status"] for t in trials}
    failed = [name for name, status in statuses.items() if status == "failed"]
    unfinished = [name for name, status in statuses.items() if status == "pending"]
    if unfinished:
        print(
            f"mcrl: {len(unfinished)} trials did not end; continue with: mcrl sweep "
            f"{args.sweep_file} --out {out} --resume",
            file=sys.stderr,
        )
    if failed:
        print(
            f"mcrl: {len(failed)} of {len(trials)} trials failed: {', '.join(failed)}",
            file=sys.stderr,
        )
    return 1 if failed or unfinished else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcrl", description="Meta-Curvature meta-reinforcement learning."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    families = commands.add_parser("families", help="list the task families and their splits")
    families.set_defaults(handler=_families)

    train = commands.add_parser("train", help="meta-train θ and C from a YAML config")
    train.add_argument("config", help="YAML config (see experiments/)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (dots for sections: sampler.backend=local)",
    )
    train.add_argument("--out", help="run directory (default: runs/<config name>)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--ray-address", help="join this Ray cluster (HOST:PORT or auto) instead of an embedded Ray"
    )
    train.set_defaults(handler=_train)

    sweep = commands.add_parser(
        "sweep", help="many runs on Ray Tune: seeds, variants and searches from a sweep file"
    )
    sweep.add_argument("sweep_file", help="sweep YAML (base, set, grid, seeds, search, ...)")
    sweep.add_argument("--out", help="sweep directory (default: sweeps/<sweep file name>)")
    sweep.add_argument(
        "--ray-address", help="run the trials on this Ray cluster (HOST:PORT or auto)"
    )
    sweep.add_argument(
        "--resume", action="store_true", help="continue the sweep in --out: unfinished trials only"
    )
    sweep.add_argument(
        "--summary", action="store_true", help="only (re)write and print the sweep's summary"
    )
    sweep.set_defaults(handler=_sweep)

    evaluate = commands.add_parser("evaluate", help="held-out return after 0..K adaptation steps")
    evaluate.add_argument("path", help="run directory (its latest checkpoint) or a checkpoint file")
    evaluate.add_argument("--split", choices=["test", "ood", "train"], default="test")
    evaluate.add_argument(
        "--tasks", type=int, help="tasks to evaluate on (default: the run's eval_tasks)"
    )
    evaluate.add_argument("--steps", type=int, default=3, help="adaptation steps K (default 3)")
    evaluate.add_argument(
        "--episodes", type=int, help="episodes per task per step (default: the run's)"
    )
    evaluate.add_argument("--json", action="store_true", help="print the eval.json record")
    evaluate.add_argument(
        "--out",
        help="write the record there instead of the run's eval.json (which then stays as it is)",
    )
    evaluate.set_defaults(handler=_evaluate)

    adapt = commands.add_parser(
        "adapt", help="adapt a meta-trained policy to one env and save the adapted policy"
    )
    adapt.add_argument("checkpoint", help="run directory (its latest checkpoint) or checkpoint")
    adapt.add_argument("--family", help="family of --task (default: the checkpoint's own family)")
    adapt.add_argument(
        "--task", help="task parameters as JSON, e.g. '{\"goal\": [0.3, -0.2]}' (any values)"
    )
    adapt.add_argument("--env-id", help="a Gymnasium env id whose spaces fit the policy")
    adapt.add_argument("--env-kwargs", help="JSON keyword arguments for gymnasium.make")
    adapt.add_argument(
        "--steps", type=int, help="adaptation steps K (default: the run's inner_steps)"
    )
    adapt.add_argument(
        "--episodes", type=int, help="episodes per step (default: the run's per task)"
    )
    adapt.add_argument("--horizon", type=int, help="episode length (default: the family's)")
    adapt.add_argument("--seed", type=int, default=0)
    adapt.add_argument("--out", required=True, help="directory for adapted.pt")
    adapt.set_defaults(handler=_adapt)

    plot = commands.add_parser(
        "plot", help="PNGs: learning and adaptation curves, task affinity, learned curvature"
    )
    plot.add_argument("run_dir", help="run directory")
    plot.add_argument("--out", help="directory for the PNGs (default: RUN_DIR/plots)")
    plot.set_defaults(handler=_plot)

    export = commands.add_parser(
        "export-sb3", help="write a stable-baselines3 PPO model with the policy's weights"
    )
    export.add_argument("checkpoint", help="run directory (its latest checkpoint) or checkpoint")
    export.add_argument("--adapted", help="export this `mcrl adapt --out` directory instead of θ")
    export.add_argument("--out", required=True, help="the model file (.zip)")
    export.set_defaults(handler=_export_sb3)

    bench = commands.add_parser("bench", help="measure speed")
    bench_kinds = bench.add_subparsers(dest="what", required=True)
    sampler = bench_kinds.add_parser(
        "sampler", help="sampler env steps/s against a raw single-env loop"
    )
    sampler.add_argument("--family", required=True)
    sampler.add_argument("--tasks", type=int, default=20)
    sampler.add_argument("--episodes", type=int, default=10)
    sampler.add_argument("--repeats", type=int, default=3, help="timed phases; the best counts")
    sampler.add_argument("--seed", type=int, default=0)
    sampler.add_argument("--backend", choices=["local", "ray"], default="local")
    sampler.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[2],
        help="Ray worker counts to measure, e.g. 1 2 4 8 16",
    )
    sampler.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1],
        help="threads stepping a native MuJoCo env in-process (local backend), e.g. 1 2 4 8 16",
    )
    sampler.add_argument(
        "--json", action="store_true", help="print one JSON object per measurement"
    )
    sampler.add_argument(
        "--serial",
        action="store_true",
        help="one Gymnasium env per episode even if the family ships a vectorised env",
    )
    sampler.set_defaults(handler=_bench)
    learner = bench_kinds.add_parser("learner", help="milliseconds per meta-step on real episodes")
    learner.add_argument("config", help="YAML config giving the family, sizes and learner settings")
    learner.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    learner.add_argument("--repeats", type=int, default=3)
    learner.add_argument(
        "--sampled-tasks",
        type=int,
        help="sample episodes for this many tasks and reuse them for the rest of the meta-batch "
        "(the time depends on shapes only; default: sample every task)",
    )
    learner.add_argument(
        "--count-ops",
        type=int,
        metavar="MIN_ELEMENTS",
        help="also count and time, per op and shapes, one meta-step's ops that touch a tensor of "
        "at least MIN_ELEMENTS elements (counts do not depend on the machine's load)",
    )
    learner.add_argument("--json", action="store_true")
    learner.set_defaults(handler=_bench_config)
    e2e = bench_kinds.add_parser(
        "e2e", help="seconds per meta-iteration of the training loop, and peak memory"
    )
    e2e.add_argument("config", help="YAML training config (its sampler backend is used)")
    e2e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    e2e.add_argument("--iterations", type=int, default=5, help="timed iterations")
    e2e.add_argument("--warmup", type=int, default=1, help="untimed first iterations")
    e2e.add_argument("--json", action="store_true")
    e2e.set_defaults(handler=_bench_config)
    return parser


def one_line(exc: BaseException) -> str:
    """An error message on one line (YAML and Ray errors span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(soft_wrap=True)
    # SIGTERM (`kill`, a scheduler preempting the job) stops a run like Ctrl-C: the last
    # finished iteration is saved and `--resume` continues from it, not from the last
    # periodic checkpoint. Signal handlers can only be set from the main thread.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        return args.handler(args, console)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mcrl: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except TrainingError as exc:
        print(f"mcrl: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"mcrl: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)
        shutdown_embedded_ray()
