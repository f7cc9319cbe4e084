"""A job folder's claims: which run its ``results.json`` describes, and who may write it.

Hydra writes a job's ``.hydra/`` before the job starts, so a folder reused with another
config, other code or another CPU preset would otherwise hold old numbers under a new
config. Three rules keep a folder honest, and they live here together because each
needs the others:

- **identity**: a job's digest covers everything that changes what it computes or
  measures (the resolved config less the keys that say how to run, the quantsweep source,
  the tracked package versions, the instruction-set preset ``auto`` resolves to). A
  folder's results are reused only for the same digest; otherwise the differing keys are
  named and the job runs again.
- **superseding**: before a rerun does any work, the previous run's files move to
  ``superseded/<time>/`` (``results.json`` first, so that the folder stops claiming a
  finished run at once; through a ``.partial`` folder that the next start completes, so a
  kill at any point loses nothing of the old run and never leaves its results beside new
  models). Only the files a job writes move (``results.JOB_FILES``); others are left alone.
- **lock**: one process at a time runs a folder's job; a second one is refused and told
  which process holds it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from quantsweep.config import ConfigError, flatten, is_how_to_run
from quantsweep.files import (
    JOB_FILES,
    LOCK_FILE,
    ONNX_FILE,
    QUANTIZED_FILE,
    RESULTS_FILE,
    SUPERSEDED_DIR,
    atomic_write_text,
    read_results,
)

log = logging.getLogger("quantsweep.job")

SAVED_CONFIG = Path(".hydra") / "config.yaml"
_PARTIAL = ".partial"


def job_identity(
    config: dict[str, Any],
    code_sha256: str | None,
    packages: dict[str, str],
    instruction_set: str | None,
) -> dict[str, Any]:
    """What decides a job's numbers, as flat ``key -> value``: compared key by key across runs."""
    flat = flatten(config, whole=("data_keys", "data_files"))
    # `auto` and the preset it resolves to are the same job: the preset below stands for both
    flat.pop("quantization.instruction_set", None)
    identity: dict[str, Any] = {key: value for key, value in flat.items() if not is_how_to_run(key)}
    identity["code (quantsweep source digest)"] = code_sha256
    identity["quantization preset (instruction set)"] = instruction_set
    identity.update({f"package {name}": version for name, version in sorted(packages.items())})
    return identity


def identity_of_run(config: dict[str, Any]) -> dict[str, Any]:
    """The identity of a job about to run here, from its resolved config and this machine."""
    from quantsweep.environment import code_digest, detect_instruction_set, package_versions

    preset = str(flatten(config).get("quantization.instruction_set", "auto"))
    return job_identity(
        config,
        code_digest(),
        package_versions(),
        detect_instruction_set() if preset == "auto" else preset,
    )


def identity_of_results(results: dict[str, Any]) -> dict[str, Any]:
    """The identity of the run a ``results.json`` records (any schema: missing facts compare as None)."""
    environment = results.get("environment") or {}
    return job_identity(
        results.get("config") or {},
        environment.get("code_sha256"),
        environment.get("packages") or {},
        (results.get("quantization") or {}).get("instruction_set"),
    )


