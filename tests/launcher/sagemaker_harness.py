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
``QUANTSWEEP_OPT_ML`` for exactly this relocation.

The image is a virtual environment that inherits nothing from the test environment: a
recent pip and the local CPU torch wheel (``torch==2.13.0``), standing in for the
PyTorch training image's preinstalled torch. It is built once per test session
(:class:`ContainerImage`). Each job's command runs as a real job's does: in a fresh
environment layered on the image (it sees the image's packages and nothing else; no
``HF_*`` variable of the test process; the offline flags a container needs are set here
explicitly), where the command's own ``pip install`` of the bundle, with the machine's pip
configuration, puts quantsweep and its dependencies. Installing from nothing costs 1.5 to
2 minutes, so jobs whose install would be identical (the same bundle sources, container
constraints and command) share the environment that the first of them installed into;
the later ones still run the command, whose pip then finds everything in place. A job
with other sources or constraints gets its own environment: no job sees what a
different install put there.

With ``preinstalled`` set, the image is the one ``launchers/Dockerfile`` builds instead: the
job's bundle installed into the image once, as the Dockerfile's ``RUN pip install`` does, its
``bundle.json`` copied beside it and ``QUANTSWEEP_PREINSTALLED`` naming the copy (the
Dockerfile's ``ENV``). The job's own install step then compares the two files and installs
nothing, as in such an image; a bundle with other sources still installs. Hydra's launcher
suites run this way (they test the launcher, not pip); the remote-sweep tests install for real.
"""

from __future__ import annotations

import contextlib
import hashlib
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


# what the "image" holds besides Python: the local CPU wheel stands in for the image's torch
IMAGE_PACKAGES = ("torch==2.13.0",)
# what the container sets itself; nothing of the test process's HF_* settings goes in
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
_NOT_INHERITED = (
    "PYTEST",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONHOME",
    "HF_",
    "HUGGINGFACE",
    "TRANSFORMERS_",
    "MLFLOW_",
)


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def _lock(path: Path) -> Any:
    from filelock import FileLock

    return FileLock(str(path) + ".lock")


class ContainerImage:
    """The stand-in for the training image: a venv with a recent pip and CPU torch, nothing else.

    ``folder`` may be shared by pytest-xdist workers: building and first installs are locked.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.venv = folder / "image"
        self.python = self.venv / "bin" / "python"
        self.seconds = 0.0  # what building it cost this process

    def build(self) -> ContainerImage:
        self.folder.mkdir(parents=True, exist_ok=True)
        with _lock(self.venv):
            if (self.venv / "ready").is_file():
                return self
            started = time.monotonic()
            shutil.rmtree(self.venv, ignore_errors=True)
            # from the base interpreter: a venv inherits nothing from the test environment
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", str(self.venv)], check=True)
            pip = [str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            # SageMaker's images ship a current pip; the base interpreter's old one backtracks for minutes
            subprocess.run([*pip, "--upgrade", "pip"], check=True, env=_clean_environment())
            subprocess.run([*pip, *IMAGE_PACKAGES], check=True, env=_clean_environment())
            (self.venv / "ready").write_text("", encoding="utf-8")
            self.seconds = time.monotonic() - started
        return self

    def job_environment(self, key: str) -> Path:
        """A venv layered on the image: it sees the image's packages and installs into itself."""
        venv = self.folder / "installs" / key
        venv.parent.mkdir(parents=True, exist_ok=True)
        with _lock(venv.with_name(f"{key}-created")):
            if not (venv / "bin" / "python").exists():
                subprocess.run([str(self.python), "-m", "venv", "--without-pip", str(venv)], check=True)
                site = _site_packages(venv)
                (site / "zz_image.pth").write_text(str(_site_packages(self.venv)) + "\n", encoding="utf-8")
                (site / f"{NETWORK_MODULE}.py").write_text(NETWORK, encoding="utf-8")
                (site / f"{NETWORK_MODULE}.pth").write_text(f"import {NETWORK_MODULE}\n", encoding="utf-8")
        return venv

    def preinstall(self, venv: Path, bundle: Path) -> Path:
        """``bundle`` installed into ``venv`` as launchers/Dockerfile installs it; the copy of its bundle.json."""
        copy = venv / "opt-quantsweep" / "bundle.json"
        with _lock(venv):
            if copy.is_file() and copy.read_bytes() == (bundle / "bundle.json").read_bytes():
                return copy
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir", "-q"]
            subprocess.run(
                [
                    *pip,
                    "--disable-pip-version-check",
                    "-r",
                    "requirements.txt",
                    "-c",
                    "container-constraints.txt",
                ],
                check=True,
                cwd=bundle,
                env=_clean_environment(),
            )
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle / "bundle.json", copy)
            (venv / "installed").write_text("", encoding="utf-8")
        return copy


# The container's network, as far as the harness can play it: a job runs on this machine, so
# 127.0.0.1 would reach every server a test starts, which a real training job never could.
# Every job environment imports this module at start-up (a .pth file); it refuses connections
# to the host:port pairs listed in HARNESS_UNREACHABLE, as a firewall would.
NETWORK_MODULE = "harness_network"
NETWORK = """import os, socket

_blocked = {
    (host, int(port))
    for host, _, port in (item.rpartition(":") for item in os.environ.get("HARNESS_UNREACHABLE", "").split(",") if item)
}
if _blocked:
    _connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex

    def _refused(address):
        return isinstance(address, tuple) and tuple(address[:2]) in _blocked

    def connect(self, address):
        if _refused(address):
            raise ConnectionRefusedError(111, f"{address[0]}:{address[1]} is unreachable from the container")
        return _connect(self, address)

    def connect_ex(self, address):
        return 111 if _refused(address) else _connect_ex(self, address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
"""


def _clean_environment() -> dict[str, str]:
    """The test process's environment without its Python, pytest and Hugging Face settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}


def install_key(bundle: Path, command: list[str]) -> str:
    """What decides a job's install: the bundle's sources and constraints, and the command."""
    digest = hashlib.sha256("\0".join(command).encode())
    for name in ("bundle.json", "container-constraints.txt", "requirements.txt", "install.sh"):
        path = bundle / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"-") + b"\0")
    return digest.hexdigest()[:16]


class FakeSageMaker:
    def __init__(self, workdir: Path, image: ContainerImage) -> None:
        self.workdir = workdir
        self.image = image
        # job name -> the environment its command ran in, and the variables it got
        self.environments: dict[str, Path] = {}
        self.variables: dict[str, dict[str, str]] = {}
        # (host, port) pairs the containers cannot reach, e.g. a tracking server on 127.0.0.1
        self.unreachable: set[tuple[str, int]] = set()
        # files a test has the "container" add to each job's model.tar.gz (name -> bytes)
        self.planted: dict[str, bytes] = {}
        self.jobs: queue.Queue[Any] = queue.Queue()
        self.finished: dict[str, subprocess.CompletedProcess[str]] = {}
        self.url = ""
        # run jobs on an image with the bundle preinstalled (launchers/Dockerfile), not a plain one
        self.preinstalled = False
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
        spec = job.algorithm_specification
        command = list(spec.get("ContainerEntrypoint") or []) + list(spec.get("ContainerArguments") or [])
        venv = self.image.job_environment(install_key(Path(channels.get("bundle", root)), command))
        self.environments[name] = venv
        image_env = {}  # the image's ENV lines; the job's Environment overrides them
        if self.preinstalled and "bundle" in channels:
            image_env["QUANTSWEEP_PREINSTALLED"] = str(self.image.preinstall(venv, Path(channels["bundle"])))
        env = {
            **_clean_environment(),
            **OFFLINE,
            "HF_HOME": str(self.workdir / "hf-home"),
            **image_env,
            **job.container_environment,
            "QUANTSWEEP_OPT_ML": str(root),
            "HARNESS_UNREACHABLE": ",".join(f"{host}:{port}" for host, port in sorted(self.unreachable)),
            "SM_MODEL_DIR": str(root / "model"),
            "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
            "SM_CHANNELS": json.dumps(sorted(channels)),
            "SM_CURRENT_HOST": "algo-1",
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            **{f"SM_CHANNEL_{c.upper()}": path for c, path in channels.items()},
        }
        self.variables[name] = env
        started = time.time()
        installed = venv / "installed"
        # the first job of an install key installs while others wait; later ones find it in place
        with contextlib.nullcontext() if installed.is_file() else _lock(venv):
            result = subprocess.run(
                command, env=env, cwd=root / "code", capture_output=True, text=True, timeout=1200
            )
            if result.returncode == 0:
                installed.write_text("", encoding="utf-8")
        if image_env and "installed in the image; nothing to install" not in result.stdout + result.stderr:
            # the point of a preinstalled image: a job that installs anyway is a failure of the path
            result = subprocess.CompletedProcess(
                result.args,
                97,
                result.stdout,
                result.stderr + "\nharness: the job installed into a preinstalled image",
            )
        self.finished[name] = result
        self._log(name, (result.stdout + result.stderr).splitlines(), started)
        if result.returncode == 0:
            for planted, content in self.planted.items():
                (root / "model" / planted).write_bytes(content)
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
