"""MLflow logging of finished jobs: one run per job, nested under one parent run per sweep.

The job directory is the source of truth: everything logged comes from its files, so a
run can be (re)logged later with ``quantsweep-log DIR``. Logging is idempotent: each
run carries a key tag (the hash of its results.json), set once everything else is
logged, and a run whose key is already in the experiment is not logged again.

A tracking server must never hold up a sweep: an http(s) server is checked once at the
start of a run or sweep with a short plain HTTP request (:func:`check_tracking_server`),
a server found down is skipped by every job (the verdict is kept in the process and in
the sweep folder, for launchers that run jobs in other processes), and MLflow's own
retries are bounded for quantsweep's calls (:func:`mlflow_calls`), so a server that dies
mid-sweep costs seconds, not MLflow's default minutes per request.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from quantsweep.config import GROUPS, MlflowConfig, flatten
from quantsweep.files import EXCLUSION_FILE, RESULTS_FILE, SENSITIVITY_PLOT, atomic_write_text
from quantsweep.records import ExclusionSearchResult, SearchStep, window_spread
from quantsweep.results import JobResults

log = logging.getLogger(__name__)

RUN_KEY_TAG = "quantsweep.run_key"
SWEEP_KEY_TAG = "quantsweep.sweep_key"
DEFAULT_TRACKING_URI = "sqlite:///outputs/mlflow.db"
DEFAULT_ARTIFACTS = "outputs/mlartifacts"
SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|credential|api[_-]?key|access[_-]?key)", re.IGNORECASE
)
# user:password@ in a URL (a tracking URI may carry basic-auth credentials)
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
_MAX_PARAM = 6000
# quantsweep sends nothing off the machine unless asked: MLflow's usage telemetry is off
# unless the user turns it on explicitly.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# MLflow 3's UI opens an experiment without this tag on its GenAI overview (traces,
# tokens); "custom_model_development" (shown as "Machine learning") opens it on the runs.
# The allowed values are the UI's ExperimentKind enum; the *_inferred ones and
# "no_inferred_type" are the UI's own guesses, not a choice anyone made.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
_GUESSED_KINDS = ("", "no_inferred_type", "genai_development_inferred", "custom_model_development_inferred")

# Written into a sweep folder when its tracking server was found unreachable, so that
# jobs run by a launcher in other processes skip MLflow too instead of waiting on it.
UNREACHABLE_FILE = "mlflow_unreachable.json"
# seconds for the one plain HTTP request that decides whether a server is up
CHECK_TIMEOUT = 3.0
# MLflow retries a failed request 7 times with exponential backoff and waits 120 s for an
# answer: minutes per request against a dead server. quantsweep's calls give up after two
# retries (about 3 s against a closed port) unless the user set these variables. The
# timeout stays long enough for a server that stores a large model upload before replying.
_HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
# the verdict per tracking URI in this process: None = reachable, else why not
_verdicts: dict[str, str | None] = {}
# the URIs whose outage the user has been told about (by this process or the sweep's)
_announced: set[str] = set()
# the runs pages already shown in this process
_pages_shown: set[str] = set()


def redact(flat: dict[str, Any]) -> dict[str, Any]:
    """Values under keys that name secrets, and credentials inside URLs, never leave the machine."""
    return {
        k: (
            "***"
            if SECRET_KEY.search(k) and v not in (None, "")
            else redact_uri(v)
            if isinstance(v, str)
            else v
        )
        for k, v in flat.items()
    }


# Hydra's record of a sweep's config, in the sweep folder
MULTIRUN_YAML = "multirun.yaml"


def yaml_files(folder: Path | None, pattern: str = "*.yaml") -> list[Path]:
    return sorted(folder.glob(pattern)) if folder is not None and folder.is_dir() else []


def scrub_config_files(folder: Path | None, pattern: str = "*.yaml") -> None:
    """Redact secret-looking values from the config files Hydra saved before any job code ran.

    A job's ``.hydra/*.yaml``, and a sweep's ``multirun.yaml`` (Hydra's sweeper writes it
    before it hands the launcher the jobs: the SageMaker launcher scrubs it then, and each
    local job again as it starts, which costs a read when it is clean).
    """
    for path in yaml_files(folder, pattern):
        lines = path.read_text(encoding="utf-8").splitlines()
        # secret-named keys, and the user:password@ of a URL (a tracking URI) wherever it stands
        scrubbed = [redact_uri(_scrub_line(line, SECRET_KEY)) for line in lines]
        if scrubbed != lines:
            atomic_write_text(path, "\n".join(scrubbed) + "\n")


def _scrub_line(line: str, secret: re.Pattern[str]) -> str:
    """Blank the value of every `key: value` or `key=value` whose key names a secret."""

    def blank(match: re.Match[str]) -> str:
        key = match.group(1)
        return f"{key}{match.group(2)}'***'" if secret.search(key) else match.group(0)

    value = r"('[^']*'|\"[^\"]*\"|[^,\s]+)"
    line = re.sub(r"([\w.+~-]+)(=)" + value, blank, line)  # overrides: a=b,c=d
    return re.sub(r"([\w.+~-]+)(: )" + value, blank, line)  # YAML: key: value


def redact_uri(text: str) -> str:
    """``http://user:password@host`` shown as ``http://***@host``."""
    return _URL_CREDENTIALS.sub("***@", text)


