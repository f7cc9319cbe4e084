"""What the launcher does: compose each job, bundle, build the training-job requests, and
(unless ``dry_run``) submit, watch and bring the results home. Imported only when a sweep
runs; the SageMaker SDK is imported later still, only when requests are sent.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from omegaconf import DictConfig, open_dict

from hydra_plugins.quantsweep_sagemaker._bundle import INSTALL_SCRIPT
from hydra_plugins.quantsweep_sagemaker._container import ROOT_VARIABLE
from hydra_plugins.quantsweep_sagemaker._validate import check_request
from hydra_plugins.quantsweep_sagemaker.config import (
    SageMakerLauncherConf,
    check,
    check_sweep,
    is_local_tracking,
    resolved_region,
)

if TYPE_CHECKING:
    from hydra_plugins.quantsweep_sagemaker.launcher import SageMakerLauncher

log = logging.getLogger(__name__)

BUNDLE_CHANNEL = "bundle"
JOB_CHANNEL = "job"
# the container's command: install the bundle (no torch pin: the image's torch stays), run the job
COMMAND = (
    f'set -e; root="${{{ROOT_VARIABLE}:-/opt/ml}}"; cd "$root/input/data/{BUNDLE_CHANNEL}"; '
    f"bash {INSTALL_SCRIPT}; exec python -m hydra_plugins.quantsweep_sagemaker._container"
)
_NAME = re.compile(r"[^a-zA-Z0-9-]+")


@dataclass
class PlannedJob:
    index: int
    name: str
    overrides: list[str]
    config: DictConfig
    request: dict[str, Any]


def training_job_name(stamp: str, index: int, overrides: Sequence[str]) -> str:
    """``qs-<time>-<index>-<overrides>``: unique per sweep, readable, within SageMaker's 63 characters."""
    # values that read well in a name: group choices and numbers, not paths or lists
    values = [o.split("=", 1)[-1] for o in overrides]
    readable = _NAME.sub("-", "-".join(v for v in values if not any(c in v for c in "/[{"))).strip("-")
    return f"qs-{stamp}-{index:03d}-{readable}"[:63].rstrip("-")


def default_image(region: str, instance_type: str) -> str:
    """The newest PyTorch training image the SageMaker SDK knows, for the region and instance type."""
    from sagemaker.core import image_uris

    versions = image_uris.config_for_framework("pytorch")["training"]["versions"]
    version = list(versions)[-1]
    py_version = versions[version]["py_versions"][-1]
    return str(
        image_uris.retrieve(
            framework="pytorch",
            region=region,
            version=version,
            py_version=py_version,
            instance_type=instance_type,
            image_scope="training",
        )
    )


def s3_channel(name: str, uri: str) -> dict[str, Any]:
    return {
        "channel_name": name,
        "data_source": {
            "s3_data_source": {
                "s3_data_type": "S3Prefix",
                "s3_uri": uri,
                "s3_data_distribution_type": "FullyReplicated",
            }
        },
        "input_mode": "File",
    }


def build_request(
    settings: SageMakerLauncherConf,
    name: str,
    image: str,
    prefix: str,
    bundle_uri: str,
    job_uri: str,
    environment: dict[str, str],
) -> dict[str, Any]:
    """The CreateTrainingJob request, in the SageMaker SDK's (sagemaker-core) field names."""
    resources: dict[str, Any] = {
        "instance_type": settings.instance_type,
        "instance_count": settings.instance_count,
        "volume_size_in_gb": settings.volume_size_gb,
    }
    if settings.keep_alive_seconds > 0:
        resources["keep_alive_period_in_seconds"] = settings.keep_alive_seconds
    stopping: dict[str, Any] = {"max_runtime_in_seconds": settings.max_run_seconds}
    if settings.use_spot_instances:
        stopping["max_wait_time_in_seconds"] = settings.max_wait_seconds or settings.max_run_seconds
    request: dict[str, Any] = {
        "training_job_name": name,
        "role_arn": settings.role,
        "algorithm_specification": {
            "training_image": image,
            "training_input_mode": "File",
            "container_entrypoint": ["/bin/bash", "-c"],
            "container_arguments": [COMMAND],
        },
        "input_data_config": [s3_channel(BUNDLE_CHANNEL, bundle_uri), s3_channel(JOB_CHANNEL, job_uri)],
        "output_data_config": {"s3_output_path": f"{prefix}/output"},
        "resource_config": resources,
        "stopping_condition": stopping,
        "enable_managed_spot_training": bool(settings.use_spot_instances),
        "environment": {**dict(settings.environment), **environment},
        "tags": [{"key": str(k), "value": str(v)} for k, v in dict(settings.tags).items()],
    }
    if settings.subnets or settings.security_group_ids:
        request["vpc_config"] = {
            "subnets": list(settings.subnets),
            "security_group_ids": list(settings.security_group_ids),
        }
    return request


