"""The ``quantsweep`` command: a thin Hydra entry point.

It turns the composed DictConfig into a typed :class:`RunConfig` at once and hands that
to :func:`quantsweep.job.run_job`; nothing below this module sees Hydra. Only Hydra,
OmegaConf and the config schema are imported at start-up, so ``--help`` and config
errors answer quickly; the heavy libraries load when a job really runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from quantsweep.config import GROUPS, ConfigError, RunConfig, is_how_to_run, register_configs
from quantsweep.files import ERROR_FILE, RESULTS_FILE
from quantsweep.job_folder import JobLockedError, align_saved_config, check_writable
from quantsweep.tasks.checks import check_task

log = logging.getLogger("quantsweep")

# Set by `quantsweep-reproduce` for the job it starts: the saved job's group choices and where it
# came from, so the new run is named after the job it reproduces (its primary config is a
# checked copy, not groups).
REPRODUCES_VARIABLE = "QUANTSWEEP_REPRODUCES"


def job_name(overrides: Any, choices: Any = None) -> str:
    """A folder and run name from the job's group choices, e.g. ``static-add_matmul-sensitive``.

    The calibration choice joins the name when it was overridden. Other overrides
    (model, data, benchmark keys) add a short hash, so that jobs of a sweep over them
    never share a folder while their names stay readable.
    """
    chosen = {str(k): str(v) for k, v in dict(choices or {}).items()}
    overridden: dict[str, str] = {}
    others: list[str] = []
    for override in list(overrides or []):
        key, _, value = str(override).partition("=")
        key = key.lstrip("+~")
        # how to run it, a sweep's definition (its values arrive as overrides), Hydra's own settings
        if is_how_to_run(key) or key == "experiment" or key.startswith("hydra"):
            continue
        if key in GROUPS:
            overridden[key] = value
        else:
            others.append(f"{key}={value}")
    named = ("quantization", "operators", "exclusion")
    parts = [overridden.get(g) or chosen.get(g) or "" for g in named]
    if "calibration" in overridden:
        parts.append(overridden["calibration"])
    name = "-".join(p for p in parts if p) or "default"
    if others:
        # hashed without credentials: a folder name must not let anyone test password guesses
        from quantsweep.redaction import redact_uri

        hashed = "\n".join(sorted(redact_uri(other) for other in others))
        name += "-" + hashlib.sha256(hashed.encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9._=,+-]+", "_", name)[:200]


def _register() -> None:
    if not OmegaConf.has_resolver("qs_job_name"):
        OmegaConf.register_new_resolver("qs_job_name", job_name)
    register_configs()


_register()


def to_run_config(cfg: DictConfig) -> RunConfig:
    """The typed config; raises ConfigError with a message for the user."""
    known = set(RunConfig.__dataclass_fields__)
    unknown = [str(k) for k in cfg if str(k) not in known]
    if unknown:  # `+key=value` can add keys the schema does not know; nothing reads them
        raise ConfigError(
            f"Invalid configuration: unknown key `{unknown[0]}`; quantsweep's keys are {', '.join(sorted(known))}. "
            "Credentials never go in the config: use the usual environment variables (HF_TOKEN, AWS_*)."
        )
    if OmegaConf.get_type(cfg) is not RunConfig:
        # a saved .hydra/config.yaml used as the primary config carries no schema: add it
        try:
            merged = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
        except Exception as error:
            raise ConfigError(f"Invalid configuration: {error}") from error
        assert isinstance(merged, DictConfig)
        cfg = merged
    try:
        run_config = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except Exception as error:  # OmegaConf wraps errors raised in __post_init__
        cause = error.__cause__ or error.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"Invalid configuration: {error}") from error
    if not isinstance(run_config, RunConfig):
        raise ConfigError(
            f"Invalid configuration: expected the RunConfig schema, got {type(run_config).__name__}."
        )
    check_task(run_config)  # the schema knows nothing of tasks: the task and its columns
    return run_config


def check_choices(run_config: RunConfig, choices: dict[str, str]) -> None:
    """Checks that depend on which group option was chosen, not only on the values."""
    if choices.get("exclusion") == "nodes" and not run_config.exclusion.nodes:
        raise ConfigError(
            "Invalid configuration: `exclusion.nodes` is []; `exclusion=nodes` keeps the nodes you name in fp32, "
            "so name them, e.g. exclusion.nodes=[/bert/encoder/layer.0/attention/self/Add] (a job of "
            "exclusion=auto writes its list to exclusion.yaml), or choose exclusion=none."
        )


def _user_errors() -> tuple[type[BaseException], ...]:
    from quantsweep.data import DataError
    from quantsweep.exclusion import ExclusionError
    from quantsweep.export import ModelLoadError
    from quantsweep.tasks.token_classification.scoring import LabelMismatchError

    return (ConfigError, DataError, ModelLoadError, LabelMismatchError, ExclusionError)


def _checked_run_config(cfg: DictConfig, choices: dict[str, str]) -> RunConfig:
    """The job's typed config, checked before any work; drops choices that play no part in it."""
    run_config = to_run_config(cfg)
    check_choices(run_config, choices)
    if run_config.cache:
        check_writable(
            Path(run_config.cache_dir),
            "cache_dir",
            "name a folder quantsweep may write, or set cache=false.",
        )
    if not run_config.is_static:
        choices.pop("calibration", None)  # calibration plays no part in dynamic quantization
    return run_config


