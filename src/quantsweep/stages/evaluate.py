"""Stage ``evaluate``: both models scored on the evaluation split; the original's score cached.

Opens the two ONNX Runtime sessions the ``time`` stage then uses, so that both stages
measure the very sessions a user would create with the job's settings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantsweep.config import RunConfig
from quantsweep.results import TaskScores, atomic_write_text
from quantsweep.stages.context import JobRun
from quantsweep.stages.export import CACHE_KIND as EXPORT
from quantsweep.stages.load import Inputs
from quantsweep.stages.plan import Plan
from quantsweep.stages.quantize import Quantized

if TYPE_CHECKING:
    from quantsweep.export import ExportedModel

NAME = "evaluate"
CACHE_KIND = "original_evaluation"
CODE = (__name__, "quantsweep.data", "quantsweep.evaluate", "quantsweep.sessions")
PACKAGES = ("onnxruntime",)  # and the task's scoring library (Task.PACKAGES)
_EVALUATION_FILE = "evaluation.json"


@dataclass(frozen=True)
class Evaluations:
    original: TaskScores
    quantized: TaskScores
    original_session: Any  # onnxruntime.InferenceSession
    quantized_session: Any
    settings: Any  # quantsweep.sessions.SessionSettings, as the sessions were made


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

        def score(session: Any, what: str) -> TaskScores:
            return job.task.evaluate(
                session, data, encoded, inputs.id2label, cfg.eval_batch_size, inputs.pad_id, what
            )

        def build(folder: Path) -> None:
            result = score(original_session, "evaluate original")
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
        quantized_result = score(quantized_session, "evaluate quantized")
    return Evaluations(original, quantized_result, original_session, quantized_session, settings)
