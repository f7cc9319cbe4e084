"""Stage ``assemble``: every stage's output as one :class:`~quantsweep.results.JobResults`.

What results.json holds, gathered in one place; the caller writes it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from quantsweep.records import ExclusionSearchResult
from quantsweep.results import JobResults
from quantsweep.stages.calibrate import Calibration
from quantsweep.stages.context import JobRun
from quantsweep.stages.evaluate import Evaluations
from quantsweep.stages.load import Inputs
from quantsweep.stages.plan import Plan
from quantsweep.stages.quantize import Quantized

if TYPE_CHECKING:
    from quantsweep.export import ExportedModel
    from quantsweep.records import TimingResult

NAME = "assemble"


def run(
    job: JobRun,
    config: dict[str, Any],
    choices: dict[str, str],
    inputs: Inputs,
    exported: ExportedModel,
    plan: Plan,
    calibration: Calibration | None,
    search: ExclusionSearchResult | None,
    quantized: Quantized,
    evaluations: Evaluations,
    timing: TimingResult,
) -> JobResults:
    from quantsweep.environment import collect_environment
    from quantsweep.quantize import quantization_facts

    cfg = job.cfg
    with job.clock(NAME):
        environment = collect_environment()
    return JobResults(
        config=config,
        choices=choices,
        environment=environment,
        export=exported.facts,
        quantization=quantization_facts(
            plan.qconfig,
            plan.instruction_set,
            plan.detected,
            cfg.calibration if cfg.is_static else None,
            calibration.samples if calibration is not None else None,
        ),
        graph=quantized.facts,
        original=evaluations.original,
        quantized=evaluations.quantized,
        timing=timing,
        wall_seconds=job.wall_seconds,
        dataset=dataset_facts(cfg.dataset.calibration_split, inputs, plan.max_length),
        phase_seconds=job.clock.seconds,
        cache={kind: asdict(use) for kind, use in job.uses.items()},
        exclusion_search=search,
        eval_drop=evaluations.drop,
    )


def dataset_facts(calibration_split: str | None, inputs: Inputs, max_length: int) -> dict[str, Any]:
    """Which rows each part of the job read: source, split, count and fingerprint."""
    evaluation, calibration, holdout = inputs.eval_data, inputs.calibration_data, inputs.holdout_data
    return {
        "source": evaluation.source,
        "eval_split": evaluation.split,
        "eval_samples": len(evaluation),
        "eval_fingerprint": evaluation.fingerprint,
        # rows longer than this (in sub-tokens) are cut (tokens: the cut-off words count as misses)
        "eval_max_length": max_length,
        "label_names": evaluation.label_names,
        "calibration_split": calibration_split if calibration is not None else None,
        "calibration_samples": len(calibration) if calibration is not None else None,
        "calibration_fingerprint": calibration.fingerprint if calibration is not None else None,
        "holdout_samples": len(holdout) if holdout is not None else None,
        "holdout_fingerprint": holdout.fingerprint if holdout is not None else None,
    }
