"""MuJoCo's warnings, less one deprecation notice that Gymnasium's own models trigger."""

from __future__ import annotations

import sys

# Gymnasium's HalfCheetah, Hopper, Walker2d and Ant XML files set the compiler attribute
# `settotalmass`; MuJoCo 4 warns about it each time such a model is compiled, which is once per
# env (dozens of lines per run). It says nothing about mcrl's use of the model.
HARMLESS = ("compiler attribute 'settotalmass' is deprecated",)

_installed = False


def filter_mujoco_warnings() -> None:
    """Install (once per process) a MuJoCo warning handler that drops :data:`HARMLESS` notices
    and passes every other warning on: to a handler installed before, else to stderr as
    MuJoCo's default does."""
    global _installed
    if _installed:
        return
    import mujoco

    previous = mujoco.get_mju_user_warning()

    def handler(message: str) -> None:
        if message.startswith(HARMLESS):
            return
        if previous is not None:
            previous(message)
        else:
            print(f"WARNING: {message}", file=sys.stderr, flush=True)

    mujoco.set_mju_user_warning(handler)
    _installed = True
