"""Rollouts on Ray workers: an embedded Ray on one machine, or a real Ray cluster.

Each :class:`RolloutWorker` actor owns a :class:`~mcrl.sampler.RolloutEngine` (the same
batched stepping code as the local sampler) and collects a contiguous chunk of the phase's
(task, episode) slots. Parameters go into the object store once per phase; results come back
as numpy arrays. Because every episode's randomness derives from its own coordinates, a chunk
whose worker died is simply collected again, elsewhere, with identical results.
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from mcrl.episodes import EpisodeBatch
from mcrl.policies import MLPPolicy
from mcrl.sampler import (
    EpisodeSlot,
    ParamSets,
    RolloutEngine,
    assemble_batches,
    check_sample_args,
    episode_slots,
)
from mcrl.tasks import Task, TaskFamily
from mcrl.threads import available_cpus, configure_torch_threads


class SamplingError(RuntimeError):
    """A sampling phase could not collect every episode it asked for."""


class RolloutWorker:
    """A rollout worker (run as a Ray actor): steps envs, never computes gradients."""

    def __init__(self, family: TaskFamily, policy: MLPPolicy):
        configure_torch_threads(1)
        self.engine = RolloutEngine(family, policy)

    def run(
        self, tasks, params, slots, seed, iteration, phase
    ) -> tuple[dict[str, np.ndarray], float]:
        """The chunk's arrays and the seconds spent collecting them."""
        start = time.perf_counter()
        arrays = self.engine.run(tasks, params, slots, seed=seed, iteration=iteration, phase=phase)
        return arrays, time.perf_counter() - start


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast, naming the address, instead of letting ray.init wait on a dead one."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"Ray address {address!r} must look like HOST:PORT (or 'auto', or ray://HOST:PORT)"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ValueError(f"cannot reach a Ray cluster at {address!r}: {exc}") from None


def connect_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_mb: int = 512,
    dashboard: bool = False,
) -> bool:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start an embedded Ray.

    Returns whether this call started Ray. An embedded Ray gets a bounded object store and no
    dashboard unless asked; a cluster's own resources are never overridden.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        if address != "auto" and not address.startswith("ray://"):
            _check_reachable(address)
        ray.init(address=address, logging_level="WARNING", log_to_driver=True)
    else:
        ray.init(
            num_cpus=num_cpus or available_cpus(),
            include_dashboard=dashboard,
            object_store_memory=object_store_mb * 2**20,
            logging_level="WARNING",
        )
    return True


def split_slots(slots: Sequence[EpisodeSlot], chunks: int) -> list[list[EpisodeSlot]]:
    """Contiguous, nearly equal chunks (whole tasks per chunk when the counts allow)."""
    size = math.ceil(len(slots) / chunks)
    return [list(slots[i : i + size]) for i in range(0, len(slots), size)]


class RaySampler:
    """The LocalSampler's interface on Ray rollout workers (``num_cpus=1`` each)."""

    def __init__(
        self,
        family: TaskFamily,
        policy: MLPPolicy,
        *,
        workers: int | None = None,
        address: str | None = None,
        timeout_s: float = 600.0,
        max_chunk_retries: int = 3,
        worker_max_restarts: int = 3,
        object_store_mb: int = 512,
    ):
        import ray

        self.family = family
        self.timeout_s = timeout_s
        self.max_chunk_retries = max_chunk_retries
        connect_ray(address, num_cpus=workers, object_store_mb=object_store_mb)
        cluster_cpus = int(ray.cluster_resources().get("CPU", 0))
        wanted = workers or cluster_cpus
        if cluster_cpus < 1:
            raise ValueError("the Ray cluster has no CPUs for rollout workers")
        if wanted > cluster_cpus:
            warnings.warn(
                f"asked for {wanted} rollout workers but the Ray cluster has {cluster_cpus} CPUs; using {cluster_cpus}",
                stacklevel=2,
            )
            wanted = cluster_cpus
        remote = ray.remote(num_cpus=1, max_restarts=worker_max_restarts, max_task_retries=0)(
            RolloutWorker
        )
        self.actors = [remote.remote(family, policy) for _ in range(wanted)]
        self.counters = {"worker_restarts": 0, "chunks_resubmitted": 0}
        self.last_overhead_s = 0.0

    @property
    def num_workers(self) -> int:
        return len(self.actors)

    def sample(
        self,
        tasks: Sequence[Task],
        params: ParamSets,
        episodes_per_task: int,
        *,
        seed: int,
        iteration: int,
        phase: int = 0,
    ) -> list[EpisodeBatch]:
        """Same as :meth:`mcrl.LocalSampler.sample`, on the workers."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        check_sample_args(self.family, tasks, params, episodes_per_task)
        start = time.perf_counter()
        slots = episode_slots(len(tasks), episodes_per_task)
        chunks = split_slots(slots, self.num_workers)
        tasks_ref, params_ref = ray.put(list(tasks)), ray.put(params)  # once per phase

        def submit(index: int, attempt: int) -> Any:
            actor = self.actors[(index + attempt) % self.num_workers]
            return actor.run.remote(tasks_ref, params_ref, chunks[index], seed, iteration, phase)

        pending = {submit(i, 0): (i, 0) for i in range(len(chunks))}
        results: list[Any] = [None] * len(chunks)
        deadline = time.monotonic() + self.timeout_s
        while pending:
            remaining = deadline - time.monotonic()
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(remaining, 0))
            if not ready:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise SamplingError(
                    f"sampling phase exceeded sampler.timeout_s={self.timeout_s:g}s "
                    f"({len(pending)} of {len(chunks)} chunks of {self.family.name} outstanding)"
                )
            ref = ready[0]
            index, attempt = pending.pop(ref)
            try:
                results[index] = ray.get(ref, timeout=max(remaining, 1))
            except (RayActorError, RayTaskError, GetTimeoutError) as exc:
                if isinstance(exc, RayActorError):
                    self.counters["worker_restarts"] += 1
                if attempt >= self.max_chunk_retries:
                    task_names = sorted({tasks[s.task_position].index for s in chunks[index]})
                    cause = (
                        str(exc).strip().splitlines()[-1]
                        if str(exc).strip()
                        else type(exc).__name__
                    )
                    raise SamplingError(
                        f"episodes of family {self.family.name!r} (tasks {task_names}, "
                        f"e.g. {tasks[chunks[index][0].task_position].to_dict()['params']}) failed "
                        f"{attempt + 1} times; last error: {cause}"
                    ) from exc
                self.counters["chunks_resubmitted"] += 1
                pending[submit(index, attempt + 1)] = (index, attempt + 1)
        arrays = {k: np.concatenate([r[0][k] for r in results], axis=1) for k in results[0][0]}
        self.last_overhead_s = (time.perf_counter() - start) - max(r[1] for r in results)
        return assemble_batches(tasks, slots, arrays)

    def pop_counters(self) -> dict[str, int]:
        """Restarts and resubmissions since the last call."""
        counts, self.counters = self.counters, dict.fromkeys(self.counters, 0)
        return counts

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
