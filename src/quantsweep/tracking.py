"""MLflow logging of finished jobs: one run per job, nested under one parent run per sweep.

The job directory is the source of truth: everything logged comes from its files, so a
run can be (re)logged later with ``quantsweep-log DIR``. Logging is idempotent: each
run carries a key tag (the hash of its results.json), and a run whose key is already in
the experiment is not logged again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from quantsweep.config import MlflowConfig, flatten
from quantsweep.results import EXCLUSION_FILE, RESULTS_FILE, SENSITIVITY_PLOT, window_spread

log = logging.getLogger(__name__)

RUN_KEY_TAG = "quantsweep.run_key"
SWEEP_KEY_TAG = "quantsweep.sweep_key"
DEFAULT_TRACKING_URI = "sqlite:///outputs/mlflow.db"
DEFAULT_ARTIFACTS = "outputs/mlartifacts"
SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|credential|api[_-]?key|access[_-]?key)", re.IGNORECASE
)
_MAX_PARAM = 6000
# quantsweep sends nothing off the machine unless asked: MLflow's usage telemetry is off
# unless the user turns it on explicitly.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def redact(flat: dict[str, Any]) -> dict[str, Any]:
    """Values under keys that name secrets never leave the machine."""
    return {k: ("***" if SECRET_KEY.search(k) and v not in (None, "") else v) for k, v in flat.items()}


def experiment_name(settings: MlflowConfig, config: dict[str, Any]) -> str:
    if settings.experiment_name:
        return settings.experiment_name
    model = Path(str(config.get("model_name_or_path", "model"))).name
    dataset = Path(str(config.get("dataset", {}).get("path", "data"))).name
    return f"quantsweep {model} on {dataset}"


def tracking_uri(settings: MlflowConfig) -> str:
    return settings.tracking_uri or DEFAULT_TRACKING_URI


def run_name(choices: dict[str, str]) -> str:
    return (
        "-".join(
            choices[g] for g in ("quantization", "operators", "exclusion", "calibration") if g in choices
        )
        or "run"
    )


def metrics_of(results: dict[str, Any]) -> dict[str, float]:
    """Metric names that sort and filter well: eval/<side>/<metric>, time/bs<b>_len<nnnn>/<side>/<stat>."""
    metrics: dict[str, float] = {}
    for name in ("precision", "recall", "f1", "accuracy"):
        original, quantized = results["original"][name], results["quantized"][name]
        metrics[f"eval/original/{name}"] = original
        metrics[f"eval/quantized/{name}"] = quantized
        metrics[f"eval/delta/{name}"] = quantized - original
    for shape in results["timing"]["shapes"]:
        prefix = f"time/bs{shape['batch_size']}_len{shape['input_length']:04d}"
        for side in ("original", "quantized"):
            stats = shape[side]
            for stat in (
                "mean_ms",
                "p50_ms",
                "p90_ms",
                "p99_ms",
                "throughput_samples_per_s",
                "forward_passes_per_s",
            ):
                metrics[f"{prefix}/{side}/{stat}"] = stats[stat]
        metrics[f"{prefix}/speedup"] = shape["speedup"]
        low, median, high = window_spread(shape["window_speedups"])
        metrics[f"{prefix}/speedup_window_min"] = low
        metrics[f"{prefix}/speedup_window_median"] = median
        metrics[f"{prefix}/speedup_window_max"] = high
    found = results.get("exclusion_search")
    if found:
        metrics["search/evaluations"] = found["evaluations"]
        metrics["search/seconds"] = found["seconds"]
        metrics["search/nodes_kept"] = len(found["chosen"])
        metrics["search/holdout_f1_fp32"] = found["fp32_f1"]
        metrics["search/holdout_f1_chosen"] = found["chosen_f1"]
        metrics["search/holdout_f1_drop"] = found["fp32_f1"] - found["chosen_f1"]
        metrics["search/meets_budget"] = 1.0 if found["meets_budget"] else 0.0
    graph = results["graph"]
    metrics["graph/nodes_quantized"] = graph["nodes_quantized"]
    metrics["graph/nodes_excluded"] = len(graph["nodes_excluded"])
    metrics["graph/original_size_mb"] = graph["original_size_mb"]
    metrics["graph/quantized_size_mb"] = graph["quantized_size_mb"]
    return {k: float(v) for k, v in metrics.items()}


def _run_key(job_dir: Path) -> str:
    return hashlib.sha256((job_dir / RESULTS_FILE).read_bytes()).hexdigest()[:20]


def _sweep_key(sweep_dir: Path) -> str:
    return hashlib.sha256(str(sweep_dir.resolve()).encode()).hexdigest()[:20]


def _find_run(client: Any, experiment_id: str, tag: str, value: str) -> str | None:
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1)
    return runs[0].info.run_id if runs else None


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


def log_job(job_dir: Path, settings: MlflowConfig, sweep_dir: Path | None = None) -> str:
    """Log one finished job; returns its MLflow run id (the existing one if already logged)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    results = json.loads((job_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    config = results["config"]
    uri = tracking_uri(settings)
    client = MlflowClient(tracking_uri=uri)
    name = experiment_name(settings, config)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        # the embedded store keeps its artifacts beside it under outputs/, not in ./mlruns
        location = Path(DEFAULT_ARTIFACTS).resolve().as_uri() if uri == DEFAULT_TRACKING_URI else None
        experiment_id = client.create_experiment(name, artifact_location=location)
    key = _run_key(job_dir)
    existing = _find_run(client, experiment_id, RUN_KEY_TAG, key)
    if existing:
        log.info("MLflow already has this job (run %s); not logging it again.", existing)
        return existing

    parent_id = None
    if sweep_dir is not None:
        sweep_key = _sweep_key(sweep_dir)
        parent_id = _find_run(client, experiment_id, SWEEP_KEY_TAG, sweep_key)
        if parent_id is None:
            parent = client.create_run(
                experiment_id,
                run_name=f"sweep {sweep_dir.name}",
                tags={SWEEP_KEY_TAG: sweep_key, "quantsweep.sweep_dir": str(sweep_dir)},
            )
            parent_id = parent.info.run_id
            client.set_terminated(parent_id)

    env = results["environment"]
    tags = {
        RUN_KEY_TAG: key,
        "quantsweep.job_dir": str(job_dir.resolve()),
        "git_commit": env.get("git_commit") or "unknown",
        "cpu_model": env.get("cpu_model", ""),
        "host": env.get("hostname", ""),
        **{f"package.{k}": v for k, v in env.get("packages", {}).items()},
    }
    if results["graph"]["nothing_quantized"]:
        tags["quantsweep.nothing_quantized"] = "true"
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    params = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in redact(flatten(config)).items()}
    params.update({f"choice.{k}": v for k, v in results["choices"].items()})

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name(results["choices"]), tags=tags
    ) as run:
        for start in range(0, len(params), 90):  # MLflow takes at most 100 params per batch
            mlflow.log_params({k: str(v)[:_MAX_PARAM] for k, v in list(params.items())[start : start + 90]})
        mlflow.log_metrics(metrics_of(results))
        for step in (results.get("exclusion_search") or {}).get("steps", []):
            # one point per search step: MLflow's charts draw the search's course
            mlflow.log_metrics(
                {"search/step_f1": step["f1"], "search/step_nodes_kept": float(len(step["nodes"]))},
                step=step["step"],
            )
        for name_ in (
            ".hydra/config.yaml",
            ".hydra/overrides.yaml",
            RESULTS_FILE,
            "quantsweep.log",
            EXCLUSION_FILE,
            SENSITIVITY_PLOT,
        ):
            path = job_dir / name_
            if path.is_file():
                mlflow.log_artifact(
                    str(path), artifact_path="job/.hydra" if name_.startswith(".hydra") else "job"
                )
        for label, file in (("original_model", "model.onnx"), ("quantized_model", "model_quantized.onnx")):
            path = job_dir / file
            if path.is_file():
                log_onnx_model(client, experiment_id, path, label)
        return str(run.info.run_id)


