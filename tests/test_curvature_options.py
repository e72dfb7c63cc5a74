"""Learned per-step step sizes (MAML++), one curvature per inner step, and positive-definite
Kronecker factors: exact meta-gradients, MAML at initialisation, positive definiteness after any
update, checkpoints."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import yaml

import mcrl
from mcrl.cli import main
from mcrl.common.config import TrainConfig
from mcrl.common.policies import GaussianMLPPolicy
from mcrl.meta.learner import MetaLearner, MetaObjective, curvature_for, curvature_groups
from tests.conftest import tiny_config
from tests.test_learner import as_float, finite_difference, objective_value, tiny_data

OPTIONS = [
    # (curvature, parametrization, learn_inner_lr, first_order, inner_steps, curvature_per_step)
    ("kronecker", "pd", True, False, 2, False),
    ("kronecker", "pd", False, False, 2, False),
    ("identity", "free", True, False, 2, False),
    # First order: exact for C with one step (a later step's gradient would depend on C
    # through the earlier step, which first order drops).
    ("diagonal", "free", True, True, 1, False),
    ("kronecker", "free", True, True, 1, True),
    ("kronecker", "free", True, False, 2, True),
    ("diagonal", "free", False, False, 2, True),
]


@pytest.mark.parametrize(
    ("kind", "parametrization", "learn_lr", "first_order", "steps", "per_step"), OPTIONS
)
def test_meta_gradients_of_every_learned_quantity_match_finite_differences(
    kind, parametrization, learn_lr, first_order, steps, per_step
):
    policy, pre, pre2, post = tiny_data()
    cfg = TrainConfig(
        inner_lr=0.5,
        curvature=kind,
        curvature_parametrization=parametrization,
        curvature_per_step=per_step,
        learn_inner_lr=learn_lr,
        first_order=first_order,
        inner_steps=steps,
        inner_kl_weight=0.3,
    )
    curvature = curvature_for(cfg, policy.params()).double()
    with torch.no_grad():  # away from the initial values, so that the gradients are generic
        for p in curvature.parameters():
            p.add_(0.2 * torch.randn_like(p))
    objective = MetaObjective(policy, curvature, cfg)
    old = tuple(t.detach() for t in policy.distribution(policy.params(), pre.observations))

    def value():
        return objective_value(objective, policy, [pre, pre2][:steps], post, old, False)

    # First order drops θ's second-order terms only; C's gradient stays exact either way.
    tensors = list(curvature.parameters()) + ([] if first_order else list(policy.parameters()))
    analytic = torch.autograd.grad(value(), tensors)
    for a, n in zip(analytic, finite_difference(value, tensors), strict=True):
        torch.testing.assert_close(a, n, rtol=1e-4, atol=1e-6)
    names = [n for n, _ in curvature.named_parameters()]
    if learn_lr:
        assert "log_step_scales" in names
    if per_step:  # each inner step is preconditioned by its own C, and each C is learned
        for k in range(steps):
            moved = [
                a
                for n, a in zip(names, analytic[: len(names)], strict=True)
                if n.startswith(f"per_step.{k}.")
            ]
            assert moved and all(a.abs().sum() > 0 for a in moved)


@pytest.mark.parametrize("per_step", [False, True])
@pytest.mark.parametrize("kind", ["identity", "diagonal", "kronecker"])
def test_with_every_learned_quantity_at_its_initial_value_it_is_maml(kind, per_step):
    policy, pre, pre2, post = tiny_data()
    results = {}
    new = {
        "curvature": kind,
        "learn_inner_lr": True,
        "curvature_parametrization": "pd",
        "curvature_per_step": per_step,
    }
    for name, overrides in (("maml", {"curvature": "identity"}), ("new", new)):
        cfg = TrainConfig(inner_lr=0.5, inner_steps=2, **overrides)
        objective = MetaObjective(policy, curvature_for(cfg, policy.params()).double(), cfg)
        first = objective.first_step(policy.params(), pre, create_graph=True)
        results[name] = objective.adapt(policy.params(), [pre, pre2], first)
    for key, value in results["maml"].items():
        torch.testing.assert_close(results["new"][key], value)


def test_positive_definite_factors_stay_positive_definite_after_arbitrary_updates():
    policy = mcrl.GaussianMLPPolicy(3, 2, hidden_sizes=(5, 4))
    cfg = TrainConfig(curvature="kronecker", curvature_parametrization="pd")
    curvature = curvature_for(cfg, policy.params())
    torch.manual_seed(0)
    with torch.no_grad():
        for p in curvature.parameters():  # far from anything an optimiser would visit
            p.copy_(10 * torch.randn_like(p))
        for p in curvature.out_params.values():
            p.zero_()  # even a zero root leaves M = εI
    for matrix in curvature.factors().values():
        eigenvalues = torch.linalg.eigvalsh(matrix.detach())
        assert eigenvalues.min() >= 0.01 * (1 - 1e-5)
    free = curvature_for(
        dataclasses.replace(cfg, curvature_parametrization="free"), policy.params()
    )
    with torch.no_grad():
        for p in free.parameters():
            p.copy_(torch.randn_like(p))
    assert any(torch.linalg.eigvalsh(m.detach()).min() < 0 for m in free.factors().values())


def test_steps_beyond_the_trained_ones_reuse_the_last_learned_step_size():
    policy = mcrl.GaussianMLPPolicy(3, 2, hidden_sizes=(4,))
    cfg = TrainConfig(curvature="identity", learn_inner_lr=True, inner_steps=2)
    curvature = curvature_for(cfg, policy.params())
    with torch.no_grad():
        curvature.log_step_scales.copy_(torch.tensor([0.5, -0.5]))
    scales = [float(curvature.step_scale(k)) for k in range(5)]
    assert scales[0] != scales[1] and scales[1:] == [scales[1]] * 4


def test_each_inner_step_uses_its_own_curvature_and_later_steps_reuse_the_last():
    policy, pre, pre2, _ = tiny_data()
    cfg = TrainConfig(inner_lr=0.5, inner_steps=2, curvature_per_step=True)
    curvature = curvature_for(cfg, policy.params()).double()
    first, second = curvature.curvatures()
    assert [curvature.at_step(k) for k in range(4)] == [first, second, second, second]
    objective = MetaObjective(policy, curvature, cfg)
    theta = policy.params()
    start = objective.first_step(theta, pre, create_graph=False)

    def adapted():
        return [
            {n: p.detach() for n, p in step.items()}
            for step in objective.adapt_steps(theta, [pre, pre2], start)
        ]

    before = adapted()
    with torch.no_grad():  # change C_2 only: the first step stays, the second moves
        for p in second.parameters():
            p.mul_(1.5)
    after = adapted()
    for name in before[0]:
        torch.testing.assert_close(after[0][name], before[0][name])
    assert any(not torch.allclose(after[1][n], before[1][n]) for n in before[1])
    with pytest.raises(TypeError, match="at_step"):
        curvature(start.grads)


def test_per_step_curvatures_train_resume_plot_and_refuse_another_step_count(tmp_path, capsys):
    run = tmp_path / "run"
    settings = ("curvature_per_step=true", "inner_steps=2", "iterations=1")
    mcrl.train(tiny_config(*settings), run)
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    names = set(state["learner"]["curvature"])
    assert {"per_step.0.out_factors.head__weight", "per_step.1.out_factors.head__weight"} <= names
    config = tmp_path / "c.yaml"
    base = yaml.safe_load((run / "config.yaml").read_text())
    config.write_text(yaml.safe_dump(base | {"iterations": 2}))
    assert main(["train", str(config), "--out", str(run), "--resume", "--no-progress"]) == 0
    assert mcrl.load(run).learner.curvature.state_dict().keys() == names
    assert main(["plot", str(run)]) == 0
    assert {"curvature_step1.png", "curvature_step2.png"} <= {
        p.name for p in (run / "plots").iterdir()
    }
    for key, value, said in [
        ("inner_steps", 3, "inner_steps=2"),
        ("curvature_per_step", False, "curvature_per_step=True"),
    ]:
        config.write_text(yaml.safe_dump(base | {"iterations": 3, key: value}))
        capsys.readouterr()
        assert main(["train", str(config), "--out", str(run), "--resume", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"cannot resume: the checkpoint has {said}" in err
        assert len(err.strip().splitlines()) == 1


def test_learned_step_sizes_train_are_logged_and_reach_evaluation(tmp_path):
    trainer = mcrl.train(
        tiny_config("learn_inner_lr=true", "inner_steps=2", "curvature_parametrization=pd"),
        tmp_path / "run",
    )
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"inner_lr_scale_1", "inner_lr_scale_2"} <= set(header)
    assert len(trainer.latest_eval["returns"]) == 3
    meta = mcrl.load(tmp_path / "run")
    assert len(meta.adapt({"goal": [0.2, 0.1]}, steps=3, episodes=2).returns) == 4


def test_a_checkpoint_from_before_these_options_loads_and_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    before = (
        "learn_inner_lr=false",
        "policy.action_scaling=none",
        "curvature_parametrization=free",
        "curvature_lr_scaling=none",
    )
    mcrl.train(tiny_config("iterations=1", *before), run)
    path = run / "checkpoints" / "latest.pt"
    state = torch.load(path, weights_only=True)
    # As written before these keys existed: they mean what mcrl did then, not today's defaults.
    for key in ("curvature_parametrization", "learn_inner_lr", "curvature_lr_scaling"):
        del state["config"][key]
    del state["config"]["policy"]["action_scaling"]
    torch.save(state, path)
    loaded = mcrl.load(run)
    assert loaded.config.curvature_parametrization == "free"
    assert loaded.config.learn_inner_lr is False
    assert loaded.config.curvature_lr_scaling == "none"
    assert loaded.config.policy.action_scaling == "none"
    assert not loaded.learner.policy.scaled and loaded.initial().action_scaling == "none"
    config = tmp_path / "c.yaml"
    base = yaml.safe_load((run / "config.yaml").read_text())
    base["iterations"] = 2
    config.write_text(yaml.safe_dump(base))
    assert main(["train", str(config), "--out", str(run), "--resume", "--no-progress"]) == 0
    # Switching what a run's θ and C mean is refused in one line, today's defaults included.
    for key, value, said in [
        ("curvature_parametrization", "pd", "curvature_parametrization='free'"),
        ("learn_inner_lr", True, "learn_inner_lr=False"),
    ]:
        config.write_text(yaml.safe_dump(base | {"iterations": 3, key: value}))
        assert main(["train", str(config), "--out", str(run), "--resume", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"cannot resume: the checkpoint has {said}" in err
        assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("parametrization", ["free", "pd"])
def test_with_factor_size_scaling_one_c_step_moves_a_factor_spectrum_by_about_curvature_lr(
    parametrization,
):
    """Adam moves every entry by about its step size; a gradient whose entries agree (rank one)
    then moves an n×n factor's largest singular value n times as far, unless scaled."""
    policy = GaussianMLPPolicy(3, 2, hidden_sizes=(40, 30))
    moved = {}
    for scaling in ("factor_size", "none"):
        cfg = TrainConfig(
            curvature="kronecker",
            curvature_parametrization=parametrization,
            curvature_lr=1e-3,
            curvature_lr_scaling=scaling,
        )
        curvature = curvature_for(cfg, policy.params())
        optimizer = torch.optim.Adam(curvature_groups(curvature, cfg))
        before = {k: torch.linalg.matrix_norm(m, 2) for k, m in curvature.factors().items()}
        for p in curvature.parameters():
            p.grad = -torch.ones_like(p)  # every entry pushed up together
        optimizer.step()
        with torch.no_grad():
            moved[scaling] = {
                k: float(torch.linalg.matrix_norm(m, 2) - before[k])
                for k, m in curvature.factors().items()
            }
    growth = 2 if parametrization == "pd" else 1  # M = L·Lᵀ: dM = dL·Lᵀ + L·dLᵀ
    for name, change in moved["factor_size"].items():
        assert 0 < change <= 1.05 * growth * 1e-3, name
        n = curvature.factors()[name].shape[0]
        assert moved["none"][name] == pytest.approx(n * change, rel=0.05), name