def _prefix(settings: SageMakerLauncherConf, region: str, stamp: str) -> str:
    if settings.s3_prefix:
        return f"{str(settings.s3_prefix).rstrip('/')}/{stamp}"
    if settings.dry_run:
        return f"s3://<the SageMaker SDK's default bucket in {region}>/quantsweep/{stamp}"
    from sagemaker.core.helper.session_helper import Session

    return f"s3://{Session(boto_session=_boto_session(region)).default_bucket()}/quantsweep/{stamp}"


def _boto_session(region: str) -> Any:
    import boto3

    return boto3.Session(region_name=region)


def _mlflow(config: DictConfig) -> tuple[bool, str | None]:
    node = config.get("mlflow")
    if node is None:
        return False, None
    return bool(node.get("enabled", False)), node.get("tracking_uri")


def launch(
    launcher: SageMakerLauncher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> Sequence[JobReturn]:
    assert launcher.config is not None and launcher.hydra_context is not None
    settings = launcher.settings
    config = launcher.config
    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    enabled, tracking_uri = _mlflow(config)
    # before anything is built, looked up or uploaded
    check(settings, tracking_uri, enabled)
    check_sweep(settings, len(job_overrides))
    region = resolved_region(settings)
    assert region is not None
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")

    planned: list[PlannedJob] = []
    for offset, overrides in enumerate(job_overrides):
        index = initial_job_idx + offset
        sweep_config = launcher.hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{index}"
            sweep_config.hydra.job.num = index
        name = training_job_name(stamp, index, overrides)
        planned.append(PlannedJob(index, name, list(overrides), sweep_config, {}))

    def requests(prefix: str, image: str) -> None:
        """Every job's CreateTrainingJob request, checked against botocore's SageMaker model."""
        for job in planned:
            job.request = build_request(
                settings,
                job.name,
                image,
                prefix,
                bundle_uri=f"{prefix}/bundle",
                job_uri=f"{prefix}/jobs/{job.name}",
                environment={"QUANTSWEEP_SAGEMAKER_JOB": job.name},
            )
            check_request(job.request, job.name, job.overrides)

    # First with stand-ins for what only AWS (the SDK's default bucket, which it creates) or
    # the SDK's image lookup (which fails on an unknown instance type) can tell, so that a
    # request the API would refuse is refused before any AWS call; then as they will be sent.
    offline = bool(settings.s3_prefix or settings.dry_run)
    stand_in = f"s3://sagemaker-{region}-000000000000/quantsweep/{stamp}"
    requests(
        _prefix(settings, region, stamp) if offline else stand_in,
        settings.image_uri or "<the SageMaker SDK's PyTorch training image>",
    )
    prefix = _prefix(settings, region, stamp)
    requests(prefix, settings.image_uri or default_image(region, settings.instance_type))

    if settings.dry_run:
        return _dry_run(planned)
    return _run_remotely(launcher, planned, region, prefix, enabled and is_local_tracking(tracking_uri))


def _dry_run(planned: list[PlannedJob]) -> list[JobReturn]:
    print(
        f"quantsweep SageMaker launcher, dry run: {len(planned)} training job(s) would be created; nothing was sent."
    )
    for job in planned:
        print(json.dumps({"CreateTrainingJob": job.request}, indent=2, sort_keys=False))
    returns = []
    for job in planned:
        ret = JobReturn()
        ret.overrides = job.overrides
        ret.cfg = job.config
        ret.hydra_cfg = job.config
        # Hydra's sweepers read every job's return value; a dry run has none to give
        ret.status = JobStatus.COMPLETED
        ret.return_value = None
        ret.working_dir = ""
        returns.append(ret)
    sys.stdout.flush()
    return returns


# ---- the real thing: upload, submit, watch, bring home ----------------------------------

LOCAL_INPUT_KEYS = ("model_name_or_path", "dataset.path")
FINAL = {"Completed", "Failed", "Stopped"}


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def _upload_folder(s3: Any, source: Path, uri: str) -> None:
    bucket, key = _split(uri)
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        relative = path.name if source.is_file() else path.relative_to(source).as_posix()
        s3.upload_file(str(path), bucket, f"{key}/{relative}")


def _exists(s3: Any, uri: str) -> bool:
    bucket, key = _split(uri)
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("KeyCount", 0))


