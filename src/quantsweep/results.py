"""The ``results.json`` of one job: :class:`JobResults`, the records of every stage in one.

The schema is documented in docs/results_schema.md; bump ``SCHEMA_VERSION`` when
a field changes meaning. The records themselves are :mod:`quantsweep.records` (and each
task's score records, in its folder); this top-layer module joins them, because reading a
file back needs the task the job ran (:func:`quantsweep.tasks.of_results`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantsweep.files import RESULTS_FILE, atomic_write_text
from quantsweep.records import (
    Environment,
    EvaluationDrop,
    ExclusionSearchResult,
    ExportFacts,
    GraphFacts,
    QuantizationFacts,
    TaskScores,
    TimingResult,
)
from quantsweep.tasks import DEFAULT_TASK, of_results

# 5: `original`/`quantized` hold the scores of the job's task (config.task); files of
# schema <= 4 are token classification's, the one task there was, and read unchanged.
# 6: exclusion_search's objective, speed, groups, confirmation and resolution, and eval_drop;
# a schema-5 search read today is a fewest_fp32 search without them
# 7: job_digest, the digest of what decides the job's numbers (quantsweep.job_folder)
SCHEMA_VERSION = 7


@dataclass
class JobResults:
    config: dict[str, Any]
    choices: dict[str, str]
    environment: Environment
    export: ExportFacts
    quantization: QuantizationFacts
    graph: GraphFacts
    original: TaskScores
    quantized: TaskScores
    timing: TimingResult
    wall_seconds: float
    schema_version: int = SCHEMA_VERSION
    dataset: dict[str, Any] = field(default_factory=dict)
    # seconds spent per step of the job (load, export, calibrate, quantize, evaluate_*, time)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # per cached piece of work (export, original_evaluation, calibration): key, hit, path, seconds
    cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    # exclusion=auto only: how the nodes kept in fp32 were chosen
    exclusion_search: ExclusionSearchResult | None = None
    # exclusion=auto only: the budget metric's drop on the evaluation split, with its bound
    eval_drop: EvaluationDrop | None = None
    # quantsweep-reproduce only: the job folder or MLflow run id this job reran
    reproduces: str | None = None
    # the digest of what decides this job's numbers: the config less how-to-run keys, the code,
    # the package versions, the preset (quantsweep.job_folder); None in files of schema <= 6
    job_digest: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobResults:
        """A ``results.json`` read back into its records (any schema version: older ones lack only defaulted fields)."""
        task = of_results(data)
        search = data.get("exclusion_search")
        eval_drop = data.get("eval_drop")
        return cls(
            **{
                **data,
                "environment": Environment(**data["environment"]),
                "export": ExportFacts(**data["export"]),
                "quantization": QuantizationFacts(**data["quantization"]),
                "graph": GraphFacts(**data["graph"]),
                "original": task.scores_from_dict(data["original"]),
                "quantized": task.scores_from_dict(data["quantized"]),
                "timing": TimingResult.from_dict(data["timing"]),
                "exclusion_search": ExclusionSearchResult.from_dict(search) if search else None,
                "eval_drop": EvaluationDrop(**eval_drop) if eval_drop else None,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def task(self) -> str:
        return str(self.config.get("task", DEFAULT_TASK))

    def write(self, job_dir: Path) -> Path:
        path = job_dir / RESULTS_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path
