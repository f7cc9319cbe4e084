"""Stage ``quantize``: the quantized model (optimum's ORTQuantizer) and what it changed in the graph.

Not cached: it is the one thing each job of a sweep does differently, and it takes seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from quantsweep.stages.calibrate import Calibration
from quantsweep.stages.context import JobRun
from quantsweep.stages.load import Inputs
from quantsweep.stages.plan import Plan

if TYPE_CHECKING:
    from quantsweep.export import ExportedModel
    from quantsweep.records import GraphFacts

NAME = "quantize"

log = logging.getLogger("quantsweep.job")


@dataclass(frozen=True)
class Quantized:
    path: Path
    facts: GraphFacts


def run(
    job: JobRun, inputs: Inputs, exported: ExportedModel, plan: Plan, calibration: Calibration | None
) -> Quantized:
    from quantsweep.quantize import graph_facts, quantize_model

    with job.clock(NAME):
        log.info("Quantizing: %s, instruction set %s", plan.qconfig, plan.instruction_set)
        ranges = calibration.ranges if calibration is not None else None
        path = quantize_model(exported.onnx_path, job.job_dir, plan.qconfig, ranges, inputs.model_config)
        facts = graph_facts(
            exported.onnx_path,
            path,
            plan.request.operators,
            plan.excluded,
            plan.exclusion.by_pattern,
            "static" if plan.request.is_static else "dynamic",
        )
    (log.warning if facts.nothing_quantized else log.info)(facts.note)
    return Quantized(path, facts)
