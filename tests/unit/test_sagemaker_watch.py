"""The SageMaker watch loop against scripted AWS answers that moto cannot give.

botocore's ``Stubber`` on a real botocore SageMaker client: no network, and botocore
checks every request the loop sends, and every scripted answer, against the SageMaker
service model. Calls must come in the scripted order, and a call not scripted fails the
test, so each test also pins down exactly which calls the loop makes (a StopTrainingJob
that should not happen, a create beyond ``max_parallel_jobs``, a poll too many).

The answers follow what SageMaker documents for DescribeTrainingJob: TrainingJobStatus
InProgress with the SecondaryStatus Starting, Downloading, Training, Uploading, then
Completed; Stopped with MaxRuntimeExceeded; Failed with a FailureReason. The status
messages are those the service model's documentation lists.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from botocore.stub import Stubber

from hydra_plugins.quantsweep_sagemaker._core import build_request
from hydra_plugins.quantsweep_sagemaker._watch import (
    NOT_SUBMITTED,
    SUBMITTED,
    Backoff,
    Outcome,
    api_request,
    watch,
)
from hydra_plugins.quantsweep_sagemaker.config import SageMakerLauncherConf

REGION = "eu-west-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/quantsweep"
PREFIX = "s3://my-bucket/quantsweep/20250101-120000"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/quantsweep:latest"
START = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
POLL = 0.0001
FETCH = "quantsweep-sagemaker fetch outputs/sweep brings it home later"

# SecondaryStatus -> (TrainingJobStatus, StatusMessage), as DescribeTrainingJob reports them
SECONDARY = {
    "Starting": ("InProgress", "Launching requested ML instances."),
    "Downloading": ("InProgress", "Downloading input data"),
    "Training": ("InProgress", "Training image download completed. Training in progress."),
    "Uploading": ("InProgress", "Uploading generated training model"),
    "Completed": ("Completed", "Training job completed"),
    "Stopping": ("Stopping", "Stopping the training job"),
    "MaxRuntimeExceeded": ("Stopped", "Training job runtime exceeded MaxRuntimeInSeconds provided"),
    "Failed": ("Failed", "Training job failed"),
    "Stopped": ("Stopped", "The training job was stopped."),
}
EXPIRED = ("ExpiredTokenException", "The security token included in the request is expired")
QUOTA = (
    "ResourceLimitExceeded",
    "The account-level service limit 'ml.m7i.2xlarge for training job usage' is 2 Instances, with current "
    "utilization of 2 Instances and a request delta of 1 Instances. Please use AWS Service Quotas to request "
    "an increase for this quota.",
)


@dataclass
class Plan:
    name: str
    request: dict[str, Any]


def plan(name: str, **settings: Any) -> Plan:
    """A job as the launcher plans it: its CreateTrainingJob request from the real build_request."""
    conf = SageMakerLauncherConf(role=ROLE, region=REGION, **settings)
    return Plan(
        name,
        build_request(
            conf,
            name,
            IMAGE,
            PREFIX,
            bundle_uri=f"{PREFIX}/bundle",
            job_uri=f"{PREFIX}/jobs/{name}",
            environment={"QUANTSWEEP_SAGEMAKER_JOB": name},
        ),
    )


def described(
    name: str,
    *path: str,
    failure: str | None = None,
    max_runtime: int = 86400,
    prefix: str = PREFIX,
    region: str = REGION,
) -> dict[str, Any]:
    """A DescribeTrainingJob answer for a job that went through the secondary statuses ``path``."""
    status = SECONDARY[path[-1]][0]
    transitions: list[dict[str, Any]] = [
        {"Status": step, "StartTime": START + timedelta(minutes=n), "StatusMessage": SECONDARY[step][1]}
        for n, step in enumerate(path)
    ]
    for before, after in itertools.pairwise(transitions):
        before["EndTime"] = after["StartTime"]
    answer: dict[str, Any] = {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:{region}:{ACCOUNT}:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": f"{prefix}/output/{name}/output/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": path[-1],
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
        "CreationTime": START,
        "OutputDataConfig": {"S3OutputPath": f"{prefix}/output"},
        "SecondaryStatusTransitions": transitions,
    }
    if failure:
        answer["FailureReason"] = failure
    if status not in ("InProgress", "Stopping"):
        answer["BillableTimeInSeconds"] = 60 * len(path)
    return answer


class Script:
    """SageMaker's answers, in the order the loop must ask for them."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.stub = Stubber(client)
        self.shape = client.meta.service_model.operation_model("CreateTrainingJob").input_shape

    def create(self, job: Plan, error: tuple[str, str] | None = None) -> None:
        expected = api_request(job.request, self.shape)
        if error:
            self.stub.add_client_error("create_training_job", *error, expected_params=expected)
        else:
            arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{job.name}"
            self.stub.add_response("create_training_job", {"TrainingJobArn": arn}, expected)

    def describe(self, name: str, *path: str, **details: Any) -> None:
        self.stub.add_response(
            "describe_training_job", described(name, *path, **details), {"TrainingJobName": name}
        )

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


