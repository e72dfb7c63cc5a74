"""On top: the ``mcrl`` command and the tools it exposes (benchmarks, plots, SB3 export)."""

from mcrl.cli.main import main

__all__ = ["main"]
