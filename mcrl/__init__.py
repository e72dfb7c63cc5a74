"""mcrl: meta-reinforcement learning with a learned initialisation and a learned curvature."""

from mcrl.common.config import TrainConfig, load_config
from mcrl.common.policies import CategoricalMLPPolicy, GaussianMLPPolicy, make_policy
from mcrl.meta.curvature import make_curvature
from mcrl.meta.learner import MetaLearner
from mcrl.meta.losses import alignment_loss
from mcrl.rollout.episodes import EpisodeBatch
from mcrl.rollout.sampler import LocalSampler
from mcrl.tasks import (
    BoxTaskSpace,
    Range,
    Task,
    TaskFamily,
    list_families,
    make_family,
    register_family,
)
from mcrl.tasks.gym_family import EnvParam, GymFamily, declare_family
from mcrl.training.adaptation import AdaptedPolicy, MetaPolicy, load
from mcrl.training.trainer import Trainer, train

__all__ = [
    "AdaptedPolicy",
    "BoxTaskSpace",
    "CategoricalMLPPolicy",
    "EnvParam",
    "EpisodeBatch",
    "GaussianMLPPolicy",
    "GymFamily",
    "LocalSampler",
    "MetaLearner",
    "MetaPolicy",
    "Range",
    "Task",
    "TaskFamily",
    "TrainConfig",
    "Trainer",
    "alignment_loss",
    "declare_family",
    "list_families",
    "load",
    "load_config",
    "make_curvature",
    "make_family",
    "make_policy",
    "register_family",
    "train",
]
