"""Ray rollouts: exactness against the local sampler, lost workers, clusters, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import ray

import mcrl
import tests.ray_helpers as helpers
from mcrl.rollout.ray_sampler import RaySampler, SamplingError
from tests.conftest import make_policy_for, perturbed_params, run_mcrl, tiny_config
from tests.test_sampler import assert_same_batches

cloudpickle.register_pickle_by_value(helpers)


@pytest.fixture(scope="session")
def ray_session():
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 2**20,
        logging_level="ERROR",
    )
    yield
    ray.shutdown()


@pytest.fixture
def make_ray_sampler(ray_session):
    samplers = []

    def make(family, policy, **kwargs):
        sampler = RaySampler(family, policy, **kwargs)
        samplers.append(sampler)
        return sampler

    yield make
    for sampler in samplers:
        sampler.close()


@pytest.mark.parametrize(
    ("name", "workers"),
    [
        ("Navigation2D", 1),
        ("Navigation2D", 2),
        ("PendulumDynamics", 1),
        ("PendulumDynamics", 2),
        # The native MuJoCo env in a worker. (With 2 workers the policy's batched product sees
        # other memory offsets, which moves actions by float rounding, and HalfCheetah's
        # dynamics amplify that beyond the tolerance within a few steps.)
        ("HalfCheetahVel", 1),
    ],
)
def test_ray_and_local_backends_give_the_same_batches(make_ray_sampler, name, workers):
    family = mcrl.make_family(name, horizon=30)
    policy = make_policy_for(family)
    tasks = family.sample_tasks(3, seed=0)
    params = perturbed_params(policy, 3)
    local = mcrl.LocalSampler(family, policy).sample(tasks, params, 3, seed=5, iteration=2, phase=1)
    sampler = make_ray_sampler(family, policy, workers=workers)
    assert sampler.num_workers == workers
    assert_same_batches(local, sampler.sample(tasks, params, 3, seed=5, iteration=2, phase=1))


def test_a_worker_killed_mid_phase_costs_time_not_episodes(make_ray_sampler, tmp_path):
    family = helpers.CrashOnceNavigation(str(tmp_path / "crashed"), horizon=20)
    policy = make_policy_for(family)
    tasks = family.sample_tasks(4, seed=0)
    params = perturbed_params(policy, 4)
    sampler = make_ray_sampler(family, policy, workers=2)
    batches = sampler.sample(tasks, params, 3, seed=1, iteration=0)
    assert (tmp_path / "crashed").exists()
    counters = sampler.pop_counters()
    assert counters["worker_restarts"] >= 1 and counters["chunks_resubmitted"] >= 1
    expected = mcrl.LocalSampler(mcrl.make_family("Navigation2D", horizon=20), policy).sample(
        tasks, params, 3, seed=1, iteration=0
    )
    assert_same_batches(expected, batches)
    assert sampler.pop_counters() == {
        "worker_restarts": 0,
        "chunks_resubmitted": 0,
        "unstable_episodes": 0,
    }


def test_an_env_that_always_fails_stops_with_the_family_and_task(make_ray_sampler):
    family = helpers.BrokenNavigation(horizon=5)
    policy = make_policy_for(family)
    sampler = make_ray_sampler(family, policy, workers=1, max_chunk_retries=1)
    with pytest.raises(
        SamplingError, match=r"family 'Navigation2D' \(tasks \[0, 1\].*failed 2 times.*always fails"
    ):
        sampler.sample(family.sample_tasks(2), perturbed_params(policy, 2), 1, seed=0, iteration=0)


def test_a_phase_over_the_timeout_is_an_error_not_a_hang(make_ray_sampler):
    family = helpers.SlowNavigation(horizon=100)
    policy = make_policy_for(family)
    sampler = make_ray_sampler(family, policy, workers=1, timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(SamplingError, match="exceeded sampler.timeout_s=0.5s"):
        sampler.sample(family.sample_tasks(1), perturbed_params(policy, 1), 1, seed=0, iteration=0)
    assert time.monotonic() - start < 10


def test_more_workers_than_cpus_warns_and_uses_what_exists(make_ray_sampler):
    family = mcrl.make_family("Navigation2D", horizon=5)
    with pytest.warns(
        UserWarning, match="asked for 5 rollout workers but the Ray cluster has 2 CPUs"
    ):
        sampler = make_ray_sampler(family, make_policy_for(family), workers=5)
    assert sampler.num_workers == 2


def test_train_runs_end_to_end_on_the_ray_backend(ray_session, tmp_path):
    trainer = mcrl.train(tiny_config("sampler.backend=ray", "sampler.workers=2"), tmp_path / "run")
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "worker_restarts" in rows[0] and "chunks_resubmitted" in rows[0]
    assert np.isfinite(trainer.latest_eval["returns"]).all()


def test_cli_trains_on_an_embedded_ray(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "family: Navigation2D\nhorizon: 10\niterations: 2\nmeta_batch_size: 2\nepisodes_per_task: 2\n"
        "eval_every: 0\nsampler: {backend: ray, workers: 2}\npolicy: {hidden_sizes: [8]}\n"
    )
    result = run_mcrl("train", str(config), "--out", "out", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "checkpoints" / "latest.pt").is_file()


def test_an_unreachable_ray_address_is_a_quick_clear_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("family: Navigation2D\niterations: 1\n")
    start = time.monotonic()
    result = run_mcrl(
        "train",
        str(config),
        "--out",
        "out",
        "--ray-address",
        "127.0.0.1:1",
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        "cannot reach a Ray cluster at '127.0.0.1:1'" in result.stderr
        and "Traceback" not in result.stderr
    )
    assert time.monotonic() - start < 30


CLUSTER_SCRIPT = textwrap.dedent(
    """
    import threading, time, cloudpickle, ray
    import numpy as np
    from ray.cluster_utils import Cluster
    import mcrl, tests.ray_helpers as helpers
    from mcrl.rollout.ray_sampler import RaySampler
    from tests.conftest import make_policy_for, perturbed_params
    from tests.test_sampler import assert_same_batches

    cloudpickle.register_pickle_by_value(helpers)
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1})
    worker_node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    family = helpers.SlowNavigation(horizon=40)
    policy = make_policy_for(family)
    tasks, params = family.sample_tasks(2, seed=0), perturbed_params(policy, 2)
    sampler = RaySampler(family, policy, workers=2, timeout_s=120)
    threading.Timer(1.0, lambda: cluster.remove_node(worker_node, allow_graceful=False)).start()
    batches = sampler.sample(tasks, params, 2, seed=0, iteration=0)
    local = mcrl.LocalSampler(mcrl.make_family("Navigation2D", horizon=40), policy).sample(tasks, params, 2, seed=0, iteration=0)
    assert_same_batches(local, batches)
    print("resubmitted", sampler.pop_counters()["chunks_resubmitted"])
    ray.shutdown()
    cluster.shutdown()
    """
)


@pytest.mark.slow
def test_a_node_removed_mid_run_costs_no_episodes(tmp_path):
    """Two-node cluster (ray.cluster_utils.Cluster) in its own process; a node leaves mid-phase."""
    script = tmp_path / "cluster.py"
    script.write_text(CLUSTER_SCRIPT)
    root = str(Path(__file__).resolve().parent.parent)
    # Ray's nodes all on loopback: this machine may talk to no other address.
    env = {**os.environ, "PYTHONPATH": root, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resubmitted 1" in result.stdout


# -- learner placement --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("placement", "num_gpus", "cuda", "expected"),
    [
        ("auto", 0, False, "driver"),  # CPU everywhere: learn in the driver
        ("auto", 0, True, "driver"),  # the driver's GPU
        ("auto", 1, True, "driver"),  # the driver has a GPU: use it, no actor
        ("auto", 1, False, "ray"),  # a cluster whose driver has none: an actor on a GPU node
        ("ray", 0, False, "ray"),
        ("driver", 1, False, "driver"),
    ],
)
def test_learner_placement_rules(placement, num_gpus, cuda, expected):
    from mcrl.common.config import LearnerConfig
    from mcrl.training.placement import learner_placement

    assert (
        learner_placement(LearnerConfig(placement=placement, num_gpus=num_gpus), cuda) == expected
    )


def test_a_learner_in_a_ray_actor_trains_exactly_like_one_in_the_driver(ray_session, tmp_path):
    local = mcrl.train(tiny_config(), tmp_path / "driver")
    remote = mcrl.train(tiny_config("learner.placement=ray"), tmp_path / "actor")
    assert type(remote.learner).__name__ == "RayLearner"
    for (name, a), b in zip(
        local.learner.state_dict()["policy"].items(),
        remote.learner.state_dict()["policy"].values(),
        strict=True,
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    assert local.latest_eval["returns"] == pytest.approx(remote.latest_eval["returns"], rel=1e-4)
