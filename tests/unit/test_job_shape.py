"""The package stays readable: a short orchestrator, short functions, modules that do one thing.

Every module of the package, except the offline demos' training scripts, which keep a
training loop whole: a function that grows past the limit is split before it lands, not after,
and a module that grows past about 500 lines is a sign it does two things.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "quantsweep"
# demo/: the generated corpus's sentence templates and the fine-tuning loops, kept whole on purpose
EXEMPT = ("demo/",)
MODULES = [
    p.relative_to(PACKAGE).as_posix()
    for p in sorted(PACKAGE.rglob("*.py"))
    if "__pycache__" not in p.parts and not p.relative_to(PACKAGE).as_posix().startswith(EXEMPT)
]
LIMIT = 60
MODULE_LIMIT = 500


def functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.name, (node.end_lineno or node.lineno) - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_no_function_is_over_60_lines() -> None:
    long = [
        f"{name} ({path}): {lines}"
        for path in MODULES
        for name, lines in functions(PACKAGE / path)
        if lines > LIMIT
    ]
    assert long == []


def test_no_module_is_over_500_lines() -> None:
    long = {
        path: n
        for path in MODULES
        if (n := len((PACKAGE / path).read_text(encoding="utf-8").splitlines())) > MODULE_LIMIT
    }
    assert long == {}


def test_the_orchestrator_is_under_40_lines() -> None:
    lengths = dict(functions(PACKAGE / "job.py"))
    assert lengths["execute"] < 40, lengths["execute"]


def test_every_package_of_the_source_is_in_the_wheel() -> None:
    """A package missing from pyproject's list works in an editable install and fails installed."""
    import tomllib

    root = PACKAGE.parents[1]
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(root / "src").parts)
        for init in (root / "src").rglob("__init__.py")
        if "__pycache__" not in init.parts and ".egg-info" not in str(init)
    }
    assert found <= listed, sorted(found - listed)