class RedactCredentials(logging.Filter):
    """Shows ``user:password@`` in a logged URL as ``***@``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_uri(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redact_launcher_log() -> None:
    """Hydra's basic launcher logs each job's overrides, a tracking URI's credentials included."""
    launcher = logging.getLogger("hydra._internal.core_plugins.basic_launcher")
    if not any(isinstance(existing, RedactCredentials) for existing in launcher.filters):
        launcher.addFilter(RedactCredentials())


def is_http(uri: str) -> bool:
    """Only a tracking server can be down; sqlite and file stores are local."""
    return uri.lower().startswith(("http://", "https://"))


class _ArnHeaderNoise(logging.Filter):
    """Drops the warning MLflow logs on every request when sagemaker-mlflow is installed.

    sagemaker-mlflow 0.5's request-header provider (the ``sagemaker`` extra) parses every
    tracking URI as a SageMaker ARN and fails with "list index out of range" on any other
    URI; MLflow logs that as a warning per request, hundreds per job.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("resolving request headers" in message and "list index out of range" in message)


_HEADER_LOGGER = "mlflow.tracking.request_header.registry"


@contextlib.contextmanager
def mlflow_calls() -> Iterator[None]:
    """For quantsweep's MLflow calls: bounded HTTP retries and timeout (unless the user set them).

    Also silences sagemaker-mlflow's per-request warning (see :class:`_ArnHeaderNoise`).
    """
    added = [name for name in _HTTP_LIMITS if name not in os.environ]
    os.environ.update({name: _HTTP_LIMITS[name] for name in added})
    noise = _ArnHeaderNoise()
    logging.getLogger(_HEADER_LOGGER).addFilter(noise)
    try:
        yield
    finally:
        logging.getLogger(_HEADER_LOGGER).removeFilter(noise)
        for name in added:
            os.environ.pop(name, None)


@contextlib.contextmanager
def shareable(path: Path) -> Iterator[Path]:
    """The file as it may leave the machine: a copy without URL credentials, if it has any.

    Hydra's saved config, results.json and the card repeat the tracking URI as it was given.
    """
    if path.suffix not in (".yaml", ".json", ".log", ".md", ".csv", ".txt"):
        yield path
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    clean = redact_uri(text)
    if clean == text:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="quantsweep-") as folder:
        copy = Path(folder) / path.name
        copy.write_text(clean, encoding="utf-8")
        yield copy


def _describe(error: BaseException) -> str:
    """The exception's type and its innermost reason, e.g. ``ConnectionError: ... Connection refused``."""
    reason: Any = error
    # requests wraps urllib3's MaxRetryError, whose .reason is the socket-level error
    while reason.args and hasattr(reason.args[0], "reason"):
        reason = reason.args[0].reason
    return f"{type(error).__name__}: {reason}"


