"""The package's folders follow the data flow, and its imports keep to it.

Layers, lowest first: ``mcrl.common`` (config, policies, threads, checks), ``mcrl.tasks`` (and
the shipped families in ``envs/``, imported as ``mcrl_envs``), ``mcrl.rollout``, ``mcrl.meta``,
``mcrl.training``, ``mcrl.cli``. A module may import its own layer and the layers below it,
never one above, and never the ``mcrl`` facade (``mcrl/__init__.py``, the public API, which
imports every layer). Imports inside functions count; imports under ``if TYPE_CHECKING:`` count
for the layering but not for cycles, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["common", "tasks", "rollout", "meta", "training", "sweeps", "cli"]
FACADE = len(LAYERS)  # `mcrl` itself, above every layer


def module_files(root: Path) -> dict[str, Path]:
    """Module name -> file, for mcrl/ and envs/ (as mcrl_envs)."""
    modules = {}
    for package, folder in (("mcrl", root / "mcrl"), ("mcrl_envs", root / "envs")):
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] == "mcrl_envs":
        return LAYERS.index("tasks")
    if parts[0] != "mcrl":
        return None
    if len(parts) == 1 or parts[1] in ("__main__",):
        return FACADE
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else FACADE


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported project module, whether it runs) for every import statement in ``path``."""
    found: list[tuple[str, bool]] = []

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST, runs: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.body:
                    visit_stmt(stmt, False)
                for stmt in child.orelse:
                    visit_stmt(stmt, runs)
            else:
                visit_stmt(child, runs)

    def visit_stmt(node: ast.AST, runs: bool) -> None:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from mcrl.cli import bench` may name a submodule.
            targets = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            visit(node, runs)
            return
        for target in targets:
            module = resolve(target)
            if module is not None:
                found.append((module, runs))

    visit(ast.parse(path.read_text()), True)
    return found


def layering_problems(root: Path) -> list[str]:
    modules = module_files(root)
    problems = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        own = layer_of(module)
        for target, runs in imports_of(path, modules):
            if runs and target != module:
                graph[module].add(target)
            if own != FACADE and layer_of(target) > own:
                problems.append(
                    f"{module} ({LAYERS[own]}) imports {target} "
                    f"({'the mcrl facade' if layer_of(target) == FACADE else LAYERS[layer_of(target)]})"
                )
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in find_cycles(graph)]
    return problems


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other."""
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_layer_imports_a_higher_one_and_there_are_no_cycles():
    assert layering_problems(ROOT) == []


def test_every_module_is_in_a_layer():
    stray = [m for m in module_files(ROOT) if layer_of(m) == FACADE and m.count(".") > 1]
    assert stray == [], f"modules outside the layer folders {LAYERS}: {stray}"


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "envs").mkdir(exist_ok=True)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # a lower layer importing a higher one, inside a function
            {
                "mcrl/rollout/sampler.py": "def f():\n    from mcrl.training.trainer import Trainer\n"
            },
            "mcrl.rollout.sampler (rollout) imports mcrl.training.trainer (training)",
        ),
        (  # the facade from inside the library
            {"mcrl/meta/learner.py": "import mcrl\n"},
            "mcrl.meta.learner (meta) imports mcrl (the mcrl facade)",
        ),
        (  # a cycle within one layer
            {
                "mcrl/training/a.py": "from mcrl.training.b import x\n",
                "mcrl/training/b.py": "from mcrl.training import a\n",
            },
            "import cycle: mcrl.training.a -> mcrl.training.b -> mcrl.training.a",
        ),
        (  # the shipped families sit in the tasks layer
            {"envs/walker.py": "from mcrl.rollout.sampler import LocalSampler\n"},
            "mcrl_envs.walker (tasks) imports mcrl.rollout.sampler (rollout)",
        ),
    ],
)
def test_the_check_catches_what_it_is_for(tmp_path, files, expected):
    base = {
        "mcrl/__init__.py": "",
        "mcrl/training/__init__.py": "",
        "mcrl/training/trainer.py": "class Trainer: ...\n",
        "mcrl/rollout/__init__.py": "",
        "mcrl/rollout/sampler.py": "class LocalSampler: ...\n",
        "mcrl/meta/__init__.py": "",
        "mcrl/meta/learner.py": "",
    }
    assert expected in layering_problems(_tree(tmp_path, base | files))


def test_type_only_imports_are_not_cycles(tmp_path):
    files = {
        "mcrl/__init__.py": "",
        "mcrl/tasks/__init__.py": "",
        "mcrl/tasks/family.py": "from mcrl.tasks.vector_env import VectorEnv\n",
        "mcrl/tasks/vector_env.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from mcrl.tasks.family import TaskFamily\n"
        ),
    }
    assert layering_problems(_tree(tmp_path, files)) == []
