"""Benchmarks behind ``mcrl bench``: measured numbers only, compared within one run."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import threading
import time
from typing import Any

import numpy as np
import psutil
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from mcrl.common.config import TrainConfig
from mcrl.common.policies import make_policy, params_to_numpy
from mcrl.common.validation import check_non_negative_int, check_positive_int
from mcrl.rollout.episodes import EpisodeBatch
from mcrl.rollout.sampler import LocalSampler
from mcrl.tasks import TaskFamily


def raw_env_steps_per_s(family: TaskFamily, *, min_steps: int, seed: int = 0) -> float:
    """Steps/s of a plain single-env Gymnasium loop on the family's first training task, with
    uniformly random actions drawn in advance (so only the simulator is timed)."""
    task = family.sample_tasks(1, seed=seed)[0]
    env = family.make_env(task)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(min(min_steps, 10_000))]
    env.reset(seed=seed)
    start = time.perf_counter()
    for step in range(min_steps):
        _, _, terminated, truncated, _ = env.step(actions[step % len(actions)])
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return min_steps / elapsed


def limit_steps_per_s(family: TaskFamily, *, min_steps: int, seed: int = 0) -> float | None:
    """The bare simulator's env steps/s: ``mj_step`` × frame skip on one ``MjData``, one thread,
    random controls drawn in advance (None for a family whose env is not a MuJoCo env)."""
    import mujoco

    env = family.make_env(family.sample_tasks(1, seed=seed)[0])
    unwrapped: Any = env.unwrapped
    if not hasattr(unwrapped, "frame_skip") or not hasattr(unwrapped, "data"):
        env.close()
        return None
    model, data, frame_skip = unwrapped.model, unwrapped.data, unwrapped.frame_skip
    env.reset(seed=seed)
    controls = np.random.default_rng(seed).uniform(-1, 1, size=(1000, model.nu))
    start = time.perf_counter()
    for step in range(min_steps):
        data.ctrl[:] = controls[step % len(controls)]
        mujoco.mj_step(model, data, nstep=frame_skip)
    elapsed = time.perf_counter() - start
    env.close()
    return min_steps / elapsed


def bench_sampler(
    family: TaskFamily,
    *,
    tasks: int,
    episodes: int,
    repeats: int = 3,
    backend: str = "local",
    workers: int | None = None,
    native_vector: bool = True,
    raw_steps_per_s: float | None = None,
    limit: float | None = None,
    threads: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Sampler env steps/s against the raw single-env loop, measured in the same run.

    The sampler runs with one parameter set per task (as after adaptation, the harder case);
    its speed is the best of ``repeats`` phases after a warm-up phase that builds the envs.
    ``native_vector=False`` measures the generic path (one Gymnasium env per episode) even for
    a family that ships a vectorised env (local backend). ``raw_steps_per_s`` reuses a raw
    measurement from the same run, ``limit`` a bare-simulator one (MuJoCo families:
    ``limit_ratio`` is the sampler's speed over it). ``threads`` steps a native MuJoCo env with
    that many threads. With Ray, ``ray_overhead_ms`` is the phase's wall time minus its
    slowest worker's collection time: weight broadcast, scheduling and gathering.
    """
    check_positive_int("tasks", tasks)
    check_positive_int("episodes", episodes)
    check_positive_int("repeats", repeats)
    check_non_negative_int("seed", seed)
    check_positive_int("threads", threads)
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    task_list = family.sample_tasks(tasks, seed=seed)
    probe = family.make_env(task_list[0])
    policy = make_policy(probe.observation_space, probe.action_space)
    probe.close()
    param_sets = [params_to_numpy(policy.params())] * tasks
    if backend == "local":
        sampler: Any = LocalSampler(family, policy, native_vector=native_vector, threads=threads)
    else:
        from mcrl.rollout.ray_sampler import RaySampler

        sampler = RaySampler(family, policy, workers=workers)
    sampler.sample(task_list, param_sets, episodes, seed=seed, iteration=0)  # warm-up: builds envs
    best, steps, overheads = 0.0, 0, []
    for rep in range(repeats):
        start = time.perf_counter()
        batches = sampler.sample(task_list, param_sets, episodes, seed=seed, iteration=rep + 1)
        elapsed = time.perf_counter() - start
        steps = sum(b.num_steps for b in batches)
        best = max(best, steps / elapsed)
        overheads.append(getattr(sampler, "last_overhead_s", 0.0))
    result: dict[str, Any] = {"family": family.name, "backend": backend}
    if backend == "ray":
        result |= {
            "workers": sampler.num_workers,
            "ray_overhead_ms": round(1000 * float(np.median(overheads)), 1),
        }
    else:
        result["vector_env"] = (
            "native" if native_vector and family.has_native_vector_env else "serial"
        )
    sampler.close()
    if raw_steps_per_s is None:
        raw_steps_per_s = max(
            raw_env_steps_per_s(family, min_steps=max(steps // 4, 2000), seed=seed)
            for _ in range(repeats)
        )
    if limit is None:
        limit = limit_steps_per_s(family, min_steps=max(steps // 4, 2000), seed=seed)
    result |= {
        "tasks": tasks,
        "episodes": episodes,
        "horizon": family.horizon,
        "threads": threads if backend == "local" else 1,
        "steps_per_phase": steps,
        "sampler_steps_per_s": round(best, 1),
        "raw_steps_per_s": round(raw_steps_per_s, 1),
        "ratio": round(best / raw_steps_per_s, 3),
    }
    if limit is not None:
        result |= {
            "limit_steps_per_s": round(limit, 1),
            "limit_ratio": round(best / limit, 3),
        }
    return result


class OpCounter(TorchDispatchMode):
    """Counts and times, per ATen op and argument shapes, the ops of the code run inside it that
    touch a tensor of at least ``min_elements`` elements.

    Counts do not depend on the machine's load, so they tell what a computation is made of where
    timings are too noisy to compare; the times (CPU only: ops run synchronously there) say which
    of them dominate.
    """

    def __init__(self, min_elements: int):
        super().__init__()
        self.min_elements = min_elements
        self.counts: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        elapsed = time.perf_counter() - start
        inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outputs = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        if any(t.numel() >= self.min_elements for t in inputs + outputs):
            shapes = ", ".join(str(list(t.shape)) for t in inputs)
            key = f"{func.overloadpacket.__name__}({shapes})"
            self.counts[key] = self.counts.get(key, 0) + 1
            self.seconds[key] = self.seconds.get(key, 0.0) + elapsed
        return out

    def table(self, top: int) -> list[dict[str, Any]]:
        """The ``top`` most time-consuming entries, largest first."""
        keys = sorted(self.counts, key=lambda k: self.seconds[k], reverse=True)[:top]
        return [
            {"op": k, "count": self.counts[k], "ms": round(1000 * self.seconds[k], 1)} for k in keys
        ]


def bench_learner(
    config: TrainConfig,
    *,
    repeats: int = 3,
    sampled_tasks: int | None = None,
    count_ops: int | None = None,
) -> dict[str, Any]:
    """Milliseconds per meta-step (all ``outer_epochs``) on one iteration's real episodes.

    ``sampled_tasks`` collects episodes for that many tasks only and reuses them for the rest of
    the meta-batch: a meta-step's cost depends on its data's shapes, not its values, so a large
    meta-batch can be timed without sampling all of it. On CUDA the result also has the peak GPU
    memory of the meta-step. ``count_ops`` runs one more meta-step under an :class:`OpCounter`
    with that ``min_elements`` and adds its entries (``ops``: the 20 that took longest;
    ``ops_counted``: how many ops it counted, ``ops_ms``: their total time).
    """
    from mcrl.training.build import build_family, build_learner, build_policy

    check_positive_int("repeats", repeats)
    if count_ops is not None:
        check_positive_int("count_ops", count_ops)
    family = build_family(config)
    learner = build_learner(config, build_policy(config, family))
    sampler = LocalSampler(family, learner.policy)
    tasks = family.sample_tasks(config.meta_batch_size, seed=config.seed)
    count = (
        len(tasks) if sampled_tasks is None else check_positive_int("sampled_tasks", sampled_tasks)
    )
    collected = tasks[: min(count, len(tasks))]

    def sample(params: Any, phase: int) -> list[EpisodeBatch]:
        batches = sampler.sample(
            collected, params, config.episodes_per_task, seed=config.seed, iteration=0, phase=phase
        )
        return [batches[i % len(batches)] for i in range(len(tasks))]

    # One phase before each of the inner_steps adaptation steps, and the phase after the last.
    pre = [learner.prepare(sample(learner.theta_numpy(), 0))]
    for step in range(1, config.inner_steps + 1):
        phase = learner.prepare(sample(learner.adapted_params(pre)[: len(collected)], step))
        if step < config.inner_steps:
            pre.append(phase)
    post = phase
    sampler.close()
    state = learner.state_dict()
    cuda = learner.device.type == "cuda"
    timings = []
    for _ in range(repeats + 1):  # the first is a warm-up
        learner.load_state_dict(state)
        if cuda:
            torch.cuda.synchronize(learner.device)
            torch.cuda.reset_peak_memory_stats(learner.device)
        start = time.perf_counter()
        learner.meta_step(pre, post)
        if cuda:
            torch.cuda.synchronize(learner.device)
        timings.append(time.perf_counter() - start)
    result = {
        "family": family.name,
        "tasks": config.meta_batch_size,
        "sampled_tasks": len(collected),
        "episodes": config.episodes_per_task,
        "horizon": family.horizon,
        "hidden_sizes": list(config.policy.hidden_sizes),
        "curvature": config.curvature,
        "inner_steps": config.inner_steps,
        "first_order": config.first_order,
        "task_batching": config.learner.task_batching,
        "outer": config.outer,
        "outer_epochs": config.outer_epochs,
        "device": str(learner.device),
        "device_name": torch.cuda.get_device_name(learner.device) if cuda else "cpu",
        "threads": torch.get_num_threads(),
        "ms_per_meta_step": round(1000 * float(np.median(timings[1:])), 1),
    }
    if cuda:
        result["peak_gpu_memory_mb"] = round(
            torch.cuda.max_memory_allocated(learner.device) / 2**20, 1
        )
    if count_ops is not None:
        learner.load_state_dict(state)
        with OpCounter(count_ops) as counter:
            learner.meta_step(pre, post)
        result |= {
            "ops_min_elements": count_ops,
            "ops_counted": sum(counter.counts.values()),
            "ops_ms": round(1000 * sum(counter.seconds.values()), 1),
            "ops": counter.table(top=20),
        }
    return result


class PeakMemory:
    """Polls the resident memory of this process and all its descendants (Ray's GCS, raylet and
    workers included) in a background thread; ``peak_mb`` is the largest total seen."""

    def __init__(self, interval_s: float = 0.1):
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _total_mb(self) -> float:
        me = psutil.Process()
        total = 0
        for process in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # exited between listing and reading
                total += process.memory_info().rss
        return total / 2**20

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, self._total_mb())

    def __enter__(self) -> PeakMemory:
        self.peak_mb = self._total_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._total_mb())


def bench_e2e(config: TrainConfig, *, iterations: int = 5, warmup: int = 1) -> dict[str, Any]:
    """Seconds per meta-iteration of the real training loop (sample, adapt, sample, meta-step)
    with ``config``'s sampler and learner, after ``warmup`` iterations (which start workers and
    build envs); and the peak memory of the whole process tree over the run."""
    from mcrl.training.trainer import Trainer

    check_positive_int("iterations", iterations)
    check_non_negative_int("warmup", warmup)
    config = dataclasses.replace(config, iterations=warmup + iterations, eval_every=0)
    seconds, rows = [], []
    with tempfile.TemporaryDirectory() as run_dir, PeakMemory() as memory:
        trainer = Trainer(config, run_dir, progress=False)
        try:
            for it in range(warmup + iterations):
                start = time.perf_counter()
                row = trainer.iteration(it)
                if it >= warmup:
                    seconds.append(time.perf_counter() - start)
                    rows.append(row)
        finally:
            trainer.close()
    phases = {
        key: round(float(np.mean([r[key] for r in rows])), 3)
        for key in rows[0]
        if key.startswith("time_")
    }
    return {
        "family": config.family,
        "tasks": config.meta_batch_size,
        "episodes": config.episodes_per_task,
        "horizon": trainer.family.horizon,
        "inner_steps": config.inner_steps,
        "curvature": config.curvature,
        "outer": config.outer,
        "outer_epochs": config.outer_epochs,
        "backend": trainer.config.sampler.backend,  # what `auto` chose
        "workers": config.sampler.workers if trainer.config.sampler.backend == "ray" else None,
        "iterations": iterations,
        "seconds_per_iteration": round(float(np.median(seconds)), 3),
        "seconds_min": round(min(seconds), 3),
        "seconds_max": round(max(seconds), 3),
        "env_steps_per_iteration": round(rows[-1]["env_steps"] / (warmup + iterations)),
        "peak_rss_mb": round(memory.peak_mb, 1),
        "threads": torch.get_num_threads(),
    } | phases
