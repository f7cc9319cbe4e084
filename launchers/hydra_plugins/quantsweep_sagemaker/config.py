"""The launcher's typed config, registered as ``hydra/launcher=sagemaker``.

Importing this module must stay cheap: Hydra imports every plugin module when it scans
for plugins, so the SageMaker SDK (seconds to import) is loaded only when a sweep runs.
"""

# No `from __future__ import annotations` here: Hydra's plugin scanner executes this
# module before registering it in sys.modules, and dataclasses then cannot resolve
# string annotations. (`X | None` is evaluated at run time, which Python 3.10+ supports.)
import os
import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

DEFAULT_INSTANCE_TYPE = "ml.g4dn.2xlarge"
# ml.<family>.<size>, e.g. ml.g4dn.2xlarge, ml.c7i.large, ml.p4d.24xlarge, ml.trn1.32xlarge
INSTANCE_TYPE = re.compile(r"^ml\.[a-z][a-z0-9-]*\.(?:\d*x?large|metal|medium|small|micro|\d+xlarge)$")
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")


class LauncherConfigError(ValueError):
    """A launcher setting that cannot work; raised before anything is uploaded."""


@dataclass
class SageMakerLauncherConf:
    _target_: str = "hydra_plugins.quantsweep_sagemaker.launcher.SageMakerLauncher"
    # the IAM role the training jobs run as (arn:aws:iam::<account>:role/<name>)
    role: str | None = None
    # null: AWS_REGION / AWS_DEFAULT_REGION / the AWS profile's region
    region: str | None = None
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    # null: a PyTorch training image the SageMaker SDK resolves for the region
    image_uri: str | None = None
    volume_size_gb: int = 50
    max_run_seconds: int = 24 * 3600
    use_spot_instances: bool = False
    # spot only: how long to wait for capacity plus run (>= max_run_seconds)
    max_wait_seconds: int | None = None
    # warm pool: keep the instance this long after a job for the next one (0: off)
    keep_alive_seconds: int = 0
    # training jobs in flight at once; the rest wait their turn
    max_parallel_jobs: int = 8
    # s3://bucket/prefix for bundles, inputs and outputs (null: the SDK's default bucket)
    s3_prefix: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # extra environment variables for the container (never put credentials here)
    environment: dict[str, str] = field(default_factory=dict)
    subnets: list[str] = field(default_factory=list)
    security_group_ids: list[str] = field(default_factory=list)
    poll_seconds: float = 30.0
    # false: submit and return; results are fetched later (needs a remote MLflow or none)
    wait: bool = True
    # print the training-job requests and send nothing
    dry_run: bool = False
    # the quantsweep source checkout the bundle's wheel is built from
    # (null: the working directory or one of its parents, else beside the installed package)
    project_dir: str | None = None


def is_local_tracking(tracking_uri: str | None) -> bool:
    """An MLflow store only this machine can reach (the embedded default, a file or sqlite path)."""
    return not tracking_uri or not str(tracking_uri).startswith(("http://", "https://", "arn:aws"))


def resolved_region(conf: Any) -> str | None:
    return conf.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def check(conf: Any, tracking_uri: str | None, mlflow_enabled: bool) -> None:
    """Refuse settings that cannot work, in one paragraph naming the key, value and what is allowed."""

    def fail(key: str, value: Any, allowed: str) -> LauncherConfigError:
        return LauncherConfigError(
            f"Invalid SageMaker launcher setting: `hydra.launcher.{key}` is {value!r}; {allowed}"
        )

    if not conf.role and not conf.dry_run:
        raise fail("role", conf.role, "give the ARN of the IAM role the training jobs run as.")
    if conf.role and not ROLE_ARN.match(str(conf.role)):
        raise fail(
            "role", conf.role, "expected an IAM role ARN, arn:aws:iam::<12-digit account>:role/<name>."
        )
    if not resolved_region(conf):
        raise fail("region", conf.region, "name an AWS region (or set AWS_REGION / AWS_DEFAULT_REGION).")
    if not INSTANCE_TYPE.match(str(conf.instance_type)):
        raise fail(
            "instance_type",
            conf.instance_type,
            f"expected a SageMaker instance type such as {DEFAULT_INSTANCE_TYPE} or ml.c7i.2xlarge "
            "(SageMaker types start with `ml.`).",
        )
    for key in ("instance_count", "volume_size_gb", "max_run_seconds", "max_parallel_jobs"):
        if int(getattr(conf, key)) <= 0:
            raise fail(key, getattr(conf, key), "it must be a positive integer.")
    if conf.poll_seconds <= 0:
        raise fail("poll_seconds", conf.poll_seconds, "it must be a positive number of seconds.")
    spot_wait = conf.max_wait_seconds if conf.use_spot_instances else None
    if spot_wait is not None and spot_wait < conf.max_run_seconds:
        raise fail(
            "max_wait_seconds",
            spot_wait,
            f"with spot instances it must be at least max_run_seconds ({conf.max_run_seconds}).",
        )
    if conf.s3_prefix is not None and not str(conf.s3_prefix).startswith("s3://"):
        raise fail(
            "s3_prefix",
            conf.s3_prefix,
            "expected s3://<bucket>/<prefix>, or null for the SDK's default bucket.",
        )
    if mlflow_enabled and is_local_tracking(tracking_uri) and not conf.wait:
        raise fail(
            "wait",
            False,
            f"the MLflow tracking URI {tracking_uri or '(the embedded store under outputs/)'} is local to this "
            "machine, so results must be brought home before they can be logged: keep wait=true, or use an "
            "http(s) tracking server or a SageMaker MLflow ARN.",
        )


ConfigStore.instance().store(
    group="hydra/launcher", name="sagemaker", node=SageMakerLauncherConf, provider="quantsweep"
)
