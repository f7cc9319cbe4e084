"""A stand-in for Amazon SageMaker, for the launcher's tests only (never a way to "run on SageMaker").

moto answers the AWS APIs (S3, IAM, SageMaker, CloudWatch Logs) in server mode on
127.0.0.1, so every launcher call is real boto3 HTTP. moto runs nothing inside a
training job: it marks a job Completed at once. The harness therefore holds each new job
InProgress and plays the container itself, following SageMaker's container contract: it
downloads the job's input channels from S3 into ``<root>/input/data/<channel>/``, writes
``<root>/input/config/*.json``, sets the ``SM_*`` variables, runs the job's entry point
and arguments, then does what SageMaker does with the result: ``<root>/model`` goes to S3
as ``model.tar.gz`` and the job turns Completed, or the job turns Failed with the text of
``<root>/output/failure`` as its FailureReason, and the output becomes log events.

``<root>`` stands for ``/opt/ml``; the launcher's training command honours
``QUANTSWEEP_OPT_ML`` for exactly this relocation. The command runs in a fresh virtual
environment that sees the test environment's packages but gets quantsweep only from the
bundle's wheel, which the command installs, so the bundle proves it runs on its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

REGION = "us-east-1"
ACCOUNT = "123456789012"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"


def _venv_python(folder: Path) -> Path:
    """A virtual environment whose own site-packages shadow the test environment's."""
    python = folder / "bin" / "python"
    if python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = next((folder / "lib").glob("python3*/site-packages"))
    inherited = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "zz_test_environment.pth").write_text("\n".join(inherited) + "\n", encoding="utf-8")
    return python


class FakeSageMaker:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.jobs: queue.Queue[Any] = queue.Queue()
        self.finished: dict[str, subprocess.CompletedProcess[str]] = {}
        self.url = ""
        self._patched: Any = None
        self.root = workdir / "opt" / "ml"

    def __enter__(self) -> FakeSageMaker:
        from moto.sagemaker import models, responses
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        original_init = models.FakeTrainingJob.__init__
        original_create = responses.SageMakerResponse.create_training_job
        jobs = self.jobs

        def held(job: Any, *args: Any, **kwargs: Any) -> None:
            original_init(job, *args, **kwargs)
            job.training_job_status = "InProgress"
            job.secondary_status = "Training"

        def create(response: Any) -> Any:
            # moto keeps no Environment; the container needs it
            result = original_create(response)
            name = response._get_param("TrainingJobName")
            job = response.sagemaker_backend.training_jobs[name]
            job.container_environment = response._get_param("Environment") or {}
            jobs.put(job)
            return result

        models.FakeTrainingJob.__init__ = held  # type: ignore[method-assign,assignment]
        responses.SageMakerResponse.create_training_job = create  # type: ignore[method-assign,assignment]
        self._patched = [
            (models.FakeTrainingJob, "__init__", original_init),
            (responses.SageMakerResponse, "create_training_job", original_create),
        ]
        self.python = _venv_python(self.workdir / "container-venv")
        self.worker = threading.Thread(target=self._work, daemon=True)
        self.worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.jobs.put(None)
        self.worker.join(timeout=60)
        for owner, attribute, original in self._patched:
            setattr(owner, attribute, original)
        self.server.stop()

    def environment(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            # the SDK checks the role with iam:SimulatePrincipalPolicy, which moto cannot answer
            "SAGEMAKER_VALIDATE_ROLE": "false",
        }

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def create_role_named(self, name: str) -> str:
        iam = self.client("iam")
        policy = json.dumps({"Version": "2012-10-17", "Statement": []})
        return str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=policy)["Role"]["Arn"])

    def create_bucket(self, name: str) -> str:
        self.client("s3").create_bucket(Bucket=name)
        return name

    # ---- the container ---------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                self._run(job)
            except Exception as error:  # the job fails; the test sees why
                job.failure_reason = f"harness error: {type(error).__name__}: {error}"
                job.training_job_status = "Failed"

    def _download(self, uri: str, target: Path) -> None:
        s3 = self.client("s3")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix) :].lstrip("/")
                destination = target / relative if relative else target / Path(item["Key"]).name
                destination.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(destination))

    def _run(self, job: Any) -> None:
        name = job.training_job_name
        # one instance at a time, as /opt/ml is one folder: jobs run one after the other
        root = self.root
        shutil.rmtree(root, ignore_errors=True)
        channels = {}
        for channel in job.input_data_config:
            source = channel["DataSource"]["S3DataSource"]["S3Uri"]
            target = root / "input" / "data" / channel["ChannelName"]
            target.mkdir(parents=True, exist_ok=True)
            self._download(source, target)
            channels[channel["ChannelName"]] = str(target)
        config = root / "input" / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "hyperparameters.json").write_text(json.dumps(job.hyper_parameters or {}))
        (config / "inputdataconfig.json").write_text(
            json.dumps({c["ChannelName"]: {"TrainingInputMode": "File"} for c in job.input_data_config})
        )
        (config / "resourceconfig.json").write_text(
            json.dumps(
                {
                    "current_host": "algo-1",
                    "hosts": ["algo-1"],
                    "current_instance_type": job.resource_config["InstanceType"],
                }
            )
        )
        for folder in ("model", "output/data", "code"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("PYTEST", "VIRTUAL_ENV", "PYTHONPATH"))
            },
            **job.container_environment,
            "QUANTSWEEP_OPT_ML": str(root),
            "SM_MODEL_DIR": str(root / "model"),
            "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
            "SM_CHANNELS": json.dumps(sorted(channels)),
            "SM_CURRENT_HOST": "algo-1",
            "PATH": f"{self.python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **{f"SM_CHANNEL_{c.upper()}": path for c, path in channels.items()},
        }
        spec = job.algorithm_specification
        command = list(spec.get("ContainerEntrypoint") or []) + list(spec.get("ContainerArguments") or [])
        started = time.time()
        result = subprocess.run(
            command, env=env, cwd=root / "code", capture_output=True, text=True, timeout=1200
        )
        self.finished[name] = result
        self._log(name, (result.stdout + result.stderr).splitlines(), started)
        if result.returncode == 0:
            archive = self.workdir / f"{name}.tar.gz"
            with tarfile.open(archive, "w:gz") as tar:
                for path in sorted((root / "model").iterdir()):
                    tar.add(path, arcname=path.name)
            target = job.model_artifacts["S3ModelArtifacts"]
            bucket, _, key = target[len("s3://") :].partition("/")
            self.client("s3").upload_file(str(archive), bucket, key)
            job.training_job_status = "Completed"
        else:
            failure = root / "output" / "failure"
            job.failure_reason = (
                failure.read_text() if failure.is_file() else f"exit code {result.returncode}"
            )
            job.training_job_status = "Failed"

    def _log(self, name: str, lines: list[str], started: float) -> None:
        logs = self.client("logs")
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=LOG_GROUP)
        stream = f"{name}/algo-1-{int(started)}"
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        kept = [line for line in lines if line.strip()]
        if kept:
            stamp = int(started * 1000)
            logs.put_log_events(
                logGroupName=LOG_GROUP,
                logStreamName=stream,
                logEvents=[{"timestamp": stamp + i, "message": line} for i, line in enumerate(kept[-500:])],
            )
