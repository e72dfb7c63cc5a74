"""``mcrl plot``: PNGs of what a run learned, drawn headless with matplotlib.

- ``learning_curve.png``: training return before and after adaptation against env steps, with
  the periodic held-out evaluation;
- ``adaptation.png``: held-out return after 0..K adaptation steps with 95% CIs (``eval.json``);
- ``affinity.png``: the latest task-affinity matrix D_ij = ‖g_i − g_j‖², tasks ordered by
  their parameters, so that tasks with similar goals or dynamics sit together;
- ``curvature.png``: what C learned: for ``kronecker`` the eigenvalues of every factor M_out and
  M_in against the identity's (all 1); for ``diagonal`` a histogram of the scales. With one
  curvature per inner step (``curvature_per_step``), ``curvature_step1.png``, ... instead.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display needed, before pyplot is imported

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mcrl.common.config import from_saved_dict  # noqa: E402
from mcrl.meta.curvature import Curvature, DiagonalCurvature, PerStepCurvature  # noqa: E402
from mcrl.meta.learner import curvature_for  # noqa: E402
from mcrl.training.checkpoints import load_checkpoint  # noqa: E402

DPI = 120


def _read_metrics(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is {str(run_dir)!r} a run directory?")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no iterations yet")
    return rows


def _column(rows: list[dict[str, str]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(env_steps, values) for the rows where ``key`` has a value."""
    kept = [r for r in rows if r.get(key, "") != ""]
    return (
        np.array([float(r["env_steps"]) for r in kept]),
        np.array([float(r[key]) for r in kept]),
    )


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_learning_curve(rows: list[dict[str, str]], path: Path) -> Path:
    """Return against env steps; beside it the success rate, for families that report one."""
    measures = ["return"] + ["success"] * ("success_post" in rows[0])
    fig, axes = plt.subplots(1, len(measures), figsize=(7 * len(measures), 4), squeeze=False)
    for ax, measure in zip(axes[0], measures, strict=True):
        for when in ("pre", "post"):
            label = "before adaptation" if when == "pre" else "after adaptation"
            ax.plot(*_column(rows, f"{measure}_{when}"), label=f"train tasks, {label}", alpha=0.8)
        eval_keys = sorted(k for k in rows[0] if k.startswith(f"eval_{measure}_"))
        for key in (eval_keys[0], eval_keys[-1]) if eval_keys else ():
            steps = int(key.removeprefix(f"eval_{measure}_"))
            label = f"held-out tasks, after {steps} step{'s' if steps != 1 else ''}"
            ax.plot(*_column(rows, key), "o--", label=label)
        ax.set_xlabel("env steps")
        ax.set_ylabel("mean episode return" if measure == "return" else "success rate")
        ax.set_title("learning curve" if measure == "return" else "success (Meta-World)")
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_adaptation(record: dict[str, Any], path: Path) -> Path:
    steps = np.arange(len(record["returns"]))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.errorbar(steps, record["returns"], yerr=np.nan_to_num(record["ci95"]), marker="o", capsize=4)
    ax.set_xticks(steps)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel("mean episode return (95% CI over tasks)")
    where = f", iteration {record['iteration']}" if "iteration" in record else ""
    ax.set_title(f"{record['tasks']} {record['split']} tasks{where}")
    return _save(fig, path)


def _sort_items(value: Any) -> list[tuple[int, Any]]:
    """A parameter's value as items that compare with any other's: names (Meta-World's
    ``task_name``) before numbers, numbers by value."""
    if isinstance(value, str):
        return [(0, value)]
    return [(1, float(x)) for x in np.ravel(value)]


def _label(value: Any) -> str:
    return value if isinstance(value, str) else str(np.round(np.asarray(value, float), 2).tolist())


def task_order(task_params: list[dict[str, Any]]) -> np.ndarray:
    """Indices that sort tasks by their parameters (first parameter first)."""
    keys = [[item for v in p.values() for item in _sort_items(v)] for p in task_params]
    return np.array(sorted(range(len(task_params)), key=keys.__getitem__), dtype=int)