def check_server(uri: str, timeout: float = CHECK_TIMEOUT) -> str | None:
    """Why an http(s) tracking server cannot be used now, or None if it answers (or is local).

    One plain GET of the server's /health, no retries. Any answer below 500 counts as up
    (a 401 or 404 fails fast in MLflow too); a 5xx counts as down, since MLflow retries
    those. The text never contains the URI's credentials.
    """
    if not is_http(uri):
        return None
    import requests

    verify: bool | str = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        verify = False
    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=timeout, verify=verify)
    except requests.RequestException as error:
        reason = _describe(error)
    else:
        if response.status_code < 500:
            return None
        reason = f"HTTP {response.status_code} {response.reason} from /health"
    return redact_uri(reason)


def _remember(uri: str, verdict: str | None, sweep_dir: Path | None) -> None:
    _verdicts[uri] = verdict
    if sweep_dir is None:
        return
    path = sweep_dir / UNREACHABLE_FILE
    if verdict is None:
        path.unlink(missing_ok=True)
    else:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"tracking_uri": redact_uri(uri), "error": verdict}) + "\n")


def known_verdict(uri: str, sweep_dir: Path | None) -> str | None:
    """What this process, or the sweep folder, already knows: why the server is down, else None."""
    if _verdicts.get(uri):
        return _verdicts[uri]
    # another process of the sweep may have found it down since this one last looked
    path = sweep_dir / UNREACHABLE_FILE if sweep_dir is not None else None
    if path is not None and path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if recorded.get("tracking_uri") == redact_uri(uri):
            _announced.add(uri)  # whoever recorded it said so
            return str(recorded.get("error") or "unreachable")
    return None


def server_verdict(uri: str, sweep_dir: Path | None = None, recheck: bool = False) -> str | None:
    """Why the tracking server is unusable (None: usable), checked once per process and sweep."""
    if not is_http(uri):
        return None
    if not recheck:
        known = known_verdict(uri, sweep_dir)
        if known is not None or uri in _verdicts:
            return known
    verdict = check_server(uri)
    _remember(uri, verdict, sweep_dir)
    return verdict


def announce_unreachable(uri: str, verdict: str, folder: Path, what: str) -> None:
    """The one warning about a server that is down: the URI, the error and the way back."""
    _announced.add(uri)
    log.warning(
        "The MLflow tracking server %s is unreachable (%s). The %s goes on without it: nothing more is "
        "logged to MLflow, the results stay in %s. Once the server is up, log them with: quantsweep-log %s",
        redact_uri(uri),
        verdict,
        what,
        folder,
        folder,
    )


def announced(uri: str) -> bool:
    return uri in _announced


def check_tracking_server(settings: MlflowConfig, folder: Path, sweep: bool) -> str | None:
    """Check the server at the start of a run or sweep; warn once if it is down."""
    uri = tracking_uri(settings)
    verdict = server_verdict(uri, folder if sweep else None, recheck=True)
    if verdict is not None:
        announce_unreachable(uri, verdict, folder, "sweep" if sweep else "run")
    return verdict


def experiment_name(settings: MlflowConfig, config: dict[str, Any]) -> str:
    if settings.experiment_name:
        return settings.experiment_name
    model = Path(str(config.get("model_name_or_path", "model"))).name
    dataset = Path(str(config.get("dataset", {}).get("path", "data"))).name
    return f"quantsweep {model} on {dataset}"


def tracking_uri(settings: MlflowConfig) -> str:
    return settings.tracking_uri or DEFAULT_TRACKING_URI


def run_name(choices: dict[str, str]) -> str:
    return "-".join(choices[g] for g in GROUPS if g in choices) or "run"


