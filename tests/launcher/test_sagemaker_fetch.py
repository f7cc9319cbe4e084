"""The SageMaker launcher's real path, then ``quantsweep-sagemaker fetch``, against scripted SageMaker answers.

SageMaker is a botocore client under ``Stubber``: the answers moto cannot give (the real
secondary states, MaxRuntimeExceeded, a FailureReason, throttling, ResourceLimitExceeded,
StopTrainingJob), each request and answer checked against the service model, each call in
the scripted order and no call unscripted. Everything else is real: S3, STS and CloudWatch
Logs are moto on 127.0.0.1 over boto3 HTTP; the launcher runs from ``_core._run_remotely``
(the bundle's wheel built, bundle, inputs, payloads and the sweep record uploaded, the
watch loop, bringing home, Hydra's JobReturns and callbacks); ``fetch`` runs as the
command does, with only its SageMaker client handed in.

The test plays the container: the output of a job SageMaker reports Completed is a
``model.tar.gz`` holding ``return.json`` and a real quantsweep job folder (one tiny job is
run for the whole session), uploaded where the scripted DescribeTrainingJob says it is.

Every scenario checks what the user reads on stderr, that no created job is left running
untold (each ended, was stopped through StopTrainingJob, or is named with the exact
``aws sagemaker stop-training-job`` command), and that ``fetch`` then brings the Completed
jobs home and writes the card. Every S3 call of every test is recorded, and each must carry
ExpectedBucketOwner.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, open_dict
from test_sagemaker_watch import QUOTA, in_order
from test_sagemaker_watch import described as watch_described

import quantsweep.cli
from hydra_plugins.quantsweep_sagemaker import _cli as cli
from hydra_plugins.quantsweep_sagemaker import _core, _watch
from hydra_plugins.quantsweep_sagemaker._core import (
    INPUT_COMPLETE,
    PlannedJob,
    build_request,
    input_key,
    s3_channel,
    training_job_name,
)
from hydra_plugins.quantsweep_sagemaker._home import RECORD_FILE, S3_RECORD
from hydra_plugins.quantsweep_sagemaker._payload import PAYLOAD, RETURN, return_record
from hydra_plugins.quantsweep_sagemaker._validate import check_request
from hydra_plugins.quantsweep_sagemaker._watch import Backoff, api_request, stop_command
from hydra_plugins.quantsweep_sagemaker.config import SageMakerLauncherConf
from quantsweep.testing import FAST_JOB, run_module

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's STS answers GetCallerIdentity with it
ROLE = f"arn:aws:iam::{ACCOUNT}:role/quantsweep"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/quantsweep:latest"
START = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
THROTTLED = ("ThrottlingException", "Rate exceeded")
NOT_FOUND = ("ValidationException", "Requested resource not found.")
# the states of the watch tests, and a job stopped by StopTrainingJob
_STAMPS = itertools.count()


@dataclass(frozen=True)
class QuickBackoff(Backoff):
    """The loop's and fetch's backoff, in milliseconds: ``_run_remotely`` and ``fetch`` take none."""

    first: float = 0.001
    cap: float = 0.002
    attempts: int = 2


# ---- fixtures: moto, one real job, the wheel cache -------------------------------------------


@pytest.fixture(scope="module")
def boto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[boto3.Session]:
    """moto in server mode on 127.0.0.1, and a boto3 session (models loaded once) whose clients reach it.

    The environment points every boto3 session at moto too, with none of this machine's AWS setup.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.ERROR)  # no request lines from the server's thread in the captured stderr
    folder = tmp_path_factory.mktemp("aws")
    try:
        host, port = server.get_host_and_port()
        with pytest.MonkeyPatch.context() as patch:
            for variable in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
                patch.delenv(variable, raising=False)
            patch.setenv("AWS_CONFIG_FILE", str(folder / "config"))
            patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "credentials"))
            patch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
            patch.setenv("AWS_ACCESS_KEY_ID", "testing")
            patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            patch.setenv("AWS_DEFAULT_REGION", REGION)
            yield boto3.Session(region_name=REGION)
    finally:
        werkzeug.setLevel(level)
        server.stop()


