"""Architecture check: imports only run downwards through the house's layers.

The project is stacked in layers, lowest first:

    0 data            pipeline.errors, pipeline.data.*
    1 config/metrics  pipeline.config, pipeline.metrics, pipeline.progress
    2 features        features.*
    3 model           pipeline.model.*
    4 serving         serving.* (serving.routers.* included)
    5 evaluation      pipeline.evaluation.*
    6 workflows       pipeline.workflows.*
    7 dashboard       pipeline.dashboard.*
    8 cli / API       pipeline.cli, basketcast.* (the public notebook API)

A module may import its own layer or any lower one, never a higher one, and
no group of modules may import each other in a cycle. This keeps every layer
usable (and testable) without the ones above it, and keeps the serving image
small: serving sits below evaluation and training workflows, and neither it
nor anything it imports may load a training library at import time.

The checks read the source with `ast` (nothing is imported), so they also run
where the training extras are not installed.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("basketcast", "pipeline", "features", "serving")

LAYER_NAMES = (
    "data",
    "config/metrics",
    "features",
    "model",
    "serving",
    "evaluation",
    "workflows",
    "dashboard",
    "cli / API",
)

# (pattern, layer). "x.*" matches the package `x` itself and everything below it; a plain name matches only itself.
# A module matching nothing fails `test_every_module_has_a_layer`: add it here.
LAYERS: list[tuple[str, int]] = [
    ("pipeline", 0),  # the empty top-level package __init__
    ("pipeline.errors", 0),
    ("pipeline.data.*", 0),
    ("pipeline.config", 1),
    ("pipeline.metrics", 1),
    ("pipeline.progress", 1),
    ("pipeline.ranking", 1),  # the one ranking rule (score desc, product id)
    ("features.*", 2),
    ("pipeline.model.*", 3),
    ("serving.*", 4),
    ("pipeline.evaluation.*", 5),
    ("pipeline.workflows.*", 6),
    ("pipeline.dashboard.*", 7),
    ("pipeline.cli", 8),
    ("basketcast.*", 8),  # the public package: a thin face over everything below, beside the CLI
]

# Libraries only the `train` extra installs: serving must not need them. (SciPy is not one: the
# fresh online rows after a posted order run the offline feature code, TIFU-KNN's sparse search
# included, so the `serve` extra installs it.)
TRAINING_LIBRARIES = frozenset(
    {
        "lightgbm",
        "xgboost",
        "implicit",
        "torch",
        "mlflow",
        "sklearn",
        "matplotlib",
        "plotly",
        "onnxmltools",
        "wandb",
    }
)

# Not under serving/, but imported by it: checked explicitly so the guarantee does not hang on today's graph.
SERVING_EXTRA_ROOTS = ("pipeline.model.basket",)

Graph = Mapping[str, Iterable[str]]


# --------------------------------------------------------------------------- collecting imports


@dataclass(frozen=True)
class Import:
    """One imported name: a project module (resolved) or a third-party dotted name."""

    target: str
    line: int
    module_level: bool  # False when inside a `def` or `class` body


@dataclass
class Module:
    name: str
    path: Path
    project: list[Import] = field(default_factory=list)
    external: list[Import] = field(default_factory=list)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(candidate: str, known: Collection[str]) -> str | None:
    """The longest known project module that `candidate` is, or lies inside (None for third-party)."""
    parts = candidate.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in known:
            return prefix
    return None


class _ImportCollector(ast.NodeVisitor):
    """Collects every import, at any depth; TYPE_CHECKING imports count too, since they state a dependency."""

    def __init__(self, module: Module, is_package: bool, known: frozenset[str]) -> None:
        self.module = module
        self.package = module.name if is_package else module.name.rpartition(".")[0]
        self.known = known
        self.depth = 0  # how many def/class bodies enclose the current node

    def _nested(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _nested  # noqa: N815

    def _add(self, candidate: str, line: int, external: str | None) -> None:
        """Record `candidate` if it is (inside) a project module, else `external` unless it is None (relative)."""
        resolved = resolve(candidate, self.known)
        if resolved is not None:
            if resolved != self.module.name:
                self.module.project.append(Import(resolved, line, self.depth == 0))
        elif external is not None and external.split(".")[0] not in PACKAGES:
            self.module.external.append(Import(external, line, self.depth == 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno, external=alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base_parts = self.package.split(".")
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        for alias in node.names:
            # `from pkg import sub` imports the module pkg.sub; `from mod import Name` resolves back to mod.
            candidate = f"{base}.{alias.name}" if alias.name != "*" else base
            self._add(candidate, node.lineno, external=None if node.level else base)


@cache
def project_modules() -> dict[str, Module]:
    paths = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))
    modules = {module_name(p): Module(module_name(p), p) for p in paths}
    known = frozenset(modules)
    for module in modules.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
        _ImportCollector(module, module.path.name == "__init__.py", known).visit(tree)
    return modules


def import_graph(module_level_only: bool = False) -> dict[str, set[str]]:
    return {
        name: {i.target for i in module.project if i.module_level or not module_level_only}
        for name, module in project_modules().items()
    }


# --------------------------------------------------------------------------- the checks (pure, on plain dicts)


def layer_of(module: str) -> int | None:
    for pattern, layer in LAYERS:
        if pattern.endswith(".*"):
            package = pattern[:-2]
            if module == package or module.startswith(package + "."):
                return layer
        elif module == pattern:
            return layer
    return None


def describe(module: str) -> str:
    layer = layer_of(module)
    return f"{module} ({layer} {LAYER_NAMES[layer]})" if layer is not None else f"{module} (no layer)"


def unlayered(graph: Graph) -> list[str]:
    modules = set(graph) | {m for targets in graph.values() for m in targets}
    return sorted(m for m in modules if layer_of(m) is None)


def upward_edges(graph: Graph) -> list[tuple[str, str]]:
    """Every import from a module to one of a higher layer (modules without a layer are skipped)."""
    edges = []
    for importer, targets in graph.items():
        for imported in targets:
            low, high = layer_of(importer), layer_of(imported)
            if low is not None and high is not None and high > low:
                edges.append((importer, imported))
    return sorted(edges)


def strongly_connected_components(graph: Graph) -> list[list[str]]:
    """Tarjan's algorithm."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                lowlink[node] = min(lowlink[node], lowlink[succ])
            elif succ in on_stack:
                lowlink[node] = min(lowlink[node], index[succ])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def cycles(graph: Graph) -> list[list[str]]:
    """The import cycles: components of more than one module, or a module importing itself."""
    found = [c for c in strongly_connected_components(graph) if len(c) > 1 or c[0] in graph.get(c[0], ())]
    return sorted(found)


