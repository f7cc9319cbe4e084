"""CreateTrainingJob requests checked against the SageMaker API's own model, before anything is sent.

botocore ships the SageMaker service model offline: for every field of a request it gives
the string lengths, the pattern, the enum (SageMaker's training instance types), the
integer range and the list and map sizes that the service enforces. botocore itself
checks few of them (types and minimums, not maximums, patterns or enums) and moto none,
so a 90-character job name or an environment key ``A-B`` would otherwise be refused by
AWS only, after the bundle and the inputs were uploaded and part of the sweep submitted.

The request is walked in ``build_request``'s snake_case field names; each is matched to
the model's member of the same name (``volume_size_in_gb`` is ``VolumeSizeInGB``), so the
list of fields lives in ``build_request`` alone and a field the model does not know is
itself an error. A violation becomes one paragraph naming the ``hydra.launcher`` setting
the field came from, the value and the API's rule.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from hydra_plugins.quantsweep_sagemaker.config import LauncherConfigError

OPERATION = "CreateTrainingJob"

# The launcher setting each request field comes from, by the field's snake_case path in
# build_request's request (list positions left out). Fields not listed are the launcher's
# own making (its command, channel names, input modes): a violation there is a bug.
SOURCES = {
    "role_arn": "role",
    "algorithm_specification.training_image": "image_uri",
    "input_data_config.data_source.s3_data_source.s3_uri": "s3_prefix",
    "output_data_config.s3_output_path": "s3_prefix",
    "resource_config.instance_type": "instance_type",
    "resource_config.instance_count": "instance_count",
    "resource_config.volume_size_in_gb": "volume_size_gb",
    "resource_config.keep_alive_period_in_seconds": "keep_alive_seconds",
    "stopping_condition.max_runtime_in_seconds": "max_run_seconds",
    "stopping_condition.max_wait_time_in_seconds": "max_wait_seconds",
    "enable_managed_spot_training": "use_spot_instances",
    "environment": "environment",
    "tags": "tags",
    "vpc_config.subnets": "subnets",
    "vpc_config.security_group_ids": "security_group_ids",
}
JOB_NAME = "training_job_name"
# values that may hold secrets are described, never shown
SECRET_VALUES = ("environment",)


@dataclass
class Violation:
    snake: tuple[str, ...]  # the field's path in build_request's names, list positions left out
    api: str  # the field as the API names it, e.g. Environment['A-B'] or Tags[0].Value
    value: Any
    rule: str  # what the API allows, as a sentence fragment
    part: str = "value"  # "value", "key" (of a map entry) or "count" (of a list or map)


@lru_cache(maxsize=1)
def _model() -> tuple[Any, str]:
    import botocore
    import botocore.session

    service = botocore.session.get_session().get_service_model("sagemaker")
    return service.operation_model(OPERATION).input_shape, str(botocore.__version__)


def _normalize(name: str) -> str:
    # sagemaker-core's snake_case matched to the model's names without case or underscores:
    # s3_uri is S3Uri, volume_size_in_gb is VolumeSizeInGB (no two members of a shape collide)
    return name.replace("_", "").lower()


@cache
def _pattern(pattern: str) -> Any:
    """The model's pattern as a compiled regex, or None when Python cannot read it.

    The patterns are Java regular expressions. Most read the same in Python's ``re``;
    those with Unicode classes such as ``\\p{L}`` (tag keys and values) or ``\\p{Alnum}``
    need the ``regex`` module, which transformers depends on (Java's ``\\p{L}`` is Unicode
    whatever the flags, so no ASCII mode there). Java's ``\\d``, ``\\w`` and ``\\s`` are
    ASCII, hence ``re``'s ASCII mode. A pattern neither can compile is skipped: the API
    still checks it, only later.
    """
    try:
        if "\\p{" in pattern:
            import regex

            return regex.compile(pattern, regex.V0)
        return re.compile(pattern, re.ASCII)
    except Exception:  # an unreadable pattern is not the user's fault; AWS checks it
        return None


def _walk(value: Any, shape: Any, snake: tuple[str, ...], api: str, found: list[Violation]) -> None:
    if value is None:  # not sent (a dry run without a role); check() decides what must be set
        return
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if not isinstance(value, dict):
            found.append(Violation(snake, api, value, f"must be a {shape.name} structure"))
            return
        names = {_normalize(n): n for n in shape.members}
        for key, item in value.items():
            member = names.get(_normalize(str(key)))
            if member is None:
                found.append(
                    Violation(
                        (*snake, str(key)), f"{api}.{key}".lstrip("."), item, "is not a field of the API"
                    )
                )
                continue
            _walk(item, shape.members[member], (*snake, str(key)), f"{api}.{member}".lstrip("."), found)
        return
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            found.append(Violation(snake, api, value, "must be a list"))
            return
        _count(len(value), meta, snake, api, found)
        for position, item in enumerate(value):
            _walk(item, shape.member, snake, f"{api}[{position}]", found)
        return
    if kind == "map":
        if not isinstance(value, dict):
            found.append(Violation(snake, api, value, "must be a map"))
            return
        _count(len(value), meta, snake, api, found)
        for key, item in value.items():
            entry = f"{api}[{key!r}]"
            for problem in _scalar(key, shape.key):
                found.append(Violation(snake, f"a key of {api}", key, problem, part="key"))
            _walk(item, shape.value, snake, entry, found)
        return
    for problem in _scalar(value, shape):
        found.append(Violation(snake, api, value, problem))


def _count(
    count: int, meta: dict[str, Any], snake: tuple[str, ...], api: str, found: list[Violation]
) -> None:
    if "max" in meta and count > meta["max"]:
        found.append(Violation(snake, api, count, f"may have at most {_entries(meta['max'])}", part="count"))
    if "min" in meta and count < meta["min"]:
        found.append(
            Violation(snake, api, count, f"must have at least {_entries(meta['min'])}", part="count")
        )


def _entries(count: int) -> str:
    return f"{count} {'entry' if count == 1 else 'entries'}"


def _scalar(value: Any, shape: Any) -> list[str]:
    """What is wrong with a string, number or boolean, by its shape's constraints."""
    kind = shape.type_name
    meta = shape.metadata
    if kind == "string":
        if not isinstance(value, str):
            return [f"must be a string, not {type(value).__name__}"]
        problems = []
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"may be at most {meta['max']} characters long (this is {len(value)})")
        if "min" in meta and len(value) < meta["min"]:
            problems.append(f"must be at least {meta['min']} characters long (this is {len(value)})")
        if shape.enum and value not in shape.enum:
            problems.append(_enum_rule(value, shape))
        compiled = _pattern(meta["pattern"]) if "pattern" in meta else None
        # the service matches the whole value (Java's Pattern.matches), hence fullmatch
        if compiled is not None and not compiled.fullmatch(value):
            problems.append(f"must match the pattern {meta['pattern']}")
        return problems
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"must be an integer, not {type(value).__name__}"]
        if "max" in meta and value > meta["max"]:
            return [f"may be at most {meta['max']}"]
        if "min" in meta and value < meta["min"]:
            return [f"must be at least {meta['min']}"]
        return []
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"must be true or false, not {type(value).__name__}"]
    # timestamps, floats and blobs: the launcher sets none
    return []