def metrics_of(results: JobResults) -> dict[str, float]:
    """Metric names that sort and filter well: eval/<side>/<metric>, time/bs<b>_len<nnnn>/<side>/<stat>."""
    from quantsweep.tasks import get

    metrics: dict[str, float] = {}
    for name in get(results.task).METRICS:
        original, quantized = getattr(results.original, name), getattr(results.quantized, name)
        metrics[f"eval/original/{name}"] = original
        metrics[f"eval/quantized/{name}"] = quantized
        metrics[f"eval/delta/{name}"] = quantized - original
    for shape in results.timing.shapes:
        prefix = f"time/bs{shape.batch_size}_len{shape.input_length:04d}"
        for side, stats in (("original", shape.original), ("quantized", shape.quantized)):
            metrics[f"{prefix}/{side}/mean_ms"] = stats.mean_ms
            metrics[f"{prefix}/{side}/p50_ms"] = stats.p50_ms
            metrics[f"{prefix}/{side}/p90_ms"] = stats.p90_ms
            metrics[f"{prefix}/{side}/p99_ms"] = stats.p99_ms
            metrics[f"{prefix}/{side}/throughput_samples_per_s"] = stats.throughput_samples_per_s
            metrics[f"{prefix}/{side}/forward_passes_per_s"] = stats.forward_passes_per_s
        metrics[f"{prefix}/speedup"] = shape.speedup
        low, median, high = window_spread(shape.window_speedups)
        metrics[f"{prefix}/speedup_window_min"] = low
        metrics[f"{prefix}/speedup_window_median"] = median
        metrics[f"{prefix}/speedup_window_max"] = high
    if results.exclusion_search:
        metrics.update(search_metrics(results.exclusion_search))
    if results.eval_drop is not None:
        metrics["search/eval_drop"] = results.eval_drop.drop
        metrics["search/eval_drop_bound"] = results.eval_drop.bound
    graph = results.graph
    metrics["graph/nodes_quantized"] = graph.nodes_quantized
    metrics["graph/nodes_excluded"] = len(graph.nodes_excluded)
    metrics["graph/original_size_mb"] = graph.original_size_mb
    metrics["graph/quantized_size_mb"] = graph.quantized_size_mb
    return {k: float(v) for k, v in metrics.items()}


def search_metrics(found: ExclusionSearchResult) -> dict[str, float]:
    """exclusion=auto's outcome: search/<name>."""
    metrics = {
        "search/evaluations": float(found.evaluations),
        "search/seconds": found.seconds,
        "search/nodes_kept": float(len(found.chosen)),
        "search/holdout_f1_fp32": found.fp32_f1,
        "search/holdout_f1_chosen": found.chosen_f1,
        "search/holdout_f1_drop": found.fp32_f1 - found.chosen_f1,
        "search/meets_budget": 1.0 if found.meets_budget else 0.0,
        "search/objective_speed": 1.0 if found.objective == "speed" else 0.0,
    }
    if found.chosen_speedup is not None:
        metrics["search/chosen_speedup"] = found.chosen_speedup
    if found.confirmations:
        # the first set that held on the confirmation rows is the one chosen
        metrics["search/confirmed"] = 1.0 if any(c.meets_budget for c in found.confirmations) else 0.0
    if found.search_rows is not None:  # searches before the split scored every held-out row
        metrics["search/search_rows"] = float(found.search_rows)
        metrics["search/confirm_rows"] = float(found.confirm_rows)
    return metrics


def step_metrics(step: SearchStep) -> dict[str, float]:
    """One search step's point on MLflow's charts of the search's course (logged at ``step.step``)."""
    metrics = {"search/step_f1": step.f1, "search/step_nodes_kept": float(len(step.nodes))}
    if step.speedup is not None:
        metrics["search/step_speedup"] = step.speedup
    return metrics


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


PENDING_KEY_TAG = "quantsweep.pending_run_key"


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


def rows_dataset(source: Any, name: str, digest: str, rows: int) -> Any:
    """An MLflow dataset of metadata only (never the rows), whose profile is its row count."""
    from mlflow.data.meta_dataset import MetaDataset

    class RowsDataset(MetaDataset):
        @property
        def profile(self) -> dict[str, int]:
            return {"num_rows": rows}

        def to_dict(self) -> dict[str, str]:
            config = super().to_dict()
            config["profile"] = json.dumps(self.profile)
            return config

    return RowsDataset(source=source, name=name, digest=digest)