@pytest.fixture(scope="session")
def finished_job(tmp_path_factory: pytest.TempPathFactory, distilbert_dir: Path, conll_dir: Path) -> Path:
    """A real finished quantsweep job folder: what every Completed job's container sends home here."""
    root = tmp_path_factory.mktemp("real-job")
    run_module(
        "quantsweep.cli",
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        *FAST_JOB,
        f"hydra.run.dir={root / 'job'}",
        f"cache_dir={root / 'cache'}",
        cwd=root,
    )
    assert (root / "job" / "results.json").is_file()
    return root / "job"


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """quantsweep's cache for the bundle's wheel: built once, shared by xdist workers (the cache locks)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    return root / "sagemaker-fetch-cache"


# ---- AWS as the launcher and fetch see it ----------------------------------------------------


@dataclass
class S3Call:
    operation: str
    params: dict[str, Any]


class Aws:
    """What ``_core._boto_session`` and ``cli._session`` return: moto for S3, STS and Logs, every S3
    call recorded; the stubbed client for SageMaker."""

    def __init__(self, boto: boto3.Session, endpoint: str) -> None:
        self.boto = boto
        self.endpoint = endpoint
        self.sagemaker: Any = None
        self.s3_calls: list[S3Call] = []
        self.regions: list[str | None] = []

    def __call__(self, region: str | None) -> Aws:
        self.regions.append(region)
        return self

    def client(self, name: str) -> Any:
        if name == "sagemaker":
            assert self.sagemaker is not None, "no SageMaker client was expected to be asked for"
            return self.sagemaker
        client = self.boto.client(name, endpoint_url=self.endpoint)
        if name == "s3":
            client.meta.events.register("provide-client-params.s3.*", self._record)
        return client

    def _record(self, params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        self.s3_calls.append(S3Call(model.name, {k: v for k, v in params.items() if k != "Body"}))

    def calls_since(self, start: int, *operations: str) -> list[S3Call]:
        return [c for c in self.s3_calls[start:] if not operations or c.operation in operations]


def described(prefix: str, name: str, *path: str, **answer: Any) -> dict[str, Any]:
    """test_sagemaker_watch's DescribeTrainingJob answer, for this sweep's prefix and region."""
    return watch_described(name, *path, prefix=prefix, region=REGION, **answer)


class Script:
    """SageMaker's answers, in the order they must be asked for."""

    def __init__(self, client: Any, prefix: str, requests: dict[str, dict[str, Any]]) -> None:
        self.client = client
        self.stub = Stubber(client)
        self.prefix = prefix
        self.requests = requests  # each job's CreateTrainingJob request, in the API's names
        self.created: list[str] = []  # the creates SageMaker accepts: the jobs that exist

    def create(self, name: str, error: tuple[str, str] | None = None, status: int = 400) -> None:
        expected = self.requests[name]
        if error:
            self.stub.add_client_error(
                "create_training_job", *error, http_status_code=status, expected_params=expected
            )
        else:
            arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}"
            self.stub.add_response("create_training_job", {"TrainingJobArn": arn}, expected)
            self.created.append(name)

    def describe(self, name: str, *path: str, **details: Any) -> None:
        answer = described(self.prefix, name, *path, **details)
        self.stub.add_response("describe_training_job", answer, {"TrainingJobName": name})

    def describe_error(self, name: str, error: tuple[str, str], status: int = 400) -> None:
        self.stub.add_client_error(
            "describe_training_job",
            *error,
            http_status_code=status,
            expected_params={"TrainingJobName": name},
        )

    def stop(self, name: str, error: tuple[str, str] | None = None) -> None:
        if error:
            self.stub.add_client_error("stop_training_job", *error, expected_params={"TrainingJobName": name})
        else:
            self.stub.add_response("stop_training_job", {}, {"TrainingJobName": name})


class Callbacks:
    """Hydra's callbacks as the launcher calls them: on_job_end for every job that finished."""

    def __init__(self) -> None:
        self.ended: dict[str, JobReturn] = {}

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self.ended[str(config.hydra.job.id)] = job_return


@dataclass
class Launched:
    returns: list[JobReturn]
    error: BaseException | None
    err: str


@dataclass
class Fetched:
    code: int
    err: str
    downloads: list[S3Call]  # the S3 GetObject and HeadObject calls it made