def test_an_optimizer_state_saved_with_one_curvature_group_loads_with_per_factor_step_sizes():
    """Checkpoints from before ``curvature_lr_scaling`` hold C's Adam state in one group: the
    moments load, and the step sizes are the config's."""
    policy, pre, _, post = tiny_data()
    policy, pre, post = policy.float(), as_float(pre), as_float(post)
    cfg = TrainConfig(curvature="kronecker", inner_steps=1)
    learner = MetaLearner(copy.deepcopy(policy), cfg)
    learner.meta_step([pre], post)
    state = learner.state_dict()
    saved = state["optimizers"]["curvature"]
    old_style = {
        "state": saved["state"],
        "param_groups": [
            saved["param_groups"][0]
            | {"params": [i for g in saved["param_groups"] for i in g["params"]], "lr": 1e-3}
        ],
    }
    fresh = MetaLearner(copy.deepcopy(policy), cfg)
    fresh.load_state_dict(state | {"optimizers": state["optimizers"] | {"curvature": old_style}})
    optimizer = fresh.optimizers["curvature"]
    sizes = fresh.curvature.factor_sizes()
    for group, (name, _) in zip(
        optimizer.param_groups, fresh.curvature.named_parameters(), strict=True
    ):
        assert group["lr"] == pytest.approx(1e-3 / sizes.get(name, 1))
    for index, moments in saved["state"].items():
        torch.testing.assert_close(optimizer.state_dict()["state"][index], moments)


