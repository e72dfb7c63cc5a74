"""Building a run's pieces from its config: the family, the learner (placed on the driver or a
Ray actor) and the sampler (in-process or on Ray workers)."""

from __future__ import annotations

from typing import Literal

import gymnasium as gym
import torch

from mcrl.common.config import SamplerConfig, TrainConfig
from mcrl.common.policies import MLPPolicy, make_policy
from mcrl.common.threads import available_cpus
from mcrl.meta.learner import MetaLearner
from mcrl.rollout.ray_cluster import cluster_address, connect_ray
from mcrl.rollout.ray_sampler import RaySampler
from mcrl.rollout.sampler import LocalSampler, Sampler
from mcrl.tasks import TaskFamily, make_family
from mcrl.training.placement import Learner, RayLearner, learner_placement


def build_family(config: TrainConfig) -> TaskFamily:
    kwargs = dict(config.family_kwargs)
    if config.horizon is not None:
        kwargs["horizon"] = config.horizon
    return make_family(config.family, **kwargs)


def family_spaces(family: TaskFamily) -> tuple[gym.Space, gym.Space]:
    """The observation and action spaces of the family's envs."""
    probe = family.make_env(family.sample_tasks(1, seed=0)[0])
    spaces = probe.observation_space, probe.action_space
    probe.close()
    return spaces


def build_policy(config: TrainConfig, family: TaskFamily) -> MLPPolicy:
    """θ initialised from the run seed, for the family's spaces."""
    observation_space, action_space = family_spaces(family)
    torch.manual_seed(config.seed)
    p = config.policy
    return make_policy(
        observation_space,
        action_space,
        p.hidden_sizes,
        p.activation,
        p.init_log_std,
        p.action_scaling,
    )


def build_learner(config: TrainConfig, policy: MLPPolicy) -> Learner:
    """The learner of ``policy``, placed per ``learner.placement`` (the driver or a Ray actor)."""
    if learner_placement(config.learner, torch.cuda.is_available()) == "ray":
        connect_ray(config.sampler.address, object_store_mb=config.sampler.object_store_mb)
        return RayLearner(policy, config, num_gpus=config.learner.num_gpus)
    return MetaLearner(policy, config)


def resolve_backend(
    sampler: SamplerConfig, family: TaskFamily
) -> tuple[Literal["ray", "local"], str]:
    """The sampler backend ``auto`` stands for, and why: Ray to join a cluster, or where the
    family steps one Gymnasium env per episode and the machine has CPUs to spread them over;
    in-process for a natively vectorised env (one process steps every episode as arrays, which
    Ray's per-phase transfers would only slow down) or on a single CPU."""
    if sampler.backend != "auto":
        return sampler.backend, "as configured"
    address = cluster_address(sampler.address)
    if address:
        return "ray", f"auto: joining the Ray cluster at {address}"
    if family.has_native_vector_env:
        return "local", f"auto: {family.name} ships a vectorised env"
    cpus = available_cpus()
    if cpus > 1:
        return "ray", f"auto: one Gymnasium env per episode, {cpus} CPUs"
    return "local", "auto: a single CPU"


def build_sampler(config: TrainConfig, family: TaskFamily, policy: MLPPolicy) -> Sampler:
    s = config.sampler
    if resolve_backend(s, family)[0] == "local":
        return LocalSampler(family, policy, threads=s.threads)
    return RaySampler(
        family,
        policy,
        workers=s.workers,
        address=s.address,
        timeout_s=s.timeout_s,
        max_chunk_retries=s.max_chunk_retries,
        object_store_mb=s.object_store_mb,
        dashboard=s.dashboard,
    )
