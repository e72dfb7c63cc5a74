"""Task families, the first layer: task records, the splits they are sampled from, the envs
built for them, and the registry of families by name."""

from mcrl.tasks.family import TaskFamily
from mcrl.tasks.gym_family import EnvParam, GymFamily, declare_family
from mcrl.tasks.registry import list_families, make_family, register_family
from mcrl.tasks.task import SPLITS, BoxTaskSpace, ParamValue, Range, Task, check_split
from mcrl.tasks.vector_env import SerialTaskVectorEnv, TaskVectorEnv

__all__ = [
    "SPLITS",
    "BoxTaskSpace",
    "EnvParam",
    "GymFamily",
    "ParamValue",
    "Range",
    "SerialTaskVectorEnv",
    "Task",
    "TaskFamily",
    "TaskVectorEnv",
    "check_split",
    "declare_family",
    "list_families",
    "make_family",
    "register_family",
]
