"""Rollouts, the second layer: episodes collected for many tasks at once, in-process or on Ray
workers. Nothing here computes a gradient."""

from mcrl.rollout.episodes import EpisodeBatch
from mcrl.rollout.sampler import LocalSampler, Sampler

__all__ = ["EpisodeBatch", "LocalSampler", "Sampler"]
