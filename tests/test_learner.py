"""The meta-gradients are checked against central finite differences (design §3)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import mcrl
from mcrl.common.config import TrainConfig
from mcrl.common.policies import GaussianMLPPolicy
from mcrl.meta.curvature import make_curvature
from mcrl.meta.learner import MetaLearner, MetaObjective, with_weighted_terms
from mcrl.meta.losses import (
    TaskTensors,
    affinity_matrix,
    alignment_loss,
    emaml_loss,
    inner_loss,
    surrogate_and_kl,
)
from tests.conftest import perturbed_params


def tiny_data(num_tasks=3, episodes=4, horizon=6, seed=0):
    """Fixed pre/post batches of Navigation2D as float64 tensors, and a float64 policy."""
    family = mcrl.make_family("Navigation2D", horizon=horizon)
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(4,), init_log_std=-1.0)
    tasks = family.sample_tasks(num_tasks, seed=seed)
    sampler = mcrl.LocalSampler(family, policy)
    theta = {k: v.detach().numpy() for k, v in policy.params().items()}
    cfg = TrainConfig()
    pre_batches = sampler.sample(tasks, theta, episodes, seed=seed, iteration=0)

    def sample_near_theta(noise_seed, phase):
        params = perturbed_params(policy, num_tasks, 0.05, seed=noise_seed)
        return sampler.sample(tasks, params, episodes, seed=seed, iteration=0, phase=phase)

    pre2_batches, post_batches = sample_near_theta(1, 1), sample_near_theta(2, 2)

    def tensors(batches):
        t = TaskTensors.from_batches(batches, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda)
        return cast(t, torch.float64)

    return policy.double(), tensors(pre_batches), tensors(pre2_batches), tensors(post_batches)


def objective_value(objective, policy, pre, post, old, alignment):
    """The θ-step's loss, as the learner's PPO step forms it."""
    first = objective.first_step(policy.params(), pre[0], create_graph=True)
    terms = objective(policy.params(), pre, post, old, first, alignment=alignment)
    loss = terms["loss_outer"] + objective.config.inner_kl_weight * terms["kl_inner"]
    return with_weighted_terms(loss, terms, objective.config)


def finite_difference(fn, tensors, eps=1e-6):
    """Central differences of ``fn()`` in every entry of ``tensors`` (perturbed in place)."""

    def at(flat, i, x):
        with torch.no_grad():
            flat[i] = x
        return fn().item()

    grads = []
    for t in tensors:
        g = torch.zeros_like(t)
        flat, gflat = t.data.view(-1), g.view(-1)
        for i in range(flat.numel()):
            orig = flat[i].item()
            gflat[i] = (at(flat, i, orig + eps) - at(flat, i, orig - eps)) / (2 * eps)
            at(flat, i, orig)
        grads.append(g)
    return grads


CASES = [
    # (curvature, first_order, estimator, inner_steps, alignment_weight, alignment_estimator,
    #  emaml_weight)
    ("identity", False, "lvc", 1, 0.0, "plugin", 0.0),
    ("diagonal", False, "lvc", 1, 0.0, "plugin", 0.0),
    ("kronecker", False, "lvc", 1, 0.0, "plugin", 0.0),
    ("kronecker", False, "vpg", 1, 0.0, "plugin", 0.0),
    ("kronecker", False, "dice", 1, 0.0, "plugin", 0.0),
    ("kronecker", False, "lvc", 2, 0.0, "plugin", 0.0),
    ("diagonal", False, "lvc", 1, 0.7, "plugin", 0.0),
    ("kronecker", False, "lvc", 1, 0.7, "split", 0.0),
    ("identity", False, "vpg", 1, 0.0, "plugin", 0.5),  # E-MAML as published: MAML + its term
    ("kronecker", False, "lvc", 2, 0.0, "plugin", 0.5),
]


@pytest.mark.parametrize(
    ("kind", "first_order", "estimator", "steps", "beta", "align_est", "emaml"), CASES
)
def test_meta_gradients_match_finite_differences(
    kind, first_order, estimator, steps, beta, align_est, emaml
):
    policy, pre, pre2, post = tiny_data()
    cfg = TrainConfig(
        inner_lr=0.5,
        first_order=first_order,
        inner_estimator=estimator,
        curvature=kind,
        alignment_weight=beta,
        alignment_estimator=align_est,
        emaml_weight=emaml,
        inner_steps=steps,
        inner_kl_weight=0.3,
    )
    curvature = make_curvature(kind, policy.params()).double()
    with torch.no_grad():  # move C away from the identity so that its gradient is generic
        for p in curvature.parameters():
            p.add_(0.2 * torch.randn_like(p))
    objective = MetaObjective(policy, curvature, cfg)
    pres = [pre, pre2][:steps]
    old = tuple(
        t.detach()
        for t in policy.distribution(
            {k: v.detach() for k, v in policy.params().items()}, pre.observations
        )
    )

    def value():
        return objective_value(objective, policy, pres, post, old, beta > 0)

    theta, curv = list(policy.parameters()), list(curvature.parameters())
    analytic = torch.autograd.grad(value(), theta + curv)
    numeric = finite_difference(value, theta + curv)
    for a, n in zip(analytic, numeric, strict=True):
        torch.testing.assert_close(a, n, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["diagonal", "kronecker"])
def test_first_order_curvature_gradient_is_exact(kind):
    """With first_order, the inner gradient is a constant for C, so C's gradient is still exact."""
    policy, pre, _, post = tiny_data()
    cfg = TrainConfig(inner_lr=0.5, first_order=True, curvature=kind, inner_kl_weight=0.0)
    curvature = make_curvature(kind, policy.params()).double()
    with torch.no_grad():
        for p in curvature.parameters():
            p.add_(0.2 * torch.randn_like(p))
    objective = MetaObjective(policy, curvature, cfg)
    old = policy.distribution(policy.params(), pre.observations)
    old = tuple(t.detach() for t in old)

    def value():
        return objective_value(objective, policy, [pre], post, old, False)

    curv = list(curvature.parameters())
    analytic = torch.autograd.grad(value(), curv)
    numeric = finite_difference(value, curv)
    for a, n in zip(analytic, numeric, strict=True):
        torch.testing.assert_close(a, n, rtol=1e-4, atol=1e-6)
    # And θ's first-order gradient is the post-adaptation gradient taken at θ' (identity Jacobian).
    theta = list(policy.parameters())
    fo = torch.autograd.grad(value(), theta)
    so_cfg = dataclasses.replace(cfg, first_order=False)
    so = torch.autograd.grad(
        objective_value(MetaObjective(policy, curvature, so_cfg), policy, [pre], post, old, False),
        theta,
    )
    assert any(not torch.allclose(a, b) for a, b in zip(fo, so, strict=True))


