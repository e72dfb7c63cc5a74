"""A sweep's summary: one row per configuration, mean ± 95% CI over seeds of the final held-out
returns after 0..K adaptation steps, env steps and wall-clock, failed trials shown as failed."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from mcrl.sweeps.runner import SWEEP_FILE, read_status

# Two-sided 95% critical values of Student's t by degrees of freedom (normal beyond 30).
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
       2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
       2.060, 2.056, 2.052, 2.048, 2.045, 2.042]  # fmt: skip


def mean_and_t95(values: list[float]) -> tuple[float, float]:
    """Mean over seeds and the half-width of its 95% t-interval (NaN for a single seed)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, (T95[n - 2] if n - 2 < len(T95) else 1.96) * sd / math.sqrt(n)


def summarize(sweep_dir: str | Path) -> tuple[list[dict[str, Any]], str]:
    """The summary rows (for the CSV) and the markdown table; both are also written to
    ``summary.csv`` and ``summary.md`` in the sweep directory."""
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / SWEEP_FILE
    if not path.exists():
        raise FileNotFoundError(f"{str(sweep_dir)!r} holds no sweep (no {SWEEP_FILE})")
    record = json.loads(path.read_text())
    configurations: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for trial in record["trials"]:
        configurations[trial["configuration"]].append(trial)
    splits = sorted(
        {p.stem.removeprefix("eval_") for p in sweep_dir.glob("runs/*/seed*/eval_*.json")},
        key=["train", "test", "ood"].index,
    )
    rows = []
    for name, trials in configurations.items():
        row: dict[str, Any] = {"configuration": name} | trials[0]["assignments"]
        run_dirs = [sweep_dir / "runs" / name / f"seed{t['seed']}" for t in trials]
        statuses = [read_status(d) for d in run_dirs]
        row["seeds"] = len(trials)
        for status in ("finished", "stopped early", "failed", "pending"):
            row[status.replace(" ", "_")] = sum(s["status"] == status for s in statuses)
        row["errors"] = "; ".join(sorted({s["error"] for s in statuses if "error" in s}))
        for split in splits:
            evals = [e for e in (_eval(d, split) for d in run_dirs) if e is not None]
            if any("unavailable" in e for e in evals):
                row[f"{split}_unavailable"] = True
                continue
            steps = min((len(e["returns"]) for e in evals), default=0)
            for k in range(steps):
                mean, ci = mean_and_t95([e["returns"][k] for e in evals])
                row[f"{split}_return_{k}"], row[f"{split}_return_{k}_ci95"] = mean, ci
            row[f"{split}_seeds"] = len(evals)
        trains = [s for s in statuses if "env_steps" in s]
        for key in ("env_steps", "wall_s"):
            row[key] = sum(t[key] for t in trains) / len(trains) if trains else math.nan
        rows.append(row)
    markdown = _markdown(rows, record["keys"], splits)
    _write_csv(sweep_dir / "summary.csv", rows)
    (sweep_dir / "summary.md").write_text(markdown)
    return rows, markdown


def _eval(run_dir: Path, split: str) -> dict[str, Any] | None:
    path = run_dir / f"eval_{split}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _markdown(rows: list[dict[str, Any]], keys: list[str], splits: list[str]) -> str:
    header = ["configuration", *keys, "seeds"]
    header += [f"{split}: return after 0..K steps" for split in splits]
    header += ["env steps", "wall-clock (s)", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["configuration"], *(_short(row.get(k)) for k in keys), str(row["seeds"])]
        for split in splits:
            if row.get(f"{split}_unavailable"):
                cells.append(f"no {split} split")
                continue
            steps = [k for k in range(100) if f"{split}_return_{k}" in row]
            cells.append(
                " / ".join(
                    format_mean_ci(row[f"{split}_return_{k}"], row[f"{split}_return_{k}_ci95"])
                    for k in steps
                )
                or "–"
            )
        cells.append(f"{row['env_steps']:,.0f}" if not math.isnan(row["env_steps"]) else "–")
        cells.append(f"{row['wall_s']:.1f}" if not math.isnan(row["wall_s"]) else "–")
        cells.append(_status_text(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nMean over seeds ± 95% t-interval over seeds.\n"


def format_mean_ci(mean: float, ci: float) -> str:
    """``mean ± ci`` to one decimal (the mean alone where there is no interval)."""
    return f"{mean:.1f}" if math.isnan(ci) else f"{mean:.1f} ± {ci:.1f}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _status_text(row: dict[str, Any]) -> str:
    parts = [
        f"{row[key]} {key.replace('_', ' ')}"
        for key in ("finished", "stopped_early", "failed", "pending")
        if row[key]
    ]
    text = ", ".join(parts)
    if row["failed"]:
        text = f"**{text}**: {row['errors']}"
    return text