def dataset_inputs(results: dict[str, Any]) -> list[tuple[Any, str, dict[str, str]]]:
    """(dataset, context, tags) for the evaluation, calibration and held-out rows of a job.

    Each is named ``<dataset>/<split>`` with the fingerprint of exactly the rows used as
    its digest and their count as its profile; the source is the Hub dataset (path,
    config, split, revision) or the local path, as configured.
    """
    block = results.get("dataset") or {}
    data = results["config"].get("dataset") or {}
    path = str(data.get("path") or block.get("source") or "data")
    hub = str(block.get("source", "")).startswith("hub:")
    base = path.rstrip("/").rsplit("/", 1)[-1] or path
    holdout_split = (results["config"].get("exclusion") or {}).get("holdout_split") or block.get(
        "calibration_split"
    )
    wanted = (
        ("evaluation", block.get("eval_split"), block.get("eval_samples"), block.get("eval_fingerprint")),
        (
            "calibration",
            block.get("calibration_split"),
            block.get("calibration_samples"),
            block.get("calibration_fingerprint"),
        ),
        ("holdout", holdout_split, block.get("holdout_samples"), block.get("holdout_fingerprint")),
    )
    inputs = []
    for context, split, rows, fingerprint in wanted:
        if not fingerprint or rows is None:
            continue
        source: Any
        if hub:
            from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

            source = HuggingFaceDatasetSource(
                path=path, config_name=data.get("name"), split=split, revision=data.get("revision")
            )
        else:
            from mlflow.data.dataset_source_registry import resolve_dataset_source

            local = Path(path).expanduser()
            with warnings.catch_warnings():  # "can be interpreted in multiple ways": all mean a local path
                warnings.simplefilter("ignore")
                source = resolve_dataset_source(str(local.resolve() if local.exists() else local))
        name = f"{base}/{split}" + (" (held out)" if context == "holdout" else "")
        inputs.append(
            (
                rows_dataset(source, name, str(fingerprint), int(rows)),
                context,
                {"quantsweep.split": str(split)},
            )
        )
    return inputs


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


def _adopt(
    client: Any, experiment_id: str, run_id: str, job_dir: Path, sweep_dir: Path, results: dict[str, Any]
) -> None:
    """A run logged elsewhere without its sweep (from a SageMaker container): nest it under this sweep's parent.

    The container cannot know the sweep's parent run, which lives where the sweep does; its
    run carries the job folder's results (the same key), so only the nesting and the job's
    folder here are set.
    """
    if "mlflow.parentRunId" in client.get_run(run_id).data.tags:
        return
    start_ms, end_ms = job_span_ms(job_dir, results)
    parent_id = _parent_run(client, experiment_id, sweep_dir, start_ms)
    client.set_tag(run_id, "mlflow.parentRunId", parent_id)
    client.set_tag(run_id, "quantsweep.job_dir", str(job_dir.resolve()))
    if end_ms > (client.get_run(parent_id).info.end_time or 0):
        client.set_terminated(parent_id, "FINISHED", end_time=end_ms)


def log_job(job_dir: Path, settings: MlflowConfig, sweep_dir: Path | None = None) -> str:
    """Log one finished job; returns its MLflow run id (the existing one if already logged)."""
    with mlflow_calls():
        return _log_job(job_dir, settings, sweep_dir)


