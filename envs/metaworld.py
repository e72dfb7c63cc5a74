"""Meta-World's meta-RL benchmarks ML1, ML10 and ML45, over the ``metaworld`` package (the
optional extra ``pip install "mcrl[metaworld]"``).

A task is one Meta-World task: its type (``task_name``, such as ``reach-v3``) and its position
among the benchmark's tasks of that type (``position``: the training goals or object positions
first, then the held-out ones). The splits are Meta-World's own: ML1's ``test`` tasks are its
held-out positions of the same type, ML10's and ML45's are its held-out types. There is no ood
split: Meta-World defines none, and positions outside its ranges would mean objects out of the
robot's reach. Episodes record ``info["success"]`` (success if reached at any step: Meta-World's
protocol).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym

from mcrl.tasks import Task, TaskFamily

INSTALL = 'pip install "mcrl[metaworld]"'
MAX_PATH_LENGTH = 500  # Meta-World's episode length; its envs refuse to step beyond it
POSITIONS = 50  # goal or object positions per task type and split, in every ML benchmark


def _metaworld() -> Any:
    try:
        import metaworld
    except ImportError:
        raise ValueError(f"the Meta-World families need the metaworld package: {INSTALL}") from None
    if not hasattr(metaworld, "ML1"):  # a folder named metaworld on sys.path shadows it
        where = list(getattr(metaworld, "__path__", [])) or getattr(metaworld, "__file__", "?")
        raise ValueError(
            f"'import metaworld' found {where}, not the Meta-World package: rename that folder "
            f"or take it off sys.path ({INSTALL})"
        )
    return metaworld


class MetaWorldEnv(gym.Env):
    """A Meta-World env seeded the Gymnasium way. Meta-World's own ``reset(seed=...)`` does not
    create the env's ``np_random`` (Gymnasium's env checker fails it); this one does, and hands
    the seed on."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env: Any):
        self.env = env
        self.observation_space = env.observation_space
        self.action_space = env.action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        return self.env.step(action)

    def close(self) -> None:
        self.env.close()


