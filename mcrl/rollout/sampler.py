"""Collecting episodes for many tasks at once.

:class:`RolloutEngine` steps any list of (task, episode) pairs in lockstep with one batched
policy forward per env step for all of them. :class:`LocalSampler` runs one engine in-process;
the Ray sampler gives each worker an engine and a chunk of the pairs. Every episode's
randomness (reset seed and action noise) comes from (seed, iteration, phase, task index,
episode index) only, so the result does not depend on how the pairs are chunked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch

from mcrl.common.policies import MLPPolicy, stack_params
from mcrl.common.threads import available_cpus, torch_threads
from mcrl.common.validation import check_positive_int
from mcrl.rollout.episodes import EpisodeBatch
from mcrl.tasks import SerialTaskVectorEnv, Task, TaskFamily, TaskVectorEnv

ParamSets = Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]]

# The key of the engine's per-episode flag: the simulation became unstable and the episode was
# cut short (counted in the metrics as ``unstable_episodes``).
UNSTABLE = "unstable"
SUCCESS = "success"  # per episode: the env reported success at some step (Meta-World's protocol)

# Envs stepped one by one are collected in groups of at most this many (cache-friendly), unless
# the family says otherwise (``TaskFamily.serial_group``).
SERIAL_GROUP = 64


class Sampler(Protocol):
    """What the trainer and the evaluation need of a sampler (local or Ray)."""

    def sample(
        self,
        tasks: Sequence[Task],
        params: ParamSets,
        episodes_per_task: int,
        *,
        seed: int,
        iteration: int,
        phase: int = 0,
    ) -> list[EpisodeBatch]: ...

    def pop_counters(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def episode_rng(
    seed: int, iteration: int, phase: int, task_index: int, episode: int
) -> np.random.Generator:
    """The generator of one episode's randomness, a pure function of its coordinates."""
    return np.random.default_rng([seed, iteration, phase, task_index, episode])


@dataclass(frozen=True)
class EpisodeSlot:
    """One episode to collect: the task's position in the sampled list and the episode index."""

    task_position: int
    episode: int


def episode_slots(num_tasks: int, episodes_per_task: int) -> list[EpisodeSlot]:
    return [EpisodeSlot(i, e) for i in range(num_tasks) for e in range(episodes_per_task)]


def check_sample_args(
    family: TaskFamily, tasks: Sequence[Task], params: ParamSets, episodes_per_task: int
) -> None:
    if isinstance(tasks, Task) or not isinstance(tasks, Sequence) or len(tasks) == 0:
        raise ValueError("tasks must be a non-empty list of Task")
    for task in tasks:
        family.check_task(task)
    check_positive_int("episodes_per_task", episodes_per_task)
    if not isinstance(params, Mapping) and len(params) != len(tasks):
        raise ValueError(
            f"params must be one parameter set for all tasks or one per task; got {len(params)} sets for {len(tasks)} tasks"
        )