@hydra.main(version_base="1.3", config_path="pkg://quantsweep.conf", config_name="config")
def run(cfg: DictConfig) -> dict[str, Any]:
    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    saved_config = job_dir / hydra_cfg.output_subdir if hydra_cfg.output_subdir else None
    from quantsweep.files import MULTIRUN_YAML
    from quantsweep.redaction import scrub_config_files, yaml_files

    scrub_config_files(saved_config)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        scrub_config_files(Path(hydra_cfg.sweep.dir), MULTIRUN_YAML)
    # what Hydra saved for this very run, put back at the end if another run replaces it
    config_files = {path: path.read_text(encoding="utf-8") for path in yaml_files(saved_config)}
    choices = {g: str(hydra_cfg.runtime.choices.get(g)) for g in GROUPS if hydra_cfg.runtime.choices.get(g)}
    origin = reproduced_job()
    if origin is not None and not choices:
        choices = dict(origin["choices"])  # a saved config has no groups: name the job it reproduces
    try:
        run_config = _checked_run_config(cfg, choices)
        from quantsweep.job import run_job

        config_dict = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        assert isinstance(config_dict, dict)
        _redact_credentials(config_dict)
        outcome = run_job(
            run_config,
            job_dir,
            {str(k): v for k, v in config_dict.items()},
            choices,
            reproduces=origin["source"] if origin is not None else None,
            config_files=config_files,
        )
    except JobLockedError as error:  # the folder is another run's: write nothing into it
        align_saved_config(job_dir)
        log.error("%s", error)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        print(f"\nquantsweep: {error}", file=sys.stderr)
        sys.exit(2)
    except BaseException as error:  # Ctrl-C included: the folder must still describe one run
        if (job_dir / RESULTS_FILE).is_file():
            # stopped before the job took the folder over: its finished run stays, with its own config
            align_saved_config(job_dir)
        elif isinstance(error, Exception):
            record_failure(job_dir, error)
        if not isinstance(error, _user_errors()):
            raise
        log.error("%s", error)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # Hydra marks this job failed; the sweep's other jobs still run
        print(f"\nquantsweep: {error}", file=sys.stderr)
        sys.exit(2)
    (job_dir / ERROR_FILE).unlink(missing_ok=True)
    # set by the SageMaker launcher: a job is logged at home, once its folder is there
    if run_config.mlflow.enabled and not os.environ.get("QUANTSWEEP_MLFLOW_DEFERRED"):
        sweep_dir = Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
        track(job_dir, run_config, sweep_dir)
    return outcome.results