@pytest.mark.parametrize("kind", ["diagonal", "kronecker"])
def test_curvature_at_initialisation_is_maml(kind):
    policy, pre, _, post = tiny_data()
    old = tuple(t.detach() for t in policy.distribution(policy.params(), pre.observations))
    results = {}
    for k in ("identity", kind):
        cfg = TrainConfig(inner_lr=0.5, curvature=k)
        objective = MetaObjective(policy, make_curvature(k, policy.params()).double(), cfg)
        first = objective.first_step(policy.params(), pre, create_graph=True)
        adapted = objective.adapt(policy.params(), [pre], first)
        loss = objective_value(objective, policy, [pre], post, old, False)
        results[k] = (adapted, torch.autograd.grad(loss, list(policy.parameters())))
    for name in results["identity"][0]:
        torch.testing.assert_close(results[kind][0][name], results["identity"][0][name])
    for a, b in zip(results[kind][1], results["identity"][1], strict=True):
        torch.testing.assert_close(a, b)


def test_alignment_loss_equals_the_pairwise_sum_and_its_gradient():
    torch.manual_seed(0)
    grads = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    pairwise = sum(((grads[i] - grads[j]) ** 2).sum() for i in range(5) for j in range(5) if i != j)
    fast = alignment_loss(grads)
    torch.testing.assert_close(fast, pairwise)
    torch.testing.assert_close(
        torch.autograd.grad(fast, grads)[0], torch.autograd.grad(pairwise, grads)[0]
    )
    # With self-similarities equal to the squared norms, the split form is the plug-in form.
    torch.testing.assert_close(alignment_loss(grads, (grads * grads).sum(-1)), fast)
    d = affinity_matrix(grads.detach())
    torch.testing.assert_close(d.sum(), pairwise.detach())
    assert torch.all(d.diagonal() == 0) and torch.allclose(d, d.T)


