"""What the launcher does: compose each job, bundle, build the training-job requests, and
(unless ``dry_run``) submit, watch and bring the results home. Imported only when a sweep
runs; the SageMaker SDK is imported later still, only when requests are sent.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from omegaconf import DictConfig, open_dict

from hydra_plugins.quantsweep_sagemaker import _payload
from hydra_plugins.quantsweep_sagemaker._bundle import (
    CONSTRAINTS,
    CONTAINER_CONSTRAINTS,
    INSTALL_SCRIPT,
    check_image_python,
    container_constraints,
    default_image_python,
    install_summary,
    project_root,
    requires_python,
)
from hydra_plugins.quantsweep_sagemaker._container import MLFLOW_VARIABLE, ROOT_VARIABLE
from hydra_plugins.quantsweep_sagemaker._home import RECORD_FILE, Home, SweepRecord, bring_home, log_at_home
from hydra_plugins.quantsweep_sagemaker._s3 import Store, caller_account
from hydra_plugins.quantsweep_sagemaker._validate import check_request
from hydra_plugins.quantsweep_sagemaker.config import (
    SageMakerLauncherConf,
    check,
    check_sweep,
    resolved_region,
)

if TYPE_CHECKING:
    from hydra_plugins.quantsweep_sagemaker._watch import Outcome
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
    }
    if settings.tags:  # none: no Tags field, so creating needs no sagemaker:AddTags permission
        request["tags"] = [{"key": str(k), "value": str(v)} for k, v in dict(settings.tags).items()]
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
    sweep_dir = Path(str(config.hydra.sweep.dir))
    from quantsweep.files import MULTIRUN_YAML
    from quantsweep.redaction import scrub_config_files

    # first, whatever is refused below: Hydra's sweeper saved the sweep's config here, credentials
    # included, and this launcher's jobs never start here to scrub it as local jobs do
    scrub_config_files(sweep_dir, MULTIRUN_YAML)
    enabled, tracking_uri = _mlflow(config)
    # before anything is built, looked up or uploaded
    check(settings, tracking_uri, enabled)
    check_sweep(settings, len(job_overrides))
    _check_image_python(settings)
    # the task travels as its import path: one that has none is refused before anything else
    _payload.task_reference(launcher.task_function)
    region = resolved_region(settings)
    assert region is not None
    sweep_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")

    planned: list[PlannedJob] = []
    for offset, overrides in enumerate(job_overrides):
        index = initial_job_idx + offset
        sweep_config = launcher.hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{index}"
            sweep_config.hydra.job.num = index
            # the folder this sweep writes to, its ${now:} resolved once (it would resolve again in
            # the container: another second, another folder); a relative folder stays relative, to
            # the job's working directory there as here (Hydra's launcher suites check it)
            sweep_config.hydra.sweep.dir = str(sweep_dir)
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
        return _dry_run(planned, _install(settings, tracking_uri))
    return _run_remotely(launcher, planned, region, prefix, tracking_uri)


def _check_image_python(settings: SageMakerLauncherConf) -> None:
    """The image's Python (the setting for a custom image, the SDK's for the default) must be supported."""
    project = Path(settings.project_dir) if settings.project_dir else None
    if settings.image_uri:
        check_image_python(settings.image_python, "image_python", requires_python(project))
    else:
        check_image_python(default_image_python(), "image_uri", requires_python(project))


def _extras(settings: SageMakerLauncherConf, tracking_uri: str | None) -> list[str]:
    """What the container installs beside the wheel: the MLflow plugin for an ARN it logs to."""
    if settings.mlflow_from_container and str(tracking_uri or "").startswith("arn:aws"):
        return ["sagemaker-mlflow"]
    return []


def _install(settings: SageMakerLauncherConf, tracking_uri: str | None) -> str:
    """The exact install each job will run, from the project's constraints."""
    root = Path(settings.project_dir) if settings.project_dir else project_root()
    constraints = root / CONSTRAINTS
    text = constraints.read_text(encoding="utf-8") if constraints.is_file() else ""
    return install_summary(container_constraints(text), _extras(settings, tracking_uri))


def _dry_run(planned: list[PlannedJob], install: str) -> list[JobReturn]:
    print(
        f"quantsweep SageMaker launcher, dry run: {len(planned)} training job(s) would be created; nothing was sent."
    )
    print(install)
    for job in planned:
        print(json.dumps({"CreateTrainingJob": job.request}, indent=2, sort_keys=False))
    returns = []
    for job in planned:
        ret = JobReturn()
        ret.overrides = _shown_overrides(job)
        ret.cfg = job.config
        ret.hydra_cfg = job.config
        # Hydra's sweepers read every job's return value; a dry run has none to give
        ret.status = JobStatus.COMPLETED
        ret.return_value = None
        ret.working_dir = ""
        returns.append(ret)
    sys.stdout.flush()
    return returns


# ---- the real thing: upload, record, submit and watch, bring home ------------------------

LOCAL_INPUT_KEYS = ("model_name_or_path", "dataset.path")


