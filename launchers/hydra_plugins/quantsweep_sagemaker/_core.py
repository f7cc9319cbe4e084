"""What the launcher does: compose each job, bundle, build the training-job requests, and
(unless ``dry_run``) submit, watch and bring the results home. Imported only when a sweep
runs; the SageMaker SDK is imported later still, only when requests are sent.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from omegaconf import DictConfig, open_dict

from hydra_plugins.quantsweep_sagemaker.config import SageMakerLauncherConf, check, resolved_region

if TYPE_CHECKING:
    from hydra_plugins.quantsweep_sagemaker.launcher import SageMakerLauncher

log = logging.getLogger(__name__)

# the container's root; SageMaker's contract fixes it, tests relocate it
ROOT_VARIABLE = "QUANTSWEEP_OPT_ML"
BUNDLE_CHANNEL = "bundle"
JOB_CHANNEL = "job"
COMMAND = (
    'set -e; root="${' + ROOT_VARIABLE + ':-/opt/ml}"; cd "$root/input/data/' + BUNDLE_CHANNEL + '"; '
    "python -m pip install --no-cache-dir --disable-pip-version-check -q quantsweep-*.whl -c constraints.txt; "
    "exec python -m hydra_plugins.quantsweep_sagemaker.container"
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
    readable = _NAME.sub("-", "-".join(o.split("=", 1)[-1] for o in overrides)).strip("-")
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
    check(settings, tracking_uri, enabled)  # before anything is built or uploaded
    region = resolved_region(settings)
    assert region is not None
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    prefix = (settings.s3_prefix or "s3://<the SageMaker SDK's default bucket>").rstrip("/") + f"/quantsweep/{stamp}"
    image = settings.image_uri or default_image(region, settings.instance_type)

    planned: list[PlannedJob] = []
    for offset, overrides in enumerate(job_overrides):
        index = initial_job_idx + offset
        sweep_config = launcher.hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{index}"
            sweep_config.hydra.job.num = index
        name = training_job_name(stamp, index, overrides)
        request = build_request(
            settings,
            name,
            image,
            prefix,
            bundle_uri=f"{prefix}/bundle",
            job_uri=f"{prefix}/jobs/{name}",
            environment={"QUANTSWEEP_SAGEMAKER_JOB": name},
        )
        planned.append(PlannedJob(index, name, list(overrides), sweep_config, request))

    if settings.dry_run:
        return _dry_run(planned)
    raise NotImplementedError("submitting to SageMaker is not built yet (branch sagemaker-launcher)")


def _dry_run(planned: list[PlannedJob]) -> list[JobReturn]:
    print(f"quantsweep SageMaker launcher, dry run: {len(planned)} training job(s) would be created; nothing was sent.")
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
