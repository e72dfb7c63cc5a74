"""Markdown table of held-out returns after 0..K adaptation steps, mean over seeds ± a 95%
t-interval over seeds, from ``RESULTS/VARIANT/seedN/eval_{test,ood}.json``.

    python experiments/summarize_evals.py experiments/results/adaptation
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mcrl.sweeps.summary import format_mean_ci, mean_and_t95


def mean_ci(values: list[float]) -> str:
    return format_mean_ci(*mean_and_t95(values))


def main(results: Path) -> None:
    for split in ("test", "ood"):
        rows = []
        for variant in sorted(p for p in results.iterdir() if p.is_dir()):
            evals = [
                json.loads(path.read_text())
                for path in sorted(variant.glob(f"seed*/eval_{split}.json"))
            ]
            if not evals:
                continue
            steps = min(len(e["returns"]) for e in evals)
            cells = [mean_ci([e["returns"][k] for e in evals]) for k in range(steps)]
            rows.append((variant.name, len(evals), cells))
        if not rows:
            continue
        width = max(len(cells) for _, _, cells in rows)
        print(f"\n{split} split, return after 0..{width - 1} steps (mean over seeds ± 95% CI)\n")
        print("| variant | seeds | " + " | ".join(str(k) for k in range(width)) + " |")
        print("|---|---|" + "---|" * width)
        for name, seeds, cells in rows:
            print(f"| {name} | {seeds} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