@dataclass
class Rig:
    """One sweep: its jobs planned as ``_core.launch`` plans them, S3 on moto, SageMaker scripted."""

    aws: Aws
    s3: Any  # a moto S3 client of the test's own, not recorded
    bucket: str
    stamp: str
    sweep_dir: Path
    finished_job: Path
    capsys: pytest.CaptureFixture[str]
    settings: SageMakerLauncherConf
    launcher_config: DictConfig
    inputs: list[Path]
    jobs: list[PlannedJob] = field(default_factory=list)
    seeds: dict[str, int] = field(default_factory=dict)
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    callbacks: Callbacks = field(default_factory=Callbacks)
    # the sweep record as it was when SageMaker got the first CreateTrainingJob: (local, on S3)
    at_first_create: tuple[Any, Any] | None = None

    @property
    def prefix(self) -> str:
        return f"s3://{self.bucket}/quantsweep/{self.stamp}"

    @property
    def names(self) -> list[str]:
        return [job.name for job in self.jobs]

    def relative(self, job: PlannedJob) -> str:
        return str(job.config.hydra.sweep.subdir)

    def output_uri(self, name: str) -> str:
        return f"{self.prefix}/output/{name}/output/model.tar.gz"

    def script(self) -> Script:
        client = self.aws.boto.client("sagemaker", endpoint_url="https://sagemaker.stubbed.invalid")
        return Script(client, self.prefix, self.requests)

    # -- the launcher

    def launch(self, script: Script) -> Launched:
        """``_core._run_remotely`` with the scripted SageMaker; every scripted answer must be asked for."""
        self.aws.sagemaker = script.client
        script.client.meta.events.register(
            "provide-client-params.sagemaker.CreateTrainingJob", self._record_before_create
        )
        launcher = types.SimpleNamespace(
            settings=self.settings,
            config=self.launcher_config,
            hydra_context=types.SimpleNamespace(callbacks=self.callbacks),
            task_function=quantsweep.cli.run.__wrapped__,  # what Hydra hands a launcher
        )
        returns: list[JobReturn] = []
        error: BaseException | None = None
        with script.stub:
            try:
                returns = _core._run_remotely(cast(Any, launcher), self.jobs, REGION, self.prefix, None)
            except Exception as raised:
                error = raised
            script.stub.assert_no_pending_responses()
        self.aws.sagemaker = None
        err = self.capsys.readouterr().err
        if script.created or self.at_first_create is not None:
            # the record names every job of the sweep before SageMaker hears of any
            assert self.at_first_create is not None
            local, remote = self.at_first_create
            assert local is not None, f"no {RECORD_FILE} in the sweep folder before the first create"
            assert [job["name"] for job in local["jobs"]] == self.names
            assert remote == local
            assert all(job["home"] is None for job in local["jobs"])
        return Launched(returns, error, err)

    def _record_before_create(self, **kwargs: Any) -> None:
        if self.at_first_create is not None:
            return
        path = self.sweep_dir / RECORD_FILE
        local = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=f"quantsweep/{self.stamp}/{S3_RECORD}")["Body"]
            remote = json.loads(body.read())
        except ClientError:
            remote = None
        self.at_first_create = (local, remote)

    # -- the container

    def container_output(self, job: PlannedJob) -> None:
        """What SageMaker uploads for a Completed job: model.tar.gz with return.json and the job folder."""
        seed = self.seeds[job.name]
        with tempfile.TemporaryDirectory() as scratch:
            model = Path(scratch)
            folder = model / "job"
            shutil.copytree(self.finished_job, folder)
            results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
            results["config"]["seed"] = seed  # the job's own config: the card tells the jobs apart by it
            (folder / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
            saved = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text(encoding="utf-8"))
            saved["seed"] = seed
            (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
            record = return_record("COMPLETED", self.relative(job), False, results)
            (model / RETURN).write_text(json.dumps(record), encoding="utf-8")
            archive = io.BytesIO()
            with tarfile.open(fileobj=archive, mode="w:gz") as tar:
                for entry in sorted(model.iterdir()):
                    tar.add(entry, arcname=entry.name)
        key = f"quantsweep/{self.stamp}/output/{job.name}/output/model.tar.gz"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=archive.getvalue())
        self.results[job.name] = results

    def cloudwatch(self, name: str, lines: list[str]) -> None:
        """The job's log stream, as SageMaker writes it (``<job>/algo-1-<time>``)."""
        logs = self.aws.boto.client("logs", endpoint_url=self.aws.endpoint)
        group = "/aws/sagemaker/TrainingJobs"
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=group)
        stream = f"{name}/algo-1-1735732800"
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        now = int(time.time() * 1000)
        events = [{"timestamp": now + n, "message": line} for n, line in enumerate(lines)]
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)

    # -- fetch, and what is home

    def fetch(
        self,
        script: Script,
        target: str | None = None,
        into: Path | None = None,
        bucket_owner: str | None = None,
    ) -> Fetched:
        start = len(self.aws.s3_calls)
        with script.stub:
            code = cli.fetch(target or str(self.sweep_dir), into, bucket_owner, sagemaker=script.client)
            script.stub.assert_no_pending_responses()
        downloads = self.aws.calls_since(start, "GetObject", "HeadObject")
        return Fetched(code, self.capsys.readouterr().err, downloads)

    def home(self, folder: Path | None = None) -> list[str]:
        """The jobs whose folder in the sweep holds results.json, in the sweep's order."""
        root = folder or self.sweep_dir
        return [job.name for job in self.jobs if (root / self.relative(job) / "results.json").is_file()]

    def assert_card(self, names: list[str], folder: Path | None = None) -> None:
        """The card and CSV fetch wrote list exactly the jobs ``names`` (told apart by their seeds)."""
        root = folder or self.sweep_dir
        card = (root / "README.md").read_text(encoding="utf-8")
        jobs = sorted((j for j in self.jobs if j.name in names), key=self.relative)  # the report's order
        seeds = ", ".join(f"`{self.seeds[j.name]}`" for j in jobs)
        assert f"* **seed**: {seeds}\n" in card, card
        assert "## Failed jobs" not in card
        table = (root / "results.csv").read_text(encoding="utf-8")
        for job in self.jobs:
            assert (self.relative(job) in table) == (job.name in names), (job.name, table)

    def assert_all_told(self, err: str, script: Script) -> None:
        """Every job SageMaker created has ended, was stopped, or is named with the command that stops it."""
        accepted = re.search(r"stopped \(StopTrainingJob accepted\): (.*)", err)
        stopped = accepted.group(1).split(", ") if accepted else []
        untold = [
            name
            for name in script.created
            if not re.search(rf"SageMaker {name}: (Completed|Failed|Stopped)\b", err)
            and name not in stopped
            and f"finished on SageMaker, not brought home: {name} (" not in err
            and stop_command(REGION, name) not in err
        ]
        assert not untold, err

    def assert_owner(self, owner: str = ACCOUNT) -> None:
        assert self.aws.s3_calls
        wrong = [c for c in self.aws.s3_calls if c.params.get("ExpectedBucketOwner") != owner]
        assert not wrong, wrong