def test_split_estimator_removes_the_noise_bias():
    """Identical tasks observed with noise: plug-in 𝒞 is inflated by the noise, split is not."""
    rng = np.random.default_rng(0)
    n, d, noise = 8, 50, 1.0
    truth = rng.standard_normal(d)
    plugin, split = [], []
    for _ in range(200):
        half_a = truth + noise * rng.standard_normal((n, d))
        half_b = truth + noise * rng.standard_normal((n, d))
        full = torch.as_tensor((half_a + half_b) / 2)
        plugin.append(float(alignment_loss(full)))
        split.append(float(alignment_loss(full, torch.as_tensor((half_a * half_b).sum(-1)))))
    # True 𝒞 is 0 (all tasks equal); the plug-in estimate is biased upward by ~2n(n-1)·d·σ²/2.
    assert np.mean(plugin) > 1000
    assert abs(np.mean(split)) < 0.1 * np.mean(plugin)


def test_batched_and_looped_inner_gradients_agree():
    policy, pre, _, _ = tiny_data()
    params = {k: v.expand(pre.num_tasks, *v.shape) for k, v in policy.params().items()}
    grads = {}
    for batched in (True, False):
        cfg = TrainConfig()
        cfg.learner.task_batching = batched
        objective = MetaObjective(policy, make_curvature("identity", policy.params()), cfg)
        grads[batched] = objective.inner_grads(params, pre, create_graph=False).grads
    for name in grads[True]:
        torch.testing.assert_close(grads[True][name], grads[False][name])


@pytest.mark.parametrize("adapt_log_std", [True, False])
def test_values_only_adaptation_equals_the_differentiable_one(adapt_log_std):
    """Sampling and evaluation adapt without a graph across steps; the values are the same."""
    policy, pre, pre2, post = tiny_data()
    cfg = TrainConfig(inner_steps=3, adapt_log_std=adapt_log_std)
    curvature = make_curvature("kronecker", policy.params(), steps=3, learn_step_sizes=True)
    curvature = curvature.double()
    with torch.no_grad():  # C away from the identity, step sizes away from 1
        for p in curvature.parameters():
            p.add_(0.1 * torch.randn_like(p))
    objective = MetaObjective(policy, curvature, cfg)
    theta = {n: p.detach().requires_grad_() for n, p in policy.params().items()}
    first = objective.first_step(theta, pre, create_graph=False)
    graph = objective.adapt_steps(theta, [pre, pre2, post], first)
    values = objective.adapt_steps(theta, [pre, pre2, post], first, differentiable=False)
    for step_graph, step_values in zip(graph, values, strict=True):
        for name, value in step_values.items():
            assert torch.equal(value, step_graph[name]), name
            assert value.grad_fn is None  # no graph back to θ, C or an earlier step


