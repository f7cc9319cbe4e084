"""Facts about the machine and software a run measured on, recorded with every result."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from quantsweep.results import Environment

TRACKED_PACKAGES = (
    "quantsweep",
    "onnxruntime",
    "onnx",
    "optimum",
    "optimum-onnx",
    "transformers",
    "torch",
    "datasets",
    "evaluate",
    "seqeval",
    "hydra-core",
    "omegaconf",
    "numpy",
    "tokenizers",
)

# Flags that decide which integer kernels ONNX Runtime can use.
_RELEVANT_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4", "asimd", "dotprod", "i8mm", "sve")


def _read_proc_cpuinfo() -> list[dict[str, str]]:
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return []
    processors: list[dict[str, str]] = [{}]
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            if processors[-1]:
                processors.append({})
            continue
        key, _, value = line.partition(":")
        processors[-1][key.strip()] = value.strip()
    return [p for p in processors if p]


@lru_cache(maxsize=1)
def cpu_model() -> str:
    for proc in _read_proc_cpuinfo():
        for key in ("model name", "Model", "Hardware"):
            if proc.get(key):
                return proc[key]
    return platform.processor() or platform.machine() or "unknown"


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    procs = _read_proc_cpuinfo()
    if procs:
        raw = procs[0].get("flags") or procs[0].get("Features") or ""
        return frozenset(raw.split())
    try:
        import cpuinfo  # py-cpuinfo: portable, but slow, so only where /proc is missing

        return frozenset(cpuinfo.get_cpu_info().get("flags", []))
    except Exception:
        return frozenset()


def physical_cores() -> int:
    """Physical cores (hyper-threads counted once), the default intra-op thread count."""
    procs = _read_proc_cpuinfo()
    pairs = {(p.get("physical id", "0"), p.get("core id")) for p in procs if p.get("core id") is not None}
    if pairs:
        return len(pairs)
    return os.cpu_count() or 1


def detect_instruction_set() -> str:
    """The name of optimum's quantization preset that fits this CPU best."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = cpu_flags()
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags or "avx512bw" in flags:
        return "avx512"
    # Without AVX2 there is no better preset; AVX2's types are the portable choice.
    return "avx2"


def package_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the quantsweep checkout in use, or None for an installed wheel."""
    here = start or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def collect_environment() -> Environment:
    flags = cpu_flags()
    return Environment(
        cpu_model=cpu_model(),
        cpu_flags=sorted(f for f in flags if f.startswith(_RELEVANT_FLAG_PREFIXES)),
        physical_cores=physical_cores(),
        logical_cores=os.cpu_count() or 1,
        platform=platform.platform(),
        python=platform.python_version(),
        packages=package_versions(),
        git_commit=git_commit(),
        hostname=socket.gethostname(),
    )