@pytest.fixture
def make_rig(
    boto: boto3.Session,
    finished_job: Path,
    wheel_cache: Path,
    distilbert_dir: Path,
    conll_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Any:
    """``make_rig(count, **settings)``: a sweep of ``count`` jobs (``seed=1..count``), planned and not sent."""
    from hydra import compose, initialize_config_dir

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    aws = Aws(boto, endpoint)
    monkeypatch.setattr(_core, "_boto_session", aws)
    monkeypatch.setattr(cli, "_session", aws)
    monkeypatch.setattr(_watch, "Backoff", QuickBackoff)

    def make(count: int, **settings: Any) -> Rig:
        bucket = f"qs-fetch-{uuid.uuid4().hex[:16]}"  # moto's state outlives the test
        s3 = boto.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket=bucket)
        sweep_dir = (tmp_path / "sweep").resolve()
        common = [
            f"model_name_or_path={distilbert_dir}",
            f"dataset.path={conll_dir}",
            "mlflow.enabled=false",
            f"cache_dir={wheel_cache}",
            f"hydra.sweep.dir={sweep_dir}",
        ]
        conf = SageMakerLauncherConf(
            role=ROLE,
            region=REGION,
            image_uri=IMAGE,
            image_python="3.12",
            s3_prefix=f"s3://{bucket}/quantsweep",
            poll_seconds=0.001,
            project_dir=str(REPO),
            **settings,
        )
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            launcher_config = compose("config", overrides=common, return_hydra_config=True)
            configs = [
                compose("config", overrides=[f"seed={n}", *common], return_hydra_config=True)
                for n in range(1, count + 1)
            ]
        rig = Rig(
            aws=aws,
            s3=s3,
            bucket=bucket,
            stamp=f"20250101-{120000 + next(_STAMPS):06d}",  # unique job names: log streams are per name
            sweep_dir=sweep_dir,
            finished_job=finished_job,
            capsys=capsys,
            settings=conf,
            launcher_config=launcher_config,
            inputs=[conll_dir, distilbert_dir],  # dataset.path, model_name_or_path: the channels' order
        )
        shape = boto.client("sagemaker").meta.service_model.operation_model("CreateTrainingJob").input_shape
        for index, config in enumerate(configs):
            # as _core.launch plans each job
            overrides = [f"seed={index + 1}"]
            with open_dict(config):
                config.hydra.job.id = f"{config.hydra.job.name}_{index}"
                config.hydra.job.num = index
            name = training_job_name(rig.stamp, index, overrides)
            request = build_request(
                conf,
                name,
                IMAGE,
                rig.prefix,
                bundle_uri=f"{rig.prefix}/bundle",
                job_uri=f"{rig.prefix}/jobs/{name}",
                environment={"QUANTSWEEP_SAGEMAKER_JOB": name},
            )
            check_request(request, name, overrides)
            rig.jobs.append(PlannedJob(index, name, overrides, config, request))
            rig.seeds[name] = index + 1
            # what SageMaker must receive: the request with the local inputs' channels, content-addressed
            channels = [
                s3_channel(f"input{n}", f"s3://{bucket}/quantsweep/inputs/{input_key(path)}")
                for n, path in enumerate(rig.inputs)
            ]
            sent = {**request, "input_data_config": [*request["input_data_config"], *channels]}
            rig.requests[name] = api_request(sent, shape)
        return rig

    return make


def failure_text(ret: JobReturn) -> str:
    """What Hydra raises for a failed job (``return_value`` raises it)."""
    assert ret.status == JobStatus.FAILED
    return str(ret._return_value)


def job_return(launched: Launched, job: PlannedJob) -> JobReturn:
    found = [r for r in launched.returns if r.overrides == job.overrides]
    assert len(found) == 1
    return found[0]


# ---- (a) the real states ------------------------------------------------------------------------


def test_the_real_state_sequence_then_fetch_finds_everything_home(make_rig: Any) -> None:
    rig = make_rig(2)
    a, b = rig.jobs
    for job in rig.jobs:
        rig.container_output(job)
    script = rig.script()
    script.create(a.name)
    script.create(b.name)
    script.describe(a.name, "Starting")
    script.describe(b.name, "Starting")
    script.describe(a.name, "Starting")  # unchanged: not printed again
    script.describe(b.name, "Starting", "Downloading")
    script.describe(a.name, "Starting", "Downloading")
    script.describe(b.name, "Starting", "Downloading", "Training")
    script.describe(a.name, "Starting", "Downloading", "Training")
    script.describe(b.name, "Starting", "Downloading", "Training", "Uploading", "Completed")
    script.describe(a.name, "Starting", "Downloading", "Training", "Uploading")
    script.describe(a.name, "Starting", "Downloading", "Training", "Uploading", "Completed")

    launched = rig.launch(script)

    assert launched.error is None, launched.error
    err = launched.err
    assert in_order(
        err,
        f"SageMaker {a.name}: submitted",
        f"SageMaker {a.name}: InProgress / Starting: Launching requested ML instances. [",
        f"SageMaker {a.name}: InProgress / Downloading: Downloading input data [",
        f"SageMaker {a.name}: InProgress / Training: Training image download completed. Training in progress. [",
        f"SageMaker {a.name}: InProgress / Uploading: Uploading generated training model [",
        f"SageMaker {a.name}: Completed, billed 300 s",
    ), err
    assert err.count(f"SageMaker {a.name}: InProgress / Starting") == 1
    assert f"SageMaker {b.name}: Completed, billed 300 s" in err
    assert "not brought home" not in err and "stopping the training jobs" not in err
    rig.assert_all_told(err, script)
    # home as Hydra's own launchers leave a job: its folder, and its return value as data
    assert rig.home() == [a.name, b.name]
    for job in rig.jobs:
        ret = job_return(launched, job)
        assert ret.status == JobStatus.COMPLETED
        assert ret.return_value == rig.results[job.name]
        assert ret.return_value["config"]["seed"] == rig.seeds[job.name]
        assert ret.hydra_cfg is not None
        assert ret.hydra_cfg.hydra.runtime.output_dir == str(rig.sweep_dir / rig.relative(job))
        assert rig.callbacks.ended[str(job.config.hydra.job.id)] is ret
    record = json.loads((rig.sweep_dir / RECORD_FILE).read_text())
    assert [j["home"] for j in record["jobs"]] == [rig.relative(a), rig.relative(b)]
    assert not (rig.sweep_dir / "README.md").exists()  # the card is fetch's (or Hydra's callback's)

    fetched = rig.fetch(rig.script())  # nothing to ask SageMaker: both are home

    assert fetched.code == 0, fetched.err
    for job in rig.jobs:
        assert f"{job.name}: home already ({rig.sweep_dir / rig.relative(job)})" in fetched.err
    assert f"2 of 2 job(s) home in {rig.sweep_dir}\n" in fetched.err
    assert fetched.downloads == []
    rig.assert_card([a.name, b.name])
    rig.assert_owner()


