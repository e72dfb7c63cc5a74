"""Torch thread counts, set by mcrl so that users never have to export OMP_NUM_THREADS.

On small machines torch's default (one intra-op thread per core) fights with the env stepping
and with other workers: a peer ran 2-3x slower on 2 cores without OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_torch_threads(num_threads: int) -> None:
    """Set torch's intra-op threads, and a single inter-op thread where torch still allows it."""
    torch.set_num_threads(max(1, int(num_threads)))
    # Only settable before the first parallel op; harmless if it is already fixed.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


@contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Run a block with ``num_threads`` intra-op threads, restoring the previous count after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