def _log_job(job_dir: Path, settings: MlflowConfig, sweep_dir: Path | None) -> str:
    import mlflow
    from mlflow.tracking import MlflowClient

    raw = json.loads((job_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    results = JobResults.from_dict(raw)
    config = results.config
    uri = tracking_uri(settings)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment_id(client, experiment_name(settings, config), uri)
    key = _run_key(job_dir)
    existing = _find_run(client, experiment_id, RUN_KEY_TAG, key)
    if existing:
        log.info("MLflow already has this job (run %s); not logging it again.", existing)
        if sweep_dir is not None:
            _adopt(client, experiment_id, existing, job_dir, sweep_dir, raw)
        return existing
    # a run whose logging was cut off (the server died) carries only the pending key: replace it
    for stale in client.search_runs(
        [experiment_id], filter_string=f"tags.`{PENDING_KEY_TAG}` = '{key}'", max_results=10
    ):
        log.info("Replacing run %s, whose logging was cut off.", stale.info.run_id)
        client.delete_run(stale.info.run_id)
    start_ms, end_ms = job_span_ms(job_dir, raw)

    parent_id = _parent_run(client, experiment_id, sweep_dir, start_ms) if sweep_dir is not None else None

    env = results.environment
    tags = {
        PENDING_KEY_TAG: key,
        "quantsweep.job_dir": str(job_dir.resolve()),
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
        tags["mlflow.parentRunId"] = parent_id
    params = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in redact(flatten(config)).items()}
    params.update({f"choice.{k}": v for k, v in results.choices.items()})

    mlflow.set_tracking_uri(uri)
    # the run spans the job itself, not the seconds spent logging it
    created = client.create_run(
        experiment_id, start_time=start_ms, run_name=run_name(results.choices), tags=tags
    )
    with mlflow.start_run(run_id=created.info.run_id) as run:
        for start in range(0, len(params), 90):  # MLflow takes at most 100 params per batch
            mlflow.log_params({k: str(v)[:_MAX_PARAM] for k, v in list(params.items())[start : start + 90]})
        mlflow.log_metrics(metrics_of(results))
        for step in results.exclusion_search.steps if results.exclusion_search else []:
            # one point per search step: MLflow's charts draw the search's course
            mlflow.log_metrics(step_metrics(step), step=step.step)
        inputs = dataset_inputs(raw)
        if inputs:
            datasets, contexts, input_tags = zip(*inputs, strict=True)
            mlflow.log_inputs(list(datasets), list(contexts), list(input_tags))
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
                with shareable(path) as upload:
                    mlflow.log_artifact(
                        str(upload), artifact_path="job/.hydra" if name_.startswith(".hydra") else "job"
                    )
        for label, file in (("original_model", "model.onnx"), ("quantized_model", "model_quantized.onnx")):
            path = job_dir / file
            if path.is_file():
                log_onnx_model(client, experiment_id, path, label)
        # last: only a completely logged run counts as logged
        mlflow.set_tag(RUN_KEY_TAG, key)
        run_id = str(run.info.run_id)
    client.set_terminated(run_id, "FINISHED", end_time=end_ms)
    page = runs_page(uri, experiment_id)
    if is_http(uri) and page not in _pages_shown:
        _pages_shown.add(page)
        log.info("MLflow runs page: %s", page)
    if parent_id:
        # the parent spans its jobs: it ends with the latest one logged so far
        parent_end = client.get_run(parent_id).info.end_time or 0
        if end_ms > parent_end:
            client.set_terminated(parent_id, "FINISHED", end_time=end_ms)
    return run_id


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
    settings_used: MlflowConfig | None = None
    for job in jobs:
        settings = settings_from_job(job)
        if args.tracking_uri:
            settings.tracking_uri = args.tracking_uri
        uri = tracking_uri(settings)
        # a fresh check, not the sweep's recorded verdict: the server may be back
        down = _verdicts[uri] if uri in _verdicts else check_server(uri)
        _verdicts[uri] = down
        if down is not None:
            sys.exit(f"quantsweep-log: the MLflow tracking server {redact_uri(uri)} is unreachable ({down}).")
        run_id = log_job(job, settings, sweep)
        print(f"{job}: run {run_id}")
        settings_used = settings
    if sweep is not None and settings_used is not None:
        files = report_files(sweep)
        if files:
            log_report(sweep, settings_used, files)
        (sweep / UNREACHABLE_FILE).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