# ---- (b) MaxRuntimeExceeded ---------------------------------------------------------------------


def test_stopped_after_max_runtime_is_told_with_its_reason_and_fetch_brings_the_rest(make_rig: Any) -> None:
    rig = make_rig(2, max_run_seconds=3600)
    a, b = rig.jobs
    rig.container_output(a)  # b is stopped: SageMaker has nothing of it to bring home
    rig.cloudwatch(b.name, ["epoch 1/1", "timing batch 1 x 8 ..."])
    script = rig.script()
    script.create(a.name)
    script.create(b.name)
    script.describe(a.name, "Starting", "Downloading", "Training")
    script.describe(b.name, "Starting", "Downloading", "Training")
    script.describe(a.name, "Starting", "Downloading", "Training", "Uploading", "Completed")
    script.describe(b.name, "Starting", "Downloading", "Training", "MaxRuntimeExceeded", max_runtime=3600)
    # no StopTrainingJob: the Stubber fails any call not scripted

    launched = rig.launch(script)

    assert launched.error is None, launched.error
    reason = (
        "MaxRuntimeExceeded: Training job runtime exceeded MaxRuntimeInSeconds provided; "
        "raise hydra.launcher.max_run_seconds (now 3600 s) if the job needs longer"
    )
    assert f"SageMaker {b.name}: Stopped ({reason}), billed 240 s" in launched.err, launched.err
    assert "Stopped: Stopped" not in launched.err
    rig.assert_all_told(launched.err, script)
    assert rig.home() == [a.name]
    failed = job_return(launched, b)
    assert failed.status == JobStatus.FAILED
    assert failure_text(failed).startswith(f"SageMaker training job {b.name} ended Stopped: {reason}")
    assert "Last log lines:\nepoch 1/1\ntiming batch 1 x 8 ..." in failure_text(failed)
    assert job_return(launched, a).status == JobStatus.COMPLETED

    script = rig.script()
    script.describe(b.name, "Starting", "Downloading", "Training", "MaxRuntimeExceeded", max_runtime=3600)
    fetched = rig.fetch(script)

    assert fetched.code == 0, fetched.err
    assert f"{a.name}: home already" in fetched.err
    assert f"{b.name}: Stopped ({reason}); nothing to bring home" in fetched.err
    assert f"1 of 2 job(s) home in {rig.sweep_dir}\n" in fetched.err
    assert fetched.downloads == []
    rig.assert_card([a.name])
    rig.assert_owner()


# ---- (c) Failed with a FailureReason -------------------------------------------------------------


def test_a_failed_job_is_told_with_its_failure_reason_and_log(make_rig: Any) -> None:
    rig = make_rig(2)
    a, b = rig.jobs
    rig.container_output(a)
    failure = (
        'AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage "ConfigError: Invalid '
        'configuration: `benchmark.duration` is -1.0"\nCommand "/bin/bash -c ..."'
    )
    rig.cloudwatch(b.name, ["Traceback (most recent call last):", "ConfigError: benchmark.duration is -1.0"])
    script = rig.script()
    script.create(a.name)
    script.create(b.name)
    script.describe(a.name, "Starting", "Training")
    script.describe(b.name, "Starting", "Training", "Failed", failure=failure)
    script.describe(a.name, "Starting", "Training", "Uploading", "Completed")

    launched = rig.launch(script)

    assert launched.error is None, launched.error
    assert (
        f"SageMaker {b.name}: Failed (AlgorithmError: ExecuteUserScriptError:\n    ExitCode 1\n    "
        'ErrorMessage "ConfigError: Invalid configuration: `benchmark.duration` is -1.0"' in launched.err
    ), launched.err
    assert "Failed: Training job failed" not in launched.err  # says nothing the FailureReason does not
    rig.assert_all_told(launched.err, script)
    failed = job_return(launched, b)
    assert failed.status == JobStatus.FAILED
    text = failure_text(failed)
    assert text.startswith(f"SageMaker training job {b.name} ended Failed: {failure}")
    assert text.endswith(
        "Last log lines:\nTraceback (most recent call last):\nConfigError: benchmark.duration is -1.0"
    )
    assert rig.callbacks.ended[str(b.config.hydra.job.id)] is failed
    assert rig.home() == [a.name]

    script = rig.script()
    script.describe(b.name, "Starting", "Training", "Failed", failure=failure)
    fetched = rig.fetch(script)

    assert fetched.code == 0, fetched.err
    assert f"{b.name}: Failed (AlgorithmError: ExecuteUserScriptError:\nExitCode 1" in fetched.err
    assert "); nothing to bring home" in fetched.err
    assert f"1 of 2 job(s) home in {rig.sweep_dir}\n" in fetched.err
    rig.assert_card([a.name])
    rig.assert_owner()


