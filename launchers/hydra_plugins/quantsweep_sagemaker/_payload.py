"""The job payload and the job's return record: JSON data both ways, never pickles or bytecode.

Home writes ``job.json``: the composed job config (OmegaConf container, hydra node
included), the Hydra facts a job needs (version base, job name/id/num, overrides, sweep
dir and subdir, choices), the input channels, and the task named by import path,
``module:qualname``. The container may run another Python than the user's: it rebuilds
the config and imports the task by its path. A task in a module that no installed
distribution provides (a script run as ``__main__``, a test's helper module) travels as
its source file, as text, and the container imports it from that file. The payload lies in
the S3 bucket, so a URL's user:password@ anywhere in it (a tracking URI's) travels as
``***@`` (:func:`without_credentials`).

The container writes ``return.json`` beside the job folder: status, the job folder
relative to the sweep folder, whether the job changed directory, and the return value
when it is JSON, else its type and text. Home reads only that; nothing is unpickled.

Import this module with the standard library only: the container reads payloads with it
before anything else is imported. Hydra and OmegaConf are imported inside functions.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from hydra_plugins.quantsweep_sagemaker._bundle import BundleError

PAYLOAD = "job.json"
RETURN = "return.json"
FORMAT = 1
# resolvers every container has once Hydra is imported (OmegaConf's own and setup_globals')
BUILTIN_RESOLVERS = frozenset(
    {
        "oc.create",
        "oc.decode",
        "oc.deprecated",
        "oc.env",
        "oc.select",
        "oc.dict.keys",
        "oc.dict.values",
        "hydra",
        "now",
        "python_version",
    }
)
_RESOLVER = re.compile(r"\$\{\s*([A-Za-z_][\w.\-]*)\s*:")


class TaskReferenceError(BundleError):
    """The task cannot be named by import path nor shipped as a source file; for the user."""


class PayloadError(ValueError):
    """A payload or return record that is not what this module writes."""


@dataclass(frozen=True)
class ReturnedValue:
    """A job's return value that was not JSON: what the container could say about it."""

    type: str
    text: str

    def __str__(self) -> str:
        return f"{self.type}: {self.text}"


class RemoteJobError(RuntimeError):
    """A job that failed in the container, as its return record describes it."""


# ---- home: naming the task --------------------------------------------------------------


def _refuse(task: Any, why: str) -> TaskReferenceError:
    return TaskReferenceError(
        f"The SageMaker launcher cannot ship the task {task!r}: {why} The container may run a "
        "different Python than this one, so the job travels as data and the container imports the "
        "task by its import path (module:qualname), or, for a module that no installed package "
        "provides (a script run as __main__), from the module's source file sent with the job. Define "
        "the task as a module-level function, e.g. a @hydra.main-decorated function in a script or "
        "an installed module."
    )


def _installed_top_levels() -> set[str]:
    from importlib.metadata import packages_distributions

    return set(packages_distributions())


def task_reference(task: Any) -> dict[str, Any]:
    """``{"module", "qualname"}``, plus ``"source"`` (file name and text) for a module not installed."""
    if not inspect.isfunction(task):
        raise _refuse(task, f"it is a {type(task).__name__}, not a function.")
    module_name = str(getattr(task, "__module__", "") or "")
    qualname = str(getattr(task, "__qualname__", "") or "")
    if not module_name or not qualname or "<" in qualname:
        raise _refuse(task, f"`{qualname}` is defined inside another function, so no import path names it.")
    module = sys.modules.get(module_name)
    if module_name == "__main__":
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":  # python -m package.module
            module_name = spec.name
    elif not _names(_lookup(module, qualname), task):
        raise _refuse(task, f"{module_name}.{qualname} does not name it.")
    reference: dict[str, Any] = {"module": module_name, "qualname": qualname}
    if module_name != "__main__" and module_name.split(".")[0] in _installed_top_levels():
        return reference
    path = Path(str(getattr(module, "__file__", "") or ""))
    if "." in module_name or path.suffix != ".py" or not path.is_file():
        raise _refuse(
            task,
            f"its module {module_name} is not installed in any package, and it is not a single source file "
            "that could travel with the job.",
        )
    reference["source"] = {"filename": path.name, "text": path.read_text(encoding="utf-8")}
    return reference