def _local_inputs(config: DictConfig) -> dict[str, Path]:
    """Config keys naming files or folders on this machine; Hub ids are left to the container."""
    from omegaconf import OmegaConf

    found = {}
    for key in LOCAL_INPUT_KEYS:
        value = OmegaConf.select(config, key, default=None)
        if isinstance(value, str) and value and Path(value).exists():
            found[key] = Path(value).resolve()
    return found


def _content_digest(path: Path) -> str:
    from quantsweep.cache import file_digest, folder_digest

    return (folder_digest(path) if path.is_dir() else file_digest(path))[:20]


def _shapes(request: dict[str, Any]) -> dict[str, Any]:
    """The request as sagemaker-core's typed shapes."""
    from sagemaker.core import shapes
    from sagemaker.core.resources import Tag

    kwargs = dict(request)
    kwargs["algorithm_specification"] = shapes.AlgorithmSpecification(**request["algorithm_specification"])
    kwargs["input_data_config"] = [
        shapes.Channel(
            channel_name=c["channel_name"],
            input_mode=c["input_mode"],
            data_source=shapes.DataSource(
                s3_data_source=shapes.S3DataSource(**c["data_source"]["s3_data_source"])
            ),
        )
        for c in request["input_data_config"]
    ]
    kwargs["output_data_config"] = shapes.OutputDataConfig(**request["output_data_config"])
    kwargs["resource_config"] = shapes.ResourceConfig(**request["resource_config"])
    kwargs["stopping_condition"] = shapes.StoppingCondition(**request["stopping_condition"])
    if "vpc_config" in request:
        kwargs["vpc_config"] = shapes.VpcConfig(**request["vpc_config"])
    kwargs["tags"] = [Tag(**t) for t in request["tags"]] or None
    if kwargs["tags"] is None:
        del kwargs["tags"]
    return kwargs


def _last_log_lines(session: Any, name: str, count: int = 20) -> list[str]:
    try:
        logs = session.client("logs")
        group = "/aws/sagemaker/TrainingJobs"
        streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=f"{name}/").get(
            "logStreams", []
        )
        lines: list[str] = []
        for stream in streams:
            events = logs.get_log_events(
                logGroupName=group, logStreamName=stream["logStreamName"], limit=count, startFromHead=False
            )["events"]
            lines += [e["message"] for e in events]
        return lines[-count:]
    except Exception as error:  # logs are a courtesy; their absence must not hide the failure
        return [f"(no CloudWatch logs: {type(error).__name__}: {error})"]


def _cache_dir(config: DictConfig) -> Path | None:
    """quantsweep's cache (``cache_dir``, unless ``cache=false``), where built bundles are kept too."""
    if not config.get("cache", True) or not config.get("cache_dir"):
        return None
    return Path(str(config.cache_dir))


