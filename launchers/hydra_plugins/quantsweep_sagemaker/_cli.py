"""``quantsweep-sagemaker``: the launcher's commands outside a sweep.

- ``fetch <sweep folder | s3://bucket/prefix/<stamp>>`` brings a sweep's finished jobs
  home after the launcher could not (``wait=false``, Ctrl-C, a lost connection, an S3
  error), writes the card and logs every job to MLflow. It asks SageMaker about each job
  of the sweep record and only then downloads; a job already home is not downloaded again
  and MLflow's logging is idempotent, so running it twice changes nothing.
- ``bundle <folder>`` writes the job bundle, for ``docker build -f launchers/Dockerfile``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from hydra_plugins.quantsweep_sagemaker._home import (
    S3_RECORD,
    FetchError,
    SweepRecord,
    bring_home,
    log_at_home,
)
from hydra_plugins.quantsweep_sagemaker._s3 import Store, caller_account


def _say(text: str) -> None:
    from quantsweep.redaction import redact_uri

    # whatever a message quotes (an error's text, a record's content): no URL's user:password@
    print(redact_uri(text), file=sys.stderr, flush=True)


def _session(region: str | None) -> Any:
    import boto3

    return boto3.Session(region_name=region) if region else boto3.Session()


def locate(target: str, into: Path | None, bucket_owner: str | None) -> tuple[SweepRecord, Path, Store]:
    """The sweep record, the local sweep folder and the S3 store, from a sweep folder or an S3 prefix."""
    if target.startswith("s3://"):
        session = _session(None)
        store = Store(session.client("s3"), bucket_owner or caller_account(session))
        uri = f"{target.rstrip('/')}/{S3_RECORD}"
        try:
            data = store.get_json(uri)
        except Exception as error:
            raise FetchError(f"Could not read the sweep record {uri}: {error}") from None
        record = SweepRecord.from_json(data, uri)
        if record.prefix.rstrip("/") != target.rstrip("/"):
            raise FetchError(f"{uri} describes the sweep at {record.prefix}, not {target}; it is not used.")
        # never where the record says: anyone who can write to the bucket could point that anywhere
        sweep_dir = (into or Path.cwd() / target.rstrip("/").rsplit("/", 1)[-1]).resolve()
        store = Store(_session(record.region).client("s3"), bucket_owner or record.bucket_owner)
        return record, sweep_dir, store
    folder = Path(target)
    record = SweepRecord.load(folder)
    if into is not None and into.resolve() != folder.resolve():
        raise FetchError("--into is for an S3 prefix; a sweep folder is fetched into itself.")
    store = Store(_session(record.region).client("s3"), bucket_owner or record.bucket_owner)
    return record, folder.resolve(), store


def fetch(
    target: str, into: Path | None = None, bucket_owner: str | None = None, sagemaker: Any = None
) -> int:
    """Bring the sweep's finished jobs home, write its card, log it to MLflow; the exit code."""
    from hydra_plugins.quantsweep_sagemaker._watch import RUNNING, brief, call, end_reason, not_found, state
    from quantsweep.files import RESULTS_FILE

    record, sweep_dir, store = locate(target, into, bucket_owner)
    record.sweep_dir = str(sweep_dir)
    client = sagemaker or _session(record.region).client("sagemaker")
    problems = 0
    running = 0
    for job in record.jobs:
        name = str(job["name"])
        if job.get("home") and (sweep_dir / str(job["home"]) / RESULTS_FILE).is_file():
            _say(f"{name}: home already ({sweep_dir / str(job['home'])})")
            continue
        try:
            description = call(client, "describe_training_job", {"TrainingJobName": name})
        except Exception as error:
            if not_found(error):
                _say(f"{name}: never created (SageMaker does not know it)")
            else:
                problems += 1
                _say(f"{name}: SageMaker could not be asked ({brief(error)})")
            continue
        status = str(description.get("TrainingJobStatus"))
        if status in RUNNING:
            running += 1
            _say(f"{name}: still running ({state(description)}); fetch again once it has ended")
        elif status == "Completed":
            try:
                home = bring_home(store, name, description, sweep_dir, record.job_prefix(job))
            except Exception as error:
                problems += 1
                _say(f"{name}: Completed, not brought home: {brief(error)}")
                continue
            record.mark_home(name, home.record.relative_dir)
            record.save(sweep_dir)
            _say(f"{name}: brought home to {home.job_dir}")
        else:
            _say(f"{name}: {status} ({end_reason(description)}); nothing to bring home")
    record.save(sweep_dir)
    home_dirs = [
        sweep_dir / str(job["home"])
        for job in record.jobs
        if job.get("home") and (sweep_dir / str(job["home"]) / RESULTS_FILE).is_file()
    ]
    if home_dirs:
        problems += _report_and_log(sweep_dir, home_dirs)
    _say(
        f"{len(home_dirs)} of {len(record.jobs)} job(s) home in {sweep_dir}"
        + (f"; {running} still running" if running else "")
        + (f"; {problems} problem(s) above" if problems else "")
    )
    return 1 if problems else 0