@pytest.mark.parametrize("estimator", ["vpg", "lvc", "dice"])
def test_estimators_share_the_first_order_gradient(estimator):
    policy, pre, _, _ = tiny_data()
    # Exact float64 sampling log-probs, so every ratio is exactly 1 at θ.
    exact = policy.log_prob(policy.params(), pre.observations, pre.actions).detach()
    pre = dataclasses.replace(pre, log_probs=exact)
    reference = torch.autograd.grad(
        inner_loss(policy, policy.params(), pre, "vpg").sum(), list(policy.parameters())
    )
    grads = torch.autograd.grad(
        inner_loss(policy, policy.params(), pre, estimator).sum(), list(policy.parameters())
    )
    for a, b in zip(grads, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def cast(data: TaskTensors, dtype: torch.dtype) -> TaskTensors:
    """Every tensor of ``data`` as ``dtype`` (Navigation2D's actions are floats too)."""
    tensors = (f.name for f in dataclasses.fields(data))
    return dataclasses.replace(
        data,
        **{
            name: getattr(data, name).to(dtype)
            for name in tensors
            if isinstance(getattr(data, name), torch.Tensor)
        },
    )


def as_float(data: TaskTensors) -> TaskTensors:
    """``tiny_data``'s float64 tensors as float32, for a learner with default dtypes."""
    return cast(data, torch.float32)


def test_meta_step_moves_theta_and_curvature_and_reports_named_terms():
    policy, pre, _, post = tiny_data()
    learner = MetaLearner(
        policy.float(),
        TrainConfig(
            alignment_weight=0.1, learner=dataclasses.replace(TrainConfig().learner, device="cpu")
        ),
    )
    pre, post = as_float(pre), as_float(post)
    before_theta = [p.detach().clone() for p in learner.policy.parameters()]
    before_c = [p.detach().clone() for p in learner.curvature.parameters()]
    metrics = learner.meta_step([pre], post)
    assert {
        "loss_inner",
        "loss_outer",
        "kl_inner",
        "loss_alignment",
        "curvature_rms_from_identity",
    } <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    assert any(
        not torch.equal(a, b)
        for a, b in zip(before_theta, learner.policy.parameters(), strict=True)
    )
    assert any(
        not torch.equal(a, b) for a, b in zip(before_c, learner.curvature.parameters(), strict=True)
    )


@pytest.mark.parametrize("kind", ["identity", "diagonal", "kronecker"])
def test_curvature_stats_start_at_the_identity_and_move_with_c(kind):
    policy = GaussianMLPPolicy(3, 2, hidden_sizes=(5, 4))
    curvature = make_curvature(kind, policy.params())
    assert curvature.stats() == {
        "curvature_rms_from_identity": 0.0,
        "curvature_mean_diagonal": 1.0,
        "curvature_min_eigenvalue": 1.0,
        "curvature_max_singular_value": 1.0,
    }
    if kind != "identity":
        with torch.no_grad():
            for p in curvature.parameters():
                p.mul_(2.0)
        assert curvature.stats()["curvature_mean_diagonal"] == pytest.approx(2.0)
        assert curvature.stats()["curvature_rms_from_identity"] > 0
        assert curvature.stats()["curvature_max_singular_value"] == pytest.approx(2.0)
        with torch.no_grad():
            for p in curvature.parameters():
                p.neg_()
        assert curvature.stats()["curvature_min_eigenvalue"] == pytest.approx(-2.0)


def test_conjugate_gradient_solves_a_positive_definite_system():
    from mcrl.meta.trust_region import conjugate_gradient

    rng = np.random.default_rng(0)
    m = torch.from_numpy(rng.standard_normal((6, 6)))
    a = m @ m.T + 0.1 * torch.eye(6, dtype=torch.float64)
    b = torch.from_numpy(rng.standard_normal(6))
    x = conjugate_gradient(lambda v: a @ v, b, iterations=20)
    torch.testing.assert_close(a @ x, b)


@pytest.mark.parametrize(
    ("curvature", "first_order", "fisher_episode_fraction"),
    [("kronecker", False, 1.0), ("identity", True, 1.0), ("kronecker", False, 0.5)],
)
def test_trpo_step_stays_in_the_trust_region_and_improves(
    curvature, first_order, fisher_episode_fraction
):
    """The KL of the adapted policies after the step, measured independently, is at most max_kl,
    and (second order) what the quadratic model predicts for the accepted step fraction: the KL
    Hessian-vector products through the adaptation step are right. The surrogate went down."""
    policy, pre, pre2, post = tiny_data()
    config = TrainConfig(
        curvature=curvature,
        first_order=first_order,
        outer="trpo",
        outer_epochs=1,
        max_kl=1e-3,
        fisher_episode_fraction=fisher_episode_fraction,
        curvature_lr=1e-12,  # the C-step that follows would move the adapted policies too
    )
    learner = MetaLearner(policy, config)
    learner.curvature.double()
    objective = learner.objective

    def adapted_distribution_and_surrogate():
        theta = {n: p.detach().requires_grad_() for n, p in policy.params().items()}
        first = objective.first_step(theta, pre, create_graph=False)
        adapted = objective.adapt(theta, [pre], first)
        distribution = policy.distribution(adapted, post.observations)
        surrogate, _ = surrogate_and_kl(policy, adapted, post, distribution)
        return tuple(d.detach() for d in distribution), float(surrogate.mean().detach())

    before, surrogate_before = adapted_distribution_and_surrogate()
    theta_before = {n: p.detach().clone() for n, p in policy.params().items()}
    terms = learner.meta_step([pre], post)
    after, surrogate_after = adapted_distribution_and_surrogate()
    kl = float((policy.kl_between(before, after) * post.mask).sum(-1).div(post.mask.sum(-1)).mean())
    assert terms["trpo_step_fraction"] > 0, "the line search found no improving step"
    assert any(not torch.equal(theta_before[n], p) for n, p in policy.params().items())
    assert kl == pytest.approx(terms["kl_outer"], rel=1e-6)
    assert kl <= config.max_kl
    if not first_order and fisher_episode_fraction == 1:  # the KL's quadratic model is exact
        assert kl == pytest.approx(terms["trpo_step_fraction"] ** 2 * config.max_kl, rel=0.15)
    assert surrogate_after < surrogate_before


def test_trpo_needs_the_alternating_schedule():
    from mcrl.common.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="'outer' = trpo needs schedule: alternate"):
        load_config(None, ["outer=trpo", "schedule=joint"])


