from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_job_folder import superseded

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