def log_report(sweep_dir: Path, settings: MlflowConfig, files: list[Path]) -> str | None:
    """Attach the sweep's report files to its parent run (overwriting an older copy)."""
    from mlflow.tracking import MlflowClient

    jobs = [p for p in sweep_dir.iterdir() if (p / RESULTS_FILE).is_file()]
    if not jobs:
        return None
    config = json.loads((jobs[0] / RESULTS_FILE).read_text(encoding="utf-8"))["config"]
    client = MlflowClient(tracking_uri=tracking_uri(settings))
    experiment = client.get_experiment_by_name(experiment_name(settings, config))
    if experiment is None:
        return None
    parent = _find_run(client, experiment.experiment_id, SWEEP_KEY_TAG, _sweep_key(sweep_dir))
    if parent is None:
        return None
    for path in files:
        client.log_artifact(parent, str(path), artifact_path="report")
    return parent


def job_dirs(target: Path) -> tuple[list[Path], Path | None]:
    """The finished job folders of a job or sweep folder, and the sweep folder if it is one."""
    if (target / RESULTS_FILE).is_file():
        return [target], None
    jobs = sorted(p for p in target.iterdir() if (p / RESULTS_FILE).is_file())
    if not jobs:
        raise FileNotFoundError(
            f"{target} is neither a finished job folder nor a sweep folder with finished jobs."
        )
    return jobs, target


def settings_from_job(job_dir: Path) -> MlflowConfig:
    saved = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text(encoding="utf-8")) or {}
    values = saved.get("mlflow") or {}
    return MlflowConfig(**{k: v for k, v in values.items() if k in MlflowConfig.__dataclass_fields__})


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(
        prog="quantsweep-log", description="(Re)log a finished job or a whole sweep to MLflow."
    )
    parser.add_argument("target", type=Path, help="a job folder (with results.json) or a sweep folder")
    parser.add_argument("--tracking-uri", help="override the tracking URI saved with the jobs")
    args = parser.parse_args(argv)
    jobs, sweep = job_dirs(args.target)
    for job in jobs:
        settings = settings_from_job(job)
        if args.tracking_uri:
            settings.tracking_uri = args.tracking_uri
        run_id = log_job(job, settings, sweep)
        print(f"{job}: run {run_id}")


if __name__ == "__main__":
    main()
