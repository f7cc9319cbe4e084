"""MLflow with hydra.launcher.mlflow_from_container: the container logs, home nests it, nothing twice.

The container logs a job once its folder reads as it will at home (the user's paths back in
its files), so the run key (the hash of results.json) is the one home computes; home then
finds that run, nests it under the sweep's parent run (which only home knows) and logs
nothing again. Real MLflow (a sqlite store), a real job folder.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from quantsweep.testing import run_module


@pytest.fixture(scope="module")
def logged_job(
    tmp_path_factory: pytest.TempPathFactory, distilbert_dir: Path, conll_dir: Path
) -> tuple[Path, str]:
    """A finished job that names a sqlite MLflow store and did not log itself (as in a container)."""
    root = tmp_path_factory.mktemp("container-mlflow")
    store = f"sqlite:///{root / 'mlflow.db'}"
    job = root / "container" / "job"
    run_module(
        "quantsweep.cli",
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        "benchmark.duration=0.02",
        "benchmark.batch_sizes=[1]",
        "benchmark.input_lengths=[8]",
        "benchmark.warmup=0",
        "benchmark.windows=2",
        "mlflow.enabled=true",
        f"mlflow.tracking_uri={store}",
        "mlflow.experiment_name=from-container",
        f"hydra.run.dir={job}",
        cwd=root,
        env={"QUANTSWEEP_MLFLOW_DEFERRED": "1"},
    )
    return job, store


def runs(store: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("from-container")
    return [] if experiment is None else list(client.search_runs([experiment.experiment_id]))


def test_a_run_logged_from_the_container_is_nested_at_home_and_never_logged_twice(
    logged_job: tuple[Path, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hydra_plugins.quantsweep_sagemaker._container import log_from_container
    from hydra_plugins.quantsweep_sagemaker._home import log_at_home

    # a sqlite store's artifacts go to ./mlruns of the working directory: not the checkout's
    monkeypatch.chdir(tmp_path)
    job, store = logged_job
    assert runs(store) == []  # the job itself deferred its logging
    assert log_from_container(job)
    (child,) = runs(store)
    assert "mlflow.parentRunId" not in child.data.tags  # the container knows no sweep
    assert "MLflow: logged from the container" in (job / "quantsweep.log").read_text()

    sweep = tmp_path / "sweep"
    home = sweep / "job"
    shutil.copytree(job, home)  # as the launcher brings it home
    caplog.set_level(logging.WARNING)
    for _ in range(2):  # the launcher, then a fetch
        log_at_home(home, sweep, from_container=True)
    assert "did not log" not in caplog.text
    logged = runs(store)
    assert len(logged) == 2, [r.data.tags for r in logged]  # the job's run and the sweep's parent
    parent = next(r for r in logged if "quantsweep.sweep_key" in r.data.tags)
    nested = next(r for r in logged if r.info.run_id == child.info.run_id)
    assert nested.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert nested.data.tags["quantsweep.job_dir"] == str(home.resolve())


def test_a_container_that_cannot_log_says_so_in_the_jobs_log(
    logged_job: tuple[Path, str], tmp_path: Path
) -> None:
    from hydra_plugins.quantsweep_sagemaker._container import log_from_container

    job = tmp_path / "job"
    shutil.copytree(logged_job[0], job)
    config = job / ".hydra" / "config.yaml"
    # a server nothing listens on: refused at once
    config.write_text(config.read_text().replace(logged_job[1], "http://127.0.0.1:9"))
    assert not log_from_container(job)
    said = (job / "quantsweep.log").read_text()
    assert "MLflow: the container could not log this job to http://127.0.0.1:9" in said
    assert "the launcher logs it at home" in said


def test_fetch_logs_a_sweep_whose_server_was_down_during_the_sweep(
    logged_job: tuple[Path, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mlflow_server: str,
) -> None:
    """The sweep folder remembers the server as down; fetch looks again and logs once it answers."""
    import json

    monkeypatch.chdir(tmp_path)

    from hydra_plugins.quantsweep_sagemaker._cli import _report_and_log
    from quantsweep.files import UNREACHABLE_FILE
    from quantsweep.tracking import logged_run, settings_from_job

    sweep = tmp_path / "sweep"
    home = sweep / "job"
    shutil.copytree(logged_job[0], home)
    config = home / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace(logged_job[1], mlflow_server))
    (sweep / UNREACHABLE_FILE).write_text(json.dumps({"tracking_uri": mlflow_server, "error": "was down"}))
    assert _report_and_log(sweep, [home]) == 0
    assert logged_run(home, settings_from_job(home)) is not None
    assert not (sweep / UNREACHABLE_FILE).exists()
