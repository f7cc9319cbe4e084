from __future__ import annotations

from typing import Any

import pytest
from test_sagemaker_validate import REGION

from hydra_plugins.quantsweep_sagemaker._core import build_request
from hydra_plugins.quantsweep_sagemaker._validate import _model, _pattern, check_request, violations
from hydra_plugins.quantsweep_sagemaker.config import (
    DEFAULT_INSTANCE_TYPE,
    GPU_INSTANCE_TYPE,
    LauncherConfigError,
    SageMakerLauncherConf,
    check,
    check_sweep,
)

ROLE = "arn:aws:iam::123456789012:role/quantsweep"


NAME = "qs-20250101-120000-000-dynamic"


PREFIX = "s3://my-bucket/quantsweep/20250101-120000"


OVERRIDES = ["quantization=dynamic"]


def settings(**values: Any) -> SageMakerLauncherConf:
    return SageMakerLauncherConf(**{"role": ROLE, "region": REGION, **values})


def request(conf: SageMakerLauncherConf, name: str = NAME) -> dict[str, Any]:
    return build_request(
        conf,
        name,
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/quantsweep:latest",
        PREFIX,
        bundle_uri=f"{PREFIX}/bundle",
        job_uri=f"{PREFIX}/jobs/{name}",
        environment={"QUANTSWEEP_SAGEMAKER_JOB": name},
    )


def launcher_error() -> Any:
    """pytest.raises for LauncherConfigError, by name: Hydra's plugin scan executes config.py
    again in a process that already imported it, so the class raised may be another object
    than the one imported here (it happens when a launcher suite ran first in this worker)."""
    return pytest.raises(ValueError, check=lambda error: type(error).__name__ == LauncherConfigError.__name__)


def refusal(conf: SageMakerLauncherConf, name: str = NAME) -> str:
    with launcher_error() as raised:
        check_request(request(conf, name), name, OVERRIDES)
    message = str(raised.value)
    assert "\n" not in message  # one paragraph
    assert "CreateTrainingJob" in message and "Nothing was uploaded" in message
    return message


def test_a_request_with_every_setting_the_launcher_has_is_valid() -> None:
    conf = settings(
        use_spot_instances=True,
        max_wait_seconds=100_000,
        keep_alive_seconds=600,
        tags={"team": "nlp", "cost-centre": "Zürich 42"},  # tags take any Unicode letter
        environment={"HF_HUB_ENABLE_HF_TRANSFER": "1", "_PRIVATE": "x" * 512},
        subnets=["subnet-0123456789abcdef0"],
        security_group_ids=["sg-0123456789abcdef0"],
    )
    assert violations(request(conf)) == []


def test_every_field_the_launcher_sets_is_known_to_the_api_and_its_patterns_are_read() -> None:
    conf = settings(
        use_spot_instances=True,
        keep_alive_seconds=60,
        tags={"a": "b"},
        subnets=["subnet-1"],
        security_group_ids=["sg-1"],
    )
    made = request(conf)
    made["no_such_field"] = 1
    found = violations(made)
    assert [v.api for v in found] == ["no_such_field"], found
    assert "not a field of the API" in found[0].rule

    # every pattern on the way is checked, none skipped as unreadable
    shape, _ = _model()
    seen: list[str] = []

    def patterns(value: Any, node: Any) -> None:
        if "pattern" in node.metadata:
            seen.append(node.metadata["pattern"])
        if node.type_name == "structure":
            names = {n.lower(): n for n in node.members}
            for key, item in value.items():
                if key != "no_such_field":
                    patterns(item, node.members[names[key.replace("_", "")]])
        elif node.type_name == "list":
            for item in value:
                patterns(item, node.member)
        elif node.type_name == "map":
            for key, item in value.items():
                patterns(key, node.key)
                patterns(item, node.value)

    patterns(made, shape)
    assert any("\\p{" in p for p in seen)  # the tags' Java pattern
    assert [p for p in seen if _pattern(p) is None] == []


def test_a_job_name_over_63_characters_is_refused() -> None:
    message = refusal(settings(), name="qs-" + "x" * 87)
    assert "TrainingJobName" in message and "at most 63 characters" in message
    assert "quantization=dynamic" in message  # what the name was made from


def test_a_job_name_with_a_character_the_api_refuses_is_refused() -> None:
    message = refusal(settings(), name="qs-20250101_120000-000")
    assert "TrainingJobName" in message and "must match the pattern" in message
    assert "'qs-20250101_120000-000'" in message


