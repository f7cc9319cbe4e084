"""The launcher's typed config, registered as ``hydra/launcher=sagemaker``.

Importing this module must stay cheap: Hydra imports every plugin module when it scans
for plugins, so the SageMaker SDK (seconds to import) is loaded only when a sweep runs.
"""

# No `from __future__ import annotations` here: Hydra's plugin scanner executes this
# module before registering it in sys.modules, and dataclasses then cannot resolve
# string annotations. (`X | None` is evaluated at run time, which Python 3.10+ supports.)
import os
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

# A CPU chosen for int8, not the seed card's GPU (ml.g4dn.2xlarge, one override away):
# every ONNX Runtime session here uses the CPU execution provider. The m7i family is Intel
# Sapphire Rapids, a current generation with AVX512-VNNI (the int8 dot products ONNX
# Runtime's quantized kernels and optimum's avx512_vnni preset are made for) and AMX-INT8;
# 2xlarge is 8 vCPUs (4 physical cores) and 32 GiB, room for static calibration's
# activations. Each job's results record the CPU and the int8 instruction sets it has.
DEFAULT_INSTANCE_TYPE = "ml.m7i.2xlarge"
GPU_INSTANCE_TYPE = "ml.g4dn.2xlarge"  # the seed card's hardware


class LauncherConfigError(ValueError):
    """A launcher setting that cannot work; raised before anything is uploaded."""


@dataclass
class SageMakerLauncherConf:
    _target_: str = "hydra_plugins.quantsweep_sagemaker.launcher.SageMakerLauncher"
    # the IAM role the training jobs run as (arn:aws:iam::<account>:role/<name>)
    role: str | None = None
    # null: AWS_REGION or AWS_DEFAULT_REGION (an AWS profile's region is not read: name it here)
    region: str | None = None
    # any of SageMaker's training instance types (botocore's TrainingInstanceType enum); the
    # default is a CPU with AVX512-VNNI and AMX-INT8, the seed card's GPU is ml.g4dn.2xlarge
    instance_type: str = DEFAULT_INSTANCE_TYPE
    # must stay 1: a job is one process on one instance (use max_parallel_jobs for more at once)
    instance_count: int = 1
    # null: a PyTorch training image the SageMaker SDK resolves for the region and instance
    # type (its CPU image for a CPU instance, its GPU image for a GPU one)
    image_uri: str | None = None
    # the Python version of a custom image_uri, e.g. "3.12" (required with image_uri; the
    # default image's comes from the SageMaker SDK), checked against quantsweep's requires-python
    image_python: str | None = None
    volume_size_gb: int = 50
    max_run_seconds: int = 24 * 3600
    use_spot_instances: bool = False
    # spot only: how long to wait for capacity plus run (>= max_run_seconds)
    max_wait_seconds: int | None = None
    # warm pool: keep the instance this long after a job for the next one (0: off)
    keep_alive_seconds: int = 0
    # training jobs in flight at once; the rest wait their turn (with wait=false there is
    # no turn to wait: it must be at least the number of jobs in the sweep)
    max_parallel_jobs: int = 8
    # s3://bucket/prefix for bundles, inputs and outputs (null: the SDK's default bucket)
    s3_prefix: str | None = None
    # up to 50 tags (SageMaker's limit; keys and values: letters, digits, spaces and _.:/=+-@)
    tags: dict[str, str] = field(default_factory=dict)
    # extra environment variables for the container (never put credentials here); keys are
    # [a-zA-Z_][a-zA-Z0-9_]*, values at most 512 characters, at most 100 with the launcher's own
    environment: dict[str, str] = field(default_factory=dict)
    subnets: list[str] = field(default_factory=list)
    security_group_ids: list[str] = field(default_factory=list)
    poll_seconds: float = 30.0
    # false: submit and return; `quantsweep-sagemaker fetch <sweep dir>` brings the results
    # home later (and logs them to MLflow)
    wait: bool = True
    # MLflow is always logged at home, once a job's results are there (the same idempotent
    # path as quantsweep-log); true: the container logs too, as the job ends (it needs to
    # reach the tracking server; a SageMaker MLflow ARN gets the sagemaker-mlflow plugin and
    # authenticates as the role). Refused for a server that needs credentials (a URI's
    # user:password@, MLFLOW_TRACKING_* here): nothing sent to SageMaker carries one.
    mlflow_from_container: bool = False
    # the AWS account that owns the S3 bucket; every S3 call passes it as ExpectedBucketOwner
    # (null: the account of the credentials in use)
    bucket_owner: str | None = None
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


def _fail(key: str, value: Any, allowed: str) -> LauncherConfigError:
    return LauncherConfigError(
        f"Invalid SageMaker launcher setting: `hydra.launcher.{key}` is {value!r}; {allowed}"
    )


