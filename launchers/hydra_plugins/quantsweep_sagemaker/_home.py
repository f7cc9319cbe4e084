"""Bringing finished training jobs home: the sweep's record, a job's folder unpacked, MLflow at home.

Used by the launcher as each job ends, and by ``quantsweep-sagemaker fetch`` later (after
``wait=false``, a lost connection, Ctrl-C, or an S3 error), so both do exactly the same.

- **The sweep record** (``sagemaker-sweep.json`` in the sweep folder, ``sweep.json`` under the
  sweep's S3 prefix) is written before the first job is created: region, prefix, bucket
  owner and every job's name, so that any job the launcher created can be found again
  from the sweep folder or from S3 alone. It also notes which jobs are home.
- **A job's results come home as data**: its ``model.tar.gz`` is unpacked with tarfile's
  ``data`` filter (no links out, no absolute paths), ``return.json`` is read and checked
  (``_payload.read_return``), and the job folder is copied into the sweep folder. Nothing
  is unpickled, whatever else lies in the archive or the prefix.
- **MLflow is logged at home**, whatever the tracking URI, through the idempotent path of
  ``quantsweep-log`` (``quantsweep.tracking.log_job``): a job the container already logged
  (``hydra.launcher.mlflow_from_container=true``) is found by its key and not logged twice.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra_plugins.quantsweep_sagemaker._payload import RETURN, JobRecord, PayloadError, read_return
from hydra_plugins.quantsweep_sagemaker._s3 import Store

log = logging.getLogger(__name__)

RECORD_FILE = "sagemaker-sweep.json"  # in the sweep folder
S3_RECORD = "sweep.json"  # under the sweep's S3 prefix
FORMAT = 1


class FetchError(RuntimeError):
    """A sweep record or a job's output that cannot be used; the message is for the user."""


@dataclass
class SweepRecord:
    region: str
    prefix: str  # s3://bucket/.../<stamp>: bundle, jobs/, output/
    bucket_owner: str
    sweep_dir: str  # the sweep folder on the machine that launched it
    # per job: name, index, overrides, and home (its folder relative to the sweep, once home)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    format: int = FORMAT

    @property
    def s3_uri(self) -> str:
        return f"{self.prefix}/{S3_RECORD}"

    @classmethod
    def from_json(cls, data: Any, where: str) -> SweepRecord:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise FetchError(f"{where} is not a quantsweep SageMaker sweep record of format {FORMAT}.")
        try:
            record = cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except KeyError as missing:
            raise FetchError(f"{where} lacks {missing}.") from None
        names = [job.get("name") for job in record.jobs]
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise FetchError(f"{where}: its jobs must have distinct names.")
        # the launcher names every job qs-<stamp>-..., <stamp> being the last part of its prefix
        strangers = [
            job["name"]
            for job in record.jobs
            if not str(job["name"]).startswith(f"qs-{record.job_prefix(job).rstrip('/').rsplit('/', 1)[-1]}-")
        ]
        if strangers:
            raise FetchError(f"{where} names jobs this sweep's launcher did not name: {strangers}.")
        return record

    @classmethod
    def load(cls, folder: Path) -> SweepRecord:
        path = folder / RECORD_FILE
        if not path.is_file():
            raise FetchError(
                f"{folder} has no {RECORD_FILE}: it is not the folder of a sweep launched with "
                "hydra/launcher=sagemaker (or the launch failed before any job was created)."
            )
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")), str(path))

    def data(self) -> dict[str, Any]:
        """The record as written, locally and to S3: a job's overrides with any URL's user:password@ as ``***@``.

        A tracking URI given as an override (``mlflow.tracking_uri=http://user:password@host``)
        must not be kept in the sweep folder nor uploaded; a record of an earlier launch that
        kept one loses it here too.
        """
        from quantsweep.redaction import redact_uri

        data = asdict(self)
        for job in data["jobs"]:
            job["overrides"] = [redact_uri(str(o)) for o in job.get("overrides") or []]
        return data

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / RECORD_FILE
        scratch = path.with_name(f".{path.name}.tmp")
        scratch.write_text(json.dumps(self.data(), indent=2) + "\n", encoding="utf-8")
        os.replace(scratch, path)  # a kill mid-write leaves the old record, never half of one

    def job_prefix(self, job: dict[str, Any]) -> str:
        """The S3 prefix a job was launched under (each launch into a sweep folder has its own)."""
        return str(job.get("prefix") or self.prefix)

    def after(self, earlier: SweepRecord | None) -> SweepRecord:
        """This launch's record, with the jobs of an earlier record of the same folder before it."""
        if earlier is None:
            return self
        names = {job["name"] for job in self.jobs}
        kept = [
            {**job, "prefix": earlier.job_prefix(job)} for job in earlier.jobs if job["name"] not in names
        ]
        return SweepRecord(self.region, self.prefix, self.bucket_owner, self.sweep_dir, [*kept, *self.jobs])

    def mark_home(self, name: str, relative_dir: str) -> None:
        for job in self.jobs:
            if job["name"] == name:
                job["home"] = relative_dir