def _run_remotely(
    launcher: SageMakerLauncher, planned: list[PlannedJob], region: str, prefix: str, log_locally: bool
) -> list[JobReturn]:
    from sagemaker.core.resources import TrainingJob

    from hydra_plugins.quantsweep_sagemaker import _payload
    from hydra_plugins.quantsweep_sagemaker._bundle import (
        build_bundle,
        check_image_python,
        default_image_python,
        install_summary,
        requires_python,
    )

    settings = launcher.settings
    assert launcher.config is not None
    project = Path(settings.project_dir) if settings.project_dir else None
    # before anything is uploaded: the task must travel as data, the image's Python must be supported
    task = _payload.task_reference(launcher.task_function)
    if settings.image_uri:
        check_image_python(settings.image_python, "image_python", requires_python(project))
    else:
        check_image_python(default_image_python(), "image_uri", requires_python(project))
    session = _boto_session(region)
    s3 = session.client("s3")
    with tempfile.TemporaryDirectory(prefix="quantsweep-sagemaker-") as tmp:
        bundle = build_bundle(Path(tmp) / "bundle", project, _cache_dir(launcher.config))
        print(install_summary(bundle.folder), file=sys.stderr)
        bundle_uri = f"{prefix}/bundle"
        _upload_folder(s3, bundle.folder, bundle_uri)
        log.info("Uploaded the job bundle (%s) to %s", ", ".join(p.name for p in bundle.files), bundle_uri)
        inputs_root = (
            str(settings.s3_prefix).rstrip("/") if settings.s3_prefix else prefix.rsplit("/", 1)[0]
        ) + "/inputs"
        for job in planned:
            channels: dict[str, tuple[str, str]] = {}
            for number, (key, path) in enumerate(sorted(_local_inputs(job.config).items())):
                uri = f"{inputs_root}/{_content_digest(path)}"
                if not _exists(s3, uri):  # content-addressed: an unchanged model is uploaded once
                    _upload_folder(s3, path, f"{uri}/{path.name}")
                    log.info("Uploaded %s to %s", path, uri)
                channel = f"input{number}"
                channels[key] = (channel, path.name)
                job.request["input_data_config"].append(s3_channel(channel, uri))
            payload = _payload.job_payload(
                job.config,
                task,
                channels,
                {"QUANTSWEEP_MLFLOW_DEFERRED": "1"} if log_locally else {},
            )
            job_file = Path(tmp) / f"{job.name}.json"
            job_file.write_text(_payload.dumps(payload), encoding="utf-8")
            bucket, key = _split(
                job.request["input_data_config"][1]["data_source"]["s3_data_source"]["s3_uri"]
            )
            s3.upload_file(str(job_file), bucket, f"{key}/{_payload.PAYLOAD}")

    returns: dict[str, JobReturn] = {}
    pending = list(planned)
    running: dict[str, tuple[PlannedJob, Any, float]] = {}
    states: dict[str, str] = {}
    shown: dict[str, str] = {}
    try:
        while pending or running:
            while pending and len(running) < settings.max_parallel_jobs:
                job = pending.pop(0)
                created = TrainingJob.create(**_shapes(job.request), session=session, region=region)
                running[job.name] = (job, created, time.monotonic())
                states[job.name] = "Submitted"
            if states != shown:
                shown = dict(states)
                _show(states, running)
            if not settings.wait:
                for name, (job, _, _) in running.items():
                    returns[name] = _submitted(job)
                if pending:
                    raise RuntimeError("wait=false needs max_parallel_jobs >= the number of jobs")
                break
            time.sleep(settings.poll_seconds)
            for name in list(running):
                job, handle, _ = running[name]
                handle.refresh()
                status = str(handle.training_job_status)
                states[name] = status
                if status in FINAL:
                    del running[name]
                    returns[name] = _bring_home(launcher, job, handle, session, log_locally)
                    assert launcher.hydra_context is not None
                    launcher.hydra_context.callbacks.on_job_end(config=job.config, job_return=returns[name])
            if states != shown:  # the display changes when a job's state does
                shown = dict(states)
                _show(states, running)
    except KeyboardInterrupt:
        stopped = []
        for name, (_, handle, _) in running.items():
            try:
                handle.stop()
                stopped.append(name)
            except Exception as error:
                print(f"Could not stop {name}: {error}", file=sys.stderr)
        print(
            f"Interrupted: stopped {len(stopped)} SageMaker training job(s): {', '.join(stopped) or 'none'}",
            file=sys.stderr,
        )
        raise
    return [returns[job.name] for job in planned if job.name in returns]


