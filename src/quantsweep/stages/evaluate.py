"""Stage ``evaluate``: both models scored on the evaluation split; the original's score cached.

Each model makes one pass, giving its scores and the per-row counts an ``exclusion=auto``
job's evaluation-split bound resamples; the original's counts are cached with its scores.

Opens the two ONNX Runtime sessions the ``time`` stage then uses, so that both stages
measure the very sessions a user would create with the job's settings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantsweep.config import RunConfig
from quantsweep.files import atomic_write_text
from quantsweep.records import EvaluationDrop, TaskScores
from quantsweep.stages.context import JobRun
from quantsweep.stages.export import CACHE_KIND as EXPORT
from quantsweep.stages.load import Inputs
from quantsweep.stages.plan import Plan
from quantsweep.stages.quantize import Quantized

if TYPE_CHECKING:
    from quantsweep.export import ExportedModel

NAME = "evaluate"
CACHE_KIND = "original_evaluation"
CODE = (__name__, "quantsweep.batching", "quantsweep.data", "quantsweep.sessions")
PACKAGES = ("onnxruntime",)  # and the task's scoring library (Task.PACKAGES)
_EVALUATION_FILE = "evaluation.json"
# per row, the counts exclusion=auto's bootstrap resamples: its evaluation-split bound needs
# the original's without a second pass of the original model
_COUNTS_FILE = "counts.npy"


@dataclass(frozen=True)
class Evaluations:
    original: TaskScores
    quantized: TaskScores
    original_session: Any  # onnxruntime.InferenceSession
    quantized_session: Any
    settings: Any  # quantsweep.sessions.SessionSettings, as the sessions were made
    # exclusion=auto only: the budget metric's drop on these rows and its bootstrap bound
    drop: EvaluationDrop | None = None


def key_parts(
    cfg: RunConfig,
    export_key: str,
    data_fingerprint: str,
    max_length: int,
    packages: Mapping[str, str | None],
) -> dict[str, Any]:
    """The fp32 model (its export), the rows, the length, the batch size and the scoring packages."""
    return {
        "export": export_key,
        "data": data_fingerprint,
        "max_length": max_length,
        "batch_size": cfg.eval_batch_size,
        "packages": dict(packages),
    }


def run(
    job: JobRun, inputs: Inputs, exported: ExportedModel, quantized: Quantized, plan: Plan
) -> Evaluations:
    from quantsweep.sessions import SessionSettings, create_session

    cfg, data = job.cfg, inputs.eval_data
    with job.clock(NAME):
        settings = SessionSettings.for_threads(cfg.benchmark.threads)
        original_session = create_session(exported.onnx_path, settings)
        quantized_session = create_session(quantized.path, settings)
        encoded = job.task.encode(inputs.tokenizer, data, plan.max_length)

        def score(session: Any, what: str) -> tuple[TaskScores, np.ndarray]:
            return job.task.evaluate(
                session, data, encoded, inputs.id2label, cfg.eval_batch_size, inputs.pad_id, what
            )

        def build(folder: Path) -> None:
            result, counts = score(original_session, "evaluate original")
            np.save(folder / _COUNTS_FILE, counts)
            atomic_write_text(folder / _EVALUATION_FILE, json.dumps(asdict(result), indent=1) + "\n")

        parts = key_parts(
            cfg,
            job.key(EXPORT),
            data.fingerprint,
            plan.max_length,
            job.packages(*PACKAGES, *job.task.PACKAGES),
        )
        with job.cached(CACHE_KIND, job.code(CODE), parts, build, "fp32 evaluation") as folder:
            original = job.task.scores_from_dict(
                json.loads((folder / _EVALUATION_FILE).read_text(encoding="utf-8"))
            )
            original_counts = np.load(folder / _COUNTS_FILE)
        quantized_result, quantized_counts = score(quantized_session, "evaluate quantized")
        drop = budget_drop(job, (original_counts, quantized_counts))
    return Evaluations(original, quantized_result, original_session, quantized_session, settings, drop)


def budget_drop(job: JobRun, counts: tuple[np.ndarray, np.ndarray]) -> EvaluationDrop | None:
    """exclusion=auto: the drop its budget is about, on the evaluation split, bounded as the search bounds its own.

    From the per-row counts of the passes that scored both models (the original's from
    its cache entry); other jobs have no budget and skip it.
    """
    from quantsweep.exclusion_search.statistics import drop_bound, within_budget

    cfg, task = job.cfg, job.task
    if not cfg.exclusion.auto:
        return None
    metric = task.metric_from_counts
    drop = float(metric(counts[0].sum(axis=0)) - metric(counts[1].sum(axis=0)))
    bound = drop_bound(counts[0], counts[1], cfg.exclusion.confidence, cfg.seed, metric=metric)
    return EvaluationDrop(
        metric=task.BUDGET_METRIC,
        rows=len(counts[0]),
        drop=round(drop, 6),
        bound=round(bound, 6),
        confidence=cfg.exclusion.confidence,
        meets_budget=within_budget(bound, cfg.exclusion.max_f1_drop),
    )
