"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch

from mcrl.common.validation import first_line

CHECKPOINT_FORMAT = 1


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_weights_only(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` (nothing in the file executes); a missing or
    unreadable file raises one line naming ``what``."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for truncated or foreign files
        raise ValueError(
            f"{what} {str(path)!r} is unreadable (truncated or not written by mcrl): "
            + first_line(exc).split(". ")[0]
        ) from exc


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents (a run directory means its ``checkpoints/latest.pt``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "latest.pt"
    state = load_weights_only(path, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"checkpoint {str(path)!r} is not an mcrl checkpoint of format {CHECKPOINT_FORMAT}"
        )
    return state


def cpu_copy(state: Any) -> Any:
    """A copy of a (nested) state dict with every tensor on the CPU: a snapshot that the
    optimisers' in-place updates do not reach, and a checkpoint that loads without a GPU."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: cpu_copy(v) for k, v in state.items()}
    if isinstance(state, list):
        return [cpu_copy(v) for v in state]
    return copy.deepcopy(state)
