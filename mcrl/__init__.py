"""mcrl: meta-reinforcement learning with a learned initialisation and a learned curvature."""

from mcrl.config import TrainConfig, load_config
from mcrl.curvature import make_curvature
from mcrl.episodes import EpisodeBatch
from mcrl.learner import MetaLearner
from mcrl.losses import alignment_loss
from mcrl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, make_policy
from mcrl.sampler import LocalSampler
from mcrl.tasks import (
    BoxTaskSpace,
    Range,
    Task,
    TaskFamily,
    list_families,
    make_family,
    register_family,
)
from mcrl.trainer import Trainer, train

__all__ = [
    "BoxTaskSpace",
    "CategoricalMLPPolicy",
    "EpisodeBatch",
    "GaussianMLPPolicy",
    "LocalSampler",
    "MetaLearner",
    "TrainConfig",
    "Trainer",
    "alignment_loss",
    "load_config",
    "make_curvature",
    "train",
    "Range",
    "Task",
    "TaskFamily",
    "list_families",
    "make_family",
    "make_policy",
    "register_family",
]