# ---- (d) throttling ------------------------------------------------------------------------------


def test_throttling_on_describe_is_retried_then_fails_safe_and_fetch_brings_the_rest(make_rig: Any) -> None:
    """A throttled describe is retried; one throttled past the bound stops the job still running,
    and one that ended meanwhile is named with its output and the fetch command."""
    rig = make_rig(3)
    a, b, c = rig.jobs
    rig.container_output(a)
    rig.container_output(b)
    script = rig.script()
    for job in rig.jobs:
        script.create(job.name)
    script.describe_error(a.name, THROTTLED)  # retried
    script.describe(a.name, "Starting", "Training")
    script.describe(b.name, "Starting", "Training")
    script.describe(c.name, "Starting", "Training")
    script.describe(a.name, "Starting", "Training", "Uploading", "Completed")
    for _ in range(3):  # the first try and QuickBackoff's two retries
        script.describe_error(b.name, THROTTLED)
    # the loop fails safe: b ended meanwhile (SageMaker refuses the stop, the loop looks), c is stopped
    script.stop(
        b.name, ("ValidationException", "The training job is in status Completed and cannot be stopped")
    )
    script.describe(b.name, "Starting", "Training", "Uploading", "Completed")
    script.stop(c.name)

    launched = rig.launch(script)

    assert isinstance(launched.error, ClientError) and "ThrottlingException" in str(launched.error)
    err = launched.err
    assert "SageMaker DescribeTrainingJob: ThrottlingException: Rate exceeded; retry 1 in" in err
    assert "SageMaker DescribeTrainingJob: ThrottlingException: Rate exceeded; retry 2 in" in err
    assert (
        "SageMaker: the watch loop failed (ThrottlingException: Rate exceeded); stopping the training jobs "
        "it started, so that none keeps billing." in err
    ), err
    assert f"  stopped (StopTrainingJob accepted): {c.name}\n" in err
    assert (
        f"  finished on SageMaker, not brought home: {b.name} (Completed), output at {rig.output_uri(b.name)}\n"
        f"  bring it home later with: quantsweep-sagemaker fetch {rig.sweep_dir}" in err
    )
    assert "STILL RUNNING" not in err and "not submitted" not in err
    rig.assert_all_told(err, script)
    assert rig.home() == [a.name]
    assert list(rig.callbacks.ended) == [str(a.config.hydra.job.id)]

    script = rig.script()
    script.describe_error(b.name, THROTTLED)  # fetch retries too
    script.describe(b.name, "Starting", "Training", "Uploading", "Completed")
    script.describe(c.name, "Starting", "Training", "Stopping", "Stopped")
    fetched = rig.fetch(script)

    assert fetched.code == 0, fetched.err
    assert "SageMaker DescribeTrainingJob: ThrottlingException: Rate exceeded; retry 1 in" in fetched.err
    assert in_order(
        fetched.err,
        f"{a.name}: home already",
        f"{b.name}: brought home to {rig.sweep_dir / rig.relative(b)}",
        f"{c.name}: Stopped (Stopped: The training job was stopped.); nothing to bring home",
        f"2 of 3 job(s) home in {rig.sweep_dir}\n",
    ), fetched.err
    assert rig.home() == [a.name, b.name]
    rig.assert_card([a.name, b.name])
    record = json.loads((rig.sweep_dir / RECORD_FILE).read_text())
    assert [j["home"] for j in record["jobs"]] == [rig.relative(a), rig.relative(b), None]
    rig.assert_owner()


# ---- (e) ResourceLimitExceeded -------------------------------------------------------------------