def track(job_dir: Path, run_config: RunConfig, sweep_dir: Path | None) -> None:
    """Log the finished job to MLflow; a tracking server that is down neither stalls nor fails it.

    The server was checked at the start of the run or sweep (``callback.ReportCallback``); a server
    found down then is not waited on, and one that fails now is recorded as down, so the
    sweep's later jobs skip it too. The outage is announced once; the rest say how to log later.
    """
    from quantsweep.redaction import redact_uri
    from quantsweep.tracking import announce_unreachable, announced, log_job, server_verdict, tracking_uri

    uri = tracking_uri(run_config.mlflow)
    later = sweep_dir or job_dir
    verdict = server_verdict(uri, sweep_dir)
    if verdict is not None:
        _not_logged(uri, verdict, job_dir, sweep_dir, told=announced(uri))
        return
    try:
        run_id = log_job(job_dir, run_config.mlflow, sweep_dir)
    except Exception as error:
        # a server that died since the start: said once, and the sweep's later jobs skip it
        now = server_verdict(uri, sweep_dir, recheck=True)
        if now is not None and not announced(uri):
            announce_unreachable(uri, now, later, "sweep" if sweep_dir else "run")
            return
        log.warning(
            "Could not log to MLflow at %s (%s: %s). The results are safe in %s; log them later with: quantsweep-log %s",
            redact_uri(uri),
            type(error).__name__,
            redact_uri(str(error)),
            job_dir,
            later,
        )
        return
    log.info("Logged to MLflow %s: run %s", redact_uri(uri), run_id)


def _not_logged(uri: str, verdict: str, job_dir: Path, sweep_dir: Path | None, told: bool) -> None:
    """Say that a job skipped MLflow: the whole story if nobody has yet, else where to pick it up."""
    from quantsweep.redaction import redact_uri
    from quantsweep.tracking import announce_unreachable

    if not told:
        announce_unreachable(uri, verdict, sweep_dir or job_dir, "sweep" if sweep_dir else "run")
    elif sweep_dir is not None:  # the sweep's end names the command again, once
        log.info(
            "Not logged to MLflow: the tracking server %s is unreachable. Log this job later with: quantsweep-log %s",
            redact_uri(uri),
            job_dir,
        )
    else:
        log.warning(
            "Not logged to MLflow: the tracking server %s was unreachable. Once it is up, log this run with: "
            "quantsweep-log %s",
            redact_uri(uri),
            job_dir,
        )


def reproduced_job() -> dict[str, Any] | None:
    """What `quantsweep-reproduce` says this job reproduces: the saved job's choices and its source."""
    text = os.environ.get(REPRODUCES_VARIABLE)
    if not text:
        return None
    origin = json.loads(text)
    return {
        "choices": {str(k): str(v) for k, v in origin.get("choices", {}).items()},
        "source": str(origin["source"]),
    }


def _redact_credentials(config: dict[Any, Any]) -> None:
    """The user:password@ of a tracking URI never reaches results.json (the job itself still uses it)."""
    from quantsweep.redaction import redact_uri

    node = config.get("mlflow")
    if isinstance(node, dict) and isinstance(node.get("tracking_uri"), str):
        node["tracking_uri"] = redact_uri(node["tracking_uri"])


def record_failure(job_dir: Path, error: BaseException) -> None:
    """Leave the error beside the job's config, so a sweep report can list it (credentials redacted)."""
    from quantsweep.files import atomic_write_text
    from quantsweep.redaction import redact_uri

    atomic_write_text(job_dir / ERROR_FILE, redact_uri(f"{type(error).__name__}: {error}\n"))


def main() -> None:
    run()


if __name__ == "__main__":
    main()
