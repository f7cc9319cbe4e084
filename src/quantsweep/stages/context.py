"""What every stage of a job shares: the config, the job folder, the cache, the clock.

One object instead of six arguments, and the one place where a stage's output goes
through the content-addressed cache (:meth:`JobRun.cached`), so that recording the cache
use, logging it and timing the stage are written once.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantsweep.cache import ArtifactCache, CacheUse
from quantsweep.config import RunConfig
from quantsweep.tasks import Task

log = logging.getLogger("quantsweep.job")


class PhaseClock:
    """Seconds spent per stage of a job, for results.json and the sweep-overhead benchmark."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[phase] = round(self.seconds.get(phase, 0.0) + elapsed, 3)


@dataclass
class JobRun:
    """One job in progress: its settings, folder, cache, package versions, clock and cache uses."""

    cfg: RunConfig
    job_dir: Path
    cache: ArtifactCache
    versions: dict[str, str]
    task: Task
    clock: PhaseClock = field(default_factory=PhaseClock)
    uses: dict[str, CacheUse] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(cls, cfg: RunConfig, job_dir: Path) -> JobRun:
        from quantsweep.environment import package_versions
        from quantsweep.tasks import get
        from quantsweep.tasks.checks import check_task

        check_task(cfg)  # a RunConfig built in Python has not met the task's checks yet
        job_dir.mkdir(parents=True, exist_ok=True)
        cache = ArtifactCache(Path(cfg.cache_dir) if cfg.cache else None)
        return cls(cfg, job_dir, cache, package_versions(), get(cfg.task))

    def code(self, modules: tuple[str, ...], whole_task: bool = True) -> tuple[str, ...]:
        """A cached stage's modules and its task's: their source is part of its key.

        The task is its whole folder (rows, encoding, scoring), except for a stage that uses
        only its model class and export name (``whole_task=False``: the folder's ``__init__``),
        so that a change to the scoring does not redo the export.
        """
        from quantsweep.tasks import TASKS

        task = TASKS[self.cfg.task]
        return (*modules, task if whole_task else f"{task}.__init__")

    def packages(self, *names: str) -> dict[str, str | None]:
        """The versions of these packages, as a cache-key part."""
        return {name: self.versions.get(name) for name in names}

    def key(self, kind: str) -> str:
        """The cache key an earlier stage's output was stored under (a part of later keys)."""
        return self.uses[kind].key

    @contextmanager
    def cached(
        self,
        kind: str,
        code: tuple[str, ...],
        parts: dict[str, Any],
        build: Callable[[Path], None],
        what: str,
    ) -> Iterator[Path]:
        """The cache folder of ``kind`` for ``parts`` (plus the source of ``code``), built if missing."""
        from quantsweep.environment import code_digest

        with self.cache.obtain(kind, {**parts, "code": code_digest(code)}, build, self.job_dir) as (
            folder,
            use,
        ):
            yield folder
        self.uses[kind] = use
        if use.hit:
            log.info(
                "%s: from the cache (computed in %.1f s by an earlier job; key %s)",
                what,
                use.seconds,
                use.key[:12],
            )
        elif use.path is not None:
            log.info("%s: computed in %.1f s and cached (key %s)", what, use.seconds, use.key[:12])

    @property
    def wall_seconds(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def place(source: Path, target: Path) -> None:
    """Put a cached file into the job folder: a hard link where possible (no copy), else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