def test_the_multi_step_loss_averages_the_loss_after_every_step():
    from mcrl.meta.losses import outer_loss

    policy, pre, pre2, post = tiny_data()
    objectives = {
        multi: MetaObjective(
            policy,
            curvature_for(TrainConfig(inner_steps=2), policy.params()).double(),
            TrainConfig(inner_lr=0.5, inner_steps=2, multi_step_loss=multi),
        )
        for multi in (False, True)
    }
    theta = policy.params()
    first = objectives[True].first_step(theta, pre, create_graph=True)
    after = objectives[True].adapt_steps(theta, [pre, pre2], first)
    each = [outer_loss(policy, a, d, 0.2).mean() for a, d in zip(after, [pre2, post], strict=True)]
    torch.testing.assert_close(
        objectives[True].outer(theta, [pre, pre2], post, first), sum(each) / 2
    )
    torch.testing.assert_close(objectives[False].outer(theta, [pre, pre2], post, first), each[1])
    # With one inner step there is one loss: the option changes nothing.
    single = [
        MetaObjective(
            policy,
            objectives[m].curvature,
            dataclasses.replace(objectives[m].config, inner_steps=1),
        )
        for m in (False, True)
    ]
    one_step = [o.outer(theta, [pre], pre2, first) for o in single]
    torch.testing.assert_close(one_step[0], one_step[1])


