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

import pytest
import yaml

import quantsweep.testing as tiny
from quantsweep import job_folder
from quantsweep.environment import detect_instruction_set
from quantsweep.job_folder import (
    LOCK_FILE,
    SUPERSEDED_DIR,
    digest,
    finish_superseding,
    identity_of_results,
    identity_of_run,
    locked,
    previous_run,
    supersede,
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


@pytest.mark.slow
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


def test_results_of_other_code_or_without_a_digest_are_not_this_runs(tmp_path):
    config = {"task": "token-classification", "quantization": {"instruction_set": "avx2"}, "force": False}
    identity = identity_of_run(config)
    recorded = {
        "config": config,
        "environment": {"code_sha256": identity["code (quantsweep source digest)"], "packages": {}},
        "quantization": {"instruction_set": "avx2"},
    }
    packages = {k.removeprefix("package "): v for k, v in identity.items() if k.startswith("package ")}
    recorded["environment"]["packages"] = packages
    job = tmp_path / "job"
    job.mkdir()
    # a schema-6 file (no job_digest) of this very run: compared by the facts it records
    (job / "results.json").write_text(json.dumps(recorded))
    assert previous_run(job, identity, force=False).reusable
    assert not previous_run(job, identity, force=True).reusable
    # the same config run by other code: not reusable, and the reason says so
    recorded["environment"]["code_sha256"] = "0123456789abcdef"
    (job / "results.json").write_text(json.dumps(recorded))
    previous = previous_run(job, identity, force=False)
    assert not previous.reusable and previous.to_supersede
    assert 'code (quantsweep source digest): "0123456789abcdef"' in previous.reason
    # keys that say how to run (force, cache, mlflow) are not part of what a job computes
    assert digest(identity_of_run({**config, "force": True, "mlflow": {"tracking_uri": "x"}})) == digest(
        identity
    )
    assert digest(identity_of_results(recorded)) != digest(identity)
    # `auto` and the preset it resolves to here are one job (reproduce pins the preset)
    auto = {**config, "quantization": {"instruction_set": "auto"}}
    assert (digest(identity_of_run(auto)) == digest(identity)) == (detect_instruction_set() == "avx2")


@pytest.mark.parametrize("crash_at", [0, 1, 2, 3])
def test_a_move_aside_killed_part_way_is_completed_at_the_next_start(tmp_path, monkeypatch, crash_at):
    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("quantization: {approach: static}\n")
    (job / "quantsweep.log").write_text("old log\n")
    old = {"results.json": '{"config": {"seed": 1}}', "model.onnx": "fp32", "model_quantized.onnx": "int8"}
    for name, text in old.items():
        (job / name).write_text(text)
    previous = previous_run(job, {"seed": 2}, force=False)
    assert previous.to_supersede and not previous.reusable

    calls = {"n": 0}
    real_replace, real_rename = os.replace, os.rename

    def dying(real: Any) -> Any:
        def move(src: Any, dst: Any) -> None:
            # the moves out of the job folder and the partial folder's rename (not an atomic write's)
            if Path(src).parent == job or Path(src).name.endswith(".partial"):
                if calls["n"] == crash_at:
                    raise KeyboardInterrupt("killed")  # as a kill would, between two renames
                calls["n"] += 1
            real(src, dst)

        return move

    monkeypatch.setattr(job_folder.os, "replace", dying(real_replace))
    monkeypatch.setattr(os, "rename", dying(real_rename))
    with pytest.raises(KeyboardInterrupt):
        supersede(job, previous)
    monkeypatch.setattr(job_folder.os, "replace", real_replace)
    monkeypatch.setattr(os, "rename", real_rename)
    # whatever moved, the folder no longer claims a finished run unless nothing moved yet
    assert (job / "results.json").exists() == (crash_at == 0)
    finish_superseding(job)
    (moved,) = superseded(job)
    assert {name: (moved / name).read_text() for name in old} == old
    assert not (job / "results.json").exists() and not (job / "model.onnx").exists()
    # Hydra's record stays; the log's old lines went with their run, the live file (Hydra's handler
    # appends to it) stays, emptied
    assert (job / ".hydra" / "config.yaml").is_file() and (job / "quantsweep.log").read_text() == ""
    assert (moved / "quantsweep.log").read_text() == "old log\n"


@pytest.mark.slow
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
        # wait until the new run has started writing its own models, then kill it
        while not (job / "model_quantized.onnx").exists() or not superseded(job):
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


@pytest.mark.slow
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


def test_only_the_files_a_job_writes_are_moved_aside(tmp_path):
    job = tmp_path / "job"
    (job / "sub").mkdir(parents=True)
    (job / "keep.txt").write_text("the user's")
    (job / "mlflow.db").write_text("a store")
    for name in ("results.json", "model.onnx", "model.onnx_data", "exclusion.yaml", ".results.json.x1.tmp"):
        (job / name).write_text("{}")
    previous = previous_run(job, {"seed": 2}, force=False)
    moved = supersede(job, previous)
    assert sorted(p.name for p in moved.iterdir() if p.name != ".hydra") == sorted(
        [".results.json.x1.tmp", "exclusion.yaml", "model.onnx", "model.onnx_data", "results.json"]
    )
    assert sorted(p.name for p in job.iterdir()) == ["keep.txt", "mlflow.db", "sub", SUPERSEDED_DIR]
    # a folder holding only someone else's files holds no run to move
    assert not previous_run(job, {"seed": 2}, force=False).to_supersede


def test_a_failed_sweep_jobs_overrides_are_printed_without_credentials(tmp_path):
    from hydra.core.utils import JobReturn
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from quantsweep.callback import ReportCallback

    config = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path)}}})
    ret = JobReturn(overrides=["mlflow.tracking_uri=http://alice:s3cr3t@127.0.0.1:5000", "seed=1"])
    ReportCallback().on_job_end(config, ret)  # Hydra prints ret.overrides when the job failed
    assert "s3cr3t" not in str(ret.overrides) and "seed=1" in list(ret.overrides or [])


def test_the_lock_refuses_another_process_and_is_free_once_released(tmp_path):
    job = tmp_path / "job"
    # another process, as a second quantsweep would be: flock locks belong to open files
    code = "import sys, pathlib\nfrom quantsweep.job_folder import locked\nwith locked(pathlib.Path(sys.argv[1])): pass"

    def other_process() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, str(job)], capture_output=True, text=True)

    with locked(job):
        assert str(os.getpid()) in (job / LOCK_FILE).read_text()
        refused = other_process()
        assert (
            refused.returncode != 0
            and f"JobLockedError: The job folder {job} is in use: process {os.getpid()}" in refused.stderr
        )
    assert other_process().returncode == 0


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


def test_a_run_brought_home_moves_another_runs_files_aside_and_the_same_run_twice_moves_nothing(tmp_path):
    from quantsweep.job_folder import make_room

    job, incoming = tmp_path / "job", tmp_path / "incoming"
    job.mkdir()
    incoming.mkdir()
    (job / "results.json").write_text('{"config": {"exclusion": {"auto": true}}}')
    (job / "exclusion.yaml").write_text("nodes: [a]")  # an auto run's file the new run does not write
    (incoming / "results.json").write_text('{"config": {"exclusion": {"auto": false}}}')
    moved = make_room(job, incoming / "results.json")
    assert moved is not None and (moved / "exclusion.yaml").is_file() and (moved / "results.json").is_file()
    assert not list(job.glob("*.yaml")) and not (job / "results.json").exists()
    (job / "results.json").write_text((incoming / "results.json").read_text())
    assert make_room(job, incoming / "results.json") is None and (job / "results.json").is_file()
