"""The learner, the third layer: the curvature C, the inner and outer losses, advantages, and the
meta-step that updates θ and C from episodes. It never steps an env."""

from mcrl.meta.curvature import make_curvature
from mcrl.meta.learner import MetaLearner
from mcrl.meta.losses import alignment_loss

__all__ = ["MetaLearner", "alignment_loss", "make_curvature"]