def _names(found: Any, task: Any) -> bool:
    """Whether the attribute found is the task, or a decorator's wrapper of it (@hydra.main)."""
    while found is not None:
        if found is task:
            return True
        found = getattr(found, "__wrapped__", None)
    return False


def _lookup(module: Any, qualname: str) -> Any:
    target = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target


# ---- home: the job's data ---------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, PurePosixPath | Path):
        return str(value)
    raise TypeError(f"a config value of type {type(value).__name__} is not data: {value!r}")


def _home_values(config: Any) -> list[dict[str, Any]]:
    """Values whose interpolations use resolvers registered here, resolved here.

    Resolvers are code, which the payload does not carry. The container uses a value
    resolved here only when it has no resolver of that name (one the task's module does
    not register when imported, e.g. one a test registered in its own process).
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    found: list[dict[str, Any]] = []

    def walk(node: Any, path: list[Any]) -> None:
        keys: list[Any] = list(node.keys()) if isinstance(node, DictConfig) else list(range(len(node)))
        for key in keys:
            if OmegaConf.is_interpolation(node, key):
                text = str(node._get_node(key)._value())
                names = sorted(set(_RESOLVER.findall(text)) - BUILTIN_RESOLVERS)
                if not names:
                    continue
                try:
                    value = node[key]
                    if isinstance(value, DictConfig | ListConfig):
                        value = OmegaConf.to_container(value, resolve=True, enum_to_str=True)
                    json.dumps(value, default=_jsonable)
                except (
                    Exception
                ):  # not resolvable here (e.g. it needs the job's runtime): the container tries
                    continue
                found.append({"path": [*path, key], "resolvers": names, "value": value})
                continue
            child = node._get_node(key)
            if (
                isinstance(child, DictConfig | ListConfig)
                and not child._is_none()
                and not child._is_missing()
            ):
                walk(child, [*path, key])

    walk(config, [])
    return found


def job_payload(
    config: Any, task: dict[str, Any], inputs: dict[str, tuple[str, str]], environment: dict[str, str]
) -> dict[str, Any]:
    """The job as data; ``inputs`` maps config keys to (channel, file or folder name)."""
    from hydra import version
    from omegaconf import OmegaConf

    base = version.getbase()
    hydra = config.hydra
    payload = {
        "format": FORMAT,
        "task": task,
        "config": OmegaConf.to_container(config, resolve=False, enum_to_str=True),
        "resolved_at_home": _home_values(config),
        "hydra": {
            # None: the caller gave no version_base (Hydra's 1.1 compatibility defaults)
            "version_base": str(base) if type(base).__name__ == "Version" else None,
            "job_name": str(hydra.job.name),
            "job_id": str(hydra.job.id),
            "job_num": int(hydra.job.num),
            "overrides": [str(o) for o in hydra.overrides.task],
            "sweep_dir": str(hydra.sweep.dir),
            "sweep_subdir": str(OmegaConf.select(config, "hydra.sweep.subdir", default="")),
            "choices": OmegaConf.to_container(hydra.runtime.choices, resolve=False),
        },
        "inputs": {key: {"channel": channel, "name": name} for key, (channel, name) in inputs.items()},
        "environment": dict(environment),
    }
    return without_credentials(payload)


def without_credentials(data: Any) -> Any:
    """``data`` with every URL's user:password@ as ``***@``, in every string, keys included.

    The payload lies in the S3 bucket, readable by whoever may read it there. A tracking
    URI's credentials (``mlflow.tracking_uri``, and Hydra's copies of it: the task's
    overrides, ``hydra.job.override_dirname``) stay home; the job never logs from the
    container with them (``config.check`` refuses ``mlflow_from_container`` for such a
    server), and its own saved config would blank them anyway. Home's code, so quantsweep's
    redaction may be imported here.
    """
    from quantsweep.redaction import redact_uri

    if isinstance(data, str):
        return redact_uri(data)
    if isinstance(data, dict):
        return {without_credentials(k): without_credentials(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [without_credentials(v) for v in data]
    return data


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=1, default=_jsonable)


# ---- container: reading the job ---------------------------------------------------------


def read_payload(path: Path) -> dict[str, Any]:
    payload = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise PayloadError(f"{path} is not a quantsweep job payload of format {FORMAT}.")
    for key, kind in (("task", dict), ("config", dict), ("hydra", dict), ("inputs", dict)):
        if not isinstance(payload.get(key), kind):
            raise PayloadError(f"{path}: `{key}` is missing or not a {kind.__name__}.")
    return payload


def load_task(reference: dict[str, Any], folder: Path) -> Any:
    """The task function: imported by path, or from the source file the payload carries."""
    module_name, qualname = str(reference["module"]), str(reference["qualname"])
    source = reference.get("source")
    if source:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / Path(str(source["filename"])).name
        path.write_text(str(source["text"]), encoding="utf-8")
        # a script's own name, not __main__: its `if __name__ == "__main__":` block must not run
        name = path.stem if module_name == "__main__" else module_name
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    found = _lookup(module, qualname)
    if found is None:
        raise PayloadError(f"The task {module_name}:{qualname} is not in {module.__name__}.")
    # @hydra.main returns a wrapper (functools.wraps): the job runs the function it wraps
    return inspect.unwrap(found)


def rebuild_config(payload: dict[str, Any]) -> Any:
    """The composed job config, after the task's module registered its resolvers."""
    from hydra.conf import HydraConf
    from omegaconf import DictConfig, OmegaConf, open_dict, read_write

    # the hydra node typed as Hydra composes it (HydraConfig accepts nothing else), the rest as data
    config = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
    with open_dict(config.hydra):  # the composed node has keys its schema lacks (hydra.env, ...)
        config.merge_with(payload["config"])
        if "defaults" not in payload["config"].get("hydra", {}):  # the schema's; composing drops it
            del config.hydra["defaults"]
    assert isinstance(config, DictConfig)
    for item in payload.get("resolved_at_home", []):
        if all(OmegaConf.has_resolver(name) for name in item["resolvers"]):
            continue
        node = config
        for key in item["path"][:-1]:
            node = node[key]
        with read_write(node), open_dict(node):
            node[item["path"][-1]] = item["value"]
    OmegaConf.set_struct(config, True)  # as Hydra composes it
    return config


