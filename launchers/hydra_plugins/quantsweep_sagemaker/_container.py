"""What runs inside the SageMaker container: one Hydra job, its folder packed for the trip home.

The training command installs the bundle (unless the image already holds it) and runs
``python -m hydra_plugins.quantsweep_sagemaker._container``. The job arrives as data,
``job.json`` (see ``_payload``): the composed job config, Hydra's facts about the job and
the task's import path, so this Python need not be the user's. Inputs follow SageMaker's
container contract under ``/opt/ml`` (relocatable for tests through ``QUANTSWEEP_OPT_ML``);
the job folder goes to ``/opt/ml/model/job``, which SageMaker uploads as ``model.tar.gz``,
with ``return.json`` (status, folder, return value as data) beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from pathlib import Path

from hydra_plugins.quantsweep_sagemaker._payload import PAYLOAD, RETURN

ROOT_VARIABLE = "QUANTSWEEP_OPT_ML"
# set (to 1) by the launcher for hydra.launcher.mlflow_from_container=true
MLFLOW_VARIABLE = "QUANTSWEEP_MLFLOW_FROM_CONTAINER"
# text files of a job folder in which container paths are put back to the user's paths
_TEXT_SUFFIXES = (".yaml", ".json", ".log", ".txt")


def container_root() -> Path:
    return Path(os.environ.get(ROOT_VARIABLE, "/opt/ml"))


def restore_paths(folder: Path, replacements: dict[str, str]) -> None:
    """Write the user's original paths back into the job's text files."""
    if not replacements:
        return
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in _TEXT_SUFFIXES:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
            new = text
            for container_path, original in replacements.items():
                new = new.replace(container_path, original)
            if new != text:
                path.write_text(new, encoding="utf-8", errors="surrogateescape")


def log_from_container(job_dir: Path) -> bool:
    """Log the finished job to MLflow from here, once its folder reads as it will at home.

    Only with ``hydra.launcher.mlflow_from_container=true``: the launcher logs every job at
    home anyway, through the same idempotent path (the run key is the hash of results.json,
    which is why this runs after the user's paths are restored), and nests this run under
    the sweep's parent run, which only home knows. Any failure is said in the job's log and
    on stderr, never raised: the job itself succeeded.
    """
    from quantsweep.redaction import redact_uri
    from quantsweep.tracking import check_server, log_job, settings_from_job, tracking_uri

    settings = settings_from_job(job_dir)
    uri = tracking_uri(settings)
    try:
        down = check_server(uri)
        if down is not None:
            raise ConnectionError(down)
        run_id = log_job(job_dir, settings)
        message, logged = f"MLflow: logged from the container to {redact_uri(uri)} (run {run_id}).", True
    except Exception as error:
        message = (
            f"MLflow: the container could not log this job to {redact_uri(uri)} ({type(error).__name__}: "
            f"{redact_uri(str(error))}); the launcher logs it at home."
        )
        logged = False
    print(message, file=sys.stderr)
    with open(job_dir / "quantsweep.log", "a", encoding="utf-8") as job_log:
        job_log.write(message + "\n")
    return logged


def run(root: Path) -> int:
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.utils import JobStatus, run_job
    from hydra.types import HydraContext
    from omegaconf import OmegaConf, open_dict

    from hydra_plugins.quantsweep_sagemaker import _payload

    payload = _payload.read_payload(root / "input" / "data" / "job" / PAYLOAD)
    work = root / "work"
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    _payload.set_hydra_state(payload)
    # before the config: importing the task's module registers its resolvers
    task = _payload.load_task(payload["task"], root / "code" / "quantsweep_task")
    config = _payload.rebuild_config(payload)
    replacements: dict[str, str] = {}
    with open_dict(config):
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_absolute():  # the user's absolute folders do not exist here
            config.hydra.sweep.dir = str(work / "absolute" / sweep_dir.relative_to(sweep_dir.anchor))
            # what the job writes about its folder (a log line naming quantsweep-log) reads true at home
            replacements[str(config.hydra.sweep.dir)] = str(sweep_dir)
        for key, channel in payload["inputs"].items():
            local = root / "input" / "data" / str(channel["channel"]) / str(channel["name"])
            replacements[str(local)] = str(OmegaConf.select(config, key))
            OmegaConf.update(config, key, str(local))
    for name, value in payload.get("environment", {}).items():
        os.environ[str(name)] = str(value)

    # callbacks run at home, where the sweep folder is (the launcher calls them after download);
    # run_job reads no config files, so the loader searches nothing
    context = HydraContext(
        config_loader=ConfigLoaderImpl(config_search_path=create_config_search_path(None)),
        callbacks=Callbacks(),
    )
    ret = run_job(
        hydra_context=context,
        task_function=task,
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    assert ret.hydra_cfg is not None
    output_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir))
    restore_paths(output_dir, replacements)
    if ret.status == JobStatus.COMPLETED and os.environ.get(MLFLOW_VARIABLE) == "1":
        log_from_container(output_dir)
    model = root / "model"
    model.mkdir(parents=True, exist_ok=True)
    if output_dir.is_dir():
        shutil.copytree(output_dir, model / "job", dirs_exist_ok=True)
    record = _payload.return_record(
        ret.status.name,
        Path(os.path.relpath(output_dir, Path(str(config.hydra.sweep.dir)).resolve())).as_posix(),
        os.path.realpath(str(ret.working_dir)) == os.path.realpath(output_dir),
        ret._return_value,
    )
    (model / RETURN).write_text(json.dumps(record, default=repr), encoding="utf-8")
    if ret.status == JobStatus.FAILED:
        error = ret._return_value
        message = f"{type(error).__name__}: {error}"
        (root / "output").mkdir(parents=True, exist_ok=True)
        # SageMaker reports this file's text as the job's FailureReason
        (root / "output" / "failure").write_text(message[:1000], encoding="utf-8")
        print(message, file=sys.stderr)
        return 1
    return 0


def main() -> None:
    root = container_root()
    try:
        code = run(root)
    except Exception as error:  # a crash before or around the job: say why, as SageMaker expects
        (root / "output").mkdir(parents=True, exist_ok=True)
        (root / "output" / "failure").write_text(f"{type(error).__name__}: {error}"[:1000], encoding="utf-8")
        traceback.print_exc()
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
