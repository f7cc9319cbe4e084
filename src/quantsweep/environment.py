"""Facts about the machine and software a run measured on, recorded with every result."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from quantsweep.records import Environment

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
    "scikit-learn",
    "hydra-core",
    "omegaconf",
    "numpy",
    "tokenizers",
)

# Flags that decide which integer kernels ONNX Runtime can use.
_RELEVANT_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4", "asimd", "dotprod", "i8mm", "sve")
# The instruction sets that decide ONNX Runtime's int8 speed, by their /proc/cpuinfo flag,
# in the order a reader compares machines (AVX2 < AVX-512 < VNNI < AMX; Arm's NEON < dot product < I8MM).
INT8_INSTRUCTION_SETS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512F",
    "avx512bw": "AVX-512BW",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "amx_int8": "AMX-INT8",
    "asimd": "NEON",
    "asimddp": "dot product",
    "i8mm": "I8MM",
    "sve": "SVE",
}


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


def int8_instruction_sets(flags: frozenset[str] | None = None) -> list[str]:
    """What this CPU supports of :data:`INT8_INSTRUCTION_SETS`, by name (``["AVX2", "AVX-512F", ...]``).

    This is the hardware; optimum's quantization preset (``instruction_set`` in the results)
    is a different thing: the quantizer settings chosen for it.
    """
    have = cpu_flags() if flags is None else flags
    aliases = {"avx512vnni": "avx512_vnni"}  # py-cpuinfo spells some flags without the underscore
    present = {aliases.get(flag, flag) for flag in have}
    return [name for flag, name in INT8_INSTRUCTION_SETS.items() if flag in present]


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


def _package_dir() -> Path:
    return Path(__file__).resolve().parent


def code_digest(module_names: tuple[str, ...] | None = None) -> str:
    """A hash of the quantsweep source that really runs: the named modules or packages, or all of it.

    Keys the cache on the code that computes an entry (the version number stays 0.1.0 while
    the code changes) and identifies an installed wheel, which has no git commit. A name
    that is a package (``quantsweep.tasks``) hashes every module under it, so code that moves
    into a package's modules stays covered; a name that is neither fails loudly.
    """
    folder = _package_dir()
    files = sorted(folder.rglob("*.py")) if module_names is None else _source_files(folder, module_names)
    digest = hashlib.sha256()
    for path in files:
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _source_files(folder: Path, module_names: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for name in module_names:
        relative = name.removeprefix("quantsweep.").replace(".", "/")
        package, module = folder / relative, folder / f"{relative}.py"
        if package.is_dir():
            files.extend(sorted(package.rglob("*.py")))
        elif module.is_file():
            files.append(module)
        else:
            raise FileNotFoundError(f"code_digest: {name!r} is neither a module nor a package of {folder}")
    return files


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def git_commit(package_dir: Path | None = None) -> str | None:
    """The commit of the checkout the running quantsweep code is tracked in, or None.

    None for an installed wheel, even one installed into a ``.venv/`` inside a checkout:
    the checkout's HEAD says nothing about the code in the wheel, and that code is not a
    file git tracks, so it is recognised by asking git whether it tracks this very file.
    """
    folder = package_dir or _package_dir()
    tracked = _git(folder, "ls-files", "--error-unmatch", "--", "__init__.py")
    if tracked is None or tracked.returncode != 0:
        return None
    head = _git(folder, "rev-parse", "HEAD")
    commit = head.stdout.strip() if head is not None and head.returncode == 0 else ""
    if not commit:
        return None
    dirty = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return commit + ("-dirty" if dirty is not None and dirty.stdout.strip() else "")


def installed_from() -> str | None:
    """Where pip installed quantsweep from (PEP 610's direct_url.json), e.g. ``file:///src/quantsweep``."""
    try:
        text = metadata.distribution("quantsweep").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    info = json.loads(text)
    url = str(info.get("url", ""))
    vcs = info.get("vcs_info") or {}
    editable = (info.get("dir_info") or {}).get("editable")
    return (
        url + (f"@{vcs['commit_id']}" if vcs.get("commit_id") else "") + (" (editable)" if editable else "")
    )


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
        int8_instruction_sets=int8_instruction_sets(flags),
        code_sha256=code_digest(),
        installed_from=installed_from(),
    )