def plot_affinity(npz_path: Path, path: Path) -> Path:
    data = np.load(npz_path)
    params = [json.loads(p) for p in data["task_params"]]
    order = task_order(params)
    affinity = data["affinity"][np.ix_(order, order)]
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(affinity, cmap="viridis")
    fig.colorbar(image, ax=ax, label="‖g_i − g_j‖²")
    if len(order) <= 20:
        labels = [", ".join(_label(v) for v in params[i].values()) for i in order]
        ax.set_xticks(range(len(order)), labels, rotation=90, fontsize="x-small")
        ax.set_yticks(range(len(order)), labels, fontsize="x-small")
    ax.set_title(f"task affinity ({npz_path.stem}), ordered by {', '.join(params[0])}")
    return _save(fig, path)


def plot_curvature(curvature: Curvature, path: Path, title: str = "") -> Path:
    if isinstance(curvature, DiagonalCurvature):
        scales = torch.cat([c.detach().flatten() for c in curvature.vector_scales()]).numpy()
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.hist(scales, bins=50)
        ax.axvline(1.0, color="black", linestyle="--", label="identity (MAML)")
        ax.set_xlabel("learned per-parameter scale c")
        ax.set_ylabel("parameters")
        ax.legend()
        ax.set_title(f"diagonal curvature (Meta-SGD){title}")
        return _save(fig, path)
    # "out.<name>", "in.<name>": the matrices M, whether C holds them or their roots.
    factors = {key: m.detach() for key, m in curvature.factors().items()}
    names = sorted({key.split(".", 1)[1] for key in factors})
    fig, axes = plt.subplots(
        2, len(names), figsize=(3.2 * len(names), 5.5), squeeze=False, sharey="row"
    )
    for column, name in enumerate(names):
        for row, side in enumerate(("out", "in")):
            eigenvalues = np.sort(torch.linalg.eigvals(factors[f"{side}.{name}"]).real.numpy())
            eigenvalues = eigenvalues[::-1]
            ax = axes[row][column]
            ax.plot(eigenvalues, marker=".", label="learned")
            ax.axhline(1.0, color="black", linestyle="--", label="identity")
            ax.set_title(f"M_{side} of {name.replace('__', '.')}{title}", fontsize="small")
            ax.set_xlabel("index (sorted)")
    axes[0][0].set_ylabel("eigenvalue (real part)")
    axes[1][0].set_ylabel("eigenvalue (real part)")
    axes[0][0].legend(fontsize="small")
    return _save(fig, path)


def plot_run(
    run_dir: str | Path, out_dir: str | Path | None = None
) -> tuple[list[Path], list[str]]:
    """Write the run's PNGs into ``out_dir`` (default ``RUN_DIR/plots``); returns the files
    written and, for each plot that could not be drawn, why."""
    run_dir = Path(run_dir)
    rows = _read_metrics(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = [plot_learning_curve(rows, out / "learning_curve.png")]
    skipped = []

    eval_path = run_dir / "eval.json"
    if eval_path.is_file():
        written.append(plot_adaptation(json.loads(eval_path.read_text()), out / "adaptation.png"))
    else:
        skipped.append(f"adaptation.png: no {eval_path} (run `mcrl evaluate {run_dir}`)")

    affinity = sorted((run_dir / "affinity").glob("iteration_*.npz"))
    if affinity:
        written.append(plot_affinity(affinity[-1], out / "affinity.png"))
    else:
        skipped.append(f"affinity.png: no affinity matrices in {run_dir / 'affinity'}")

    state = load_checkpoint(run_dir)
    kind = state["config"]["curvature"]
    if kind == "identity":
        skipped.append("curvature.png: the run's curvature is 'identity' (MAML): nothing learned")
    else:
        config = from_saved_dict(state["config"])
        curvature = curvature_for(config, state["learner"]["policy"])
        curvature.load_state_dict(state["learner"]["curvature"])
        if isinstance(curvature, PerStepCurvature):
            for k, step_curvature in enumerate(curvature.curvatures(), start=1):
                path = out / f"curvature_step{k}.png"
                written.append(plot_curvature(step_curvature, path, f", inner step {k}"))
        else:
            written.append(plot_curvature(curvature, out / "curvature.png"))
    return written, skipped
