"""The meta-training loop and its run directory (design §2, §6).

One iteration: sample training tasks; collect episodes with θ; adapt each task's parameters
(θ'_i = θ − α·C(∇L_in_i)) and collect episodes with them; meta-step θ and C. Every number goes
to ``metrics.csv``; checkpoints are written atomically; ``resume`` continues exactly.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch.utils.tensorboard import SummaryWriter

from mcrl.common.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    from_dict,
    from_saved_dict,
    load_config,
    to_dict,
)
from mcrl.common.policies import MLPPolicy
from mcrl.common.threads import available_cpus, configure_torch_threads
from mcrl.meta.learner import NonFiniteLossError, resolve_device
from mcrl.rollout.episodes import success_rate
from mcrl.rollout.ray_cluster import shutdown_embedded_ray
from mcrl.rollout.ray_sampler import SamplingError
from mcrl.training.build import (
    build_family,
    build_learner,
    build_policy,
    build_sampler,
    resolve_backend,
)
from mcrl.training.checkpoints import CHECKPOINT_FORMAT, atomic_save, cpu_copy, load_checkpoint
from mcrl.training.evaluation import evaluate_adaptation
from mcrl.training.placement import learner_placement

PHASES = ("sample_pre", "adapt", "sample_post", "meta_step")


class TrainingError(RuntimeError):
    """Training stopped; the message says why and which checkpoint is intact."""


def write_csv(path: Path, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
    """Rewrite ``path`` with ``fieldnames`` as its header (a column a row lacks stays empty)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames, restval="")
        writer.writeheader()
        writer.writerows(rows)


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` to the CSV file ``path`` (created with ``row``'s keys as its header).
    Keys the header lacks are added to it, earlier rows getting them empty: a run resumed by a
    newer mcrl may log more columns, and their values must not land under other headers."""
    header: list[str] = []
    if path.exists() and path.stat().st_size > 0:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
    columns = header + [key for key in row if key not in header]
    if header and columns != header:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        write_csv(path, columns, rows)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        if not header:
            writer.writeheader()
        writer.writerow(row)


def tensorboard_tag(column: str) -> str:
    """A metrics.csv column as a TensorBoard tag, grouped by its first word
    (``loss_outer`` -> ``loss/outer``, ``eval_return_1`` -> ``eval/return_1``)."""
    return column.replace("_", "/", 1)


def task_seed(seed: int, iteration: int) -> int:
    return int(np.random.SeedSequence([seed, iteration]).generate_state(1)[0])


class Trainer:
    """Runs meta-training into ``run_dir``; see :func:`train` for the one-call API."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
    ):
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.show_progress = progress
        configure_torch_threads(config.learner.num_threads or available_cpus())
        # Everything that can be checked is checked before Ray starts (the learner and the
        # sampler may start it): the family, the backend, the run directory, the checkpoint.
        self.family = build_family(config)
        backend, reason = resolve_backend(config.sampler, self.family)
        self.config = config = dataclasses.replace(
            config, sampler=dataclasses.replace(config.sampler, backend=backend)
        )
        policy = build_policy(config, self.family)
        self.start_iteration = 0
        self.env_steps = 0
        if not resume:
            self._check_new_run_dir()
        checkpoint = self._check_resumable(policy) if resume else None
        self.summary = (
            f"mcrl: {config.family} into {self.run_dir} | sampler: {backend} ({reason}) | "
            f"learner: {self._learner_where()}"
        )
        if progress:
            Console(stderr=True, soft_wrap=True).print(self.summary, highlight=False)
        self.learner = build_learner(config, policy)
        self.sampler = build_sampler(config, self.family, self.learner.policy)
        if checkpoint is not None:
            self.learner.load_state_dict(checkpoint["learner"])
            self.start_iteration = checkpoint["iteration"] + 1
            self.env_steps = checkpoint["env_steps"]
            self._truncate_metrics(self.start_iteration)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        # A run's committed small state has no affinity dumps: resuming it makes the folder anew.
        (self.run_dir / "affinity").mkdir(exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
        # Events after the checkpoint we resume from are hidden, as metrics.csv truncates them.
        self.tensorboard = SummaryWriter(str(self.run_dir), purge_step=self.start_iteration)
        self._last_good = self._snapshot(self.start_iteration - 1)
        self.latest_eval: dict[str, Any] | None = None

    def _learner_where(self) -> str:
        learner = self.config.learner
        if learner_placement(learner, torch.cuda.is_available()) == "ray":
            return f"a Ray actor with {learner.num_gpus:g} GPU(s)"
        return str(resolve_device(learner.device))

    # -- run directory -----------------------------------------------------------------------
    def _check_new_run_dir(self) -> None:
        if (self.checkpoint_dir / "latest.pt").exists() or (self.run_dir / "metrics.csv").exists():
            raise ConfigError(
                f"run directory {str(self.run_dir)!r} already holds a run; pass --resume to continue it "
                "or --out to choose another directory"
            )

    def _check_resumable(self, policy: MLPPolicy) -> dict[str, Any]:
        if not (self.checkpoint_dir / "latest.pt").exists():
            raise ConfigError(
                f"no run to resume in {str(self.run_dir)!r} (it has no checkpoints/latest.pt); "
                "drop --resume to start one there"
            )
        state = load_checkpoint(self.checkpoint_dir / "latest.pt")
        self._check_compatible(state, policy)
        return state

    def _check_compatible(self, state: dict[str, Any], policy: MLPPolicy) -> None:
        try:
            saved = from_saved_dict(state["config"])
        except ConfigError as exc:
            raise ConfigError(
                f"cannot resume: the checkpoint's config is not valid here ({exc})"
            ) from None
        scaled = "range" if getattr(policy, "scaled", False) else "none"

        def what_theta_and_c_mean(config: TrainConfig) -> dict[str, Any]:
            scaling = config.policy.action_scaling
            meaning = {
                "family": config.family,
                "curvature": config.curvature,
                "schedule": config.schedule,
                "curvature_parametrization": config.curvature_parametrization,
                "curvature_per_step": config.curvature_per_step,
                "learn_inner_lr": config.learn_inner_lr,
                "policy.action_scaling": scaled if scaling == "auto" else scaling,
            }
            if config.learn_inner_lr or config.curvature_per_step:
                # C holds one learned step size (or curvature) per inner step.
                meaning["inner_steps"] = config.inner_steps
            return meaning

        wanted = what_theta_and_c_mean(self.config)
        for key, had in what_theta_and_c_mean(saved).items():
            if had != wanted[key]:
                raise ConfigError(
                    f"cannot resume: the checkpoint has {key}={had!r}, the config {key}={wanted[key]!r}"
                )
        current = policy.state_dict()
        for name, tensor in state["learner"]["policy"].items():
            if name not in current or current[name].shape != tensor.shape:
                have = tuple(current[name].shape) if name in current else "absent"
                raise ConfigError(
                    f"cannot resume: policy parameter {name!r} is {tuple(tensor.shape)} in the checkpoint but "
                    f"{have} with this config (policy.hidden_sizes or the family's spaces differ)"
                )

    def _truncate_metrics(self, before_iteration: int) -> None:
        """Drop rows logged after the checkpoint (a crash between checkpoints)."""
        path = self.run_dir / "metrics.csv"
        if not path.exists():
            return
        with path.open() as f:
            rows = list(csv.DictReader(f))
        fieldnames = list(rows[0]) if rows else []
        write_csv(path, fieldnames, [r for r in rows if int(r["iteration"]) < before_iteration])

    def _snapshot(self, iteration: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "iteration": iteration,
            "env_steps": self.env_steps,
            "config": to_dict(self.config),
            "learner": cpu_copy(self.learner.state_dict()),
        }

    def save_checkpoint(self, snapshot: dict[str, Any]) -> Path:
        iteration = snapshot["iteration"]
        numbered = self.checkpoint_dir / f"iteration_{iteration:06d}.pt"
        atomic_save(snapshot, numbered)
        atomic_save(snapshot, self.checkpoint_dir / "latest.pt")
        return numbered

    def close(self) -> None:
        """Release the sampler's envs and workers, and flush the TensorBoard events."""
        self.sampler.close()
        self.tensorboard.close()

    # -- the loop ----------------------------------------------------------------------------
    def train(
        self, on_iteration: Callable[[dict[str, Any]], None] | None = None
    ) -> list[dict[str, Any]]:
        """Run the remaining iterations; returns their metrics rows. ``on_iteration`` gets each
        row once it is written and checkpointed (a sweep reports it to Ray Tune)."""
        cfg = self.config
        rows: list[dict[str, Any]] = []
        with self._progress() as advance:
            for it in range(self.start_iteration, cfg.iterations):
                # The whole body is guarded: a signal can land while the row or the checkpoint
                # is being written, and `--resume` drops metrics rows past the saved iteration.
                try:
                    row = self.iteration(it)
                    rows.append(row)
                    self._write_metrics(row)
                    self._last_good = self._snapshot(it)
                    if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == cfg.iterations:
                        self.save_checkpoint(self._last_good)
                    advance(row)
                    if on_iteration is not None:
                        on_iteration(row)
                except KeyboardInterrupt:
                    if self._last_good["iteration"] < 0:
                        raise KeyboardInterrupt(
                            "interrupted before the first iteration; nothing saved"
                        ) from None
                    path = self.save_checkpoint(self._last_good)
                    raise KeyboardInterrupt(
                        f"interrupted; iteration {self._last_good['iteration']} saved to {path}"
                    ) from None
                except (NonFiniteLossError, SamplingError) as exc:
                    raise TrainingError(
                        f"{exc} at iteration {it}; stopped. The last good checkpoint "
                        f"({self._last_checkpoint_text()}) is intact"
                    ) from exc
        if self.latest_eval is not None:
            (self.run_dir / "eval.json").write_text(json.dumps(self.latest_eval, indent=2))
        return rows

    def iteration(self, it: int) -> dict[str, Any]:
        cfg = self.config
        timings = dict.fromkeys(PHASES, 0.0)

        @contextmanager
        def timed(phase: str) -> Iterator[None]:
            start = time.perf_counter()
            yield
            timings[phase] += time.perf_counter() - start

        tasks = self.family.sample_tasks(
            cfg.meta_batch_size, split="train", seed=task_seed(cfg.seed, it)
        )
        with timed("sample_pre"):
            batches = self.sampler.sample(
                tasks,
                self.learner.theta_numpy(),
                cfg.episodes_per_task,
                seed=cfg.seed,
                iteration=it,
            )
        return_pre = float(np.mean([b.returns.mean() for b in batches]))
        success_pre = success_rate(batches)
        steps = sum(b.num_steps for b in batches)
        with timed("adapt"):
            pre = [self.learner.prepare(batches)]
        for step in range(1, cfg.inner_steps + 1):
            with timed("adapt"):
                adapted = self.learner.adapted_params(pre)
            with timed("sample_post"):
                batches = self.sampler.sample(
                    tasks, adapted, cfg.episodes_per_task, seed=cfg.seed, iteration=it, phase=step
                )
            steps += sum(b.num_steps for b in batches)
            with timed("adapt"):
                prepared = self.learner.prepare(batches)
            if step < cfg.inner_steps:
                pre.append(prepared)
        return_post = float(np.mean([b.returns.mean() for b in batches]))
        success_post = success_rate(batches)
        if it % cfg.log_every == 0 or it + 1 == cfg.iterations:
            self._save_affinity(it, tasks, pre[0])  # at the θ that sampled these episodes
        with timed("meta_step"):
            losses = self.learner.meta_step(pre, prepared)
        self.env_steps += steps
        row: dict[str, Any] = {
            "iteration": it,
            "env_steps": self.env_steps,
            "return_pre": return_pre,
            "return_post": return_post,
        }
        if success_pre is not None:  # families that report success (Meta-World)
            row |= {"success_pre": success_pre, "success_post": success_post}
        row |= losses
        row |= {f"time_{phase}": round(seconds, 4) for phase, seconds in timings.items()}
        row |= self.sampler.pop_counters()
        row |= self._evaluate(it)
        return row

    def _evaluate(self, it: int) -> dict[str, Any]:
        cfg = self.config
        columns = [f"eval_return_{k}" for k in range(cfg.inner_steps + 1)]
        if self.family.reports_success:
            columns += [f"eval_success_{k}" for k in range(cfg.inner_steps + 1)]
        if not cfg.eval_every or ((it + 1) % cfg.eval_every and it + 1 != cfg.iterations):
            return dict.fromkeys(columns, "")
        self.latest_eval = evaluate_adaptation(
            self.learner,
            self.sampler,
            self.family,
            split="test",
            num_tasks=cfg.eval_tasks,
            steps=cfg.inner_steps,
            episodes=cfg.episodes_per_task,
            seed=cfg.seed,
        )
        self.latest_eval["iteration"] = it
        values = self.latest_eval["returns"] + self.latest_eval.get("success", [])
        return dict(zip(columns, values, strict=True))

    def _save_affinity(self, it: int, tasks: list, pre) -> None:
        np.savez(
            self.run_dir / "affinity" / f"iteration_{it:06d}.npz",
            affinity=self.learner.task_affinity(pre),
            task_params=np.array([json.dumps(t.to_dict()["params"]) for t in tasks]),
        )

    def _write_metrics(self, row: dict[str, Any]) -> None:
        append_row(self.run_dir / "metrics.csv", row)
        for key, value in row.items():
            if key != "iteration" and value != "":
                self.tensorboard.add_scalar(tensorboard_tag(key), value, row["iteration"])

    def _last_checkpoint_text(self) -> str:
        latest = self.checkpoint_dir / "latest.pt"
        return str(latest) if latest.exists() else "none written yet"

    @contextmanager
    def _progress(self) -> Iterator[Callable[[dict[str, Any]], None]]:
        total = self.config.iterations
        console = Console(stderr=True, soft_wrap=True)
        if not self.show_progress:
            yield lambda row: None
            return

        def summary(row: dict[str, Any]) -> str:
            text = f"return {row['return_pre']:.1f} → {row['return_post']:.1f}"
            evals = [v for k, v in row.items() if k.startswith("eval_return_") and v != ""]
            if evals:
                text += f" | test {evals[0]:.1f} → {evals[-1]:.1f}"
            return text

        if not console.is_terminal:  # logs, CI: a plain line now and then

            def log(row: dict[str, Any]) -> None:
                if row["iteration"] % self.config.log_every == 0 or row["iteration"] + 1 == total:
                    console.print(
                        f"iteration {row['iteration'] + 1}/{total} | {summary(row)}",
                        highlight=False,
                    )

            yield log
            return
        columns = [
            TextColumn("[bold]meta-train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
        ]
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("", total=total, completed=self.start_iteration)
            yield lambda row: progress.update(bar, advance=1, description=summary(row))


def train(
    config: TrainConfig | str | Path,
    run_dir: str | Path,
    *,
    overrides: tuple[str, ...] | list[str] = (),
    resume: bool = False,
    progress: bool = False,
) -> Trainer:
    """Meta-train into ``run_dir`` and return the finished :class:`Trainer`.

    ``config`` is a :class:`TrainConfig` or a YAML path; ``overrides`` are ``key=value`` strings.
    """
    if not isinstance(config, TrainConfig):
        config = load_config(config, overrides)
    elif overrides:
        config = from_dict(TrainConfig, apply_overrides(to_dict(config), overrides))
    trainer = Trainer(config, run_dir, resume=resume, progress=progress)
    try:
        trainer.train()
    finally:
        trainer.close()
        shutdown_embedded_ray()
    return trainer