def closure(graph: Graph, roots: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


# --------------------------------------------------------------------------- the tests


def test_every_module_has_a_layer() -> None:
    missing = unlayered(import_graph())
    assert not missing, (
        "These project modules match no entry of LAYERS in tests/test_layers.py; add them to the table:\n  "
        + "\n  ".join(missing)
    )


def test_imports_only_run_downwards() -> None:
    graph = import_graph()
    if unlayered(graph):
        pytest.fail("Some modules have no layer: see test_every_module_has_a_layer")
    bad = upward_edges(graph)
    assert not bad, "Imports going up a layer:\n  " + "\n  ".join(f"{describe(a)} -> {describe(b)}" for a, b in bad)


def test_no_import_cycles() -> None:
    graph = import_graph()
    found = cycles(graph)

    def edges(component: list[str]) -> str:
        inside = set(component)
        return ", ".join(f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in inside)

    assert not found, "Import cycles (function-level imports included):\n  " + "\n  ".join(
        f"{' <-> '.join(c)}   [{edges(c)}]" for c in found
    )


def test_serving_does_not_import_training_libraries() -> None:
    modules = project_modules()
    serving = [name for name in modules if name == "serving" or name.startswith("serving.")]
    offences = []
    # Serving's own modules: not even inside functions.
    for name in serving:
        for imp in modules[name].external:
            if imp.target.split(".")[0] in TRAINING_LIBRARIES:
                offences.append(f"{name}:{imp.line} imports {imp.target}")
    # Everything serving loads at import time: module-level imports only.
    loaded = closure(import_graph(module_level_only=True), [*serving, *SERVING_EXTRA_ROOTS])
    for name in sorted(loaded - set(serving)):
        for imp in modules[name].external:
            if imp.module_level and imp.target.split(".")[0] in TRAINING_LIBRARIES:
                offences.append(f"{name}:{imp.line} imports {imp.target} at module level (loaded by serving)")
    assert not offences, "Training libraries reachable from serving:\n  " + "\n  ".join(offences)


def test_the_checker_can_fail() -> None:
    """The helpers on a hand-made graph: an upward edge, a cycle, an unknown module and a resolution."""
    graph = {
        "pipeline.data.schema": {"pipeline.config"},  # 0 -> 1: upward
        "pipeline.workflows.a": {"pipeline.workflows.b", "pipeline.data.schema"},
        "pipeline.workflows.b": {"pipeline.workflows.a"},  # cycle a <-> b
        "pipeline.config": set(),
        "pipeline.brandnew.thing": set(),
    }
    assert upward_edges(graph) == [("pipeline.data.schema", "pipeline.config")]
    assert cycles(graph) == [["pipeline.workflows.a", "pipeline.workflows.b"]]
    assert cycles({"x": {"x"}}) == [["x"]]
    assert unlayered(graph) == ["pipeline.brandnew.thing"]
    assert layer_of("pipeline") == 0 and layer_of("serving.routers.health") == 4 and layer_of("pipelinex") is None
    assert closure(graph, ["pipeline.workflows.b"]) == {
        "pipeline.workflows.a",
        "pipeline.workflows.b",
        "pipeline.data.schema",
        "pipeline.config",
    }
    known = {"pipeline", "pipeline.data", "pipeline.data.schema", "pipeline.model", "pipeline.model.training"}
    assert resolve("pipeline.data.schema", known) == "pipeline.data.schema"  # from pipeline.data import schema
    assert resolve("pipeline.model.training.Rankers", known) == "pipeline.model.training"
    assert resolve("numpy.linalg", known) is None


def test_collector_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Relative, nested and TYPE_CHECKING imports are all found, and module level is told apart."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import lightgbm\n"
        "from . import schema as S\n"
        "from ..model.training import Rankers\n"
        "if TYPE_CHECKING:\n"
        "    from pipeline.config import TrainConfig\n"
        "def f():\n"
        "    import torch\n"
        "    from pipeline.cli import main\n"
    )
    module = Module("pipeline.data.storage", tmp_path / "storage.py")
    known = frozenset({"pipeline.data.schema", "pipeline.data.storage", "pipeline.model.training", "pipeline.config"})
    _ImportCollector(module, is_package=False, known=known | {"pipeline.cli"}).visit(ast.parse(source))
    assert [(i.target, i.module_level) for i in module.project] == [
        ("pipeline.data.schema", True),
        ("pipeline.model.training", True),
        ("pipeline.config", True),
        ("pipeline.cli", False),
    ]
    assert [(i.target, i.module_level) for i in module.external] == [
        ("typing", True),
        ("lightgbm", True),
        ("torch", False),
    ]
    assert upward_edges({module.name: {i.target for i in module.project}}) == [
        ("pipeline.data.storage", "pipeline.cli"),
        ("pipeline.data.storage", "pipeline.config"),
        ("pipeline.data.storage", "pipeline.model.training"),
    ]