def _enum_rule(value: str, shape: Any) -> str:
    allowed = list(shape.enum)
    close = difflib.get_close_matches(value, allowed, n=3, cutoff=0.6)
    if len(allowed) > 12:
        hint = f" (closest: {', '.join(close)})" if close else ""
        return f"must be one of the API's {len(allowed)} {shape.name} values{hint}"
    return f"must be one of {', '.join(allowed)}"


def violations(request: dict[str, Any]) -> list[Violation]:
    """Every way the request breaks the API's model, in the request's order."""
    shape, _ = _model()
    found: list[Violation] = []
    _walk(request, shape, (), "", found)
    return found


def _shown(value: Any, secret: bool) -> str:
    if secret and isinstance(value, str):
        return f"a value of {len(value)} characters (not shown: environment values may be secrets)"
    text = repr(value)
    if len(text) <= 80:
        return text
    return f"{text[:60]}... ({len(value) if isinstance(value, str) else len(text)} characters)"


def describe(
    found: Sequence[Violation], request: dict[str, Any], job_name: str, overrides: Sequence[str], total: int
) -> str:
    """One paragraph: the setting that produced the field, the value, and the API's rules it breaks."""
    _, version = _model()
    first = found[0]
    rules = " and ".join(dict.fromkeys(v.rule for v in found))
    source = f"SageMaker's {OPERATION} API (botocore {version}'s service model)"
    dotted = ".".join(first.snake)
    setting = next(
        (s for path, s in SOURCES.items() if dotted == path or dotted.startswith(path + ".")), None
    )
    secret = setting in SECRET_VALUES and first.part == "value"
    others = total - len(found)
    more = f" ({others} more problem{'s' if others > 1 else ''} in the same request.)" if others else ""
    nothing = " Nothing was uploaded or submitted."
    if dotted == JOB_NAME:
        from quantsweep.redaction import redact_uri

        # the overrides may hold a tracking URI with user:password@
        told = redact_uri(", ".join(overrides)) or "no overrides"
        return (
            f"Invalid SageMaker training job name {first.value!r}: the launcher names each job "
            f"qs-<time>-<index>-<override values> (this one from {told}), and {source} says "
            f"TrainingJobName {rules}.{more}{nothing}"
        )
    if setting is None:
        return (
            f"The SageMaker launcher built an invalid request for {job_name}: {first.api} is "
            f"{_shown(first.value, False)}, and {source} says it {rules}. This field is the launcher's "
            f"own making, not a setting: please report it.{more}{nothing}"
        )
    if first.part == "count":
        own = " (counting the launcher's own variables)" if setting == "environment" else ""
        what = f"gives {first.api} {_entries(first.value)}{own}"
    elif first.part == "key":
        what = f"has the key {first.value!r}, which becomes {first.api}"
    elif setting == "tags" and first.api.endswith(".Key"):
        what = f"has the tag key {_shown(first.value, False)} ({first.api})"
    elif setting == "tags":
        tag = request["tags"][int(first.api.split("[", 1)[1].split("]", 1)[0])]
        what = f"gives the tag {tag.get('key')!r} the value {_shown(first.value, False)} ({first.api})"
    elif setting == "environment":
        what = f"gives {first.api} {_shown(first.value, secret)}"
    else:
        what = f"is {_shown(first.value, secret)}, sent as {first.api}"
    return (
        f"Invalid SageMaker launcher setting: `hydra.launcher.{setting}` {what}; {source} says "
        f"{'each key' if first.part == 'key' else 'it'} {rules}.{more}{nothing}"
    )


def check_request(request: dict[str, Any], job_name: str, overrides: Sequence[str] = ()) -> None:
    """Raise LauncherConfigError, one paragraph, if the request breaks the API's model.

    The paragraph names the first field at fault with every rule it breaks, and counts the rest.
    """
    found = violations(request)
    if found:
        first = found[0]
        same = [
            v
            for v in found
            if (v.api, v.part, v.snake, v.value) == (first.api, first.part, first.snake, first.value)
        ]
        raise LauncherConfigError(describe(same, request, job_name, overrides, len(found)))
