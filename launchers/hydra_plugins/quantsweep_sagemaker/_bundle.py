"""The job bundle: this project as a wheel plus its pinned requirements, built once per sweep.

A wheel carries only the package's files (``src/quantsweep``, ``conf/``, this launcher),
so ``.git``, ``outputs/``, caches and credentials cannot ride along.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
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


def build_bundle(out: Path, root: Path | None = None) -> Bundle:
    root = root or project_root()
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(root)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BundleError(f"Building the quantsweep wheel from {root} failed:\n{result.stderr[-2000:]}")
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
