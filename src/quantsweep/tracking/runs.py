"""One MLflow run per finished job, nested under one parent run per sweep, logged once.

The job directory is the source of truth: everything logged comes from its files, so a
run can be (re)logged later with ``quantsweep-log DIR``. Logging is idempotent: each
run carries a key tag (the hash of its results.json), set once everything else is
logged, and a run whose key is already in the experiment is not logged again. A run
whose logging was cut off carries only the pending key, and is replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from quantsweep.config import MlflowConfig, flatten
from quantsweep.files import EXCLUSION_FILE, RESULTS_FILE, SENSITIVITY_PLOT
from quantsweep.redaction import redact, redact_uri, shareable
from quantsweep.results import JobResults
from quantsweep.tracking.health import is_http, mlflow_calls
from quantsweep.tracking.inputs import dataset_inputs
from quantsweep.tracking.metrics import metrics_of, step_metrics
from quantsweep.tracking.models import log_onnx_model
from quantsweep.tracking.settings import (
    DEFAULT_ARTIFACTS,
    DEFAULT_TRACKING_URI,
    experiment_name,
    run_name,
    tracking_uri,
)

# the package's one logger ("quantsweep.tracking"): its lines keep the name they had in the logs
log = logging.getLogger(__package__)

RUN_KEY_TAG = "quantsweep.run_key"
PENDING_KEY_TAG = "quantsweep.pending_run_key"
SWEEP_KEY_TAG = "quantsweep.sweep_key"
JOB_DIR_TAG = "quantsweep.job_dir"
PARENT_RUN_TAG = "mlflow.parentRunId"
# MLflow refuses a param value longer than this
_MAX_PARAM = 6000
# MLflow takes at most 100 params per batch
_PARAM_BATCH = 90
# the job's files uploaded with its run, and its models logged as MLflow models (label, file)
_UPLOADED_FILES = (
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
    RESULTS_FILE,
    "quantsweep.log",
    EXCLUSION_FILE,
    SENSITIVITY_PLOT,
)
_MODELS = (("original_model", "model.onnx"), ("quantized_model", "model_quantized.onnx"))

# MLflow 3's UI opens an experiment without this tag on its GenAI overview (traces,
# tokens); "custom_model_development" (shown as "Machine learning") opens it on the runs.
# The allowed values are the UI's ExperimentKind enum; the *_inferred ones and
# "no_inferred_type" are the UI's own guesses, not a choice anyone made.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
_GUESSED_KINDS = ("", "no_inferred_type", "genai_development_inferred", "custom_model_development_inferred")

# the runs pages already shown in this process
_pages_shown: set[str] = set()


def _run_key(job_dir: Path) -> str:
    return hashlib.sha256((job_dir / RESULTS_FILE).read_bytes()).hexdigest()[:20]


def _sweep_key(sweep_dir: Path) -> str:
    return hashlib.sha256(str(sweep_dir.resolve()).encode()).hexdigest()[:20]


def _find_run(client: Any, experiment_id: str, tag: str, value: str) -> str | None:
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1)
    return runs[0].info.run_id if runs else None


def _experiment_id(client: Any, name: str, uri: str) -> str:
    """The experiment's id, created (or marked) as a model-training experiment for MLflow's UI."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # the embedded store keeps its artifacts beside it under outputs/, not in ./mlruns
        location = Path(DEFAULT_ARTIFACTS).resolve().as_uri() if uri == DEFAULT_TRACKING_URI else None
        return str(
            client.create_experiment(
                name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        )
    # an experiment someone created without a kind (or that the UI only guessed at)
    if experiment.tags.get(EXPERIMENT_KIND_TAG, "") in _GUESSED_KINDS:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return str(experiment.experiment_id)


def runs_page(uri: str, experiment_id: str) -> str:
    """The experiment's runs in a tracking server's UI.

    MLflow 3.17's UI ignores ``mlflow.experimentKind`` when it picks the page: it opens
    every experiment on the side its GenAI / Model training switch is on (GenAI until the
    user flips it, remembered per browser). ``workflowType=machine_learning`` opens the runs.
    """
    return f"{redact_uri(uri).rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def job_span_ms(job_dir: Path, results: dict[str, Any]) -> tuple[int, int]:
    """When the job started and ended (ms since the epoch), read from its files.

    The end is when results.json was written (its last act). The start is when Hydra saved
    the job's config, at the job's start; a rerun that skipped the finished job rewrote
    that file later, so then the start is the end less the job's own wall time.
    """
    end = (job_dir / RESULTS_FILE).stat().st_mtime
    start = end - float(results.get("wall_seconds") or 0.0)
    config = job_dir / ".hydra" / "config.yaml"
    if config.is_file() and config.stat().st_mtime <= end:
        start = min(start, config.stat().st_mtime)
    return int(start * 1000), int(end * 1000)


def sweep_start_ms(sweep_dir: Path) -> int | None:
    """When the sweep's first job started: the earliest start among its job folders.

    A finished job gives its span's start; one still running (another launcher process)
    or failed gives the time Hydra saved its config.
    """
    starts = []
    for job in sweep_dir.iterdir():
        config = job / ".hydra" / "config.yaml"
        if (job / RESULTS_FILE).is_file():
            results = json.loads((job / RESULTS_FILE).read_text(encoding="utf-8"))
            starts.append(job_span_ms(job, results)[0])
        elif config.is_file():
            starts.append(int(config.stat().st_mtime * 1000))
    return min(starts, default=None)


def logged_run(job_dir: Path, settings: MlflowConfig) -> str | None:
    """The MLflow run of a finished job if it is logged completely (its key tag is set), else None."""
    from mlflow.tracking import MlflowClient

    results = json.loads((job_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    with mlflow_calls():
        client = MlflowClient(tracking_uri=tracking_uri(settings))
        experiment = client.get_experiment_by_name(experiment_name(settings, results["config"]))
        if experiment is None:
            return None
        return _find_run(client, experiment.experiment_id, RUN_KEY_TAG, _run_key(job_dir))


def _parent_run(client: Any, experiment_id: str, sweep_dir: Path, start_ms: int) -> str:
    """The sweep's parent run, created at the first job logged."""
    sweep_key = _sweep_key(sweep_dir)
    parent_id = _find_run(client, experiment_id, SWEEP_KEY_TAG, sweep_key)
    if parent_id is None:
        parent = client.create_run(
            experiment_id,
            start_time=min(sweep_start_ms(sweep_dir) or start_ms, start_ms),
            run_name=f"sweep {sweep_dir.name}",
            tags={SWEEP_KEY_TAG: sweep_key, "quantsweep.sweep_dir": str(sweep_dir)},
        )
        parent_id = str(parent.info.run_id)
    return parent_id


def _extend_parent(client: Any, parent_id: str, end_ms: int) -> None:
    """The parent spans its jobs: it ends with the latest one logged so far."""
    if end_ms > (client.get_run(parent_id).info.end_time or 0):
        client.set_terminated(parent_id, "FINISHED", end_time=end_ms)


def _adopt(
    client: Any, experiment_id: str, run_id: str, job_dir: Path, sweep_dir: Path, results: dict[str, Any]
) -> None:
    """A run logged elsewhere without its sweep (from a SageMaker container): nest it under this sweep's parent.

    The container cannot know the sweep's parent run, which lives where the sweep does; its
    run carries the job folder's results (the same key), so only the nesting and the job's
    folder here are set.
    """
    if PARENT_RUN_TAG in client.get_run(run_id).data.tags:
        return
    start_ms, end_ms = job_span_ms(job_dir, results)
    parent_id = _parent_run(client, experiment_id, sweep_dir, start_ms)
    client.set_tag(run_id, PARENT_RUN_TAG, parent_id)
    client.set_tag(run_id, JOB_DIR_TAG, str(job_dir.resolve()))
    _extend_parent(client, parent_id, end_ms)


def log_job(job_dir: Path, settings: MlflowConfig, sweep_dir: Path | None = None) -> str:
    """Log one finished job; returns its MLflow run id (the existing one if already logged)."""
    with mlflow_calls():
        return _log_job(job_dir, settings, sweep_dir)


def _log_job(job_dir: Path, settings: MlflowConfig, sweep_dir: Path | None) -> str:
    import mlflow
    from mlflow.tracking import MlflowClient

    raw = json.loads((job_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    results = JobResults.from_dict(raw)
    uri = tracking_uri(settings)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment_id(client, experiment_name(settings, results.config), uri)
    key = _run_key(job_dir)
    existing = _find_run(client, experiment_id, RUN_KEY_TAG, key)
    if existing:
        log.info("MLflow already has this job (run %s); not logging it again.", existing)
        if sweep_dir is not None:
            _adopt(client, experiment_id, existing, job_dir, sweep_dir, raw)
        return existing
    _delete_cut_off_runs(client, experiment_id, key)
    start_ms, end_ms = job_span_ms(job_dir, raw)
    parent_id = _parent_run(client, experiment_id, sweep_dir, start_ms) if sweep_dir is not None else None

    mlflow.set_tracking_uri(uri)
    # the run spans the job itself, not the seconds spent logging it
    created = client.create_run(
        experiment_id,
        start_time=start_ms,
        run_name=run_name(results.choices),
        tags=_run_tags(results, job_dir, key, parent_id),
    )
    with mlflow.start_run(run_id=created.info.run_id) as run:
        _log_contents(client, experiment_id, job_dir, results, raw)
        # last: only a completely logged run counts as logged
        mlflow.set_tag(RUN_KEY_TAG, key)
        run_id = str(run.info.run_id)
    client.set_terminated(run_id, "FINISHED", end_time=end_ms)
    _show_runs_page(uri, experiment_id)
    if parent_id:
        _extend_parent(client, parent_id, end_ms)
    return run_id


def _delete_cut_off_runs(client: Any, experiment_id: str, key: str) -> None:
    """A run whose logging was cut off (the server died) carries only the pending key: replace it."""
    for stale in client.search_runs(
        [experiment_id], filter_string=f"tags.`{PENDING_KEY_TAG}` = '{key}'", max_results=10
    ):
        log.info("Replacing run %s, whose logging was cut off.", stale.info.run_id)
        client.delete_run(stale.info.run_id)


def _run_tags(results: JobResults, job_dir: Path, key: str, parent_id: str | None) -> dict[str, str]:
    """Where the job ran and with what: the folder, commit, CPU, host and package versions."""
    env = results.environment
    tags = {
        PENDING_KEY_TAG: key,
        JOB_DIR_TAG: str(job_dir.resolve()),
        "git_commit": env.git_commit or "unknown",
        "cpu_model": env.cpu_model,
        "host": env.hostname,
        "cpu_int8_instruction_sets": ", ".join(env.int8_instruction_sets) or "unknown",
        **{f"package.{k}": v for k, v in env.packages.items()},
    }
    if results.reproduces:
        tags["quantsweep.reproduces"] = str(results.reproduces)
    if results.job_digest:  # equal digests: the same job (config, code, packages, preset), wherever it ran
        tags["quantsweep.job_digest"] = results.job_digest
    if results.graph.nothing_quantized:
        tags["quantsweep.nothing_quantized"] = "true"
    if parent_id:
        tags[PARENT_RUN_TAG] = parent_id
    return tags


def _run_params(results: JobResults) -> dict[str, Any]:
    """The job's whole config, flattened and redacted, and the config group choices."""
    params = {
        k: json.dumps(v) if not isinstance(v, str) else v for k, v in redact(flatten(results.config)).items()
    }
    params.update({f"choice.{k}": v for k, v in results.choices.items()})
    return params


def _log_contents(
    client: Any, experiment_id: str, job_dir: Path, results: JobResults, raw: dict[str, Any]
) -> None:
    """Into the active run: params, metrics, the search's course, datasets, files and models."""
    import mlflow

    params = _run_params(results)
    for start in range(0, len(params), _PARAM_BATCH):
        batch = list(params.items())[start : start + _PARAM_BATCH]
        mlflow.log_params({k: str(v)[:_MAX_PARAM] for k, v in batch})
    mlflow.log_metrics(metrics_of(results))
    for step in results.exclusion_search.steps if results.exclusion_search else []:
        # one point per search step: MLflow's charts draw the search's course
        mlflow.log_metrics(step_metrics(step), step=step.step)
    inputs = dataset_inputs(raw)
    if inputs:
        datasets, contexts, input_tags = zip(*inputs, strict=True)
        mlflow.log_inputs(list(datasets), list(contexts), list(input_tags))
    for name in _UPLOADED_FILES:
        path = job_dir / name
        if path.is_file():
            with shareable(path) as upload:
                mlflow.log_artifact(
                    str(upload), artifact_path="job/.hydra" if name.startswith(".hydra") else "job"
                )
    for label, file in _MODELS:
        path = job_dir / file
        if path.is_file():
            log_onnx_model(client, experiment_id, path, label)


def _show_runs_page(uri: str, experiment_id: str) -> None:
    """Where to see the runs, once per page and process (a local store has no page)."""
    page = runs_page(uri, experiment_id)
    if is_http(uri) and page not in _pages_shown:
        _pages_shown.add(page)
        log.info("MLflow runs page: %s", page)


def report_files(sweep_dir: Path) -> list[Path]:
    """The report files quantsweep-report wrote into a sweep folder (card, CSV, plots)."""
    from quantsweep.files import CARD_FILE, CSV_FILE, LATENCY_PLOT, PARETO_PLOT

    names = (CARD_FILE, CSV_FILE, PARETO_PLOT, LATENCY_PLOT)
    return [sweep_dir / name for name in names if (sweep_dir / name).is_file()]


def log_report(sweep_dir: Path, settings: MlflowConfig, files: list[Path]) -> str | None:
    """Attach the sweep's report files to its parent run (overwriting an older copy)."""
    from mlflow.tracking import MlflowClient

    jobs = [p for p in sweep_dir.iterdir() if (p / RESULTS_FILE).is_file()]
    if not jobs:
        return None
    config = json.loads((jobs[0] / RESULTS_FILE).read_text(encoding="utf-8"))["config"]
    with mlflow_calls():
        client = MlflowClient(tracking_uri=tracking_uri(settings))
        experiment = client.get_experiment_by_name(experiment_name(settings, config))
        if experiment is None:
            return None
        parent = _find_run(client, experiment.experiment_id, SWEEP_KEY_TAG, _sweep_key(sweep_dir))
        if parent is None:
            return None
        for path in files:
            with shareable(path) as upload:
                client.log_artifact(parent, str(upload), artifact_path="report")
    return parent
