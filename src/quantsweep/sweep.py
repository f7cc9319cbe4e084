"""A sweep folder read back: its jobs, what they share and what they vary.

The one reader of a sweep's job folders (``.hydra/config.yaml``, ``results.json``,
``error.txt``) that the card, the plots and the CSV share, so that none of them imports
another to learn what a sweep holds. It reads only files, so local and remote sweeps
read the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from quantsweep.config import GROUPS, flatten, is_how_to_run
from quantsweep.files import ERROR_FILE, RESULTS_FILE
from quantsweep.results import JobResults
from quantsweep.tasks import DEFAULT_TASK, Task, get


@dataclass
class JobRecord:
    name: str
    path: Path
    config: dict[str, Any]  # flattened: dotted keys
    results: JobResults | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.results is not None


@dataclass
class Sweep:
    path: Path
    jobs: list[JobRecord]
    fixed: dict[str, Any] = field(default_factory=dict)
    benchmarked: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def finished(self) -> list[JobRecord]:
        return [job for job in self.jobs if job.ok]

    @property
    def failed(self) -> list[JobRecord]:
        return [job for job in self.jobs if not job.ok]

    @property
    def task(self) -> Task:
        """The task of every job (load_sweep refuses a sweep that mixes tasks)."""
        return get(str(self.fixed.get("task", DEFAULT_TASK)))

    def label(self, job: JobRecord) -> list[str]:
        return [fmt(job.config.get(key)) for key in self.benchmarked]


def fmt(value: Any) -> str:
    """Values as the seed card writes them: strings bare, lists and mappings as Python literals."""
    if isinstance(value, str):
        return value
    if value is None:
        return "None"
    return repr(value)


def load_sweep(path: Path) -> Sweep:
    jobs: list[JobRecord] = []
    for folder in sorted(p for p in path.iterdir() if (p / ".hydra" / "config.yaml").is_file()):
        config = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text(encoding="utf-8")) or {}
        results = None
        if (folder / RESULTS_FILE).is_file():
            results = JobResults.from_dict(json.loads((folder / RESULTS_FILE).read_text(encoding="utf-8")))
            config = results.config
        error = None
        if results is None:
            error_file = folder / ERROR_FILE
            error = (
                error_file.read_text(encoding="utf-8").strip()
                if error_file.is_file()
                else "no results.json: the job did not finish"
            )
        # every config has had `task`; a file without one could only be token classification's
        config = {"task": DEFAULT_TASK, **config}
        # data_keys is a small mapping that reads better whole, as the seed card shows it
        flat = {k: v for k, v in flatten(config, whole=("data_keys",)).items() if not is_how_to_run(k)}
        jobs.append(JobRecord(folder.name, folder, flat, results, error))
    if not jobs:
        raise FileNotFoundError(f"{path} holds no job folders (subfolders with .hydra/config.yaml).")
    sweep = Sweep(path, jobs)
    keys = sorted({k for job in jobs for k in job.config}, key=_key_order)
    for key in keys:
        values: list[Any] = []
        for job in jobs:
            value = job.config.get(key)
            if value not in values:
                values.append(value)
        if len(values) == 1:
            sweep.fixed[key] = values[0]
        else:
            sweep.benchmarked[key] = values
    if "task" in sweep.benchmarked:
        raise ValueError(
            f"{path} holds jobs of the tasks {sweep.benchmarked['task']}; a card compares one task's metrics, "
            "so sweep each task into a folder of its own (hydra.sweep.dir)."
        )
    return sweep


def _key_order(key: str) -> tuple[int, str]:
    head = key.split(".", 1)[0]
    return (GROUPS.index(head) if head in GROUPS else len(GROUPS), key)
