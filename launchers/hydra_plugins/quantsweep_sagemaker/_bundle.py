"""The job bundle: this project as a wheel, the container's constraints and the install command.

A wheel carries only the package's files (``src/quantsweep``, ``conf/``, this launcher),
so ``.git``, ``outputs/``, caches and credentials cannot ride along.

The container keeps the image's own torch: its constraints are the project's
``constraints.txt`` without the torch pin (that pin names the CPU build for installs on
this side; on a public index the same pin resolves to a CUDA build with gigabytes of
nvidia packages). pip installs only what the image lacks, and an image whose torch
satisfies ``torch>=2.4`` keeps it. ``bundle.json`` names the sources the wheel was built
from; an image built with ``launchers/Dockerfile`` from the same bundle holds the same
file, and then the job installs nothing (no internet needed at job time).

``quantsweep-sagemaker bundle <folder>`` writes the
bundle there, for ``docker build`` with ``launchers/Dockerfile``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CONSTRAINTS = "constraints.txt"
# what the container installs with: constraints.txt without torch or CUDA packages
CONTAINER_CONSTRAINTS = "container-constraints.txt"
# the sources the wheel was built from; equal to the image's copy: nothing to install
BUNDLE_INFO = "bundle.json"
# where an image built with launchers/Dockerfile keeps its copy of bundle.json
PREINSTALLED = "/opt/quantsweep/bundle.json"
_CUDA_OR_TORCH = re.compile(r"^\s*(torch|nvidia[-_]|triton|cuda[-_])", re.IGNORECASE)
# The install step of the container's command, a script in the bundle (a container argument
# holds at most 256 characters). Run in the bundle channel's folder, it installs nothing when
# the image already holds this bundle (launchers/Dockerfile) or the job's environment sets
# QUANTSWEEP_SKIP_INSTALL=1.
INSTALL_SCRIPT = "install.sh"
# what the job installs: the wheel, and sagemaker-mlflow when the container logs to a
# SageMaker MLflow ARN (hydra.launcher.mlflow_from_container)
REQUIREMENTS = "requirements.txt"
INSTALL = f"""#!/bin/bash
# quantsweep's install in the training image's Python, run by each job in the bundle channel
set -e
if [ "${{QUANTSWEEP_SKIP_INSTALL:-0}}" = 1 ] || cmp -s {BUNDLE_INFO} "${{QUANTSWEEP_PREINSTALLED:-{PREINSTALLED}}}"; then
  echo "quantsweep: installed in the image; nothing to install"
else
  python -m pip install --no-cache-dir --disable-pip-version-check -q -r {REQUIREMENTS} -c {CONTAINER_CONSTRAINTS}
fi
"""


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


def build_bundle(
    out: Path, root: Path | None = None, cache_dir: Path | None = None, extras: Sequence[str] = ()
) -> Bundle:
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
    text = constraints.read_text(encoding="utf-8") if constraints.is_file() else ""
    (out / CONSTRAINTS).write_text(text, encoding="utf-8")
    (out / CONTAINER_CONSTRAINTS).write_text(container_constraints(text), encoding="utf-8")
    info = {"quantsweep": wheels[0].name.split("-")[1], "sources": source_digest(root)}
    (out / BUNDLE_INFO).write_text(json.dumps(info, sort_keys=True) + "\n", encoding="utf-8")
    (out / REQUIREMENTS).write_text("\n".join([f"./{wheels[0].name}", *extras]) + "\n", encoding="utf-8")
    (out / INSTALL_SCRIPT).write_text(INSTALL, encoding="utf-8")
    digest = hashlib.sha256()
    for path in sorted(p for p in out.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return Bundle(folder=out, wheel=wheels[0], digest=digest.hexdigest()[:20])


def container_constraints(text: str) -> str:
    """constraints.txt for the container: no torch pin, nothing that pulls CUDA torch."""
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not _CUDA_OR_TORCH.match(line)]
    header = "# constraints.txt without torch: the container keeps the image's torch (torch>=2.4)"
    return "\n".join([header, *kept]) + "\n"


def install_summary(constraints: str, extras: Sequence[str] = ()) -> str:
    """What each job installs (``constraints``: the container's), for the user to read before anything is sent."""
    pins = [line for line in constraints.splitlines() if line.strip() and not line.startswith("#")]
    return (
        f"Each training job runs the bundle's {INSTALL_SCRIPT} before the job, in the image's Python:\n"
        + "".join(f"  | {line}\n" for line in INSTALL.splitlines())
        + f"  {REQUIREMENTS}: the quantsweep wheel{''.join(f'; {e}' for e in extras)}\n"
        + f"  {CONTAINER_CONSTRAINTS}: {'; '.join(pins) or '(none)'}\n"
        "  The image's torch is kept when it satisfies torch>=2.4 (the constraints pin no torch). Installing "
        "needs PyPI from the job; an image built with launchers/Dockerfile from this bundle installs nothing."
    )


# ---- the image's Python -------------------------------------------------------------------


def default_image_python() -> str:
    """The Python of the default image (the newest PyTorch training image the SDK knows), e.g. 3.13."""
    from sagemaker.core import image_uris

    versions = image_uris.config_for_framework("pytorch")["training"]["versions"]
    py_version = str(versions[list(versions)[-1]]["py_versions"][-1])  # e.g. py313
    return f"{py_version[2]}.{py_version[3:]}"


def requires_python(root: Path | None = None) -> str:
    """pyproject.toml's requires-python, e.g. ``>=3.10``."""
    text = ((root or project_root()) / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'^requires-python\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return found.group(1) if found else ""


def check_image_python(python: str | None, setting: str, requires: str) -> None:
    """Refuse, in one paragraph, an image Python the project does not support (or an unknown one)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    from hydra_plugins.quantsweep_sagemaker.config import LauncherConfigError

    if not python:
        raise LauncherConfigError(
            f"Invalid SageMaker launcher setting: `hydra.launcher.{setting}` is None; with a custom "
            "image_uri, name the Python version of the image (e.g. image_python=3.12), so that the launcher "
            f"can check it against quantsweep's requires-python ({requires}) before anything is uploaded."
        )
    try:
        supported = Version(str(python)) in SpecifierSet(requires)
    except InvalidVersion:
        supported = False
    if not supported:
        raise LauncherConfigError(
            f"Invalid SageMaker launcher setting: `hydra.launcher.{setting}` is {python!r}; the image's "
            f"Python must satisfy quantsweep's requires-python ({requires}), as pyproject.toml says. Choose an "
            "image with a supported Python (the default image_uri: null is the newest PyTorch training image "
            "the SageMaker SDK knows), or name its Python correctly."
        )


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
