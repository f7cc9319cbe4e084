"""MLflow logging of finished jobs: one run per job, nested under one parent run per sweep.

Tracking sits at the top: it reads a finished job's folder and never feeds anything back
into a job, so a run can be (re)logged at any time from the folder alone. Its parts:

- :mod:`~quantsweep.tracking.settings`: which store, experiment and run name a job goes to;
- :mod:`~quantsweep.tracking.health`: whether the server is up, decided once per run or
  sweep, so that a server that is down never holds up a sweep;
- :mod:`~quantsweep.tracking.metrics`: the results as MLflow metrics (every metric name);
- :mod:`~quantsweep.tracking.runs`: the runs themselves, logged idempotently, with
  :mod:`~quantsweep.tracking.models` (ONNX models, uploaded once) and
  :mod:`~quantsweep.tracking.inputs` (the rows used, as metadata);
- :mod:`~quantsweep.tracking.cli`: ``quantsweep-log``.

Redaction of secrets is not here but in :mod:`quantsweep.redaction`, which the launchers
use without MLflow. The names below are the package's API for the CLI, the Hydra callback,
the SageMaker launcher and the tests.
"""

from __future__ import annotations

import os

from quantsweep.tracking.health import (
    announce_unreachable,
    announced,
    check_server,
    check_tracking_server,
    is_http,
    known_verdict,
    server_verdict,
)
from quantsweep.tracking.metrics import metrics_of, step_metrics
from quantsweep.tracking.runs import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    log_job,
    log_report,
    logged_run,
)
from quantsweep.tracking.settings import (
    DEFAULT_TRACKING_URI,
    settings_from_job,
    tracking_uri,
)

# quantsweep sends nothing off the machine unless asked: MLflow's usage telemetry is off
# unless the user turns it on explicitly. Set on importing the package, before any of its
# modules imports MLflow (they all do so only inside their functions).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__all__ = [
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "announce_unreachable",
    "announced",
    "check_server",
    "check_tracking_server",
    "is_http",
    "known_verdict",
    "log_job",
    "log_report",
    "logged_run",
    "metrics_of",
    "server_verdict",
    "settings_from_job",
    "step_metrics",
    "tracking_uri",
]