@dataclass
class Home:
    """A job brought home: its folder in the sweep, and what the container returned."""

    job_dir: Path
    record: JobRecord


def bring_home(store: Store, name: str, description: dict[str, Any], sweep_dir: Path, prefix: str) -> Home:
    """Download a Completed job's ``model.tar.gz`` and unpack its job folder into the sweep.

    Only from the sweep's own output prefix (``<prefix>/output/``), and only into a
    subfolder of ``sweep_dir``.
    """
    artifacts = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if not artifacts:
        raise FetchError(f"SageMaker names no output (ModelArtifacts) for {name}.")
    if not str(artifacts).startswith(f"{prefix.rstrip('/')}/output/{name}/"):
        raise FetchError(f"{name}'s output {artifacts} is not under this sweep's {prefix}/output/{name}/.")
    with tempfile.TemporaryDirectory(prefix="quantsweep-sagemaker-") as scratch:
        archive = Path(scratch) / "model.tar.gz"
        store.download_file(str(artifacts), archive)
        unpacked = Path(scratch) / "model"
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")
        # data only: the JSON record; any other file (a planted return.pkl) is never loaded
        if not (unpacked / RETURN).is_file():
            raise FetchError(f"{artifacts} holds no {RETURN}: it is not the output of a quantsweep job.")
        try:
            record = read_return((unpacked / RETURN).read_text(encoding="utf-8"))
        except (PayloadError, ValueError) as error:
            raise FetchError(f"{artifacts}: {RETURN} cannot be used ({error}).") from None
        job_dir = (sweep_dir / record.relative_dir).resolve()
        if job_dir == sweep_dir.resolve() or sweep_dir.resolve() not in job_dir.parents:
            raise FetchError(
                f"{artifacts}: {RETURN} names the folder {record.relative_dir!r}, not one of the sweep's."
            )
        if (unpacked / "job").is_dir():
            from quantsweep.files import RESULTS_FILE
            from quantsweep.job_folder import make_room

            # an earlier run's files in the folder (another config, a failed try) go aside, not under the new ones
            make_room(job_dir, unpacked / "job" / RESULTS_FILE)
            shutil.copytree(unpacked / "job", job_dir, dirs_exist_ok=True)
    return Home(job_dir, record)


def log_at_home(job_dir: Path, sweep_dir: Path, from_container: bool, given_uri: str | None = None) -> None:
    """Log a job brought home to MLflow, as ``quantsweep-log`` does; a failure is a warning, never lost work.

    ``given_uri``: the tracking URI the launcher was given, credentials included. The job's
    saved config keeps a URI's user:password@ as ``***@``; a job whose saved URI is the
    redacted form of this one is logged with this one, so that a sweep logs to a
    password-protected server as a local sweep does (``fetch`` later has no such URI: it
    needs MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD).
    """
    from quantsweep.files import RESULTS_FILE
    from quantsweep.redaction import redact_uri
    from quantsweep.tracking import (
        announce_unreachable,
        announced,
        log_job,
        logged_run,
        server_verdict,
        settings_from_job,
        tracking_uri,
    )

    if not (job_dir / RESULTS_FILE).is_file():
        return
    uri = "(unknown)"
    try:
        settings = settings_from_job(job_dir)
        if not settings.enabled:
            return
        if given_uri and settings.tracking_uri == redact_uri(given_uri):
            settings.tracking_uri = given_uri  # in memory only: written nowhere, shown redacted
        uri = tracking_uri(settings)
        verdict = server_verdict(uri, sweep_dir)
        if verdict is not None:
            if not announced(uri):
                announce_unreachable(uri, verdict, sweep_dir, "sweep")
            return
        if from_container and logged_run(job_dir, settings) is None:
            log.warning(
                "MLflow: the container did not log %s (its quantsweep.log says why); logging it from here.",
                job_dir.name,
            )
        log_job(job_dir, settings, sweep_dir)
    except Exception as error:  # the job is home; MLflow can catch up later, it must not fail the job
        log.warning(
            "Could not log %s to MLflow at %s (%s: %s). The results are safe in %s; log them later with: "
            "quantsweep-sagemaker fetch %s",
            job_dir.name,
            redact_uri(uri),
            type(error).__name__,
            redact_uri(str(error)),
            job_dir,
            sweep_dir,
        )
