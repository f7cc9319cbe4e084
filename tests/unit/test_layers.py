"""Imports run one way: no cycles, and no module imports from a layer above its own.

Counted from the source, so imports inside functions and under ``TYPE_CHECKING`` count too:
a lazy import is still a dependency, and a cycle through one is still a knot a newcomer has to
untie. Every module of the package must be placed in a layer here; the README's architecture
section describes the same three.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "quantsweep"

# Each layer's modules (a name also covers the modules of the package it names).
LAYERS: dict[str, tuple[str, ...]] = {
    # the schema and the plain data everything else shares; imports nothing above
    "bottom": ("quantsweep", "config", "records", "files", "batching", "redaction"),
    # what a job is made of: data sources, tasks, ONNX operations, the exclusion search, the cache
    "middle": (
        "data",
        "tasks",
        "export",
        "quantize",
        "sessions",
        "timing",
        "exclusion",
        "exclusion_search",
        "cache",
        "environment",
    ),
    # what runs, reads and shows jobs
    "top": (
        "results",
        "stages",
        "job",
        "job_folder",
        "sweep",
        "report",
        "plots",
        "tracking",
        "callback",
        "cli",
        "reproduce",
        "demo",
        "testing",
    ),
}
ORDER = list(LAYERS)


def module_name(path: Path) -> str:
    parts = ["quantsweep", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in path.parts and "conf" not in path.relative_to(PACKAGE).parts[:1]
    }


def layer_of(module: str) -> str | None:
    """The layer of the longest entry that names the module or a package above it."""
    if module == "quantsweep":
        return "bottom"
    matches = [
        (len(name), layer)
        for layer, names in LAYERS.items()
        for name in names
        if name != "quantsweep"
        and (module == f"quantsweep.{name}" or module.startswith(f"quantsweep.{name}."))
    ]
    return max(matches)[1] if matches else None


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    resolved = set()
    for name in found:
        # `import a.b.c` and `from a.b import c` depend on the deepest module of the package they name
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            resolved.add(name)
    return resolved


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {module: imports(module, path, known) for module, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer() -> None:
    assert [m for m in modules() if layer_of(m) is None] == []


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = [
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in sorted(graph().items())
        for target in sorted(targets)
        if ORDER.index(layer_of(target) or "top") > ORDER.index(layer_of(module) or "top")
    ]
    assert upward == []


def test_the_checker_sees_lazy_type_checking_and_relative_imports(tmp_path: Path) -> None:
    """The checker itself: an import hidden in a function, under TYPE_CHECKING, or relative, counts."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from quantsweep.results import JobResults\n"
        "def f():\n    import quantsweep.cli\n"
        "from .stages import load\n"
    )
    known = {"quantsweep.results", "quantsweep.cli", "quantsweep.stages", "quantsweep.stages.load"}
    assert imports("quantsweep.records", source, known) == {
        "quantsweep.results",
        "quantsweep.cli",
        "quantsweep.stages",
        "quantsweep.stages.load",
    }
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