class RolloutEngine:
    """Owns the envs and steps them; never computes gradients.

    ``native_vector=False`` ignores a family's own vectorised env and steps one Gymnasium env
    per episode (to check the two agree, or to measure the generic path). Envs stepped one by
    one are at most ``max_envs`` at a time (1 collects the episodes one after another, in the
    same env object; default: the family's ``serial_group``, else ``SERIAL_GROUP``).
    ``threads`` is how many threads a native env may step its simulations with (default: the
    CPUs this process may use).
    """

    def __init__(
        self,
        family: TaskFamily,
        policy: MLPPolicy,
        *,
        native_vector: bool = True,
        max_envs: int | None = None,
        threads: int | None = None,
    ):
        self.family = family
        self.policy = policy
        self.native_vector = native_vector
        if max_envs is None:
            max_envs = family.serial_group or SERIAL_GROUP
        self.max_envs = check_positive_int("max_envs", max_envs)
        self.threads = (
            available_cpus() if threads is None else check_positive_int("threads", threads)
        )
        self._env: TaskVectorEnv | None = None

    def _envs_for(self, tasks: Sequence[Task]) -> TaskVectorEnv:
        if self._env is None:
            if self.native_vector:
                self._env = self.family.make_vector_env(tasks)
                self._env.set_threads(self.threads)
            else:
                self._env = SerialTaskVectorEnv(self.family, tasks)
        else:
            self._env.set_tasks(tasks)
        return self._env

    @staticmethod
    def _batched_params(
        params: ParamSets, slots: Sequence[EpisodeSlot]
    ) -> tuple[dict[str, torch.Tensor], int]:
        """Parameters with a leading group dimension G, the envs being laid out as
        ``[G, n / G]``: G = 1 for shared parameters, one group per task when the slots are sorted
        by task with equal counts (then each task costs one matrix product), else one per env."""
        if isinstance(params, Mapping):
            # np.array copies: arrays from Ray's object store are read-only.
            shared = {
                k: torch.from_numpy(np.array(v, dtype=np.float32))[None] for k, v in params.items()
            }
            return shared, 1
        positions = np.array([s.task_position for s in slots])
        used, counts = np.unique(positions, return_counts=True)
        if np.all(np.diff(positions) >= 0) and np.all(counts == counts[0]):
            return stack_params([params[i] for i in used]), len(used)
        per_env = {k: v[torch.as_tensor(positions)] for k, v in stack_params(params).items()}
        return per_env, len(slots)

    def run(
        self,
        tasks: Sequence[Task],
        params: ParamSets,
        slots: Sequence[EpisodeSlot],
        *,
        seed: int,
        iteration: int,
        phase: int,
    ) -> dict[str, np.ndarray]:
        """Collect the episodes ``slots``; returns arrays ``[horizon, len(slots), ...]``.

        Envs stepped one by one (no native vector env) go in groups of at most ``max_envs`` at a
        time: hundreds of MuJoCo models stepped round-robin fall out of the CPU caches
        (measured: 67 µs against 55 µs per HalfCheetah step at 800 vs 64 envs).
        """
        group = self._group_size(slots)
        if group < len(slots):
            parts = [
                self._run(
                    tasks, params, slots[i : i + group], seed=seed, iteration=iteration, phase=phase
                )
                for i in range(0, len(slots), group)
            ]
            return {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}
        return self._run(tasks, params, slots, seed=seed, iteration=iteration, phase=phase)

    def _group_size(self, slots: Sequence[EpisodeSlot]) -> int:
        if self.native_vector and self.family.has_native_vector_env:
            return len(slots)
        per_task = sum(s.task_position == slots[0].task_position for s in slots)
        limit = self.max_envs
        # Whole tasks per group where they fit, so that each task keeps one matrix product.
        return max(1, limit // per_task) * per_task if per_task <= limit else limit

    def _run(
        self,
        tasks: Sequence[Task],
        params: ParamSets,
        slots: Sequence[EpisodeSlot],
        *,
        seed: int,
        iteration: int,
        phase: int,
    ) -> dict[str, np.ndarray]:
        horizon = self.family.horizon
        env_tasks = [tasks[s.task_position] for s in slots]
        env = self._envs_for(env_tasks)
        n = len(slots)

        rngs = [
            episode_rng(seed, iteration, phase, tasks[s.task_position].index, s.episode)
            for s in slots
        ]
        reset_seeds = [int(rng.integers(2**31 - 1)) for rng in rngs]
        noise = torch.from_numpy(
            np.concatenate([self.policy.noise(rng, horizon, 1) for rng in rngs], axis=1)
        )

        env_params, groups = self._batched_params(params, slots)
        action_space = env.action_space
        act_dtype: type[np.number]
        if isinstance(action_space, gym.spaces.Box):
            bounds = (action_space.low, action_space.high)
            act_shape, act_dtype = action_space.shape, np.float32
        else:  # Discrete: one integer an env
            bounds, act_shape, act_dtype = None, (), np.int64
        obs_shape = env.observation_space.shape
        out = {
            "observations": np.zeros((horizon, n, *obs_shape), dtype=np.float32),
            "actions": np.zeros((horizon, n, *act_shape), dtype=act_dtype),
            "rewards": np.zeros((horizon, n), dtype=np.float32),
            "terminated": np.zeros((horizon, n), dtype=bool),
            "truncated": np.zeros((horizon, n), dtype=bool),
            "log_probs": np.zeros((horizon, n), dtype=np.float32),
            "mask": np.zeros((horizon, n), dtype=np.float32),
            UNSTABLE: np.zeros((1, n), dtype=bool),  # the simulation became unstable
        }
        if env.success is not None:
            out[SUCCESS] = np.zeros((1, n), dtype=bool)
        obs = env.reset(reset_seeds)
        active = np.ones(n, dtype=bool)
        with torch.no_grad(), torch_threads(1):
            for t in range(horizon):
                obs_t = torch.from_numpy(obs).reshape(groups, n // groups, *obs_shape)
                noise_t = noise[t].reshape(groups, n // groups, *noise.shape[2:])
                action_t, logp_t = self.policy.sample(env_params, obs_t, noise_t)
                actions = action_t.reshape(n, *action_t.shape[2:]).numpy()
                logp = logp_t.reshape(n).numpy()
                env_actions = np.clip(actions, *bounds) if bounds is not None else actions
                out["observations"][t][active] = obs[active]
                out["actions"][t][active] = actions[active]
                out["log_probs"][t][active] = logp[active]
                out["mask"][t][active] = 1.0
                obs, rewards, terminated, truncated = env.step(env_actions, active)
                if env.unstable is not None:
                    out[UNSTABLE][0] |= env.unstable & active
                if env.success is not None:
                    out[SUCCESS][0] |= env.success & active
                terminated &= active
                truncated = (truncated | (t == horizon - 1)) & active & ~terminated
                out["rewards"][t][active] = rewards[active]
                out["terminated"][t] = terminated
                out["truncated"][t] = truncated
                active &= ~(terminated | truncated)
                if not active.any():
                    break
        return out

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def assemble_batches(
    tasks: Sequence[Task], slots: Sequence[EpisodeSlot], arrays: dict[str, np.ndarray]
) -> list[EpisodeBatch]:
    """Split arrays over ``slots`` into one EpisodeBatch per task, episodes in index order
    (the per-episode ``unstable`` flags are left out: the samplers count them)."""
    success = arrays.get(SUCCESS)
    arrays = {k: v for k, v in arrays.items() if k not in (UNSTABLE, SUCCESS)}
    positions = np.array([s.task_position for s in slots])
    episodes = np.array([s.episode for s in slots])
    batches = []
    for i, task in enumerate(tasks):
        columns = np.flatnonzero(positions == i)
        columns = columns[np.argsort(episodes[columns], kind="stable")]
        episodes_of_task = {k: v[:, columns] for k, v in arrays.items()}
        task_success = None if success is None else success[0, columns]
        batches.append(EpisodeBatch(task, **episodes_of_task, success=task_success))
    return batches


class LocalSampler:
    """In-process sampler: every episode of every task in one lockstep rollout."""

    def __init__(
        self,
        family: TaskFamily,
        policy: MLPPolicy,
        *,
        native_vector: bool = True,
        max_envs: int | None = None,
        threads: int | None = None,
    ):
        self.family = family
        self.engine = RolloutEngine(
            family, policy, native_vector=native_vector, max_envs=max_envs, threads=threads
        )
        self.unstable_episodes = 0

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
        """``episodes_per_task`` episodes of each task.

        ``params`` is one parameter set (numpy arrays keyed as ``policy.params()``) for all tasks,
        or one per task. ``phase`` separates the randomness of the sampling phases of an
        iteration (0 before adaptation, k after the k-th adaptation step).
        """
        check_sample_args(self.family, tasks, params, episodes_per_task)
        slots = episode_slots(len(tasks), episodes_per_task)
        arrays = self.engine.run(tasks, params, slots, seed=seed, iteration=iteration, phase=phase)
        self.unstable_episodes += int(arrays[UNSTABLE].sum())
        return assemble_batches(tasks, slots, arrays)

    def pop_counters(self) -> dict[str, int]:
        """Episodes cut short by an unstable simulation since the last call, and worker restarts
        and resubmitted chunks (none in-process)."""
        counts = {"worker_restarts": 0, "chunks_resubmitted": 0}
        counts["unstable_episodes"], self.unstable_episodes = self.unstable_episodes, 0
        return counts

    def close(self) -> None:
        self.engine.close()
