"""A job's ONNX models as MLflow models, uploaded once per experiment and content.

Every job of a sweep has the same fp32 model, and a rerun the same quantized one: the
first run uploads a model and later runs point at that upload, so a sweep of eight jobs
stores its original model once, not eight times.
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path
from typing import Any

# the package's one logger ("quantsweep.tracking"): its lines keep the name they had in the logs
log = logging.getLogger(__package__)


def _signature(model: Any) -> Any:
    """The MLflow signature read from the ONNX graph's own inputs and outputs."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec
    from onnx import helper

    initializers = {i.name for i in model.graph.initializer}

    def spec(value: Any) -> Any:
        tensor = value.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        return TensorSpec(dtype, shape, value.name)

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([spec(v) for v in model.graph.output]))


def log_onnx_model(client: Any, experiment_id: str, path: Path, label: str) -> str:
    """Log an ONNX file as an MLflow model of the active run, once per experiment and content.

    Every job of a sweep has the same fp32 model: it is uploaded by the first job, and
    later runs point at that upload (tags ``quantsweep.<label>_uri`` and ``_sha256``).
    """
    import mlflow
    import onnx

    from quantsweep.cache import file_digest

    digest = file_digest(path)
    sha_tag, uri_tag = f"quantsweep.{label}_sha256", f"quantsweep.{label}_uri"
    earlier = client.search_runs(
        [experiment_id], filter_string=f"tags.`{sha_tag}` = '{digest}'", max_results=5
    )
    uri = next((run.data.tags[uri_tag] for run in earlier if uri_tag in run.data.tags), None)
    if uri is None:
        model = onnx.load(str(path))
        info = mlflow.onnx.log_model(
            model,
            name=label,
            signature=_signature(model),
            save_as_external_data=False,
            # named, not inferred: inference runs a subprocess that loads the model (4 s per model)
            pip_requirements=[f"{name}=={metadata.version(name)}" for name in ("onnx", "onnxruntime")],
        )
        uri = info.model_uri
    else:
        log.info("%s is already in MLflow (%s); this run points at it.", path.name, uri)
    # MLflow 3 keeps models apart from run artifacts; the tag leads from the run to them
    mlflow.set_tags({uri_tag: uri, sha_tag: digest})
    return str(uri)
