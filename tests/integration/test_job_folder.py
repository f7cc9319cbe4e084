"""A job folder describes the run it holds: reruns with another config, force=true, kills and two runs at once.

The behaviour is the `quantsweep` command's, so most tests run it; the half-done move a
kill leaves behind is made in process, by failing the move at each file in turn.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

import quantsweep.testing as tiny
from quantsweep.job_folder import (
    LOCK_FILE,
    SUPERSEDED_DIR,
)
from quantsweep.sweep import load_sweep

FAST = list(tiny.FAST_JOB)
MODELS = ("model.onnx", "model_quantized.onnx")


def quantsweep(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return tiny.run_module("quantsweep.cli", *args, cwd=cwd, check=check)


def job_args(model: Path, data: Path, cache: Path, job: Path) -> list[str]:
    return [
        f"model_name_or_path={model}",
        f"dataset.path={data}",
        f"cache_dir={cache}",
        *FAST,
        f"hydra.run.dir={job}",
    ]


def results(job: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((job / "results.json").read_text())
    return data


def saved_config(job: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
    return data


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def superseded(job: Path) -> list[Path]:
    folder = job / SUPERSEDED_DIR
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_a_rerun_with_another_config_moves_the_old_run_aside_and_a_resume_skips(
    tmp_path, distilbert_dir, conll_dir
):
    job = tmp_path / "job"
    args = job_args(distilbert_dir, conll_dir, tmp_path / "cache", job)
    quantsweep(tmp_path, *args, "quantization=dynamic")
    first = results(job)
    assert first["job_digest"] and first["config"]["quantization"]["approach"] == "dynamic"
    models = {name: sha(job / name) for name in MODELS}

    second = quantsweep(tmp_path, *args, "quantization=static", "calibration.num_calibration_samples=16")
    # the folder's results and Hydra's record of its config now describe the same run
    assert results(job)["config"]["quantization"]["approach"] == "static"
    assert saved_config(job)["quantization"]["approach"] == "static"
    assert results(job)["job_digest"] != first["job_digest"]
    # the dynamic run, whole, beside its own config; the log says what differed
    (old,) = superseded(job)
    assert json.loads((old / "results.json").read_text()) == first
    assert saved_config(old)["quantization"]["approach"] == "dynamic"
    assert {name: sha(old / name) for name in MODELS} == models
    log = (job / "quantsweep.log").read_text()
    assert 'quantization.approach: "dynamic" -> "static"' in log
    assert "moved to" in second.stdout + second.stderr + log

    # the old run's log went with it; the live log starts with this run
    assert (old / "quantsweep.log").read_text().count("Wrote ") == 1 and log.count("Wrote ") == 1

    # refused before it takes the folder over (a config error): the finished run stays, with its config
    refused = quantsweep(tmp_path, *args, "quantization=dynamic", "seed=-1", check=False)
    assert refused.returncode == 2 and "`seed` is -1" in refused.stderr
    assert results(job)["config"]["quantization"]["approach"] == "static"
    assert saved_config(job)["quantization"]["approach"] == "static" and saved_config(job)["seed"] == 42
    assert not (job / "error.txt").exists()

    # the same command again: the finished job is skipped, nothing moves
    stamp = (job / "results.json").stat().st_mtime_ns
    quantsweep(tmp_path, *args, "quantization=static", "calibration.num_calibration_samples=16")
    assert (job / "results.json").stat().st_mtime_ns == stamp
    assert len(superseded(job)) == 1


def test_kill_9_during_a_forced_rerun_leaves_the_old_run_whole_and_a_failed_rerun_shows_failed(
    tmp_path, distilbert_dir, conll_dir
):
    job = tmp_path / "job"
    args = job_args(distilbert_dir, conll_dir, tmp_path / "cache", job)
    quantsweep(tmp_path, *args, "quantization=dynamic")
    first = results(job)
    models = {name: sha(job / name) for name in MODELS}

    # a forced rerun timing long enough to be killed mid-work
    command = [sys.executable, "-m", "quantsweep.cli", *args, "quantization=dynamic", "force=true"]
    command += ["benchmark.duration=60"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        # wait until the new run has written its own quantized model, then kill it. The old
        # run's folder is checked first and must be complete (not ".partial"): until then a
        # model_quantized.onnx in the job folder may still be the old run's, about to move.
        while (
            not any(not p.name.endswith(".partial") for p in superseded(job))
            or not (job / "model_quantized.onnx").exists()
        ):
            assert process.poll() is None, "the rerun ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    # no results.json beside the new models: the folder claims nothing
    assert not (job / "results.json").exists()
    (old,) = superseded(job)
    assert json.loads((old / "results.json").read_text()) == first
    assert {name: sha(old / name) for name in MODELS} == models
    # a sweep reader shows the job as unfinished, not as the old success
    (record,) = load_sweep(tmp_path).jobs
    assert not record.ok and "did not finish" in str(record.error)

    # a rerun that fails (a model folder without a model, in the load stage) is shown failed,
    # and the killed attempt's files went aside before it, beside the first run
    (tmp_path / "empty-model").mkdir()
    failed = quantsweep(tmp_path, *args, f"model_name_or_path={tmp_path / 'empty-model'}", check=False)
    assert failed.returncode == 2
    assert not (job / "results.json").exists() and (job / "error.txt").is_file()
    (record,) = load_sweep(tmp_path).jobs
    assert not record.ok and record.error == (job / "error.txt").read_text().strip()
    kept, killed = superseded(job)
    assert (
        kept == old and (killed / "model_quantized.onnx").is_file() and not (killed / "results.json").exists()
    )


def test_a_second_run_of_a_locked_folder_is_refused_and_the_first_keeps_its_config(
    tmp_path, distilbert_dir, conll_dir
):
    job = tmp_path / "job"
    args = job_args(distilbert_dir, conll_dir, tmp_path / "cache", job)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    first = subprocess.Popen(
        [sys.executable, "-m", "quantsweep.cli", *args, "quantization=dynamic", "benchmark.duration=8"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (job / LOCK_FILE).is_file() or not (job / LOCK_FILE).read_text().strip():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = quantsweep(
            tmp_path, *args, "quantization=static", "calibration.num_calibration_samples=16", check=False
        )
        assert first.poll() is None, "the first run ended before the second reached the folder"
    finally:
        _out, err = first.communicate(timeout=300)
    assert second.returncode == 2, second.stderr
    message = second.stderr.split("quantsweep: ", 1)[1]
    assert f"process {first.pid}" in message and "is in use" in message and "Traceback" not in second.stderr
    assert first.returncode == 0, err
    # the refused run wrote nothing, and the first put back the config Hydra saved for it
    assert results(job)["config"]["quantization"]["approach"] == "dynamic"
    assert saved_config(job)["quantization"]["approach"] == "dynamic"
    assert not (job / "error.txt").exists() and not superseded(job)


def test_an_unwritable_cache_or_output_folder_is_one_paragraph(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for args, key in (
        ([f"cache_dir={blocker}/cache", f"hydra.run.dir={tmp_path / 'job'}"], "cache_dir"),
        ([f"hydra.run.dir={blocker}/job"], "hydra.run.dir"),
        (["--multirun", f"hydra.sweep.dir={blocker}/sweep"], "hydra.sweep.dir"),
    ):
        result = quantsweep(tmp_path, *args, "mlflow.enabled=false", check=False)
        assert result.returncode == 2, result.stderr
        message = result.stderr.split("quantsweep: ", 1)[1]
        assert f"`{key}` is '{blocker}/" in message and "cannot write there" in message
        assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("results.json"))