def digest(identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def differences(old: dict[str, Any], new: dict[str, Any], limit: int = 6) -> str:
    """The keys whose values differ, as ``key: old -> new``, the first ``limit`` of them."""
    changed = [key for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]
    shown = [f"{key}: {_short(old.get(key))} -> {_short(new.get(key))}" for key in changed[:limit]]
    more = f" and {len(changed) - limit} more" if len(changed) > limit else ""
    return "; ".join(shown) + more


def _short(value: Any) -> str:
    text = "(absent)" if value is None else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class JobLockedError(RuntimeError):
    """Another process is running this job folder's job; the message is for the user as is."""


@contextlib.contextmanager
def locked(job_dir: Path) -> Iterator[None]:
    """Hold the job folder's lock for the block, or raise :class:`JobLockedError` at once.

    An ``flock``: the kernel releases it when its holder exits, killed or not, so a crash
    never leaves a folder locked. The file says who holds it, for the refusal's message.
    """
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / LOCK_FILE
    with path.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise JobLockedError(
                f"The job folder {job_dir} is in use: {holder} is running its job, and two runs of one "
                "folder would contend for the CPU in their timings and overwrite each other's files. "
                "This run is refused and leaves the folder alone. Wait for that run to end (rerunning the "
                "same command then skips the finished job), or give this run its own folder "
                "(hydra.run.dir, or hydra.sweep.dir for a sweep)."
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            handle.write(f"process {os.getpid()} on {socket.gethostname()} (since {started})\n")
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class Previous:
    """What a job folder holds before its job runs."""

    results: dict[str, Any] | None  # a finished run's results.json (None: none, or unreadable)
    reusable: bool  # those results are this run's: skip the job
    reason: str  # why the folder's files are set aside, for the log ("" when reusable or empty)

    @property
    def to_supersede(self) -> bool:
        return not self.reusable and bool(self.reason)


def previous_run(job_dir: Path, identity: dict[str, Any], force: bool) -> Previous:
    """Whether the folder's results can stand for this run, and if not, why its files go aside."""
    path = job_dir / RESULTS_FILE
    if not path.is_file():
        leftovers = _outputs(job_dir)
        reason = (
            f"an unfinished or failed run left {', '.join(p.name for p in leftovers[:4])}"
            if leftovers
            else ""
        )
        return Previous(None, False, reason)
    try:
        results = read_results(job_dir)
    except (OSError, ValueError) as error:
        return Previous(None, False, f"its {RESULTS_FILE} cannot be read ({error})")
    recorded = results.get("job_digest") or digest(identity_of_results(results))
    if force:
        return Previous(results, False, "force=true")
    if recorded == digest(identity):
        return Previous(results, True, "")
    changed = differences(identity_of_results(results), identity)
    return Previous(results, False, f"they were computed with another configuration ({changed})")


def supersede(job_dir: Path, previous: Previous) -> Path:
    """Move the previous run's files to ``superseded/<time>/`` before any new work; returns it.

    ``results.json`` moves first, so from the first rename on the folder no longer claims a
    finished run. The files gather in a ``.partial`` folder renamed when complete; a kill in
    between leaves that folder for :func:`finish_superseding` at the next start, when every
    file but the kept ones is still the old run's (no new work has begun).
    """
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H-%M-%S.%fZ")
    partial = job_dir / SUPERSEDED_DIR / f"{stamp}{_PARTIAL}"
    partial.mkdir(parents=True)
    if previous.results is not None:
        # Hydra has already overwritten .hydra/ with this run's config: keep the old one beside its results
        atomic_write_text(partial / SAVED_CONFIG, _config_yaml(previous.results))
    # the log goes with its run; Hydra's handler appends to the live file, so it is emptied, not moved
    for log_file in job_dir.glob("*.log"):
        shutil.copy2(log_file, partial / log_file.name)
        with log_file.open("r+b") as handle:
            handle.truncate(0)
    return _complete(job_dir, partial)


def _config_yaml(results: dict[str, Any]) -> str:
    return yaml.safe_dump(results.get("config") or {}, sort_keys=False)


def align_saved_config(job_dir: Path) -> None:
    """Make ``.hydra/config.yaml`` the config of the finished run still in the folder, if one is.

    Hydra saves a run's config before any job code runs; a run refused or stopped before it
    took the folder over (a config error, a held lock, Ctrl-C) would otherwise leave its
    config beside another run's results.
    """
    try:
        results = read_results(job_dir)
    except (OSError, ValueError):
        return
    config = job_dir / SAVED_CONFIG
    if config.parent.is_dir():
        atomic_write_text(config, _config_yaml(results))


def make_room(job_dir: Path, incoming_results: Path) -> Path | None:
    """Before a run computed elsewhere (a SageMaker job brought home) is copied into ``job_dir``,
    move aside the files of any other run there, so that none of them stays beside it.

    Bringing the same run home twice (``quantsweep-sagemaker fetch`` after the launcher)
    moves nothing: its ``results.json`` is byte for byte the one already there.
    """
    current = job_dir / RESULTS_FILE
    if (
        current.is_file()
        and incoming_results.is_file()
        and current.read_bytes() == incoming_results.read_bytes()
    ):
        return None
    finish_superseding(job_dir)
    results: dict[str, Any] | None = None
    if current.is_file():
        try:
            results = read_results(job_dir)
        except (OSError, ValueError):
            results = None
    if not _outputs(job_dir):
        return None
    return supersede(job_dir, Previous(results, False, "replaced by a run brought home"))


def finish_superseding(job_dir: Path) -> list[Path]:
    """Complete the moves a killed run left half done (before any new work starts)."""
    folder = job_dir / SUPERSEDED_DIR
    if not folder.is_dir():
        return []
    return [_complete(job_dir, partial) for partial in sorted(folder.glob(f"*{_PARTIAL}"))]


def _is_output(name: str) -> bool:
    """A file a job writes: one of JOB_FILES, a model's external data, an atomic write's leftover."""
    return (
        name in JOB_FILES
        or name.startswith((f"{ONNX_FILE}.", f"{ONNX_FILE}_", f"{QUANTIZED_FILE}.", f"{QUANTIZED_FILE}_"))
        or any(name.startswith(f".{file}.") and name.endswith(".tmp") for file in JOB_FILES)
    )


def _outputs(job_dir: Path) -> list[Path]:
    """The files of a run in the folder, results.json first; anything else there is not quantsweep's to move."""
    if not job_dir.is_dir():
        return []
    found = [p for p in job_dir.iterdir() if p.is_file() and _is_output(p.name)]
    return sorted(found, key=lambda p: (p.name != RESULTS_FILE, p.name))


def _complete(job_dir: Path, partial: Path) -> Path:
    for path in _outputs(job_dir):
        os.replace(path, partial / path.name)
    final = partial.with_name(partial.name.removesuffix(_PARTIAL))
    suffix = 1
    while final.exists():  # only if the clock stepped back: never replace a superseded run
        final = partial.with_name(f"{partial.name.removesuffix(_PARTIAL)}-{suffix}")
        suffix += 1
    partial.rename(final)
    return final


def restore_saved_config(files: dict[Path, str]) -> None:
    """Write back the config files Hydra saved for this run, if another run has since replaced them.

    A second run of the same folder is refused by the lock, but Hydra saved its ``.hydra/``
    before the refusal: the running job puts its own back when it ends, finished or failed.
    """
    for path, text in files.items():
        try:
            current = path.read_text(encoding="utf-8")
        except OSError:
            current = None
        if current != text:
            atomic_write_text(path, text)


def check_writable(folder: Path, key: str, allowed: str) -> None:
    """Refuse, naming ``key``, a folder this process cannot create or write in, before any work.

    Tried rather than predicted (``os.access`` says yes to root on a read-only mount): a
    temporary file is opened in the folder, or in its nearest existing parent when it does
    not exist yet, so that the check itself creates nothing.
    """
    existing = folder.absolute()
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(existing))
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"Invalid configuration: `{key}` is {str(folder)!r}, and quantsweep cannot write there "
            f"({reason}, trying to write in {existing}); {allowed}"
        ) from None
