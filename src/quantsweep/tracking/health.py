"""Whether the tracking server can be used now, decided once, so that it never holds up a sweep.

An http(s) server is checked once at the start of a run or sweep with a short plain HTTP
request (:func:`check_tracking_server`). A server found down is skipped by every job: the
verdict is kept in the process and in the sweep folder, for launchers that run jobs in
other processes, and the user is told once. MLflow's own retries are bounded for
quantsweep's calls (:func:`mlflow_calls`), so a server that dies mid-sweep costs seconds,
not MLflow's default minutes per request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quantsweep.config import MlflowConfig
from quantsweep.files import UNREACHABLE_FILE, atomic_write_text
from quantsweep.redaction import redact_uri
from quantsweep.tracking.settings import tracking_uri

# the package's one logger ("quantsweep.tracking"): its lines keep the name they had in the logs
log = logging.getLogger(__package__)

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
_HEADER_LOGGER = "mlflow.tracking.request_header.registry"


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
