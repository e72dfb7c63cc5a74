"""Checks of user-given values and one-line error text, shared by every layer."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line, for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