def _local_inputs(config: DictConfig) -> dict[str, Path]:
    """Config keys naming files or folders on this machine; Hub ids are left to the container."""
    from omegaconf import OmegaConf

    found = {}
    for key in LOCAL_INPUT_KEYS:
        value = OmegaConf.select(config, key, default=None)
        if isinstance(value, str) and value and Path(value).exists():
            found[key] = Path(value).resolve()
    return found


def input_key(path: Path) -> str:
    """Where a local input lives under ``<prefix>/inputs/``: its name and content, hashed.

    The container finds the input as ``<channel>/<name>``, so the name is part of the key: the
    same model in a folder of another name is another upload. Hidden files (``.git``,
    ``.cache``) are neither hashed nor uploaded, as in quantsweep's own cache.
    """
    import hashlib

    from quantsweep.cache import file_digest, folder_digest

    content = folder_digest(path) if path.is_dir() else file_digest(path)
    return hashlib.sha256(f"{path.name}\0{content}".encode()).hexdigest()[:20]


# written last under an input's prefix: an upload cut off halfway is not taken for a whole one
INPUT_COMPLETE = ".quantsweep-complete.json"


def last_log_lines(session: Any, name: str, count: int = 20) -> list[str]:
    """The end of a job's CloudWatch log, to show beside its FailureReason."""
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


def fetch_hint(sweep_dir: Path) -> str:
    return f"bring it home later with: quantsweep-sagemaker fetch {sweep_dir}"


def _upload(
    launcher: SageMakerLauncher,
    planned: list[PlannedJob],
    store: Store,
    prefix: str,
    tracking_uri: str | None,
) -> None:
    """The bundle, each job's local inputs (content-addressed) and each job's payload, to S3."""
    from hydra_plugins.quantsweep_sagemaker._bundle import build_bundle

    settings = launcher.settings
    assert launcher.config is not None
    task = _payload.task_reference(launcher.task_function)
    project = Path(settings.project_dir) if settings.project_dir else None
    # the task never logs in the container; with mlflow_from_container the container logs the
    # finished job itself, once its folder reads as it will at home (_container.log_from_container)
    environment = {"QUANTSWEEP_MLFLOW_DEFERRED": "1"}
    if settings.mlflow_from_container:
        environment[MLFLOW_VARIABLE] = "1"
    with tempfile.TemporaryDirectory(prefix="quantsweep-sagemaker-") as tmp:
        extras = _extras(settings, tracking_uri)
        bundle = build_bundle(Path(tmp) / "bundle", project, _cache_dir(launcher.config), extras)
        print(install_summary((bundle.folder / CONTAINER_CONSTRAINTS).read_text(), extras), file=sys.stderr)
        bundle_uri = f"{prefix}/{BUNDLE_CHANNEL}"
        store.upload_folder(bundle.folder, bundle_uri)
        log.info("Uploaded the job bundle (%s) to %s", ", ".join(p.name for p in bundle.files), bundle_uri)
        inputs_root = (
            str(settings.s3_prefix).rstrip("/") if settings.s3_prefix else prefix.rsplit("/", 1)[0]
        ) + "/inputs"
        for job in planned:
            channels: dict[str, tuple[str, str]] = {}
            for number, (key, path) in enumerate(sorted(_local_inputs(job.config).items())):
                uri = f"{inputs_root}/{input_key(path)}"
                # content-addressed: an unchanged model is uploaded once, and whole
                if not store.exists(f"{uri}/{INPUT_COMPLETE}"):
                    store.upload_folder(path, f"{uri}/{path.name}", hidden=False)
                    store.put_json({"name": path.name}, f"{uri}/{INPUT_COMPLETE}")
                    log.info("Uploaded %s to %s", path, uri)
                channel = f"input{number}"
                channels[key] = (channel, path.name)
                job.request["input_data_config"].append(s3_channel(channel, uri))
            check_request(job.request, job.name, job.overrides)  # with its input channels, as it will be sent
            payload = _payload.job_payload(job.config, task, channels, environment)
            job_file = Path(tmp) / f"{job.name}.json"
            job_file.write_text(_payload.dumps(payload), encoding="utf-8")
            store.upload_file(job_file, f"{prefix}/{JOB_CHANNEL}s/{job.name}/{_payload.PAYLOAD}")


