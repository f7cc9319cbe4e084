"""Stage ``calibrate``: activation ranges for static quantization, cached.

The ranges depend on the export, the calibration rows and settings, and the operators,
not on the exclusions: every static job of a sweep on one model and sample shares them.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantsweep.config import RunConfig
from quantsweep.stages.context import JobRun
from quantsweep.stages.export import CACHE_KIND as EXPORT
from quantsweep.stages.load import Inputs
from quantsweep.stages.plan import Plan

if TYPE_CHECKING:
    from quantsweep.export import ExportedModel

NAME = "calibrate"
CACHE_KIND = "calibration"
CODE = (__name__, "quantsweep.batching", "quantsweep.data", "quantsweep.quantize")

log = logging.getLogger("quantsweep.job")


@dataclass(frozen=True)
class Calibration:
    ranges: Any  # ONNX Runtime's TensorsData
    samples: int  # the rows fed


def key_parts(cfg: RunConfig, export_key: str, data_fingerprint: str, plan: Plan) -> dict[str, Any]:
    """Export, rows, length, calibration settings, operators and the activations' symmetry."""
    return {
        "export": export_key,
        "data": data_fingerprint,
        "max_length": plan.max_length,
        "calibration": {k: getattr(v, "value", v) for k, v in asdict(cfg.calibration).items()},
        "operators": sorted(plan.request.operators),
        "symmetric": bool(plan.qconfig.activations_symmetric),
    }


def run(job: JobRun, inputs: Inputs, exported: ExportedModel, plan: Plan) -> Calibration | None:
    """The ranges, or None for dynamic quantization (which calibrates nothing)."""
    from quantsweep.quantize import CalibrationBatches, calibrate, load_ranges, save_ranges

    cfg, data = job.cfg, inputs.calibration_data
    if data is None:
        return None

    def build(folder: Path) -> None:
        batches = CalibrationBatches(
            job.task.encode(inputs.tokenizer, data, plan.max_length),
            cfg.calibration.batch_size,
            inputs.pad_id,
            exported.input_names,
        )
        log.info("Calibrating (%s) on %d %s", cfg.calibration.method.value, len(data), job.task.ROWS)
        computed = calibrate(
            exported.onnx_path,
            batches,
            cfg.calibration,
            plan.request.operators,
            symmetric=plan.qconfig.activations_symmetric,
        )
        save_ranges(computed, folder, batches.samples_fed)

    with job.clock(NAME):
        parts = key_parts(cfg, job.key(EXPORT), data.fingerprint, plan)
        with job.cached(CACHE_KIND, job.code(CODE), parts, build, "Calibration statistics") as folder:
            ranges, samples = load_ranges(folder)
    return Calibration(ranges, samples)