def _show(states: dict[str, str], running: dict[str, Any]) -> None:
    now = time.monotonic()
    lines = [
        f"  {name:<63} {state:<11} {now - running[name][2]:>6.0f} s"
        if name in running
        else f"  {name:<63} {state}"
        for name, state in states.items()
    ]
    print("SageMaker jobs:\n" + "\n".join(lines), file=sys.stderr)


def _submitted(job: PlannedJob) -> JobReturn:
    ret = JobReturn()
    ret.overrides = job.overrides
    ret.cfg = job.config
    ret.hydra_cfg = job.config
    ret.status = JobStatus.COMPLETED
    ret.return_value = {"training_job": job.name}
    ret.working_dir = ""
    return ret


def _bring_home(
    launcher: SageMakerLauncher, job: PlannedJob, handle: Any, session: Any, log_locally: bool
) -> JobReturn:
    """Download and unpack a finished job's folder into the local sweep; its JobReturn."""
    import copy
    import tarfile

    from omegaconf import OmegaConf, read_write

    from hydra_plugins.quantsweep_sagemaker._payload import RETURN, read_return

    ret = JobReturn()
    ret.overrides = job.overrides
    # as Hydra's run_job returns them: the task config, and the hydra node apart
    ret.cfg = copy.deepcopy(job.config)
    with read_write(ret.cfg), open_dict(ret.cfg):
        del ret.cfg["hydra"]
    ret.hydra_cfg = OmegaConf.create({"hydra": copy.deepcopy(job.config.hydra)})
    ret.task_name = str(job.config.hydra.job.name)
    sweep_dir = Path(str(job.config.hydra.sweep.dir)).resolve()
    status = str(handle.training_job_status)
    artifacts = getattr(getattr(handle, "model_artifacts", None), "s3_model_artifacts", None)
    if status == "Completed" and isinstance(artifacts, str):
        bucket, key = _split(artifacts)
        with tempfile.TemporaryDirectory(prefix="quantsweep-sagemaker-") as tmp:
            archive = Path(tmp) / "model.tar.gz"
            session.client("s3").download_file(bucket, key, str(archive))
            with tarfile.open(archive) as tar:
                tar.extractall(Path(tmp) / "model", filter="data")
            # data only: the JSON record; any other file (a planted return.pkl) is never loaded
            record = read_return((Path(tmp) / "model" / RETURN).read_text(encoding="utf-8"))
            local_dir = (sweep_dir / record.relative_dir).resolve()
            if (Path(tmp) / "model" / "job").is_dir():
                shutil.copytree(Path(tmp) / "model" / "job", local_dir, dirs_exist_ok=True)
        ret.working_dir = str(local_dir) if record.chdir else str(job.config.hydra.runtime.cwd)
        ret.status = JobStatus[record.status]
        ret.return_value = record.value
        with open_dict(ret.hydra_cfg):
            ret.hydra_cfg.hydra.runtime.output_dir = str(local_dir)
        if log_locally and ret.status == JobStatus.COMPLETED:
            _log_to_mlflow(local_dir, job.config, sweep_dir)
        return ret
    reason = getattr(handle, "failure_reason", None) or status
    lines = _last_log_lines(session, job.name)
    ret.status = JobStatus.FAILED
    ret.return_value = RuntimeError(
        f"SageMaker training job {job.name} ended {status}: {reason}\nLast log lines:\n" + "\n".join(lines)
    )
    ret.working_dir = ""
    return ret


def _log_to_mlflow(job_dir: Path, config: DictConfig, sweep_dir: Path) -> None:
    from quantsweep.config import MlflowConfig
    from quantsweep.results import RESULTS_FILE
    from quantsweep.tracking import log_job

    if not (job_dir / RESULTS_FILE).is_file():
        return
    node = config.get("mlflow") or {}
    settings = MlflowConfig(
        enabled=True, tracking_uri=node.get("tracking_uri"), experiment_name=node.get("experiment_name")
    )
    try:
        log_job(job_dir, settings, sweep_dir)
    except Exception as error:
        log.warning(
            "Could not log %s to MLflow (%s); quantsweep-log %s uploads it later.", job_dir, error, job_dir
        )
