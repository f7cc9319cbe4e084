"""Stage ``export``: the fp32 model as ONNX (optimum's exporter, ONNX Runtime's optimizer), cached.

The export is the same for every job of a sweep on one model, so it is computed once and
hard-linked into each job folder.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantsweep.config import RunConfig
from quantsweep.stages.context import JobRun, place
from quantsweep.stages.load import Inputs

if TYPE_CHECKING:
    from quantsweep.export import ExportedModel

NAME = CACHE_KIND = "export"
CODE = (__name__, "quantsweep.export")
# the packages whose versions can change an export (and so everything computed from it)
PACKAGES = ("quantsweep", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime")

log = logging.getLogger("quantsweep.job")


def key_parts(cfg: RunConfig, model: dict[str, Any], packages: Mapping[str, str | None]) -> dict[str, Any]:
    """What an export depends on: the model (:func:`model_identity`), task, opset, optimization, packages."""
    return {
        "model": model,
        "task": cfg.task,
        "opset": cfg.framework_args.opset,
        "optimization_level": cfg.framework_args.optimization_level,
        "packages": dict(packages),
    }


def model_identity(
    model_name_or_path: str, resolved_revision: str | None, revision: str | None
) -> dict[str, Any]:
    """What a model's export depends on: a local folder's content, or a Hub id at its resolved commit."""
    from quantsweep.cache import folder_digest

    local = Path(model_name_or_path)
    if local.is_dir():
        return {"local_content": folder_digest(local)}
    return {"hub_id": model_name_or_path, "revision": resolved_revision or revision}


def run(job: JobRun, inputs: Inputs) -> ExportedModel:
    from quantsweep.export import export_model, load_exported
    from quantsweep.files import ONNX_FILE

    cfg = job.cfg
    model = model_identity(
        cfg.model_name_or_path, getattr(inputs.model_config, "_commit_hash", None), cfg.revision
    )

    def build(folder: Path) -> None:
        log.info(
            "Exporting %s to ONNX (opset %s)", cfg.model_name_or_path, cfg.framework_args.opset or "default"
        )
        export_model(
            cfg.model_name_or_path,
            cfg.revision,
            cfg.task,
            cfg.framework_args.opset,
            cfg.framework_args.optimization_level,
            folder,
        )

    with job.clock(NAME):
        parts = key_parts(cfg, model, job.packages(*PACKAGES))
        with job.cached(CACHE_KIND, job.code(CODE, whole_task=False), parts, build, "fp32 export") as folder:
            place(folder / ONNX_FILE, job.job_dir / ONNX_FILE)
            exported = replace(load_exported(folder), onnx_path=job.job_dir / ONNX_FILE)
    log.info("Graph optimization: %s", exported.facts.optimization_applied)
    return exported
