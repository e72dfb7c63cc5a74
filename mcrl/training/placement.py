"""Where the learner runs: in the driver process (on its GPU when it has one), or as a Ray actor
on a GPU node of a cluster whose driver has none."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from mcrl.common.policies import MLPPolicy
from mcrl.meta.learner import MetaLearner
from mcrl.rollout.episodes import EpisodeBatch
from mcrl.training.checkpoints import cpu_copy

if TYPE_CHECKING:
    from mcrl.common.config import LearnerConfig, TrainConfig


class Learner(Protocol):
    """What training, evaluation and the benchmarks use of a learner: a :class:`MetaLearner` in
    this process or a :class:`RayLearner`. ``prepare`` returns a handle to one phase's prepared
    data (its tensors in this process, a key into the actor's store) that the other methods take
    back."""

    policy: MLPPolicy
    device: torch.device

    def prepare(self, batches: Sequence[EpisodeBatch]) -> Any: ...
    def adapted_params(self, pre: Sequence[Any]) -> list[dict[str, np.ndarray]]: ...
    def task_affinity(self, pre: Any) -> np.ndarray: ...
    def meta_step(self, pre: Sequence[Any], post: Any) -> dict[str, float]: ...
    def theta_numpy(self) -> dict[str, np.ndarray]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def learner_placement(learner: LearnerConfig, cuda_available: bool) -> str:
    """``driver`` or ``ray``. ``auto``: the driver, unless it has no CUDA device and the config
    asks for GPUs (``learner.num_gpus``), in which case a Ray actor gets them."""
    if learner.placement != "auto":
        return learner.placement
    return "ray" if learner.num_gpus > 0 and not cuda_available else "driver"


class LearnerActor:
    """A MetaLearner inside a Ray actor. Prepared phases stay on its device, named by keys;
    they are dropped after each meta-step."""

    def __init__(self, policy: MLPPolicy, config: TrainConfig):
        self.learner = MetaLearner(policy, config)
        self.phases: dict[int, Any] = {}

    def prepare(self, batches: Sequence[EpisodeBatch]) -> int:
        key = len(self.phases)
        self.phases[key] = self.learner.prepare(batches)
        return key

    def adapted_params(self, keys: Sequence[int]) -> list[dict[str, np.ndarray]]:
        return self.learner.adapted_params([self.phases[k] for k in keys])

    def task_affinity(self, key: int) -> np.ndarray:
        return self.learner.task_affinity(self.phases[key])

    def meta_step(self, pre_keys: Sequence[int], post_key: int) -> dict[str, float]:
        metrics = self.learner.meta_step([self.phases[k] for k in pre_keys], self.phases[post_key])
        self.phases.clear()
        return metrics

    def theta_numpy(self) -> dict[str, np.ndarray]:
        return self.learner.theta_numpy()

    def state_dict(self) -> dict:
        return cpu_copy(self.learner.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.learner.load_state_dict(state)

    def device(self) -> str:
        return str(self.learner.device)


class RayLearner:
    """The MetaLearner interface the trainer uses, served by a :class:`LearnerActor`.

    ``policy`` stays on the driver as a CPU copy: it gives the sampler its architecture and the
    resume check its parameter shapes; θ itself lives in the actor.
    """

    def __init__(self, policy: MLPPolicy, config: TrainConfig, num_gpus: float):
        import ray

        self.policy = policy
        self.config = config
        self._ray = ray
        self.actor = ray.remote(num_cpus=1, num_gpus=num_gpus)(LearnerActor).remote(policy, config)
        self.device = torch.device(self._call("device"))

    def _call(self, method: str, *args: Any) -> Any:
        return self._ray.get(getattr(self.actor, method).remote(*args))

    def prepare(self, batches: Sequence[EpisodeBatch]) -> int:
        return self._call("prepare", list(batches))

    def adapted_params(self, pre: Sequence[int]) -> list[dict[str, np.ndarray]]:
        return self._call("adapted_params", list(pre))

    def task_affinity(self, pre: int) -> np.ndarray:
        return self._call("task_affinity", pre)

    def meta_step(self, pre: Sequence[int], post: int) -> dict[str, float]:
        return self._call("meta_step", list(pre), post)

    def theta_numpy(self) -> dict[str, np.ndarray]:
        return self._call("theta_numpy")

    def state_dict(self) -> dict:
        return self._call("state_dict")

    def load_state_dict(self, state: dict) -> None:
        self._call("load_state_dict", state)
