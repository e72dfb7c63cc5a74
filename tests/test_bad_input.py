"""Every bad input a user types is one line naming what is wrong, exit code 2, no traceback, and
nothing written. The inputs are generated: every task parameter of every shipped family and
every config key, each given values that cannot work."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

import mcrl
from mcrl.cli import main
from mcrl.tasks import Task
from tests.conftest import CORE_FAMILIES

# Values that are never a task parameter: not numbers, not flat, not finite.
NOT_NUMBERS = ["abc", None, True, [], [[0.5, 0.5]], {"a": 1.0}, [0.5, "x"]]
NOT_FINITE = [math.nan, math.inf, -math.inf]


def malformed_task_params(family) -> list[tuple[str, dict]]:
    """(what is wrong, params) for one family: each parameter broken in each way that applies."""
    valid = dict(family.sample_tasks(1, seed=0)[0].to_dict()["params"])
    names = sorted(valid)
    cases = [("unknown name", {**valid, "bogus": 1.0})]
    for name in names:
        value = valid[name]
        size = len(value) if isinstance(value, list) else 1
        first = value[0] if size > 1 else value
        cases.append((f"{name} missing", {k: v for k, v in valid.items() if k != name}))
        bad_values = [*NOT_NUMBERS, *NOT_FINITE]
        if size == 1:
            bad_values += [[first, first], [first]]
        else:
            bad_values += [[first] * (size + 1), first, [*value[:-1], math.nan]]
        domain = family.space.ranges[name].domain if family.space is not None else "real"
        if domain == "positive":
            bad_values += [0.0, -1.0] if size == 1 else [[-1.0] * size]
        elif domain == "non_negative":
            bad_values += [-1.0] if size == 1 else [[-1.0] * size]
        cases += [(f"{name}={bad!r}", {**valid, name: bad}) for bad in bad_values]
    return cases


FAMILY_CASES = [
    (name, what, params)
    for name in CORE_FAMILIES
    for what, params in malformed_task_params(mcrl.make_family(name))
]


def test_there_are_a_few_hundred_generated_task_cases():
    assert len(FAMILY_CASES) >= 300


@pytest.mark.parametrize(("name", "what", "params"), FAMILY_CASES)
def test_a_malformed_task_is_one_clean_error(name, what, params):
    family = mcrl.make_family(name)
    with pytest.raises(ValueError) as err:
        family.task(params)
    message = str(err.value)
    assert "\n" not in message
    wrong = what.split("=")[0].split(" ")[0]
    assert wrong in message or ("unknown" in what and "bogus" in message), message


@pytest.mark.parametrize("name", ["Navigation2D", "PendulumDynamics", "HalfCheetahVel"])
def test_numeric_but_impossible_tasks_are_refused_by_make_env_and_the_sampler(name):
    family = mcrl.make_family(name)
    numeric_bad = []
    for _what, params in malformed_task_params(family):
        try:
            numeric_bad.append(Task(name, "test", 0, params))  # a record of numbers ...
        except ValueError:
            continue  # (non-numbers never become a Task)
    assert numeric_bad
    policy = mcrl.make_policy(*family_spaces(family), hidden_sizes=(4,))
    sampler = mcrl.LocalSampler(family, policy)
    theta = {k: v.detach().numpy() for k, v in policy.params().items()}
    for task in numeric_bad:  # ... that no family can simulate
        with pytest.raises(ValueError, match=name):
            family.make_env(task)
        with pytest.raises(ValueError, match=name):
            sampler.sample([task], theta, 1, seed=0, iteration=0)
    valid = family.sample_tasks(2, split="ood" if family.space.has_ood else "test", seed=1)
    assert len(sampler.sample(valid, theta, 1, seed=0, iteration=0)) == 2
    sampler.close()


def family_spaces(family):
    env = family.make_env(family.sample_tasks(1, seed=0)[0])
    spaces = env.observation_space, env.action_space
    env.close()
    return spaces


# -- through the CLI ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nav_run(tmp_path_factory):
    from tests.conftest import tiny_config

    run = tmp_path_factory.mktemp("bad-input") / "nav"
    mcrl.train(tiny_config("outer_epochs=1", "eval_every=0"), run)
    return run


NAV_TASKS = [
    json.dumps(params, allow_nan=True)
    for _what, params in malformed_task_params(mcrl.make_family("Navigation2D"))
] + ['{"goal": 0.3}', '{"goal": "0.1, 0.2"}', '{"goal": [true, false]}', "[0.1, 0.2]", "0.5"]


@pytest.mark.parametrize("task", NAV_TASKS)
def test_cli_adapt_refuses_a_malformed_task_in_one_line(nav_run, tmp_path, capsys, task):
    out = tmp_path / "adapted"
    assert main(["adapt", str(nav_run), "--task", task, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and captured.err.startswith("mcrl: error:")
    assert "Traceback" not in captured.out + captured.err
    assert not (out / "adapted.pt").exists()


def test_cli_adapt_accepts_a_valid_out_of_range_task(nav_run, tmp_path):
    out = tmp_path / "adapted"
    args = ["adapt", str(nav_run), "--task", '{"goal": [0.9, -0.8]}', "--episodes", "2"]
    assert main([*args, "--out", str(out)]) == 0
    assert (out / "adapted.pt").exists()


BASE_CONFIG = {
    "family": "Navigation2D",
    "horizon": 5,
    "iterations": 1,
    "meta_batch_size": 2,
    "episodes_per_task": 2,
    "eval_every": 0,
    "policy": {"hidden_sizes": [4]},
    "sampler": {"backend": "local"},
}


def _bad_values_for(field_type: str, check: str) -> list:
    """Values no field of this kind accepts."""
    common = [[1], {"a": 1}]
    if field_type == "int":
        return [*common, "abc", 1.5, True, -1] + ([0] if check == "> 0" else [])
    if field_type == "float":
        return (
            [*common, "abc", True, ".nan", ".inf"]
            + ([-1.0] if check in ("> 0", ">= 0") else [])
            + ([0.0] if check == "> 0" else [])
        )
    if field_type == "bool":
        return [*common, "abc", 1]
    if field_type == "sizes":
        return ["abc", 5, [], [0], [-1], [1.5], {"a": 1}]
    return common


def malformed_configs() -> list[tuple[str, str]]:
    """(key, YAML text) pairs: each config breaks exactly one thing."""
    import dataclasses
    import typing

    from mcrl.common.config import LearnerConfig, PolicyConfig, SamplerConfig, TrainConfig

    def yaml_with(key: str, value) -> str:
        data = json.loads(json.dumps(BASE_CONFIG))
        node = data
        *sections, leaf = key.split(".")
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
        text = yaml.safe_dump(data)
        return text.replace("'.nan'", ".nan").replace("'.inf'", ".inf")

    cases = []
    for prefix, cls in (
        ("", TrainConfig),
        ("policy.", PolicyConfig),
        ("sampler.", SamplerConfig),
        ("learner.", LearnerConfig),
    ):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key, tp = prefix + f.name, hints[f.name]
            if dataclasses.is_dataclass(tp):
                values = ["abc", 5, [1], {"bogus": 1}]
            elif typing.get_origin(tp) is typing.Literal:
                values = ["nope", 1, [1]]
            elif typing.get_origin(tp) is tuple:
                values = _bad_values_for("sizes", "")
            else:
                args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
                kind = {int: "int", float: "float", bool: "bool"}.get(args[0], "other")
                values = _bad_values_for(kind, f.metadata.get("valid", ""))
            cases += [(key, yaml_with(key, v)) for v in values]
    cases += [
        ("family", yaml_with("family", "NoSuchFamily")),
        ("family", yaml_with("family", "no_such_module:Family")),
        ("family_kwargs", yaml_with("family_kwargs", {"bogus": 1})),
        ("learner.device", yaml_with("learner.device", "abc")),
        ("learner.device", yaml_with("learner.device", "cuda:99")),
        ("sampler.address", yaml_with("sampler.address", "no-port")),
        ("sampler.address", yaml_with("sampler.address", "127.0.0.1:1").replace("local", "auto")),
        ("bogus", yaml_with("bogus", 1)),
        (
            "alignment_estimator",
            yaml_with("alignment_estimator", "split").replace(
                "episodes_per_task: 2", "episodes_per_task: 1"
            ),
        ),
        ("outer", yaml_with("outer", "trpo") + "schedule: joint\n"),
        ("(file)", "family: [unclosed\n"),
        ("(file)", "- a list\n- not a mapping\n"),
    ]
    return cases


CONFIG_CASES = malformed_configs()


def test_there_are_a_few_hundred_generated_config_cases():
    assert len(CONFIG_CASES) >= 150


@pytest.mark.parametrize(("key", "text"), CONFIG_CASES)
def test_cli_train_refuses_a_malformed_config_in_one_line(tmp_path, capsys, key, text):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mcrl: error:"), captured.err
    if key not in ("(file)", "family", "family_kwargs", "sampler.address"):
        assert key.rsplit(".", 1)[-1] in lines[0], lines[0]
    assert not out.exists()  # nothing written
    assert config.read_text() == text  # the user's file untouched


def test_the_valid_base_config_trains(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(BASE_CONFIG))
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert (Path(tmp_path / "run") / "checkpoints" / "latest.pt").exists()
    assert np.isfinite(
        float((tmp_path / "run" / "metrics.csv").read_text().split("\n")[1].split(",")[2])
    )
