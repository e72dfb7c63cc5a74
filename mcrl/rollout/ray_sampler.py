"""Rollouts on Ray workers: an embedded Ray on one machine, or a real Ray cluster.

Each :class:`RolloutWorker` actor owns a :class:`~mcrl.rollout.sampler.RolloutEngine` (the same
batched stepping code as the local sampler) and collects a contiguous chunk of the phase's
(task, episode) slots. Parameters go into the object store once per phase; results come back
as numpy arrays. Because every episode's randomness derives from its own coordinates, a chunk
whose worker died is simply collected again, elsewhere, with identical results.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from mcrl.common.policies import MLPPolicy
from mcrl.common.threads import configure_torch_threads
from mcrl.rollout.episodes import EpisodeBatch
from mcrl.rollout.ray_cluster import connect_ray
from mcrl.rollout.sampler import (
    UNSTABLE,
    EpisodeSlot,
    ParamSets,
    RolloutEngine,
    assemble_batches,
    check_sample_args,
    episode_slots,
)
from mcrl.tasks import Task, TaskFamily

# A chunk out this many times longer than the slowest finished one (and at least this many
# seconds) is presumed lost and collected again elsewhere.
STRAGGLER_FACTOR = 3.0
STRAGGLER_MIN_S = 5.0


class SamplingError(RuntimeError):
    """A sampling phase could not collect every episode it asked for."""


class RolloutWorker:
    """A rollout worker (run as a Ray actor): steps envs, never computes gradients."""

    def __init__(self, family: TaskFamily, policy: MLPPolicy):
        configure_torch_threads(1)
        self.engine = RolloutEngine(family, policy, threads=1)  # one CPU per worker

    def run(
        self, tasks, params, slots, seed, iteration, phase
    ) -> tuple[dict[str, np.ndarray], float]:
        """The chunk's arrays and the seconds spent collecting them."""
        start = time.perf_counter()
        arrays = self.engine.run(tasks, params, slots, seed=seed, iteration=iteration, phase=phase)
        return arrays, time.perf_counter() - start


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
        dashboard: bool = False,
    ):
        self.family = family
        self.timeout_s = timeout_s
        self.max_chunk_retries = max_chunk_retries
        connect_ray(
            address, object_store_mb=object_store_mb, dashboard=dashboard
        )  # before Ray is imported here
        import ray

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
        self.actors: list[Any] = [remote.remote(family, policy) for _ in range(wanted)]
        self.counters = {"worker_restarts": 0, "chunks_resubmitted": 0, "unstable_episodes": 0}
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

        check_sample_args(self.family, tasks, params, episodes_per_task)
        start = time.perf_counter()
        slots = episode_slots(len(tasks), episodes_per_task)
        chunks = split_slots(slots, self.num_workers)
        tasks_ref, params_ref = ray.put(list(tasks)), ray.put(params)  # once per phase

        def run(actor: Any, chunk: list[EpisodeSlot]) -> Any:
            return actor.run.remote(tasks_ref, params_ref, chunk, seed, iteration, phase)

        results = self._collect(chunks, run, tasks)
        arrays = {k: np.concatenate([r[0][k] for r in results], axis=1) for k in results[0][0]}
        self.last_overhead_s = (time.perf_counter() - start) - max(r[1] for r in results)
        self.counters["unstable_episodes"] += int(arrays[UNSTABLE].sum())
        return assemble_batches(tasks, slots, arrays)

    def _collect(
        self, chunks: list[list[EpisodeSlot]], run: Any, tasks: Sequence[Task]
    ) -> list[Any]:
        """Every chunk's result, whatever happens to the workers.

        A chunk goes to another worker when its worker died or raised (at most
        ``max_chunk_retries`` more times), and also when it has been out much longer than the
        chunks that finished: a node that left can leave a task that never returns. The first
        copy to finish wins, which is safe because a chunk's episodes are a pure function of
        their coordinates.
        """
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        pending: dict[Any, tuple[int, int, float]] = {}  # ref -> (chunk, worker, submitted at)
        submissions = [0] * len(chunks)
        results: list[Any] = [None] * len(chunks)
        durations: list[float] = []

        def submit(index: int, avoid: int | None = None) -> None:
            busy = {worker for _, worker, _ in pending.values()}
            idle = [w for w in range(self.num_workers) if w not in busy and w != avoid]
            worker = idle[0] if idle else (index + submissions[index]) % self.num_workers
            pending[run(self.actors[worker], chunks[index])] = (index, worker, time.monotonic())
            submissions[index] += 1

        def fail(index: int, exc: Exception) -> SamplingError:
            positions = sorted({s.task_position for s in chunks[index]})
            cause = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            return SamplingError(
                f"episodes of family {self.family.name!r} (tasks {[tasks[p].index for p in positions]}, "
                f"e.g. {tasks[positions[0]].to_dict()['params']}) failed {submissions[index]} times; last error: {cause}"
            )

        for index in range(len(chunks)):
            submit(index)
        deadline = time.monotonic() + self.timeout_s
        while any(r is None for r in results):
            now = time.monotonic()
            if now >= deadline:
                # Restart the busy workers, so that the sampler stays usable.
                for _, worker, _ in pending.values():
                    ray.kill(self.actors[worker], no_restart=False)
                outstanding = sum(r is None for r in results)
                raise SamplingError(
                    f"sampling phase exceeded sampler.timeout_s={self.timeout_s:g}s "
                    f"({outstanding} of {len(chunks)} chunks of {self.family.name} outstanding)"
                )
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=min(deadline - now, 1.0))
            for ref in ready:
                index, worker, submitted = pending.pop(ref)
                if results[index] is not None:
                    continue  # a second copy of a chunk that already finished
                try:
                    results[index] = ray.get(ref)
                    durations.append(time.monotonic() - submitted)
                except (RayActorError, RayTaskError) as exc:
                    if isinstance(exc, RayActorError):
                        self.counters["worker_restarts"] += 1
                    if any(i == index for i, _, _ in pending.values()):
                        continue  # another copy is still running
                    if submissions[index] > self.max_chunk_retries:
                        raise fail(index, exc) from exc
                    self.counters["chunks_resubmitted"] += 1
                    submit(index, avoid=worker)
            if durations:
                patience = max(STRAGGLER_MIN_S, STRAGGLER_FACTOR * max(durations))
                for index, result in enumerate(results):
                    copies = [(t, w) for i, w, t in pending.values() if i == index]
                    if result is None and copies and submissions[index] <= self.max_chunk_retries:
                        newest, worker = max(copies)
                        if time.monotonic() - newest > patience:
                            self.counters["chunks_resubmitted"] += 1
                            submit(index, avoid=worker)
        return results

    def pop_counters(self) -> dict[str, int]:
        """Restarts, resubmissions and unstable episodes since the last call."""
        counts, self.counters = self.counters, dict.fromkeys(self.counters, 0)
        return counts

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
