"""The layout keeps its promises (docs/README.md): configuration is read in one module per
process and nothing writes the environment; imports only go down the layers
ridectl -> bench -> drills -> deploy -> services, the shared library never depends on a
service, and the contrast exhibits are never used by a running service."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = ("services", "deploy", "drills", "bench", "ridectl", "loadtests", "scripts")
# The one module per process that reads the environment: every service process (and the
# sweeper and the fleet); the command line and the bootstrap; Locust; and protogen, a
# process of one module that hands PATH on to protoc.
CONFIG_MODULES = {
    "services/runtime/config.py",
    "deploy/local/environment.py",
    "loadtests/config.py",
    "scripts/protogen.py",
}
LAYERS = ("services", "deploy", "drills", "bench", "ridectl")
SHARED_LIBRARY = ("services/blocks", "services/runtime", "services/exhibits")
SERVICES = ("rider", "trip", "driver", "payment", "psp", "fleet")


def _modules(*roots: str) -> Iterator[tuple[str, ast.Module]]:
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            yield rel, ast.parse(path.read_text(), filename=rel)


def _environment_uses(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, what) for every touch of the process environment: reads and writes."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            if node.attr in ("environ", "getenv", "putenv", "unsetenv", "environb"):
                yield node.lineno, f"os.{node.attr}"
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name in ("environ", "getenv", "putenv", "unsetenv"):
                    yield node.lineno, f"from os import {alias.name}"


def _environment_writes(tree: ast.Module) -> Iterator[int]:
    def is_environ(node: ast.expr) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ"

    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        if isinstance(node, ast.stmt) and any(isinstance(t, ast.Subscript) and is_environ(t.value) for t in targets):
            yield node.lineno
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            called = node.func
            if is_environ(called.value) and called.attr in ("pop", "update", "setdefault", "clear", "popitem"):
                yield node.lineno
            if isinstance(called.value, ast.Name) and called.value.id == "os" and called.attr in ("putenv", "unsetenv"):
                yield node.lineno


def test_only_the_config_module_of_each_process_reads_the_environment() -> None:
    found = [
        f"{rel}:{line}: {what}"
        for rel, tree in _modules(*PRODUCTION)
        if rel not in CONFIG_MODULES
        for line, what in _environment_uses(tree)
    ]
    assert found == [], "read the environment in the process's config module instead"


def test_no_module_writes_the_environment() -> None:
    found = [f"{rel}:{line}" for rel, tree in _modules(*PRODUCTION) for line in _environment_writes(tree)]
    assert found == [], "pass settings as values (deploy/local/stack.py) or as a child's env="


def _imports(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _layer(module: str) -> int | None:
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else None


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_only_go_down_the_layers(layer: str) -> None:
    own = LAYERS.index(layer)
    upward = [
        f"{rel}:{line}: imports {module}"
        for rel, tree in _modules(layer)
        for line, module in _imports(tree)
        if (found := _layer(module)) is not None and found > own
    ]
    assert upward == []


def test_locust_uses_only_the_services_layer() -> None:
    """The Locust process (its locustfile and config) books rides like any client, through
    the services layer; loadtests/run.py, which starts it and then runs the checker, is an
    entry point at the top, like ridectl."""
    upward = [
        f"{rel}:{line}: imports {module}"
        for rel, tree in _modules("loadtests")
        if not rel.endswith("/run.py")
        for line, module in _imports(tree)
        if (found := _layer(module)) is not None and found > 0
    ]
    assert upward == []


def test_the_shared_library_depends_on_no_service() -> None:
    found = [
        f"{rel}:{line}: imports {module}"
        for rel, tree in _modules(*SHARED_LIBRARY)
        for line, module in _imports(tree)
        if module.split(".")[:2] in [["services", name] for name in SERVICES]
    ]
    assert found == []


def test_no_running_service_uses_the_contrast_exhibits() -> None:
    running = [f"services/{name}" for name in SERVICES] + ["services/blocks", "services/runtime"]
    found = [
        f"{rel}:{line}: imports {module}"
        for rel, tree in _modules(*running)
        for line, module in _imports(tree)
        if module.startswith("services.exhibits")
    ]
    assert found == []


def test_the_checks_see_what_they_forbid(tmp_path: Path) -> None:
    """The walkers themselves: a read, a write and an upward import are each found."""
    tree = ast.parse("import os\nx = os.environ.get('A')\nos.environ['B'] = '1'\nfrom ridectl import cli\n")
    assert [what for _, what in _environment_uses(tree)] == ["os.environ", "os.environ"]
    assert list(_environment_writes(tree)) == [3]
    assert [_layer(module) for _, module in _imports(tree)] == [None, LAYERS.index("ridectl")]
