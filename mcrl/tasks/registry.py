"""The family registry: families known by name, shipped (``mcrl_envs``) or the user's own."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from mcrl.common.validation import first_line
from mcrl.tasks.family import TaskFamily

FamilyFactory = Callable[..., TaskFamily]
_REGISTRY: dict[str, FamilyFactory] = {}
_BUILTINS_LOADED = False


def register_family(name: str, factory: FamilyFactory, *, overwrite: bool = False) -> None:
    """Make ``factory`` (a TaskFamily subclass or any callable returning one) known as ``name``."""
    if not callable(factory):
        raise ValueError(f"factory for family {name!r} must be callable, got {factory!r}")
    if name in _REGISTRY and not overwrite and _REGISTRY[name] is not factory:
        raise ValueError(
            f"family {name!r} is already registered; pass overwrite=True to replace it"
        )
    _REGISTRY[name] = factory


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("mcrl_envs")  # registers the shipped families


def list_families() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _import_factory(spec: str) -> FamilyFactory:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"cannot import module {module_name!r} for family {spec!r}: {exc}"
        ) from exc
    factory = getattr(module, attr, None)
    if factory is None:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r} (family {spec!r})")
    return factory


def make_family(name: str, **kwargs: Any) -> TaskFamily:
    """Build a registered family by name, or one given as ``"module:Attribute"``."""
    _load_builtins()
    if name in _REGISTRY:
        factory = _REGISTRY[name]
    elif ":" in name:
        factory = _import_factory(name)
    else:
        raise ValueError(
            f"unknown family {name!r}; known families: {', '.join(sorted(_REGISTRY))} "
            "(or give 'module:Class' for your own)"
        )
    try:
        family = factory(**kwargs)
    except TypeError as exc:  # an argument the family does not take, or of the wrong kind
        raise ValueError(f"cannot build family {name!r} with {kwargs}: {first_line(exc)}") from None
    except ValueError as exc:
        raise (exc if name in str(exc) else ValueError(f"family {name!r}: {exc}")) from None
    if not isinstance(family, TaskFamily):
        raise ValueError(
            f"family {name!r} factory returned {type(family).__name__}, not a TaskFamily"
        )
    return family