class Home:
    """The bring_home and on_finished callables, recording their calls; bring_home may fail for a job."""

    def __init__(self, fail: dict[str, BaseException] | None = None) -> None:
        self.fail = fail or {}
        self.brought: list[tuple[str, str]] = []
        self.finished: list[tuple[str, Outcome[str]]] = []

    def bring_home(self, job: Plan, description: dict[str, Any]) -> str:
        self.brought.append((job.name, description["TrainingJobStatus"]))
        if job.name in self.fail:
            raise self.fail[job.name]
        return f"home:{job.name}"

    def on_finished(self, job: Plan, outcome: Outcome[str]) -> None:
        self.finished.append((job.name, outcome))


class Sleeps:
    """time.sleep's stand-in: records each wait; raises ``interrupt`` at the ``at``-th poll."""

    def __init__(self, interrupt: BaseException | None = None, at: int = 0) -> None:
        self.waits: list[float] = []
        self.interrupt = interrupt
        self.at = at

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.interrupt is not None and self.waits.count(POLL) == self.at:
            raise self.interrupt

    @property
    def backoffs(self) -> list[float]:
        return [w for w in self.waits if w != POLL]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One botocore session for the module (the SageMaker model loads once); none of this machine's AWS setup."""
    folder = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as patch:
        for variable in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
            patch.delenv(variable, raising=False)
        patch.setenv("AWS_CONFIG_FILE", str(folder / "config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "credentials"))
        yield botocore.session.get_session()


@pytest.fixture
def client(session: Any) -> Any:
    """A real botocore SageMaker client; the Stubber answers every call, so nothing goes out."""
    return session.create_client(
        "sagemaker", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def run(
    script: Script,
    jobs: list[Plan],
    home: Home,
    *,
    max_parallel_jobs: int = 8,
    wait: bool = True,
    sleep: Sleeps | None = None,
    backoff: Backoff | None = None,
) -> dict[str, Outcome[str]]:
    with script.stub:
        try:
            outcomes = watch(
                script.client,
                jobs,
                max_parallel_jobs=max_parallel_jobs,
                poll_seconds=POLL,
                wait=wait,
                bring_home=home.bring_home,
                on_finished=home.on_finished,
                backoff=backoff or Backoff(first=0.001, cap=0.004, attempts=3),
                sleep=sleep or Sleeps(),
                rng=random.Random(0),
                fetch_hint=FETCH,
            )
        finally:
            # also when the loop raised: every scripted answer (a StopTrainingJob...) was asked for
            script.stub.assert_no_pending_responses()
    return outcomes


def in_order(text: str, *parts: str) -> bool:
    position = 0
    for part in parts:
        found = text.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return True


def sagemaker_core_arguments(request: dict[str, Any]) -> dict[str, Any]:
    """How the launcher called sagemaker-core's TrainingJob.create before the watch loop (``_core._shapes``)."""
    from sagemaker.core import shapes
    from sagemaker.core.resources import Tag

    arguments = dict(request)
    arguments["algorithm_specification"] = shapes.AlgorithmSpecification(**request["algorithm_specification"])
    arguments["input_data_config"] = [
        shapes.Channel(
            channel_name=c["channel_name"],
            input_mode=c["input_mode"],
            data_source=shapes.DataSource(
                s3_data_source=shapes.S3DataSource(**c["data_source"]["s3_data_source"])
            ),
        )
        for c in request["input_data_config"]
    ]
    arguments["output_data_config"] = shapes.OutputDataConfig(**request["output_data_config"])
    arguments["resource_config"] = shapes.ResourceConfig(**request["resource_config"])
    arguments["stopping_condition"] = shapes.StoppingCondition(**request["stopping_condition"])
    if "vpc_config" in request:
        arguments["vpc_config"] = shapes.VpcConfig(**request["vpc_config"])
    arguments["tags"] = [Tag(**t) for t in request["tags"]]
    return arguments


# ---- the request -------------------------------------------------------------------------------


def test_the_request_sent_is_the_one_sagemaker_core_sent(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop sends CreateTrainingJob itself; its request is byte for byte what TrainingJob.create sent."""
    from sagemaker.core.resources import Base, TrainingJob

    job = plan(
        "qs-20250101-120000-000-dynamic",
        use_spot_instances=True,
        max_wait_seconds=90000,
        keep_alive_seconds=600,
        tags={"project": "quantsweep", "owner": "ml team"},
        environment={"HF_HUB_OFFLINE": "1", "A_B": "x"},
        subnets=["subnet-0123456789abcdef0"],
        security_group_ids=["sg-0123456789abcdef0"],
    )
    script = Script(client)
    ours = api_request(job.request, script.shape)
    # every field the launcher sets, renamed along the model, map keys untouched
    assert ours["ResourceConfig"]["VolumeSizeInGB"] == 50
    assert ours["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 600
    assert ours["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400, "MaxWaitTimeInSeconds": 90000}
    assert ours["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == f"{PREFIX}/bundle"
    assert ours["Environment"]["A_B"] == "x" and ours["Environment"]["HF_HUB_OFFLINE"] == "1"
    assert {"Key": "owner", "Value": "ml team"} in ours["Tags"]
    assert ours["VpcConfig"] == {
        "Subnets": ["subnet-0123456789abcdef0"],
        "SecurityGroupIds": ["sg-0123456789abcdef0"],
    }

    # sagemaker-core's TrainingJob.create on the same stubbed client must send exactly that
    script.stub.add_response(
        "create_training_job",
        {"TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/x"},
        ours,
    )
    script.stub.add_response(
        "describe_training_job", described(job.name, "Starting"), {"TrainingJobName": job.name}
    )
    monkeypatch.setattr(Base, "get_sagemaker_client", classmethod(lambda cls, *a, **k: client))
    with script.stub:
        TrainingJob.create(**sagemaker_core_arguments(job.request))
        script.stub.assert_no_pending_responses()

    with pytest.raises(ValueError, match="not a member"):
        api_request({**job.request, "no_such_field": 1}, script.shape)


# ---- the real states -----------------------------------------------------------------------------


def test_the_real_state_sequence_is_reported_in_order(
    client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    job = plan("qs-20250101-120000-000-dynamic")
    script = Script(client)
    script.create(job)
    script.describe(job.name, "Starting")
    script.describe(job.name, "Starting")  # unchanged: not printed again
    script.describe(job.name, "Starting", "Downloading")
    script.describe(job.name, "Starting", "Downloading", "Training")
    script.describe(job.name, "Starting", "Downloading", "Training", "Uploading")
    script.describe(job.name, "Starting", "Downloading", "Training", "Uploading", "Completed")
    home = Home()

    outcomes = run(script, [job], home)

    err = capsys.readouterr().err
    assert in_order(
        err,
        f"{job.name}: submitted",
        "InProgress / Starting: Launching requested ML instances.",
        "InProgress / Downloading: Downloading input data",
        "InProgress / Training: Training image download completed. Training in progress.",
        "InProgress / Uploading: Uploading generated training model",
        f"{job.name}: Completed, billed 300 s",
    ), err
    assert err.count("Starting: Launching") == 1
    assert home.brought == [(job.name, "Completed")]  # once, when it ended
    outcome = outcomes[job.name]
    assert (outcome.status, outcome.home, outcome.result, outcome.reason) == (
        "Completed",
        True,
        f"home:{job.name}",
        "",
    )
    assert outcome.output == f"{PREFIX}/output/{job.name}/output/model.tar.gz"
    assert [name for name, _ in home.finished] == [job.name]


def test_no_more_than_max_parallel_jobs_at_once(client: Any) -> None:
    a, b, c = (plan(f"qs-20250101-120000-00{n}-x") for n in range(3))
    script = Script(client)
    script.create(a)
    script.create(b)
    script.describe(a.name, "Starting", "Training")
    script.describe(b.name, "Starting", "Completed")
    script.create(c)  # only now that b has ended
    script.describe(a.name, "Starting", "Training", "Completed")
    script.describe(c.name, "Starting", "Completed")
    home = Home()

    outcomes = run(script, [a, b, c], home, max_parallel_jobs=2)

    assert [name for name, _ in home.brought] == [b.name, a.name, c.name]
    assert list(outcomes) == [a.name, b.name, c.name]  # in the sweep's order
    assert all(o.status == "Completed" and o.home for o in outcomes.values())


def test_stopped_after_max_runtime_is_reported_with_its_reason(
    client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    job = plan("qs-20250101-120000-000-static", max_run_seconds=3600)
    script = Script(client)
    script.create(job)
    script.describe(job.name, "Starting", "Downloading", "Training")
    script.describe(job.name, "Starting", "Downloading", "Training", "MaxRuntimeExceeded", max_runtime=3600)
    home = Home()

    outcomes = run(script, [job], home)

    err = capsys.readouterr().err
    reason = "MaxRuntimeExceeded: Training job runtime exceeded MaxRuntimeInSeconds provided"
    assert f"{job.name}: Stopped ({reason}; raise hydra.launcher.max_run_seconds (now 3600 s)" in err, err
    assert "Stopped: Stopped" not in err
    outcome = outcomes[job.name]
    assert outcome.status == "Stopped" and outcome.reason.startswith(reason)
    # brought home all the same: what the job wrote before SageMaker stopped it, and its logs
    assert home.brought == [(job.name, "Stopped")]


def test_a_failed_job_reports_its_failure_reason(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    job = plan("qs-20250101-120000-000-dynamic")
    failure = (
        'AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage "ModuleNotFoundError: No module '
        'named \'quantsweep\'"\nCommand "/bin/bash -c ..."'
    )
    script = Script(client)
    script.create(job)
    script.describe(job.name, "Starting", "Downloading", "Training", "Failed", failure=failure)
    home = Home()

    outcomes = run(script, [job], home)

    err = capsys.readouterr().err
    assert (
        f"{job.name}: Failed (AlgorithmError: ExecuteUserScriptError:\n    ExitCode 1\n    ErrorMessage"
        in err
    )
    assert "No module named 'quantsweep'" in err
    assert outcomes[job.name].reason.startswith(failure)
    assert "Failed: Training job failed" not in outcomes[job.name].reason  # says nothing more
    # brought home so that the caller can fetch the job's logs and failure file
    assert home.brought == [(job.name, "Failed")]
    assert outcomes[job.name].home


# ---- throttling --------------------------------------------------------------------------------


def test_throttling_is_retried_with_backoff(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    job = plan("qs-20250101-120000-000-dynamic")
    throttled = ("ThrottlingException", "Rate exceeded")
    script = Script(client)
    script.create(job, error=throttled)
    script.create(job)
    script.describe_error(job.name, throttled)
    script.describe_error(job.name, ("ServiceUnavailable", "Service is unavailable"), status=503)
    script.describe_error(job.name, throttled)
    script.describe(job.name, "Starting", "Completed")
    sleeps = Sleeps()
    home = Home()

    outcomes = run(script, [job], home, sleep=sleeps, backoff=Backoff(first=0.01, cap=0.03, attempts=3))

    assert outcomes[job.name].status == "Completed" and outcomes[job.name].home
    # create: one retry; describe: three, each waiting longer, capped, with jitter
    create_wait, *describe_waits = sleeps.backoffs
    assert 0.005 <= create_wait <= 0.01
    assert [round(w, 6) for w in describe_waits] == sorted(round(w, 6) for w in describe_waits)
    for retry, wait in enumerate(describe_waits):
        ceiling = min(0.03, 0.01 * 2**retry)
        assert ceiling / 2 <= wait <= ceiling
    assert len(describe_waits) == 3
    err = capsys.readouterr().err
    assert (
        "SageMaker CreateTrainingJob qs-20250101-120000-000-dynamic: ThrottlingException: Rate exceeded; retry 1"
        in err
    )
    assert "SageMaker DescribeTrainingJob: ServiceUnavailable: Service is unavailable; retry 2" in err


def test_throttling_that_does_not_end_fails_safe(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    job = plan("qs-20250101-120000-000-dynamic")
    throttled = ("ThrottlingException", "Rate exceeded")
    script = Script(client)
    script.create(job)
    for _ in range(3):  # the first try and two retries
        script.describe_error(job.name, throttled)
    script.stop(job.name)
    sleeps = Sleeps()

    with pytest.raises(ClientError, match="Rate exceeded"):
        run(script, [job], Home(), sleep=sleeps, backoff=Backoff(first=0.001, cap=0.001, attempts=2))

    assert len(sleeps.backoffs) == 2  # bounded
    assert f"stopped (StopTrainingJob accepted): {job.name}" in capsys.readouterr().err


# ---- quotas ----------------------------------------------------------------------------------


def test_resource_limit_on_the_third_create(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """The jobs created keep running and come home; the rest are named as not submitted; nothing is stopped."""
    a, b, c, d = (plan(f"qs-20250101-120000-00{n}-x") for n in range(4))
    script = Script(client)
    script.create(a)
    script.create(b)
    script.create(c, error=QUOTA)
    script.describe(a.name, "Starting", "Training")
    script.describe(b.name, "Starting", "Completed")
    script.describe(a.name, "Starting", "Training", "Completed")  # no create is tried again
    home = Home()

    outcomes = run(script, [a, b, c, d], home)

    err = capsys.readouterr().err
    assert (
        f"SageMaker refused to create {c.name}: ResourceLimitExceeded: The account-level service limit" in err
    )
    assert f"not submitted (2): {c.name}, {d.name}" in err
    assert f"already running keep running and are watched to the end: {a.name}, {b.name}" in err
    assert "hydra.launcher.max_parallel_jobs=2" in err
    # every created job watched to its end and brought home, the others named as not submitted
    assert [(n, o.status, o.home) for n, o in outcomes.items()] == [
        (a.name, "Completed", True),
        (b.name, "Completed", True),
        (c.name, NOT_SUBMITTED, False),
        (d.name, NOT_SUBMITTED, False),
    ]
    assert "ResourceLimitExceeded" in outcomes[d.name].reason
    assert isinstance(outcomes[c.name].error, ClientError)


# ---- failures ---------------------------------------------------------------------------------


def test_a_failed_bring_home_is_reported_and_the_others_go_on(
    client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = plan("qs-20250101-120000-000-a"), plan("qs-20250101-120000-001-b")
    s3_error = ClientError(
        {
            "Error": {"Code": "AccessDenied", "Message": "Access Denied"},
            "ResponseMetadata": {"HTTPStatusCode": 403},
        },
        "GetObject",
    )
    script = Script(client)
    script.create(a)
    script.create(b)
    script.describe(a.name, "Starting", "Completed")
    script.describe(b.name, "Starting", "Training")
    script.describe(b.name, "Starting", "Training", "Completed")  # b still watched, and no StopTrainingJob
    home = Home(fail={a.name: s3_error})

    outcomes = run(script, [a, b], home)

    err = capsys.readouterr().err
    location = f"{PREFIX}/output/{a.name}/output/model.tar.gz"
    assert (
        f"{a.name}: finished on SageMaker (Completed), not brought home: AccessDenied: Access Denied" in err
    )
    assert f"its output stays at {location}; {FETCH}" in err
    # said again at the end, where it is not lost among the state lines
    assert in_order(
        err, f"{b.name}: Completed", "finished on SageMaker, not brought home:", f"{a.name} (Completed)"
    )
    assert (outcomes[a.name].home, outcomes[a.name].error, outcomes[a.name].output) == (
        False,
        s3_error,
        location,
    )
    assert outcomes[b.name].home and outcomes[b.name].result == f"home:{b.name}"
    assert [name for name, _ in home.finished] == [a.name, b.name]


def test_expired_credentials_in_a_poll_leave_no_job_running_untold(
    client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, c = (plan(f"qs-20250101-120000-00{n}-x") for n in range(3))
    script = Script(client)
    for job in (a, b, c):
        script.create(job)
    script.describe(a.name, "Starting", "Completed")
    script.describe_error(b.name, EXPIRED)
    # stopping needs credentials too: each stop fails, and so does the look that follows
    for job in (b, c):
        script.stop(job.name, error=EXPIRED)
        script.describe_error(job.name, EXPIRED)
    home = Home()

    with pytest.raises(ClientError, match="ExpiredTokenException"):
        run(script, [a, b, c], home)

    err = capsys.readouterr().err
    assert "the watch loop failed (ExpiredTokenException: The security token included" in err
    assert "stopped (StopTrainingJob accepted): none" in err
    for job in (b, c):
        assert f"STILL RUNNING, could not stop {job.name}: ExpiredTokenException" in err
        assert (
            f"stop it: aws sagemaker stop-training-job --region {REGION} --training-job-name {job.name}"
            in err
        )
    assert a.name not in err.split("the watch loop failed")[1]  # home already, nothing to say
    assert home.brought == [(a.name, "Completed")]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt(), RuntimeError("a bug in the loop's caller")])
def test_any_exception_stops_the_running_jobs_and_names_them(
    client: Any, capsys: pytest.CaptureFixture[str], interruption: BaseException
) -> None:
    a, b, c, d = (plan(f"qs-20250101-120000-00{n}-x") for n in range(4))
    script = Script(client)
    for job in (a, b, c):
        script.create(job)
    for job in (a, b, c):
        script.describe(job.name, "Starting", "Training")
    # interrupted before the second poll
    script.stop(a.name)
    # b ended between the last poll and the stop: SageMaker refuses, the loop looks
    script.stop(
        b.name, error=("ValidationException", "The training job is in status Completed and cannot be stopped")
    )
    script.describe(b.name, "Starting", "Training", "Completed")
    script.stop(c.name)
    home = Home()

    with pytest.raises(type(interruption)):
        run(script, [a, b, c, d], home, max_parallel_jobs=3, sleep=Sleeps(interruption, at=2))

    err = capsys.readouterr().err
    assert f"stopped (StopTrainingJob accepted): {a.name}, {c.name}" in err
    assert (
        f"finished on SageMaker, not brought home: {b.name} (Completed), "
        f"output at {PREFIX}/output/{b.name}/output/model.tar.gz" in err
    )
    assert f"not submitted: {d.name}" in err
    assert "STILL RUNNING" not in err
    assert home.brought == []


def test_an_unexpected_create_error_stops_the_jobs_already_created(
    client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, c = (plan(f"qs-20250101-120000-00{n}-x") for n in range(3))
    script = Script(client)
    script.create(a)
    script.create(b, error=("AccessDeniedException", "User is not authorized to perform: iam:PassRole"))
    script.stop(a.name)

    with pytest.raises(ClientError, match="iam:PassRole"):
        run(script, [a, b, c], Home())

    err = capsys.readouterr().err
    assert f"stopped (StopTrainingJob accepted): {a.name}" in err
    assert f"not submitted: {b.name}, {c.name}" in err  # refused, so it does not exist


def lose_answers(client: Any, monkeypatch: pytest.MonkeyPatch, times: int) -> None:
    """The first ``times`` creates reach SageMaker (or not), but their answers are lost."""
    real = client.create_training_job
    lost = iter(range(times))

    def create(**request: Any) -> Any:
        if next(lost, None) is not None:
            raise ReadTimeoutError(endpoint_url=f"https://api.sagemaker.{REGION}.amazonaws.com/")
        return real(**request)

    monkeypatch.setattr(client, "create_training_job", create)


def test_a_create_whose_answer_was_lost_is_not_created_twice(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = plan("qs-20250101-120000-000-x")
    script = Script(client)
    # the lost attempt did create it: the retry is told so, and the job is watched as created
    exists = f"Training job names must be unique within an AWS account and region, and a training job with this name already exists (arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{job.name})"
    script.create(job, error=("ValidationException", exists))
    script.describe(job.name, "Starting", "Completed")
    lose_answers(client, monkeypatch, 1)

    outcomes = run(script, [job], Home())

    assert outcomes[job.name].status == "Completed" and outcomes[job.name].home


def test_a_create_that_never_answers_is_stopped_or_named(
    client: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = plan("qs-20250101-120000-000-a"), plan("qs-20250101-120000-001-b")
    script = Script(client)
    script.create(a)
    # b: every attempt times out, so it may exist: the loop tries to stop it as it stops a
    script.stop(a.name)
    missing = ("ValidationException", "Requested resource not found.")
    script.stop(b.name, error=missing)
    script.stub.add_client_error(
        "describe_training_job", *missing, expected_params={"TrainingJobName": b.name}
    )
    real = client.create_training_job
    calls = []

    def create(**request: Any) -> Any:
        calls.append(request["TrainingJobName"])
        if request["TrainingJobName"] == b.name:
            raise ReadTimeoutError(endpoint_url=f"https://api.sagemaker.{REGION}.amazonaws.com/")
        return real(**request)

    monkeypatch.setattr(client, "create_training_job", create)

    with pytest.raises(ReadTimeoutError):
        run(script, [a, b], Home())

    assert calls == [a.name] + [b.name] * 4  # the first try and 3 retries
    err = capsys.readouterr().err
    assert f"stopped (StopTrainingJob accepted): {a.name}" in err
    assert f"not created after all: {b.name}" in err
    assert "STILL RUNNING" not in err


# ---- wait=false ----------------------------------------------------------------------------------


def test_wait_false_submits_and_returns(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = plan("qs-20250101-120000-000-a"), plan("qs-20250101-120000-001-b")
    script = Script(client)
    script.create(a)
    script.create(b)  # and nothing else: no describe, no stop
    home = Home()

    outcomes = run(script, [a, b], home, max_parallel_jobs=2, wait=False)

    assert [(o.name, o.status) for o in outcomes.values()] == [(a.name, SUBMITTED), (b.name, SUBMITTED)]
    assert home.brought == [] and home.finished == []
    err = capsys.readouterr().err
    assert "2 training job(s) submitted and not watched (wait=false)" in err
    for job in (a, b):  # every job left running is named with the command that stops it
        assert f"aws sagemaker stop-training-job --region {REGION} --training-job-name {job.name}" in err


def test_wait_false_with_more_jobs_than_max_parallel_submits_nothing(client: Any) -> None:
    jobs = [plan(f"qs-20250101-120000-00{n}-x") for n in range(3)]
    script = Script(client)  # nothing scripted: any call would fail with UnStubbedResponseError

    with pytest.raises(ValueError, match="nothing was submitted"):
        run(script, jobs, Home(), max_parallel_jobs=2, wait=False)


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGHUP"])
def test_a_termination_signal_stops_the_running_jobs_like_ctrl_c(
    client: Any, capsys: pytest.CaptureFixture[str], signal_name: str
) -> None:
    """A cancelled CI job or a closed terminal sends SIGTERM or SIGHUP, not Ctrl-C: the jobs still stop."""
    import signal

    a = plan("qs-20250101-120000-000-x")
    script = Script(client)
    script.create(a)
    script.stop(a.name)
    number = getattr(signal, signal_name)
    before = signal.getsignal(number)

    class Terminated(Sleeps):
        def __call__(self, seconds: float) -> None:
            os.kill(os.getpid(), number)  # delivered to this (the main) thread, as from outside

    with pytest.raises(KeyboardInterrupt):
        run(script, [a], Home(), max_parallel_jobs=1, sleep=Terminated())
    err = capsys.readouterr().err
    assert f"the watch loop was interrupted ({signal_name} received)" in err
    assert f"stopped (StopTrainingJob accepted): {a.name}" in err
    assert signal.getsignal(number) == before  # the caller's handler is back


def test_a_stopped_job_with_a_warm_pool_is_named_with_the_command_that_releases_its_instance(
    client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    a = plan("qs-20250101-120000-000-x", keep_alive_seconds=900)
    script = Script(client)
    script.create(a)
    script.stop(a.name)

    with pytest.raises(KeyboardInterrupt):
        run(script, [a], Home(), max_parallel_jobs=1, sleep=Sleeps(KeyboardInterrupt(), at=1))
    err = capsys.readouterr().err
    assert "warm pool: the instances of the stopped jobs stay, billed, for up to 900 s" in err
    assert (
        f"aws sagemaker update-training-job --region {REGION} --training-job-name {a.name} "
        "--resource-config KeepAlivePeriodInSeconds=0" in err
    )
