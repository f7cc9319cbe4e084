"""The Hydra callback of every quantsweep run and sweep: checks at the start, the sweep's report after each job.

Kept apart from :mod:`quantsweep.report` (which renders a sweep folder and knows nothing of
Hydra or MLflow) so that the report and the tracking code import neither each other nor
this module: the callback is where Hydra's events meet them both.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from quantsweep.files import CARD_FILE, CSV_FILE, LATENCY_PLOT, PARETO_PLOT
from quantsweep.report import ReportFiles, build_report

log = logging.getLogger(__name__)


def _check_output_folder(folder: Path, key: str) -> None:
    """Refuse an output folder that cannot be written, in one paragraph, before Hydra creates it.

    Hydra creates it before any job code runs and reports a failure as a traceback; from a
    callback, the refusal can still be the same paragraph and exit code as a config error.
    """
    from quantsweep.config import ConfigError
    from quantsweep.job_folder import check_writable

    try:
        check_writable(folder, key, f"name a folder quantsweep may write, e.g. {key}=outputs/mine.")
    except ConfigError as error:
        print(f"\nquantsweep: {error}", file=sys.stderr)
        sys.exit(2)


class ReportCallback(Callback):
    """Keeps a sweep's report current: the card and CSV after every job, everything at the end.

    Hydra skips ``on_multirun_end`` once a job has failed (its exception ends the sweep),
    so from the first failure on, the plots and the MLflow copy are rebuilt after every
    job too: the last job always leaves a complete report. Without failures they are
    built once, at the end (plotting costs about 1.5 s, a notable share of a short job).

    It also checks an http(s) MLflow tracking server once at the start of a run or sweep
    (:func:`quantsweep.tracking.check_tracking_server`): a server that is down is announced
    once and skipped by every job, and the end of the sweep names ``quantsweep-log``.
    Whatever goes wrong here is logged as a warning naming what was lost, never raised:
    a report problem must not hide the sweep's own outcome.
    """

    def __init__(self) -> None:
        self._failed = False

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        _check_output_folder(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from quantsweep.redaction import redact_launcher_log
        from quantsweep.tracking import check_tracking_server

        _check_output_folder(Path(config.hydra.sweep.dir), "hydra.sweep.dir")
        redact_launcher_log()
        settings = self._mlflow(config)
        if settings is not None:
            # resolving hydra.sweep.dir here fixes its ${now:} for the launcher (Hydra caches it)
            check_tracking_server(settings, Path(config.hydra.sweep.dir), sweep=True)

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        from hydra.types import RunMode

        settings = self._mlflow(config)
        # a sweep's jobs go by the verdict of on_multirun_start; a single run checks here,
        # once its folder and log exist
        if settings is not None and config.hydra.mode == RunMode.RUN:
            from quantsweep.tracking import check_tracking_server

            check_tracking_server(settings, Path(config.hydra.runtime.output_dir), sweep=False)

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        if getattr(job_return, "overrides", None):
            from quantsweep.redaction import redact_uri

            # Hydra prints a failed job's overrides to stderr ("Error executing job with overrides")
            job_return.overrides = [redact_uri(str(override)) for override in job_return.overrides]
        self._failed = self._failed or getattr(job_return, "status", None) == JobStatus.FAILED
        self._build(config, complete=self._failed)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        files = self._build(config, complete=True)
        if files is not None:
            print(f"Sweep report: {files.card}")
        settings = self._mlflow(config)
        if settings is not None:
            from quantsweep.redaction import redact_uri
            from quantsweep.tracking import known_verdict, tracking_uri

            uri, sweep_dir = tracking_uri(settings), Path(config.hydra.sweep.dir)
            if known_verdict(uri, sweep_dir) is not None:
                log.warning(
                    "The MLflow tracking server %s was unreachable, so this sweep is not (fully) in MLflow. "
                    "Once it is up, log it with: quantsweep-log %s (jobs already logged are not logged twice)",
                    redact_uri(uri),
                    sweep_dir,
                )

    @staticmethod
    def _mlflow(config: Any) -> Any:
        """The sweep's MLflow settings (a MlflowConfig), or None when MLflow is off."""
        mlflow_settings = config.get("mlflow")
        if mlflow_settings is None or not mlflow_settings.get("enabled", False):
            return None
        from quantsweep.config import MlflowConfig

        return MlflowConfig(
            enabled=True,
            tracking_uri=mlflow_settings.get("tracking_uri"),
            experiment_name=mlflow_settings.get("experiment_name"),
        )

    @staticmethod
    def _build(config: Any, complete: bool) -> ReportFiles | None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            files = build_report(sweep_dir, plots=complete)
        except Exception as error:
            failure: Exception = error
            fallback: ReportFiles | None = None
            if complete:  # the plots may be what failed (a backend, a font): keep the card and CSV
                try:
                    fallback = build_report(sweep_dir, plots=False)
                except Exception as again:  # the card itself fails: that is the error to show
                    failure = again
            log.warning(
                "Could not write the sweep report for %s (%s: %s): %s. Run `quantsweep-report %s` to see "
                "the whole error.",
                sweep_dir,
                type(failure).__name__,
                failure,
                f"its plots ({PARETO_PLOT}, {LATENCY_PLOT}) were not drawn"
                if fallback is not None
                else f"its card ({CARD_FILE}) and {CSV_FILE} were not updated",
                sweep_dir,
            )
            if fallback is None:
                return None
            files = fallback
        settings = ReportCallback._mlflow(config)
        if complete and settings is not None:
            from quantsweep.redaction import redact_uri
            from quantsweep.tracking import known_verdict, log_report, tracking_uri

            if known_verdict(tracking_uri(settings), sweep_dir) is not None:
                return files  # the server is down: the end of the sweep names quantsweep-log
            try:
                log_report(sweep_dir, settings, [files.card, files.csv, *files.plots])
            except Exception as error:
                log.warning(
                    "Could not attach the sweep report to its MLflow parent run (%s: %s): MLflow lacks "
                    "%s; `quantsweep-log %s` attaches it later.",
                    type(error).__name__,
                    redact_uri(str(error)),
                    ", ".join(path.name for path in (files.card, files.csv, *files.plots)),
                    sweep_dir,
                )
        return files