def set_hydra_state(payload: dict[str, Any]) -> None:
    """What Hydra keeps in process-wide state and a job reads: resolvers, version base, job name."""
    from hydra import version
    from hydra.core.utils import JobRuntime, setup_globals
    from packaging.version import Version

    setup_globals()
    base = payload["hydra"].get("version_base")
    version.VersionBase.instance().setbase(Version(base) if base else version.__compat_version__)
    JobRuntime.instance().set("name", payload["hydra"]["job_name"])


# ---- the job's return record ------------------------------------------------------------


def return_record(status: str, relative_dir: str, chdir: bool, value: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "format": FORMAT,
        "status": status,
        "relative_dir": relative_dir,
        "chdir": chdir,
    }
    if status == "FAILED":
        record["error"] = {"type": type(value).__name__, "text": str(value)[:10000]}
        return record
    try:
        json.dumps(value, allow_nan=True)
        record["return"] = {"json": value}
    except (TypeError, ValueError):  # not data: its type and text
        kind = type(value)
        record["return"] = {"type": f"{kind.__module__}.{kind.__qualname__}", "text": repr(value)[:10000]}
    return record


@dataclass
class JobRecord:
    status: str
    relative_dir: str
    chdir: bool
    value: Any


def read_return(text: str) -> JobRecord:
    """A job's return record, checked: a record written by anyone else must not steer home."""
    record = json.loads(text)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise PayloadError(f"not a quantsweep return record of format {FORMAT}")
    status = record.get("status")
    relative = record.get("relative_dir")
    if status not in ("COMPLETED", "FAILED") or not isinstance(relative, str):
        raise PayloadError(f"a return record with status {status!r} and folder {relative!r}")
    parts = PurePosixPath(relative).parts
    if PurePosixPath(relative).is_absolute() or ".." in parts or "\\" in relative:
        raise PayloadError(f"the job folder {relative!r} is not inside the sweep folder")
    value: Any
    if status == "FAILED":
        error = record.get("error") or {}
        value = RemoteJobError(f"{error.get('type', 'Error')}: {error.get('text', '')}")
    else:
        returned = record.get("return") or {}
        value = (
            returned["json"]
            if "json" in returned
            else ReturnedValue(str(returned.get("type")), str(returned.get("text")))
        )
    return JobRecord(str(status), relative, bool(record.get("chdir")), value)