def test_an_environment_key_with_a_dash_is_refused() -> None:
    message = refusal(settings(environment={"A-B": "1"}))
    assert message.startswith("Invalid SageMaker launcher setting: `hydra.launcher.environment`")
    assert "'A-B'" in message and "[a-zA-Z_][a-zA-Z0-9_]*" in message


def test_an_environment_value_over_the_apis_length_is_refused_without_showing_it() -> None:
    secret = "s3cr3t" * 100  # 600 characters
    message = refusal(settings(environment={"TOKEN": secret}))
    assert "`hydra.launcher.environment`" in message and "Environment['TOKEN']" in message
    assert "at most 512 characters" in message and "600" in message
    assert "s3cr3t" not in message


def test_an_instance_type_the_api_does_not_know_is_refused() -> None:
    message = refusal(settings(instance_type="ml.c9x.2xlarge"))
    assert "`hydra.launcher.instance_type` is 'ml.c9x.2xlarge'" in message
    assert "TrainingInstanceType" in message


def test_a_role_that_is_not_an_arn_is_refused() -> None:
    message = refusal(settings(role="quantsweep-training-role"))
    assert "`hydra.launcher.role` is 'quantsweep-training-role'" in message and "RoleArn" in message
    assert "arn:aws" in message  # the API's pattern


def test_more_tags_or_environment_entries_than_the_api_allows_are_refused() -> None:
    message = refusal(settings(tags={f"k{i}": "v" for i in range(51)}))
    assert "`hydra.launcher.tags`" in message and "at most 50 entries" in message
    # 100 of the user's own plus the launcher's QUANTSWEEP_SAGEMAKER_JOB
    message = refusal(settings(environment={f"K{i}": "v" for i in range(100)}))
    assert "`hydra.launcher.environment`" in message and "at most 100 entries" in message


def test_a_tag_value_with_a_character_the_api_refuses_is_refused() -> None:
    message = refusal(settings(tags={"owner": "a,b"}))
    assert "`hydra.launcher.tags`" in message and "'owner'" in message and "'a,b'" in message


def test_a_warm_pool_longer_than_the_api_allows_is_refused() -> None:
    message = refusal(settings(keep_alive_seconds=30_000))
    assert "`hydra.launcher.keep_alive_seconds` is 30000" in message and "at most 21600" in message


def test_subnets_without_security_groups_are_refused() -> None:
    message = refusal(settings(subnets=["subnet-1"]))
    assert "`hydra.launcher.security_group_ids`" in message and "at least 1 entry" in message


def test_a_field_of_the_launchers_own_making_is_reported_as_the_launchers_fault() -> None:
    made = request(settings())
    made["algorithm_specification"]["container_arguments"] = ["x" * 300]
    with launcher_error() as raised:
        check_request(made, NAME, OVERRIDES)
    message = str(raised.value)
    assert "AlgorithmSpecification.ContainerArguments[0]" in message and "at most 256" in message
    assert "launcher's own making" in message and "hydra.launcher." not in message


def test_more_than_one_instance_per_job_is_refused() -> None:
    with launcher_error() as raised:
        check(settings(instance_count=2), None, False)
    message = str(raised.value)
    assert "`hydra.launcher.instance_count` is 2" in message and "max_parallel_jobs" in message
    check(settings(instance_count=1), None, False)


def test_wait_false_with_more_jobs_than_parallel_slots_is_refused() -> None:
    with launcher_error() as raised:
        check_sweep(settings(wait=False, max_parallel_jobs=2), 3)
    assert "`hydra.launcher.max_parallel_jobs` is 2" in str(raised.value)
    check_sweep(settings(wait=False, max_parallel_jobs=3), 3)
    check_sweep(settings(wait=True, max_parallel_jobs=2), 3)


def test_the_default_instance_is_a_cpu_with_vnni_and_the_gpu_one_override_away() -> None:
    from hydra_plugins.quantsweep_sagemaker._core import default_image

    shape, _ = _model()
    types = shape.members["ResourceConfig"].members["InstanceType"].enum
    assert DEFAULT_INSTANCE_TYPE in types and GPU_INSTANCE_TYPE in types
    assert SageMakerLauncherConf().instance_type == DEFAULT_INSTANCE_TYPE
    # Sapphire Rapids families (AVX512-VNNI, AMX-INT8), not a GPU family (g, p) nor burstable t
    assert DEFAULT_INSTANCE_TYPE.split(".")[1] in {"m7i", "c7i", "r7i"}
    assert "-cpu-" in default_image(REGION, DEFAULT_INSTANCE_TYPE)
    assert "-gpu-" in default_image(REGION, GPU_INSTANCE_TYPE)
