"""mcrl: meta-reinforcement learning with a learned initialisation and a learned curvature."""

from mcrl.episodes import EpisodeBatch
from mcrl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, make_policy
from mcrl.sampler import LocalSampler
from mcrl.tasks import BoxTaskSpace, Range, Task, TaskFamily, list_families, make_family, register_family

__all__ = [
    "BoxTaskSpace",
    "CategoricalMLPPolicy",
    "EpisodeBatch",
    "GaussianMLPPolicy",
    "LocalSampler",
    "Range",
    "Task",
    "TaskFamily",
    "list_families",
    "make_family",
    "make_policy",
    "register_family",
]
