"""The job path stays readable: a short orchestrator, and no function over 60 lines.

Modules a job runs through (the orchestrator, its stages, and what they call); a function
that grows past the limit is split before it lands, not after.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "quantsweep"
JOB_PATH = [
    "job.py",
    *(f"stages/{p.name}" for p in sorted((PACKAGE / "stages").glob("*.py"))),
    *(p.relative_to(PACKAGE).as_posix() for p in sorted((PACKAGE / "tasks").rglob("*.py"))),
    "batching.py",
    "cache.py",
    "data.py",
    "environment.py",
    "exclusion.py",
    *(f"exclusion_search/{p.name}" for p in sorted((PACKAGE / "exclusion_search").glob("*.py"))),
    "export.py",
    "files.py",
    "quantize.py",
    "records.py",
    "results.py",
    "sessions.py",
    "timing.py",
]
LIMIT = 60


def functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.name, (node.end_lineno or node.lineno) - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_no_function_in_the_job_path_is_over_60_lines() -> None:
    long = [
        f"{name} ({path}): {lines}"
        for path in JOB_PATH
        for name, lines in functions(PACKAGE / path)
        if lines > LIMIT
    ]
    assert long == []


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
