"""A fixed-seed run's metrics stay what they were when recorded (tests/golden/*.json): speed work
on the learner must not change results beyond float tolerance.

Regenerate (only for a deliberate change of results, saying why in the commit):
``python -m tests.test_golden``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import mcrl
from tests.conftest import tiny_config

GOLDEN = Path(__file__).parent / "golden"
# Recorded before the adaptation defaults changed; these keys keep them what they were.
BEFORE_ADAPTATION_DEFAULTS = ("inner_steps=1", "learn_inner_lr=false", "policy.action_scaling=none")
# Recorded before C's factors stepped with curvature_lr / n.
BEFORE_FACTOR_SIZE_SCALING = "curvature_lr_scaling=none"
RUNS = {
    # second order, Kronecker C, the alignment loss, PPO outer step, with the adaptation
    # defaults (two inner steps with learned step sizes, the policy in units of the action range)
    "navigation_kronecker": (
        "curvature=kronecker",
        "alignment_weight=0.001",
        "outer_epochs=3",
        "iterations=3",
        "eval_every=3",
        BEFORE_FACTOR_SIZE_SCALING,
    ),
    # Meta-SGD with the TRPO outer step and the split alignment estimator on Pendulum
    "pendulum_trpo_diagonal": (
        "family=PendulumDynamics",
        "curvature=diagonal",
        "outer=trpo",
        "alignment_weight=0.001",
        "alignment_estimator=split",
        "fisher_episode_fraction=0.5",
        "iterations=2",
        "eval_every=2",
        *BEFORE_ADAPTATION_DEFAULTS,
    ),
    # first order, joint schedule, DiCE inner loss, CartPole's categorical policy
    "cartpole_first_order_joint": (
        "family=CartPoleDynamics",
        "first_order=true",
        "schedule=joint",
        "inner_estimator=dice",
        "iterations=3",
        "eval_every=3",
        BEFORE_FACTOR_SIZE_SCALING,
        *BEFORE_ADAPTATION_DEFAULTS,
    ),
}


# From which iteration on a run is compared only on what it sampled (return_pre, return_post):
# the TRPO step's conjugate gradient (cg_damping 1e-5) amplifies last-bit differences between a
# CPU's float kernels. On an AVX-512 machine, and again with torch's kernels forced to their
# default ISA (ATEN_CPU_CAPABILITY=default), iteration 1's kl_outer came out 0.0055 and 0.0075
# against the recorded 0.0047 (and the learner's other terms and the evaluation after the step
# moved with it), while iteration 0 and the episodes sampled at iteration 1 matched to 1e-6.
SAMPLED_ONLY_FROM = {"pendulum_trpo_diagonal": 1}
SAMPLED = ("iteration", "env_steps", "return_pre", "return_post")


def run_metrics(name: str, run_dir: Path) -> list[dict[str, float]]:
    trainer = mcrl.train(tiny_config(*RUNS[name]), run_dir)
    rows = []
    for row in mcrl_rows(trainer.run_dir):
        rows.append({k: float(v) for k, v in row.items() if v != "" and not k.startswith("time_")})
    return rows


def mcrl_rows(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", sorted(RUNS))
def test_fixed_seed_metrics_match_the_recorded_run(name, tmp_path):
    expected = json.loads((GOLDEN / f"{name}.json").read_text())
    actual = run_metrics(name, tmp_path / name)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert set(want) <= set(got)  # every recorded metric is still there (new ones may be)
        if want["iteration"] >= SAMPLED_ONLY_FROM.get(name, len(expected)):
            want = {key: want[key] for key in SAMPLED}
        for key, value in want.items():
            assert math.isclose(got[key], value, rel_tol=2e-4, abs_tol=2e-5), (
                f"{name}: iteration {int(want['iteration'])} {key} = {got[key]}, recorded {value}"
            )


if __name__ == "__main__":
    import tempfile

    for run in sorted(RUNS):
        with tempfile.TemporaryDirectory() as tmp:
            metrics = run_metrics(run, Path(tmp) / run)
        (GOLDEN / f"{run}.json").write_text(json.dumps(metrics, indent=1) + "\n")
        print(f"wrote {GOLDEN / f'{run}.json'}")