def test_resource_limit_on_the_third_create_keeps_the_created_and_names_the_rest(make_rig: Any) -> None:
    rig = make_rig(4)
    a, b, c, d = rig.jobs
    rig.container_output(a)
    rig.container_output(b)
    script = rig.script()
    script.create(a.name)
    script.create(b.name)
    script.create(c.name, QUOTA)
    script.describe(a.name, "Starting", "Training")
    script.describe(b.name, "Starting", "Uploading", "Completed")
    script.describe(a.name, "Starting", "Training", "Uploading", "Completed")  # no create is tried again

    launched = rig.launch(script)

    assert launched.error is None, launched.error
    err = launched.err
    assert (
        f"SageMaker refused to create {c.name}: ResourceLimitExceeded: The account-level service limit" in err
    )
    assert f"  not submitted (2): {c.name}, {d.name}\n" in err
    assert f"already running keep running and are watched to the end: {a.name}, {b.name}" in err
    assert "hydra.launcher.max_parallel_jobs=2 (what the quota allowed now)" in err
    assert "stopping the training jobs" not in err
    rig.assert_all_told(err, script)
    assert rig.home() == [a.name, b.name]
    for job in (c, d):
        ret = job_return(launched, job)
        assert ret.status == JobStatus.FAILED
        assert failure_text(ret).startswith(
            f"SageMaker training job {job.name} was not submitted: ResourceLimitExceeded:"
        )
    assert sorted(rig.callbacks.ended) == sorted(str(j.config.hydra.job.id) for j in (a, b))

    script = rig.script()
    script.describe_error(c.name, NOT_FOUND)
    script.describe_error(d.name, NOT_FOUND)
    fetched = rig.fetch(script)

    assert fetched.code == 0, fetched.err
    assert f"{c.name}: never created (SageMaker does not know it)" in fetched.err
    assert f"{d.name}: never created (SageMaker does not know it)" in fetched.err
    assert f"2 of 4 job(s) home in {rig.sweep_dir}\n" in fetched.err
    assert fetched.downloads == []
    rig.assert_card([a.name, b.name])
    rig.assert_owner()


# ---- (f) an S3 error while bringing a job home --------------------------------------------------


def snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_an_s3_error_bringing_a_job_home_is_told_and_fetch_brings_it_once(make_rig: Any) -> None:
    rig = make_rig(2)
    a, b = rig.jobs
    rig.container_output(b)  # a's output is not on S3 (yet): downloading it fails with S3's 404
    script = rig.script()
    script.create(a.name)
    script.create(b.name)
    script.describe(a.name, "Starting", "Training", "Uploading", "Completed")
    script.describe(b.name, "Starting", "Training")
    script.describe(b.name, "Starting", "Training", "Uploading", "Completed")  # b still watched, not stopped

    launched = rig.launch(script)

    assert launched.error is None, launched.error
    hint = f"bring it home later with: quantsweep-sagemaker fetch {rig.sweep_dir}"
    err = launched.err
    assert (
        f"SageMaker {a.name}: finished on SageMaker (Completed), not brought home: 404: Not Found\n"
        f"  its output stays at {rig.output_uri(a.name)}; {hint}\n" in err
    ), err
    # said again at the end, where it is not lost among the state lines
    assert in_order(
        err,
        f"SageMaker {b.name}: Completed",
        "SageMaker: finished on SageMaker, not brought home:\n",
        f"  {a.name} (Completed): output at {rig.output_uri(a.name)}\n  {hint}",
    ), err
    rig.assert_all_told(err, script)
    assert rig.home() == [b.name]
    failed = job_return(launched, a)
    assert failed.status == JobStatus.FAILED
    assert "ended Completed, and was not brought home: An error occurred (404)" in failure_text(failed)
    assert hint in failure_text(failed)
    assert job_return(launched, b).status == JobStatus.COMPLETED

    # fetch while the output is still missing: told, with a non-zero exit
    script = rig.script()
    script.describe(a.name, "Starting", "Training", "Uploading", "Completed")
    fetched = rig.fetch(script)
    assert fetched.code == 1
    assert f"{a.name}: Completed, not brought home: 404: Not Found" in fetched.err
    assert f"1 of 2 job(s) home in {rig.sweep_dir}; 1 problem(s) above\n" in fetched.err
    rig.assert_card([b.name])

    rig.container_output(a)
    script = rig.script()
    script.describe(a.name, "Starting", "Training", "Uploading", "Completed")
    fetched = rig.fetch(script)

    assert fetched.code == 0, fetched.err
    assert in_order(
        fetched.err,
        f"{a.name}: brought home to {rig.sweep_dir / rig.relative(a)}",
        f"{b.name}: home already",
        f"2 of 2 job(s) home in {rig.sweep_dir}\n",
    ), fetched.err
    assert [c.params["Key"] for c in fetched.downloads if c.operation == "GetObject"] == [
        rig.output_uri(a.name).split("/", 3)[3]
    ]
    assert rig.home() == [a.name, b.name]
    assert (rig.sweep_dir / rig.relative(a) / "model_quantized.onnx").is_file()
    rig.assert_card([a.name, b.name])

    # again: nothing is downloaded, nothing changes
    before = snapshot(rig.sweep_dir)
    fetched = rig.fetch(rig.script())

    assert fetched.code == 0, fetched.err
    assert fetched.downloads == []
    assert f"{a.name}: home already" in fetched.err and f"{b.name}: home already" in fetched.err
    assert snapshot(rig.sweep_dir) == before
    rig.assert_owner()


# ---- wait=false, and fetch from the S3 prefix alone ----------------------------------------------


