"""A content-addressed cache for the work every job of a sweep would otherwise repeat.

An entry is a folder named by the SHA-256 of its key (a JSON-able mapping of everything
its content depends on), under ``<root>/<kind>/``. It appears by an atomic rename of a
fully written temporary folder, so an entry that exists is complete: a crash or a kill
leaves at most a hidden temporary folder, which the next writer of that key removes.

Writers of one key take an exclusive ``flock`` on ``<digest>.lock`` while they build, so
two jobs racing for the same key (a parallel launcher) do the work once: the second
waits, then reads the first one's entry. The operating system releases the lock of a
process that dies, and the waiter then builds the entry itself.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantsweep.files import atomic_write_text

log = logging.getLogger(__name__)

# Bump when the meaning of a cached entry changes (what export, evaluation or
# calibration compute for the same key), so older entries stop matching.
CACHE_FORMAT = 1
ENTRY_FILE = "entry.json"


def digest_of(parts: dict[str, Any]) -> str:
    """The key of ``parts``: stable across processes and machines (sorted JSON)."""
    text = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks (model files are hundreds of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_digest(folder: Path) -> str:
    """The content of a local model folder: every file's relative path and bytes.

    Hidden files and folders (``.cache``, ``.git``) are left out: they hold download
    bookkeeping, not the model.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(relative.as_posix().encode("utf-8") + b"\0" + file_digest(path).encode() + b"\0")
    return digest.hexdigest()


@dataclass
class CacheUse:
    """How one piece of work was obtained, for ``results.json`` and the log."""

    kind: str
    key: str
    # True: read from the cache; False: computed by this job (and stored, if enabled)
    hit: bool
    # the entry's folder; None when the cache is off
    path: str | None
    # what computing it cost, when it was computed (also for hits: the original cost)
    seconds: float


class ArtifactCache:
    """Entries under ``root``; ``root=None`` turns caching off (every call computes)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root.resolve() if root is not None else None

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def entry_path(self, kind: str, key: str) -> Path | None:
        """The folder of a complete entry, or None."""
        if self.root is None:
            return None
        path = self.root / kind / key
        return path if (path / ENTRY_FILE).is_file() else None

    @contextmanager
    def obtain(
        self,
        kind: str,
        parts: dict[str, Any],
        build: Callable[[Path], None],
        scratch: Path,
    ) -> Iterator[tuple[Path, CacheUse]]:
        """The folder holding the entry for ``parts``, built with ``build(folder)`` on a miss.

        ``build`` writes its files into the folder it is given. With the cache off it
        writes into a temporary folder under ``scratch``, removed when the block ends.
        """
        key = digest_of(parts)
        if self.root is None:
            folder = Path(tempfile.mkdtemp(dir=scratch, prefix=f".{kind}-"))
            try:
                seconds = _timed(build, folder)
                yield folder, CacheUse(kind=kind, key=key, hit=False, path=None, seconds=seconds)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            return
        found = self.entry_path(kind, key)
        use: CacheUse | None = None
        if found is None:
            with self._locked(kind, key):
                # whoever held the lock may have built it while we waited
                found = self.entry_path(kind, key)
                if found is None:
                    found, use = self._build(kind, key, parts, build)
        if use is None:
            entry = json.loads((found / ENTRY_FILE).read_text(encoding="utf-8"))
            use = CacheUse(kind=kind, key=key, hit=True, path=str(found), seconds=float(entry["seconds"]))
        yield found, use

    def _build(
        self, kind: str, key: str, parts: dict[str, Any], build: Callable[[Path], None]
    ) -> tuple[Path, CacheUse]:
        assert self.root is not None
        final = self.root / kind / key
        tmp = Path(tempfile.mkdtemp(dir=self.root / kind, prefix=f".{key}."))
        try:
            seconds = _timed(build, tmp)
            # read-only: job folders hard-link these files, and a write through a link
            # would change the entry under every other job that uses it
            for path in tmp.rglob("*"):
                if path.is_file():
                    path.chmod(path.stat().st_mode & ~0o222)
            entry = {"kind": kind, "key": key, "parts": parts, "seconds": seconds, "created": time.time()}
            atomic_write_text(tmp / ENTRY_FILE, json.dumps(entry, indent=2, default=str) + "\n")
            if final.exists():  # an incomplete folder cannot exist (rename is atomic); a foreign one can
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final, CacheUse(kind=kind, key=key, hit=False, path=str(final), seconds=seconds)

    @contextmanager
    def _locked(self, kind: str, key: str) -> Iterator[None]:
        assert self.root is not None
        folder = self.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"{key}.lock").open("a") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info(
                    "Waiting for another job that is computing the same %s (cache key %s)", kind, key[:12]
                )
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                # temporary folders of this key left by a writer that was killed
                for stale in folder.glob(f".{key}.*"):
                    shutil.rmtree(stale, ignore_errors=True)
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _timed(build: Callable[[Path], None], folder: Path) -> float:
    start = time.perf_counter()
    build(folder)
    return round(time.perf_counter() - start, 3)
