"""The files of a job folder, and how they are written: atomically, and readable by all.

A bottom-layer module: every layer names a job's files and writes them, so the names live
once here and import nothing of quantsweep. A crash leaves either the old file or none,
never half of one, and a job's ``results.json`` exists only once the job has finished.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
# written instead of results.json when a job fails: "<ExceptionType>: <message>"
ERROR_FILE = "error.txt"
# exclusion=auto only: the chosen nodes as a config group file, and the search's plot
EXCLUSION_FILE = "exclusion.yaml"
SENSITIVITY_PLOT = "sensitivity.png"
# the optimized fp32 model and the quantized one (ONNX external data, if any, beside them
# as <name>.data or <name>_data)
ONNX_FILE = "model.onnx"
QUANTIZED_FILE = "model_quantized.onnx"
# a sweep folder's model card, CSV and plots (quantsweep.report writes them; the Hydra callback
# and MLflow tracking find them by name)
CARD_FILE = "README.md"
CSV_FILE = "results.csv"
PARETO_PLOT = "f1_vs_speedup.png"
LATENCY_PLOT = "latency_vs_length.png"
# Hydra's record of a sweep's config, in the sweep folder
MULTIRUN_YAML = "multirun.yaml"
# written into a sweep folder when its tracking server was found unreachable, so that
# jobs run by a launcher in other processes skip MLflow too instead of waiting on it
UNREACHABLE_FILE = "mlflow_unreachable.json"
# in a job folder: where a rerun moves the previous run's files, and the lock of a running job
SUPERSEDED_DIR = "superseded"
LOCK_FILE = ".quantsweep.lock"
# every file a job writes into its folder: what a rerun moves aside, and nothing else
JOB_FILES = (RESULTS_FILE, ERROR_FILE, ONNX_FILE, QUANTIZED_FILE, EXCLUSION_FILE, SENSITIVITY_PLOT)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    # mkstemp creates files readable by the owner only; results are meant to be shared
    current = os.umask(0)
    os.umask(current)
    return current


def read_results(job_dir: Path) -> dict[str, Any]:
    """The raw ``results.json`` of a finished job (:meth:`JobResults.from_dict` types it)."""
    with (job_dir / RESULTS_FILE).open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data
