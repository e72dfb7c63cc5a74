"""The learner on a GPU: it trains there, and its meta-step matches the CPU one. Skipped where
torch sees no CUDA device (CI); run on a GPU machine with ``python -m pytest tests/test_cuda.py``."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import mcrl
from mcrl.rollout.sampler import LocalSampler
from mcrl.training.build import build_family, build_policy
from tests.conftest import tiny_config

GPU = "cuda"
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_the_learner_uses_the_driver_gpu(tmp_path):
    trainer = mcrl.train(tiny_config("iterations=2", "eval_every=2"), tmp_path / "gpu")
    assert trainer.learner.device.type == "cuda"
    assert next(trainer.learner.policy.parameters()).is_cuda
    assert len(trainer.latest_eval["returns"]) == trainer.config.inner_steps + 1  # 0..k steps
    # The checkpoint loads on a machine without a GPU (tensors saved on the CPU side).
    state = torch.load(tmp_path / "gpu" / "checkpoints" / "latest.pt", weights_only=True)
    assert all(not t.is_cuda for t in state["learner"]["policy"].values())


def _learners_and_data(*overrides):
    """A CPU and a GPU learner from the same θ, and one iteration's episodes (sampled on the
    CPU) prepared for each."""
    config = tiny_config("meta_batch_size=4", "episodes_per_task=4", "horizon=20", *overrides)
    family = build_family(config)
    policy = build_policy(config, family)
    learners = {
        device: mcrl.MetaLearner(
            copy.deepcopy(policy),
            dataclasses.replace(config, learner=dataclasses.replace(config.learner, device=device)),
        )
        for device in ("cpu", GPU)
    }
    sampler = LocalSampler(family, policy)
    tasks = family.sample_tasks(config.meta_batch_size, seed=0)
    cpu = learners["cpu"]
    pre_batches = [sampler.sample(tasks, cpu.theta_numpy(), 4, seed=0, iteration=0)]
    for step in range(1, config.inner_steps):
        adapted = cpu.adapted_params([cpu.prepare(b) for b in pre_batches])
        pre_batches.append(sampler.sample(tasks, adapted, 4, seed=0, iteration=0, phase=step))
    adapted = cpu.adapted_params([cpu.prepare(b) for b in pre_batches])
    post_batches = sampler.sample(tasks, adapted, 4, seed=0, iteration=0, phase=config.inner_steps)
    data = {
        device: ([learner.prepare(b) for b in pre_batches], learner.prepare(post_batches))
        for device, learner in learners.items()
    }
    return config, learners, data


CASES = [
    ("curvature=kronecker", "alignment_weight=0.001", "inner_steps=2"),
    ("curvature=diagonal", "alignment_weight=0.001", "alignment_estimator=split"),
    ("family=CartPoleDynamics", "curvature=kronecker", "first_order=true", "inner_estimator=dice"),
]


@pytest.mark.parametrize("overrides", CASES)
def test_meta_gradients_on_cuda_match_the_cpu_ones(overrides):
    config, learners, data = _learners_and_data(*overrides)
    results = {}
    for device, learner in learners.items():
        pre, post = data[device]
        theta = learner.policy.params()
        first = learner.objective.first_step(theta, pre[0], create_graph=True)
        old = tuple(d.detach() for d in first.distribution)
        terms = learner.objective(theta, pre, post, old, first, alignment=True)
        loss = terms["loss_outer"] + terms["kl_inner"] + 1e-3 * terms["loss_alignment"]
        inputs = list(theta.values()) + list(learner.curvature.parameters())
        grads = torch.autograd.grad(loss, inputs)
        results[device] = (
            {k: float(v.detach()) for k, v in terms.items()},
            [g.cpu() for g in grads],
        )
    (cpu_terms, cpu_grads), (gpu_terms, gpu_grads) = results["cpu"], results[GPU]
    for name, value in cpu_terms.items():
        assert gpu_terms[name] == pytest.approx(value, rel=1e-4, abs=1e-7), name
    for a, b in zip(cpu_grads, gpu_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-6 * float(a.abs().max()) + 1e-9)


@pytest.mark.parametrize("outer", ["ppo", "trpo"])
def test_a_meta_step_on_cuda_reports_the_cpu_terms_and_moves_theta(outer):
    _, learners, data = _learners_and_data(f"outer={outer}", "outer_epochs=1")
    before = {k: v.detach().clone() for k, v in learners[GPU].policy.params().items()}
    metrics = {device: learner.meta_step(*data[device]) for device, learner in learners.items()}
    for name in ("loss_inner", "kl_inner", "loss_outer"):  # measured at the starting θ
        assert metrics[GPU][name] == pytest.approx(metrics["cpu"][name], rel=1e-4, abs=1e-7)
    after = learners[GPU].policy.params()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(p.is_cuda for p in after.values())
