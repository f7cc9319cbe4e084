"""``quantsweep-log DIR``: (re)log a finished job or a whole sweep to MLflow, from its folder.

A job or sweep that ran while the tracking server was down (or with MLflow off) keeps
everything in its folder; this command logs it later, and logs nothing twice.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from quantsweep.config import MlflowConfig
from quantsweep.files import RESULTS_FILE, UNREACHABLE_FILE
from quantsweep.redaction import redact_uri
from quantsweep.tracking.health import server_verdict
from quantsweep.tracking.runs import log_job, log_report, report_files
from quantsweep.tracking.settings import settings_from_job, tracking_uri


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
        # checked once in this process, not the sweep's recorded verdict: the server may be back
        down = server_verdict(uri)
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