def test_first_episodes_keeps_every_task_and_step_of_those_episodes():
    _, pre, _, _ = tiny_data(num_tasks=2, episodes=4, horizon=6)
    assert torch.equal(pre.first_episodes(4).observations, pre.observations)
    part = pre.first_episodes(2)
    assert part.episodes == 2 and part.observations.shape == (2, 6 * 2, 2)
    by_episode = pre.observations.reshape(2, 6, 4, 2)
    torch.testing.assert_close(part.observations.reshape(2, 6, 2, 2), by_episode[:, :, :2])
    torch.testing.assert_close(part.mask.reshape(2, 6, 2), pre.mask.reshape(2, 6, 4)[:, :, :2])


def test_emaml_term_favours_the_pre_adaptation_episodes_of_the_tasks_that_adapted_best():
    """E-MAML's term raises the likelihood of the pre-adaptation actions of a task whose
    post-adaptation return is above the meta-batch's mean and lowers the others'; equal returns
    give no term at all."""
    _, pre, _, post = tiny_data(num_tasks=3)
    returns = torch.tensor([[1.0, 3.0], [-2.0, -2.0], [0.0, 1.0]], dtype=torch.float64)
    post = dataclasses.replace(post, episode_returns=returns)  # task means 2, -2, 0.5
    log_probs = torch.zeros_like(pre.log_probs, requires_grad=True)
    loss = emaml_loss(log_probs, pre, post)
    assert loss.shape == (3,)
    (grad,) = torch.autograd.grad(loss.sum(), log_probs)
    per_task = (grad * pre.mask).sum(-1)
    assert per_task[0] < 0 < per_task[1]  # descending the loss: task 0 up, task 1 down
    assert per_task[0] < per_task[2] < per_task[1]
    equal = dataclasses.replace(post, episode_returns=torch.ones_like(returns))
    assert torch.count_nonzero(emaml_loss(log_probs, pre, equal)) == 0


def test_emaml_term_is_off_by_default():
    policy, pre, _, post = tiny_data()
    old = tuple(t.detach() for t in policy.distribution(policy.params(), pre.observations))
    for weight, expected in ((0.0, False), (0.5, True)):
        objective = MetaObjective(
            policy,
            make_curvature("identity", policy.params()),
            TrainConfig(emaml_weight=weight),
        )
        first = objective.first_step(policy.params(), pre, create_graph=True)
        terms = objective(policy.params(), [pre], post, old, first, alignment=False)
        assert ("loss_emaml" in terms) is expected
