"""SageMaker requests checked against botocore's service model before anything is sent.

The unit tests validate requests made by the launcher's real ``build_request``; the
command tests run ``quantsweep --multirun hydra/launcher=sagemaker`` against moto on
127.0.0.1 (real boto3 HTTP) and look at the bucket and the training jobs afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hydra_plugins.quantsweep_sagemaker._validate import violations
from hydra_plugins.quantsweep_sagemaker.config import (
    DEFAULT_INSTANCE_TYPE,
)
from quantsweep.testing import run_module

REGION = "us-east-1"


# ---- through the real command, against moto on 127.0.0.1 --------------------------------


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    home = tmp_path_factory.mktemp("aws")
    try:
        yield {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            # no profile or credentials of this machine's user
            "AWS_CONFIG_FILE": str(home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
            "SAGEMAKER_VALIDATE_ROLE": "false",
            # a call to real AWS (the SDK sends STS to its regional endpoint whatever
            # AWS_ENDPOINT_URL says) fails at once instead of leaving the machine
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
        }
    finally:
        server.stop()


def client(env: dict[str, str], service: str) -> Any:
    import boto3

    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def buckets(env: dict[str, str]) -> dict[str, list[str]]:
    s3 = client(env, "s3")
    return {
        b["Name"]: [o["Key"] for o in s3.list_objects_v2(Bucket=b["Name"]).get("Contents", [])]
        for b in s3.list_buckets()["Buckets"]
    }


def training_jobs(env: dict[str, str]) -> list[str]:
    found = client(env, "sagemaker").list_training_jobs()["TrainingJobSummaries"]
    return [j["TrainingJobName"] for j in found]


def sweep(tmp_path: Path, env: dict[str, str], model: Path, data: Path, *args: str) -> Any:
    return run_module(
        "quantsweep.cli",
        "--multirun",
        f"model_name_or_path={model}",
        f"dataset.path={data}",
        "hydra/launcher=sagemaker",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.launcher.poll_seconds=0.5",
        f"hydra.launcher.project_dir={Path(__file__).resolve().parents[2]}",
        *args,
        cwd=tmp_path,
        check=False,
        env=env,
    )


def test_invalid_requests_are_refused_before_any_aws_call(tmp_path, aws, distilbert_dir, conll_dir) -> None:
    # moto keeps one account per process: names of their own, apart from other modules' moto servers
    client(aws, "s3").create_bucket(Bucket="refused-requests")
    role = str(
        client(aws, "iam").create_role(RoleName="refused-requests", AssumeRolePolicyDocument="{}")["Role"][
            "Arn"
        ]
    )
    image = [
        "hydra.launcher.image_uri=123456789012.dkr.ecr.us-east-1.amazonaws.com/quantsweep:latest",
        "hydra.launcher.image_python=3.12",
    ]
    bucket = "hydra.launcher.s3_prefix=s3://refused-requests/quantsweep"
    cases = [
        # no s3_prefix: the SDK's default bucket would be created by the first AWS call
        (
            ["+hydra.launcher.environment.A-B=1", f"hydra.launcher.role={role}"],
            "`hydra.launcher.environment`",
        ),
        (
            [bucket, f"hydra.launcher.role={role}", "hydra.launcher.instance_type=ml.c9x.2xlarge"],
            "`hydra.launcher.instance_type` is 'ml.c9x.2xlarge'",
        ),
        (
            [bucket, *image, "hydra.launcher.role=quantsweep-role"],
            "`hydra.launcher.role` is 'quantsweep-role'",
        ),
        (
            [bucket, *image, f"hydra.launcher.role={role}", f"+hydra.launcher.tags.note={'x' * 300}"],
            "`hydra.launcher.tags`",
        ),
        (
            [bucket, *image, f"hydra.launcher.role={role}", "hydra.launcher.instance_count=2"],
            "`hydra.launcher.instance_count` is 2",
        ),
    ]
    # moto's state is per process: other tests of this worker may have left buckets and jobs
    before, jobs = buckets(aws), training_jobs(aws)
    assert before["refused-requests"] == []
    for overrides, expected in cases:
        result = sweep(tmp_path, aws, distilbert_dir, conll_dir, "mlflow.enabled=false", *overrides)
        assert result.returncode == 2, (overrides, result.stderr[-3000:])
        assert expected in result.stderr, (overrides, result.stderr[-3000:])
        assert "Traceback" not in result.stderr
        assert buckets(aws) == before, overrides  # nothing uploaded, no default bucket made
        assert training_jobs(aws) == jobs


def test_wait_false_with_more_jobs_than_parallel_slots_uploads_nothing(
    tmp_path, aws, distilbert_dir, conll_dir
) -> None:
    client(aws, "s3").create_bucket(Bucket="no-wait")
    role = str(
        client(aws, "iam").create_role(RoleName="no-wait", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    )
    before, jobs = buckets(aws), training_jobs(aws)
    result = sweep(
        tmp_path,
        aws,
        distilbert_dir,
        conll_dir,
        "seed=1,2,3",  # 3 jobs
        "mlflow.enabled=false",
        f"hydra.launcher.role={role}",
        "hydra.launcher.s3_prefix=s3://no-wait/quantsweep",
        "hydra.launcher.image_uri=123456789012.dkr.ecr.us-east-1.amazonaws.com/quantsweep:latest",
        "hydra.launcher.image_python=3.12",
        "hydra.launcher.wait=false",
        "hydra.launcher.max_parallel_jobs=2",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "`hydra.launcher.max_parallel_jobs` is 2" in result.stderr and "at least 3" in result.stderr
    assert "Traceback" not in result.stderr
    assert buckets(aws) == before and before["no-wait"] == []
    assert training_jobs(aws) == jobs


def test_a_dry_run_defaults_to_the_cpu_instance_and_its_cpu_image(
    tmp_path, aws, distilbert_dir, conll_dir
) -> None:
    result = sweep(
        tmp_path,
        aws,
        distilbert_dir,
        conll_dir,
        "hydra.launcher.dry_run=true",
        "hydra.launcher.role=arn:aws:iam::123456789012:role/dry-run",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    start = result.stdout.index('{\n  "CreateTrainingJob"')
    printed = json.JSONDecoder().raw_decode(result.stdout[start:])[0]["CreateTrainingJob"]
    assert printed["resource_config"]["instance_type"] == DEFAULT_INSTANCE_TYPE
    assert "-cpu-" in printed["algorithm_specification"]["training_image"]
    # the exact install each job would run, printed before anything is sent: no torch pin, no CUDA
    install = result.stdout[:start]
    assert "install.sh" in install and "container-constraints.txt" in install, install
    assert "torch==" not in install and "nvidia" not in install.lower(), install
    assert violations(printed) == []