def check(conf: Any, tracking_uri: str | None, mlflow_enabled: bool) -> None:
    """Refuse settings that cannot work, in one paragraph naming the key, value and what is allowed.

    What the SageMaker API itself allows (instance types, the role's ARN, names, tags,
    environment) is checked against botocore's service model on the built requests, by
    ``_validate``; these are the rules the API cannot know.
    """
    if not conf.role and not conf.dry_run:
        raise _fail("role", conf.role, "give the ARN of the IAM role the training jobs run as.")
    if not resolved_region(conf):
        raise _fail("region", conf.region, "name an AWS region (or set AWS_REGION / AWS_DEFAULT_REGION).")
    for key in ("instance_count", "volume_size_gb", "max_run_seconds", "max_parallel_jobs"):
        if int(getattr(conf, key)) <= 0:
            raise _fail(key, getattr(conf, key), "it must be a positive integer.")
    if int(conf.instance_count) != 1:
        raise _fail(
            "instance_count",
            conf.instance_count,
            "each job of a sweep is one process on one instance, so more instances would run the "
            "same job that many times and bill for each: keep 1, and use `hydra.launcher.max_parallel_jobs` "
            "to run the sweep's jobs side by side.",
        )
    if conf.poll_seconds <= 0:
        raise _fail("poll_seconds", conf.poll_seconds, "it must be a positive number of seconds.")
    spot_wait = conf.max_wait_seconds if conf.use_spot_instances else None
    if spot_wait is not None and spot_wait < conf.max_run_seconds:
        raise _fail(
            "max_wait_seconds",
            spot_wait,
            f"with spot instances it must be at least max_run_seconds ({conf.max_run_seconds}).",
        )
    if conf.s3_prefix is not None and not str(conf.s3_prefix).startswith("s3://"):
        raise _fail(
            "s3_prefix",
            conf.s3_prefix,
            "expected s3://<bucket>/<prefix>, or null for the SDK's default bucket.",
        )
    if conf.bucket_owner is not None and not (
        str(conf.bucket_owner).isdigit() and len(str(conf.bucket_owner)) == 12
    ):
        raise _fail(
            "bucket_owner",
            conf.bucket_owner,
            "expected a 12-digit AWS account id, or null for your own account.",
        )
    if conf.mlflow_from_container:
        _check_container_tracking(tracking_uri, mlflow_enabled)


# What MLflow's client reads for an http(s) server's credentials. A training job never gets
# them: its Environment is shown by DescribeTrainingJob, its payload lies in the bucket.
MLFLOW_CREDENTIAL_VARIABLES = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)


def _check_container_tracking(tracking_uri: str | None, mlflow_enabled: bool) -> None:
    """``mlflow_from_container=true`` only where the container can log with what it is sent.

    Only an http(s) server or a SageMaker MLflow ARN is reachable from a training job, and
    the launcher sends no credential, so a server that needs a password (in the URI, or in
    MLflow's variables here) cannot be logged to from the container. A SageMaker MLflow ARN
    needs none: the job authenticates as the execution role.
    """
    from quantsweep.redaction import redact_uri
    from quantsweep.tracking import is_http

    shown = redact_uri(str(tracking_uri)) if tracking_uri else "(the embedded store under outputs/)"
    if not mlflow_enabled or is_local_tracking(tracking_uri):
        raise _fail(
            "mlflow_from_container",
            True,
            f"the container can only log to an http(s) tracking server or a SageMaker MLflow ARN, and the "
            f"tracking URI is {shown}{'' if mlflow_enabled else ' with mlflow.enabled=false'}: keep it false "
            "(every job is logged at home anyway), or set mlflow.tracking_uri.",
        )
    uri = str(tracking_uri)
    if not is_http(uri):
        return  # a SageMaker MLflow ARN: the execution role's permissions, no password
    given = [f"the user:password@ of `mlflow.tracking_uri` ({shown})"] if redact_uri(uri) != uri else []
    given += [f"{name} (set here)" for name in MLFLOW_CREDENTIAL_VARIABLES if os.environ.get(name)]
    if given:
        raise _fail(
            "mlflow_from_container",
            True,
            f"the container would need the tracking server's credentials, {' and '.join(given)}, and the "
            "launcher sends no credential to SageMaker: a training job's payload lies in the S3 bucket and its "
            "Environment is shown by DescribeTrainingJob, to anyone allowed to read either. Keep it false: every "
            "job is logged to that server from this machine, with those credentials, as soon as its folder is "
            "home. Or log to a SageMaker managed MLflow tracking server (mlflow.tracking_uri=arn:aws:sagemaker:"
            "<region>:<account>:mlflow-tracking-server/<name>), which the container reaches with the execution "
            "role's IAM permissions and no password.",
        )


def check_sweep(conf: Any, jobs: int) -> None:
    """Refuse a sweep the settings cannot run whole, before anything is uploaded."""
    if not conf.wait and jobs > int(conf.max_parallel_jobs):
        raise _fail(
            "max_parallel_jobs",
            conf.max_parallel_jobs,
            f"with wait=false every job is submitted at once and the launcher returns, so nothing would "
            f"submit the jobs beyond the first {conf.max_parallel_jobs} of this sweep's {jobs}: raise "
            f"`hydra.launcher.max_parallel_jobs` to at least {jobs}, or keep wait=true to let the jobs "
            "wait their turn.",
        )


ConfigStore.instance().store(
    group="hydra/launcher", name="sagemaker", node=SageMakerLauncherConf, provider="quantsweep"
)