def _run_remotely(
    launcher: SageMakerLauncher, planned: list[PlannedJob], region: str, prefix: str, tracking_uri: str | None
) -> list[JobReturn]:
    from hydra_plugins.quantsweep_sagemaker._watch import watch

    settings = launcher.settings
    assert launcher.config is not None and launcher.hydra_context is not None
    callbacks = launcher.hydra_context.callbacks
    session = _boto_session(region)
    store = Store(session.client("s3"), str(settings.bucket_owner or caller_account(session)))
    store.check_bucket(prefix)
    _upload(launcher, planned, store, prefix, tracking_uri)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir)).resolve()
    # before the first create: every job the launcher may create can be found again, from the
    # sweep folder (with the jobs of earlier launches into it: a sweeper that launches in
    # batches, a rerun) or from this launch's S3 prefix
    jobs = [
        {"name": j.name, "index": j.index, "overrides": j.overrides, "prefix": prefix, "home": None}
        for j in planned
    ]
    launched = SweepRecord(region, prefix, store.owner, str(sweep_dir), jobs)
    store.put_json(launched.data(), launched.s3_uri)
    record = launched.after(SweepRecord.load(sweep_dir) if (sweep_dir / RECORD_FILE).is_file() else None)
    record.save(sweep_dir)

    returns: dict[str, JobReturn] = {}

    def bring(job: PlannedJob, description: dict[str, Any]) -> Home | None:
        if description.get("TrainingJobStatus") != "Completed":
            return None  # SageMaker keeps no output of a Failed or Stopped job
        home = bring_home(store, job.name, description, sweep_dir, prefix)
        record.mark_home(job.name, home.record.relative_dir)
        record.save(sweep_dir)
        if home.record.status == "COMPLETED":
            # the URI as given: the job's own config keeps a password as ***@
            log_at_home(home.job_dir, sweep_dir, settings.mlflow_from_container, tracking_uri)
        return home

    def finished(job: PlannedJob, outcome: Outcome[Home | None]) -> None:
        returns[job.name] = _job_return(job, outcome, session)
        callbacks.on_job_end(config=job.config, job_return=returns[job.name])

    outcomes = watch(
        session.client("sagemaker"),
        planned,
        max_parallel_jobs=settings.max_parallel_jobs,
        poll_seconds=settings.poll_seconds,
        wait=settings.wait,
        bring_home=bring,
        on_finished=finished,
        fetch_hint=fetch_hint(sweep_dir),
    )
    for job in planned:
        if job.name not in returns and job.name in outcomes:
            returns[job.name] = _job_return(job, outcomes[job.name], session)
    if not settings.wait:
        print(
            f"When they have ended, bring the results home (card, MLflow) with: quantsweep-sagemaker fetch "
            f"{sweep_dir}\n(from another machine: quantsweep-sagemaker fetch {prefix} --into <folder>)",
            file=sys.stderr,
        )
    return [returns[job.name] for job in planned if job.name in returns]


def _shown_overrides(job: PlannedJob) -> list[str]:
    """The overrides as Hydra prints them for a failed job ("Error executing job with overrides"), redacted."""
    from quantsweep.redaction import redact_uri

    return [redact_uri(override) for override in job.overrides]


def _base_return(job: PlannedJob) -> JobReturn:
    """A JobReturn as Hydra's run_job makes them: the task config, and the hydra node apart."""
    import copy

    from omegaconf import OmegaConf, read_write

    ret = JobReturn()
    ret.overrides = _shown_overrides(job)
    ret.cfg = copy.deepcopy(job.config)
    with read_write(ret.cfg), open_dict(ret.cfg):
        del ret.cfg["hydra"]
    ret.hydra_cfg = OmegaConf.create({"hydra": copy.deepcopy(job.config.hydra)})
    ret.task_name = str(job.config.hydra.job.name)
    ret.working_dir = ""
    return ret


def _job_return(job: PlannedJob, outcome: Outcome[Home | None], session: Any) -> JobReturn:
    """What Hydra gets for a job: its return value when home, else an error that says what happened."""
    from hydra_plugins.quantsweep_sagemaker._watch import NOT_SUBMITTED, SUBMITTED

    ret = _base_return(job)
    if outcome.status == SUBMITTED:
        ret.status = JobStatus.COMPLETED  # wait=false: created and left to run
        ret.return_value = {"training_job": job.name}
        return ret
    ret.status = JobStatus.FAILED
    home = outcome.result
    if outcome.status == NOT_SUBMITTED:
        ret.return_value = _job_error(f"SageMaker training job {job.name} was {outcome.reason}")
    elif outcome.error is not None:
        ret.return_value = _job_error(
            f"SageMaker training job {job.name} ended {outcome.status}, and was not brought home: "
            f"{outcome.error}; its output stays at {outcome.output}; {fetch_hint(Path(str(job.config.hydra.sweep.dir)))}"
        )
    elif home is not None:
        ret.status = JobStatus[home.record.status]
        ret.return_value = home.record.value
        ret.working_dir = str(home.job_dir) if home.record.chdir else str(job.config.hydra.runtime.cwd)
        assert ret.hydra_cfg is not None
        with open_dict(ret.hydra_cfg):
            ret.hydra_cfg.hydra.runtime.output_dir = str(home.job_dir)
    else:
        lines = last_log_lines(session, job.name)
        ret.return_value = _job_error(
            f"SageMaker training job {job.name} ended {outcome.status}: {outcome.reason}\nLast log lines:\n"
            + "\n".join(lines)
        )
    return ret


def _job_error(text: str) -> RuntimeError:
    """A failed job's error, which Hydra prints: it quotes SageMaker's reason and the job's log lines."""
    from quantsweep.redaction import redact_uri

    return RuntimeError(redact_uri(text))