def test_the_multi_step_loss_trains_and_refuses_trpo(tmp_path):
    trainer = mcrl.train(tiny_config("inner_steps=2", "multi_step_loss=true"), tmp_path)
    assert torch.isfinite(torch.tensor(trainer.latest_eval["returns"])).all()
    with pytest.raises(ValueError, match="'multi_step_loss' = true needs outer: ppo"):
        tiny_config("multi_step_loss=true", "outer=trpo")


@pytest.mark.parametrize("curvature", ["identity", "kronecker"])
def test_without_adapt_log_std_adaptation_keeps_theta_sigma_and_moves_the_rest(curvature):
    policy, pre, pre2, _ = tiny_data()
    theta = policy.params()
    after = {}
    for adapt_log_std in (True, False):
        config = TrainConfig(
            curvature=curvature, inner_lr=0.5, inner_steps=2, adapt_log_std=adapt_log_std
        )
        objective = MetaObjective(policy, curvature_for(config, theta).double(), config)
        first = objective.first_step(theta, pre, create_graph=True)
        after[adapt_log_std] = objective.adapt(theta, [pre, pre2], first)
    frozen, adapted = after[False], after[True]
    for task_log_std in frozen["log_std"]:
        torch.testing.assert_close(task_log_std, theta["log_std"])
    assert not torch.allclose(adapted["log_std"][0], theta["log_std"])  # so the above can fail
    for name in theta:
        if name != "log_std":  # every other parameter still takes its adaptation steps
            assert not torch.allclose(frozen[name][0], theta[name])


def test_a_run_without_adapt_log_std_trains_evaluates_and_adapts(tmp_path):
    # The C-step freezes θ: a σ left out of the adaptation then depends on nothing differentiated.
    trainer = mcrl.train(tiny_config("adapt_log_std=false", "inner_steps=2"), tmp_path / "run")
    assert np.isfinite(trainer.latest_eval["returns"]).all()
    meta = mcrl.load(tmp_path / "run")
    adapted = meta.adapt({"goal": [0.2, 0.1]}, steps=3, episodes=2)
    np.testing.assert_array_equal(adapted.params["log_std"], meta.initial().params["log_std"])