class _MetaWorldFamily(TaskFamily):
    """The tasks of one Meta-World benchmark, built from its own task lists.

    The benchmark itself (Meta-World samples its positions by building every env type) is made
    on first use of an env, so that listing the family or checking a task costs nothing.
    """

    default_horizon = MAX_PATH_LENGTH
    reports_success = True
    group_by = "task_name"
    # Measured on ML1 reach-v3, 20 tasks x 10 episodes: groups of 20 envs sample 7-8% faster
    # than the default 64 (60 here), and 10 or 30 no faster than 20 (experiments/README.md).
    serial_group = 20

    def __init__(self, horizon: int | None = None, benchmark_seed: int = 0):
        super().__init__(horizon)
        if self.horizon > MAX_PATH_LENGTH:
            raise ValueError(
                f"horizon must be <= {MAX_PATH_LENGTH} (Meta-World's episode length), "
                f"got {self.horizon}"
            )
        self.benchmark_seed = int(benchmark_seed)
        train_types, test_types = self._task_types(_metaworld())
        # Per task type: its training positions first, then its held-out ones.
        self._train_count = {name: POSITIONS * (name in train_types) for name in train_types}
        self._train_count |= {name: 0 for name in test_types if name not in train_types}
        self._count = {
            name: POSITIONS * ((name in train_types) + (name in test_types))
            for name in self._train_count
        }
        self._split_tasks = {
            split: [
                (name, position)
                for name, count in self._count.items()
                for position in range(count)
                if (position < self._train_count[name]) == (split == "train")
            ]
            for split in ("train", "test")
        }
        self._tasks: dict[str, list] | None = None
        self._classes: dict[str, type] = {}

    def _task_types(self, metaworld: Any) -> tuple[list[str], list[str]]:
        """The benchmark's training and held-out task types."""
        raise NotImplementedError

    def _benchmark(self, metaworld: Any) -> Any:
        raise NotImplementedError

    def _benchmark_tasks(self) -> dict[str, list]:
        if self._tasks is None:
            benchmark = self._benchmark(_metaworld())
            self._classes = {**benchmark.train_classes, **benchmark.test_classes}
            tasks: dict[str, list] = {name: [] for name in self._count}
            for task in [*benchmark.train_tasks, *benchmark.test_tasks]:
                tasks[task.env_name].append(task)
            counts = {name: len(found) for name, found in tasks.items()}
            if counts != self._count:  # another metaworld version
                raise ValueError(
                    f"{self.name}: metaworld gave {counts} tasks per type, mcrl expects "
                    f"{self._count}; install a supported version: {INSTALL}"
                )
            self._tasks = tasks
        return self._tasks

    # -- tasks -------------------------------------------------------------------------------
    def sample_params(self, rng, split):
        if split == "ood":
            raise ValueError(f"{self.name} has no ood split: Meta-World defines none")
        choices = self._split_tasks[split]
        name, position = choices[int(rng.integers(len(choices)))]
        return {"task_name": name, "position": float(position)}

    def check_params(self, params: Mapping[str, Any]) -> None:
        expected = ["position", "task_name"]
        if sorted(params) != expected:
            raise ValueError(f"task parameters must be {expected}, got {sorted(params)}")
        name = params["task_name"]
        if name not in self._count:
            raise ValueError(
                f"unknown task_name {name!r}; {self.name} has {', '.join(sorted(self._count))}"
            )
        count = self._count[name]
        position = Task.freeze("position", params["position"])
        if isinstance(position, (str, tuple)) or position not in range(count):
            raise ValueError(
                f"position of {name} must be a whole number in 0..{count - 1}, "
                f"got {params['position']!r}"
            )

    def split_of(self, params):
        self.check_params(params)
        name, position = params["task_name"], int(params["position"])
        return "train" if position < self._train_count[name] else "test"

    def describe(self):
        text = {}
        for split in ("train", "test"):
            names = sorted({name for name, _ in self._split_tasks[split]})
            shown = ", ".join(names) if len(names) <= 3 else f"{len(names)} types"
            text[split] = {"task_name": shown, "position": f"{len(self._split_tasks[split])} tasks"}
        return text | {"ood": {"task_name": "none", "position": "none"}}

    # -- environments ------------------------------------------------------------------------
    def _metaworld_task(self, task: Task) -> Any:
        self.check_task(task)
        return self._benchmark_tasks()[task.params["task_name"]][int(task.params["position"])]

    def make_env(self, task: Task) -> gym.Env:
        metaworld_task = self._metaworld_task(task)
        env = self._classes[task.params["task_name"]]()
        env.set_task(metaworld_task)
        return gym.wrappers.TimeLimit(MetaWorldEnv(env), self.horizon)

    def can_retarget(self, env: gym.Env, task: Task) -> bool:
        self._benchmark_tasks()
        return type(env.unwrapped.env) is self._classes[task.params["task_name"]]

    def set_task(self, env: gym.Env, task: Task) -> None:
        env.unwrapped.env.set_task(self._metaworld_task(task))


class MetaWorldML1(_MetaWorldFamily):
    """One Meta-World task type (``task_name``, default ``reach-v3``): 50 training goal or
    object positions, and the held-out positions as the test split."""

    name = "MetaWorldML1"

    def __init__(
        self, task_name: str = "reach-v3", horizon: int | None = None, benchmark_seed: int = 0
    ):
        self.task_name = task_name
        super().__init__(horizon, benchmark_seed)

    def _task_types(self, metaworld):
        known = sorted(metaworld.ML1.ENV_NAMES)
        if self.task_name not in known:
            raise ValueError(f"unknown Meta-World task_name {self.task_name!r}; known: {known}")
        return [self.task_name], [self.task_name]

    def _benchmark(self, metaworld):
        return metaworld.ML1(self.task_name, seed=self.benchmark_seed)


class _HeldOutTypes(_MetaWorldFamily):
    """A benchmark whose test split is task types never trained on (ML10, ML45)."""

    benchmark = "ML10"

    def _task_types(self, metaworld):
        types = getattr(metaworld.env_dict, f"{self.benchmark}_V3")
        return list(types["train"]), list(types["test"])

    def _benchmark(self, metaworld):
        return getattr(metaworld, self.benchmark)(seed=self.benchmark_seed)


class MetaWorldML10(_HeldOutTypes):
    """Ten training task types and five held-out types (the test split)."""

    name = "MetaWorldML10"
    benchmark = "ML10"


class MetaWorldML45(_HeldOutTypes):
    """45 training task types and five held-out types (the test split)."""

    name = "MetaWorldML45"
    benchmark = "ML45"