def test_wait_false_then_fetch_from_the_s3_prefix_into_another_folder(make_rig: Any, tmp_path: Path) -> None:
    rig = make_rig(2, wait=False, max_parallel_jobs=2)
    a, b = rig.jobs
    script = rig.script()
    script.create(a.name)
    script.create(b.name)  # and nothing else: no describe, no stop

    launched = rig.launch(script)

    assert launched.error is None, launched.error
    err = launched.err
    assert f"SageMaker {a.name}: submitted" in err and f"SageMaker {b.name}: submitted" in err
    assert "2 training job(s) submitted and not watched (wait=false)" in err
    assert stop_command(REGION, a.name) in err
    assert (
        f"When they have ended, bring the results home (card, MLflow) with: "
        f"quantsweep-sagemaker fetch {rig.sweep_dir}" in err
    )
    assert [(r.status, r.return_value) for r in launched.returns] == [
        (JobStatus.COMPLETED, {"training_job": a.name}),
        (JobStatus.COMPLETED, {"training_job": b.name}),
    ]
    assert rig.home() == []

    # on another machine: only the S3 prefix; a has finished, b is still running
    rig.container_output(a)
    elsewhere = tmp_path / "elsewhere"
    script = rig.script()
    script.describe(a.name, "Starting", "Training", "Uploading", "Completed")
    script.describe(b.name, "Starting", "Training")
    fetched = rig.fetch(script, target=rig.prefix, into=elsewhere)

    assert fetched.code == 0, fetched.err
    assert f"{a.name}: brought home to {elsewhere / rig.relative(a)}" in fetched.err
    assert (
        f"{b.name}: still running (InProgress / Training: Training image download completed. Training in "
        "progress.); fetch again once it has ended" in fetched.err
    )
    assert f"1 of 2 job(s) home in {elsewhere}; 1 still running\n" in fetched.err
    assert rig.home(elsewhere) == [a.name] and rig.home() == []
    record = json.loads((elsewhere / RECORD_FILE).read_text())
    assert record["sweep_dir"] == str(elsewhere)
    assert [j["home"] for j in record["jobs"]] == [rig.relative(a), None]
    rig.assert_card([a.name], elsewhere)

    # later, from that folder: b has ended
    rig.container_output(b)
    script = rig.script()
    script.describe(b.name, "Starting", "Training", "Uploading", "Completed")
    fetched = rig.fetch(script, target=str(elsewhere))

    assert fetched.code == 0, fetched.err
    assert f"{a.name}: home already" in fetched.err
    assert f"{b.name}: brought home to {elsewhere / rig.relative(b)}" in fetched.err
    assert rig.home(elsewhere) == [a.name, b.name]
    rig.assert_card([a.name, b.name], elsewhere)
    rig.assert_owner()


# ---- every S3 call carries ExpectedBucketOwner ---------------------------------------------------


@pytest.mark.parametrize("owner", [None, "111122223333"], ids=["own-account", "bucket_owner"])
def test_every_s3_call_carries_the_expected_bucket_owner(
    make_rig: Any, tmp_path: Path, owner: str | None
) -> None:
    """Of the launcher (bundle, inputs, payloads, record, bringing home) and of fetch (record, downloads)."""
    rig = make_rig(2, bucket_owner=owner)
    expected = owner or ACCOUNT
    a, b = rig.jobs
    rig.container_output(b)  # a's output arrives later: fetch brings it home
    script = rig.script()
    script.create(a.name)
    script.create(b.name)
    script.describe(a.name, "Starting", "Completed")
    script.describe(b.name, "Starting", "Completed")

    launched = rig.launch(script)

    assert launched.error is None, launched.error
    launcher_calls = list(rig.aws.s3_calls)
    assert {c.operation for c in launcher_calls} >= {"PutObject", "ListObjectsV2", "HeadObject", "GetObject"}
    keys = {c.params.get("Key") for c in launcher_calls if c.operation == "PutObject"}
    for job in rig.jobs:  # what the containers read, all sent
        assert f"quantsweep/{rig.stamp}/jobs/{job.name}/{PAYLOAD}" in keys
    assert f"quantsweep/{rig.stamp}/{S3_RECORD}" in keys
    assert any(k.startswith(f"quantsweep/{rig.stamp}/bundle/quantsweep-") for k in keys if k)
    for path in rig.inputs:  # whole, and marked whole last
        assert any(k.startswith(f"quantsweep/inputs/{input_key(path)}/{path.name}/") for k in keys if k)
        assert f"quantsweep/inputs/{input_key(path)}/{INPUT_COMPLETE}" in keys
    assert json.loads((rig.sweep_dir / RECORD_FILE).read_text())["bucket_owner"] == expected

    rig.container_output(a)
    script = rig.script()
    script.describe(a.name, "Starting", "Completed")
    fetched = rig.fetch(script)  # the sweep folder: the recorded owner
    assert fetched.code == 0, fetched.err

    elsewhere = tmp_path / "elsewhere"
    script = rig.script()
    script.describe(a.name, "Starting", "Completed")
    script.describe(b.name, "Starting", "Completed")
    # the S3 prefix: the record is read as the caller's own account's, unless told another
    fetched = rig.fetch(script, target=rig.prefix, into=elsewhere, bucket_owner=owner)
    assert fetched.code == 0, fetched.err
    assert rig.home(elsewhere) == [a.name, b.name]

    fetch_calls = rig.aws.s3_calls[len(launcher_calls) :]
    assert {c.operation for c in fetch_calls} >= {"GetObject", "HeadObject"}
    assert f"quantsweep/{rig.stamp}/{S3_RECORD}" in {c.params["Key"] for c in fetch_calls}
    rig.assert_owner(expected)
    assert set(rig.aws.regions) <= {REGION, None}