def _report_and_log(sweep_dir: Path, home_dirs: list[Path]) -> int:
    """Log every job home to MLflow (idempotent), then write the card and attach it; the problems."""
    from quantsweep.redaction import redact_uri
    from quantsweep.report import build_report
    from quantsweep.tracking import log_report, logged_run, server_verdict, settings_from_job, tracking_uri

    problems = 0
    # a fresh look at each server: the sweep folder may have recorded it down during the sweep
    for uri in {tracking_uri(s) for s in map(settings_from_job, home_dirs) if s.enabled}:
        server_verdict(uri, sweep_dir, recheck=True)
    for job_dir in home_dirs:
        log_at_home(job_dir, sweep_dir, from_container=False)
    files = build_report(sweep_dir)
    _say(f"Sweep report: {files.card}")
    settings = settings_from_job(home_dirs[0])
    if settings.enabled:
        missing = [d.name for d in home_dirs if _not_logged(d, settings_from_job(d), logged_run)]
        if missing:
            problems += 1
            _say(f"MLflow lacks {', '.join(missing)} (see above); fetch again once the server answers")
        else:
            try:
                log_report(sweep_dir, settings, [files.card, files.csv, *files.plots])
            except Exception as error:
                problems += 1
                _say(f"Could not attach the card to MLflow: {redact_uri(str(error))}")
    return problems


def _not_logged(job_dir: Path, settings: Any, logged_run: Any) -> bool:
    try:
        return logged_run(job_dir, settings) is None
    except Exception:
        return True


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="quantsweep-sagemaker", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetching = commands.add_parser(
        "fetch",
        help="bring a sweep's finished jobs home, write its card and log it to MLflow (safe to repeat)",
    )
    fetching.add_argument(
        "target", help="the sweep folder, or the sweep's S3 prefix (s3://bucket/.../<stamp>)"
    )
    fetching.add_argument(
        "--into", type=Path, help="with an S3 prefix: the local sweep folder to fill (default: ./<stamp>)"
    )
    fetching.add_argument(
        "--bucket-owner", help="the bucket's AWS account (default: the one recorded, else your own)"
    )
    bundling = commands.add_parser(
        "bundle", help="write the job bundle into a folder, for launchers/Dockerfile"
    )
    bundling.add_argument("folder", type=Path)
    bundling.add_argument("--project-dir", type=Path, default=None, help="the quantsweep checkout")
    args = parser.parse_args(argv)
    if args.command == "bundle":
        from hydra_plugins.quantsweep_sagemaker._bundle import build_bundle

        bundle = build_bundle(args.folder, args.project_dir, None)
        print("\n".join(str(p) for p in bundle.files))
        return
    try:
        code = fetch(args.target, args.into, args.bucket_owner)
    except FetchError as error:
        _say(f"quantsweep-sagemaker fetch: {error}")
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
