"""The job bundle: this project as a wheel plus its pinned requirements, built once per sweep.

A wheel carries only the package's files (``src/quantsweep``, ``conf/``, this launcher),
so ``.git``, ``outputs/``, caches and credentials cannot ride along.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CONSTRAINTS = "constraints.txt"


class BundleError(RuntimeError):
    """The bundle cannot be built; the message is for the user."""


@dataclass
class Bundle:
    folder: Path
    wheel: Path
    digest: str

    @property
    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())


def project_root(start: Path | None = None) -> Path:
    """The quantsweep source checkout: from the working directory up, then beside the package."""
    import quantsweep

    candidates = [start or Path.cwd(), *((start or Path.cwd()).parents)]
    candidates += list(Path(quantsweep.__file__).resolve().parents)
    for folder in candidates:
        project = folder / "pyproject.toml"
        if project.is_file() and 'name = "quantsweep"' in project.read_text(encoding="utf-8"):
            return folder
    raise BundleError(
        "The SageMaker launcher ships quantsweep to the container as a wheel built from its source "
        "checkout, and none was found (no pyproject.toml of quantsweep in the working directory, its "
        "parents, or beside the installed package). Run the sweep from the quantsweep checkout."
    )


def source_digest(root: Path) -> str:
    """What the wheel is built from: the project file, constraints and every source file."""
    digest = hashlib.sha256()
    files = [root / "pyproject.toml", root / CONSTRAINTS]
    for folder in ("src", "conf", "launchers"):
        files += sorted(
            p
            for p in (root / folder).rglob("*")
            if p.is_file()
            and not any(part == "__pycache__" or part.endswith(".egg-info") for part in p.parts)
        )
    for path in files:
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def build_bundle(out: Path, root: Path | None = None, cache_dir: Path | None = None) -> Bundle:
    """The wheel and constraints in ``out``; the wheel is built once per state of the sources.

    Built wheels are kept in quantsweep's own cache (the sweep's ``cache_dir``; None: not
    kept), never in the source checkout, which the build leaves untouched.
    """
    from quantsweep.cache import ArtifactCache

    root = root or project_root()
    out.mkdir(parents=True, exist_ok=True)
    cache = ArtifactCache(cache_dir)
    with cache.obtain(
        "bundle", {"sources": source_digest(root)}, lambda folder: _build_wheel(root, folder), out
    ) as (
        folder,
        _,
    ):
        for path in folder.iterdir():
            if path.suffix == ".whl":
                shutil.copyfile(path, out / path.name)
    wheels = sorted(out.glob("quantsweep-*.whl"))
    if len(wheels) != 1:
        raise BundleError(f"Expected one quantsweep wheel in {out}, found {[w.name for w in wheels]}.")
    constraints = root / CONSTRAINTS
    if constraints.is_file():
        shutil.copyfile(constraints, out / CONSTRAINTS)
    else:
        (out / CONSTRAINTS).write_text("", encoding="utf-8")
    digest = hashlib.sha256()
    for path in sorted(p for p in out.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return Bundle(folder=out, wheel=wheels[0], digest=digest.hexdigest()[:20])


# what the wheel is built from (pyproject.toml's readme names README.md)
_BUILD_INPUTS = ("pyproject.toml", "README.md", "src", "conf", "launchers")


def _build_wheel(root: Path, out: Path) -> None:
    """``pip wheel`` on a copy of the sources: setuptools writes build/ and *.egg-info where it builds."""
    with tempfile.TemporaryDirectory(prefix="quantsweep-wheel-") as scratch:
        copy = Path(scratch) / "quantsweep"
        copy.mkdir()
        for name in _BUILD_INPUTS:
            source = root / name
            if source.is_dir():
                shutil.copytree(
                    source, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
                )
            elif source.is_file():
                shutil.copyfile(source, copy / name)
        _pip_wheel(copy, out)


def _pip_wheel(root: Path, out: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(root),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BundleError(f"Building the quantsweep wheel from {root} failed:\n{result.stderr[-2000:]}")
