"""Architecture check: imports only run downwards through the house's layers.

The project is stacked in layers, lowest first:

    0 data            basketcast.pipeline.errors, basketcast.pipeline.data.*
    1 config/metrics  basketcast.pipeline.config, basketcast.pipeline.metrics, basketcast.pipeline.progress
    2 features        basketcast.features.*
    3 model           basketcast.pipeline.model.*
    4 serving         basketcast.serving.* (basketcast.serving.routers.* included)
    5 evaluation      basketcast.pipeline.evaluation.*
    6 workflows       basketcast.pipeline.workflows.*
    7 dashboard       basketcast.pipeline.dashboard.*
    8 cli / API       basketcast.pipeline.cli, basketcast.* (the public notebook API)

A module may import its own layer or any lower one, never a higher one, and
no group of modules may import each other in a cycle. This keeps every layer
usable (and testable) without the ones above it, and keeps the serving image
small: serving sits below evaluation and training workflows, and neither it
nor anything it imports may load a training library at import time.

The layer checks read the source with `ast` (nothing is imported), so they also
run where the training extras are not installed. The folders pipeline/, features/
and serving/ are the packages basketcast.pipeline, basketcast.features and
basketcast.serving (basketcast/<name> links to them); the last checks make sure no
module is imported under its folder's own name.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "basketcast"
# The design card's folders: at the top of the repository, installed as basketcast.<name>
# (basketcast/<name> is a symlink to ../<name>).
SUBPACKAGES = ("pipeline", "features", "serving")

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
    ("basketcast.pipeline", 0),  # the package __init__ (its import-name guard only)
    ("basketcast.pipeline.errors", 0),
    ("basketcast.pipeline.data.*", 0),
    ("basketcast.pipeline.config", 1),
    ("basketcast.pipeline.metrics", 1),
    ("basketcast.pipeline.progress", 1),
    ("basketcast.pipeline.ranking", 1),  # the one ranking rule (score desc, product id)
    ("basketcast.features.*", 2),
    ("basketcast.pipeline.model.*", 3),
    ("basketcast.serving.*", 4),
    ("basketcast.pipeline.evaluation.*", 5),
    ("basketcast.pipeline.workflows.*", 6),
    ("basketcast.pipeline.dashboard.*", 7),
    ("basketcast.pipeline.cli", 8),
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
SERVING_EXTRA_ROOTS = ("basketcast.pipeline.model.basket",)

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
    if parts[0] in SUBPACKAGES:
        parts.insert(0, PACKAGE)
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
        elif external is not None and external.split(".")[0] != PACKAGE:
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
    # rglob does not follow the links in basketcast/: each file is read once, from its folder.
    paths = sorted(p for folder in (PACKAGE, *SUBPACKAGES) for p in (ROOT / folder).rglob("*.py"))
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
                if package == PACKAGE and module.partition(".")[2].split(".")[0] in SUBPACKAGES:
                    # basketcast.* is the package's own modules: the folders have their own entries
                    continue
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
    serving = [name for name in modules if name == "basketcast.serving" or name.startswith("basketcast.serving.")]
    offences = []
    # Serving's own modules: not even inside functions.
    for name in serving:
        for imp in modules[name].external:
            if imp.target.split(".")[0] in TRAINING_LIBRARIES:
                offences.append(f"{name}:{imp.line} imports {imp.target}")
    # Everything serving loads at import time: module-level imports only.
    # Importing basketcast.serving.x runs basketcast/__init__.py first: its imports are loaded too.
    loaded = closure(import_graph(module_level_only=True), [PACKAGE, *serving, *SERVING_EXTRA_ROOTS])
    for name in sorted(loaded - set(serving)):
        for imp in modules[name].external:
            if imp.module_level and imp.target.split(".")[0] in TRAINING_LIBRARIES:
                offences.append(f"{name}:{imp.line} imports {imp.target} at module level (loaded by serving)")
    assert not offences, "Training libraries reachable from serving:\n  " + "\n  ".join(offences)


def test_the_checker_can_fail() -> None:
    """The helpers on a hand-made graph: an upward edge, a cycle, an unknown module and a resolution."""
    graph = {
        "basketcast.pipeline.data.schema": {"basketcast.pipeline.config"},  # 0 -> 1: upward
        "basketcast.pipeline.workflows.a": {"basketcast.pipeline.workflows.b", "basketcast.pipeline.data.schema"},
        "basketcast.pipeline.workflows.b": {"basketcast.pipeline.workflows.a"},  # cycle a <-> b
        "basketcast.pipeline.config": set(),
        "basketcast.pipeline.brandnew.thing": set(),
    }
    assert upward_edges(graph) == [("basketcast.pipeline.data.schema", "basketcast.pipeline.config")]
    assert cycles(graph) == [["basketcast.pipeline.workflows.a", "basketcast.pipeline.workflows.b"]]
    assert cycles({"x": {"x"}}) == [["x"]]
    assert unlayered(graph) == ["basketcast.pipeline.brandnew.thing"]
    assert (
        layer_of("basketcast.pipeline") == 0
        and layer_of("basketcast.serving.routers.health") == 4
        and layer_of("basketcast.pipeline.modelx") is None
    )
    assert closure(graph, ["basketcast.pipeline.workflows.b"]) == {
        "basketcast.pipeline.workflows.a",
        "basketcast.pipeline.workflows.b",
        "basketcast.pipeline.data.schema",
        "basketcast.pipeline.config",
    }
    known = {
        "basketcast.pipeline",
        "basketcast.pipeline.data",
        "basketcast.pipeline.data.schema",
        "basketcast.pipeline.model",
        "basketcast.pipeline.model.training",
    }
    # from basketcast.pipeline.data import schema:
    assert resolve("basketcast.pipeline.data.schema", known) == "basketcast.pipeline.data.schema"
    assert resolve("basketcast.pipeline.model.training.Rankers", known) == "basketcast.pipeline.model.training"
    assert resolve("numpy.linalg", known) is None


def test_collector_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Relative, nested and TYPE_CHECKING imports are all found, and module level is told apart."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import lightgbm\n"
        "from . import schema as S\n"
        "from ..model.training import Rankers\n"
        "if TYPE_CHECKING:\n"
        "    from basketcast.pipeline.config import TrainConfig\n"
        "def f():\n"
        "    import torch\n"
        "    from basketcast.pipeline.cli import main\n"
    )
    module = Module("basketcast.pipeline.data.storage", tmp_path / "storage.py")
    known = frozenset(
        {
            "basketcast.pipeline.data.schema",
            "basketcast.pipeline.data.storage",
            "basketcast.pipeline.model.training",
            "basketcast.pipeline.config",
        }
    )
    _ImportCollector(module, is_package=False, known=known | {"basketcast.pipeline.cli"}).visit(ast.parse(source))
    assert [(i.target, i.module_level) for i in module.project] == [
        ("basketcast.pipeline.data.schema", True),
        ("basketcast.pipeline.model.training", True),
        ("basketcast.pipeline.config", True),
        ("basketcast.pipeline.cli", False),
    ]
    assert [(i.target, i.module_level) for i in module.external] == [
        ("typing", True),
        ("lightgbm", True),
        ("torch", False),
    ]
    assert upward_edges({module.name: {i.target for i in module.project}}) == [
        ("basketcast.pipeline.data.storage", "basketcast.pipeline.cli"),
        ("basketcast.pipeline.data.storage", "basketcast.pipeline.config"),
        ("basketcast.pipeline.data.storage", "basketcast.pipeline.model.training"),
    ]


# --------------------------------------------------------------------------- one name per module

# Folders with Python files that the name check reads (links inside basketcast/ are not followed).
CHECKED_FOLDERS = (PACKAGE, *SUBPACKAGES, "tests", "benchmarks", "examples", "deploy", "docker")
# A string that starts with a module path under an old name: monkeypatch targets, "module:attr"
# app paths, `-m` arguments, logger names.
_OLD_PATH = re.compile(r"^(?P<top>" + "|".join(SUBPACKAGES) + r")\.(?P<child>[A-Za-z_]\w*)")


def checked_files() -> list[Path]:
    found = []
    for folder in CHECKED_FOLDERS:
        for dirpath, dirnames, filenames in os.walk(ROOT / folder):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            found += [Path(dirpath, f) for f in filenames if f.endswith(".py")]
    return sorted(found)


def test_no_module_is_imported_by_its_folder_name() -> None:
    """`pipeline.x` and `basketcast.pipeline.x` would be two module objects for one file: only the second is used."""
    offences = []
    for path in checked_files():
        rel = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found = _OLD_PATH.match(node.value)
                if found and any(
                    (ROOT / found["top"] / name).exists() for name in (found["child"], found["child"] + ".py")
                ):
                    offences.append(f"{rel}:{node.lineno} names the module {found[0]!r}")
                continue
            else:
                continue
            offences += [f"{rel}:{node.lineno} imports {name}" for name in names if name.split(".")[0] in SUBPACKAGES]
    assert not offences, f"Use {PACKAGE}.<name> (the folders are installed under {PACKAGE}):\n  " + "\n  ".join(
        offences
    )


def test_the_folders_are_subpackages_of_basketcast() -> None:
    """basketcast/<name> is the folder <name>/; `import basketcast.pipeline.cli` works and `import pipeline` fails."""
    for name in SUBPACKAGES:
        assert (ROOT / PACKAGE / name).resolve() == (ROOT / name).resolve(), (
            f"{PACKAGE}/{name} must be a symlink to ../{name} (on Windows: git clone -c core.symlinks=true, "
            "with Developer Mode on)"
        )
    code = (
        "import importlib\n"
        "import basketcast.pipeline.cli as cli\n"
        "assert callable(cli.main), cli\n"
        f"for name in {SUBPACKAGES!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    raise SystemExit(f'{name} was imported under its folder name')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
