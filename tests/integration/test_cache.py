"""The content-addressed cache: hits, misses, invalidation, crashes and concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from quantsweep.cache import ArtifactCache
from quantsweep.config import (
    Approach,
    BenchmarkConfig,
    CalibrationConfig,
    CalibrationMethod,
    DatasetConfig,
    FrameworkArgs,
    MlflowConfig,
    QuantizationConfig,
    RunConfig,
)


# Helpers for the multi-process tests; module level so that child processes can run them.
def _racer(root: str, log: str, barrier: multiprocessing.synchronize.Barrier, out: str) -> None:
    def build(folder: Path) -> None:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(1.0)  # long enough that the other process arrives while this one builds
        (folder / "value.txt").write_text(f"built by {os.getpid()}")

    barrier.wait()
    with ArtifactCache(Path(root)).obtain("export", {"k": "race"}, build, Path(root)) as (folder, use):
        Path(out).write_text(json.dumps({"value": (folder / "value.txt").read_text(), "hit": use.hit}))


def test_two_processes_racing_for_one_key_build_it_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    log = tmp_path / "builds.log"
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    processes = [
        context.Process(target=_racer, args=(str(tmp_path / "cache"), str(log), barrier, str(out)))
        for out in outs
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    assert len(log.read_text().splitlines()) == 1  # one build, not two
    seen = [json.loads(out.read_text()) for out in outs]
    assert seen[0]["value"] == seen[1]["value"]
    assert sorted(s["hit"] for s in seen) == [False, True]  # the second waited and read the first's entry


# The cache inside real jobs (tiny model, real export, calibration and ONNX Runtime).


def _config(model: Path, data: Path, cache_dir: Path, **changes: Any) -> RunConfig:
    config = RunConfig(
        model_name_or_path=str(model),
        dataset=DatasetConfig(path=str(data)),
        quantization=QuantizationConfig(approach=Approach.static),
        calibration=CalibrationConfig(num_calibration_samples=16),
        benchmark=BenchmarkConfig(
            batch_sizes=[1], input_lengths=[8], duration=0.02, warmup=1, windows=2, threads=1
        ),
        mlflow=MlflowConfig(enabled=False),
        cache_dir=str(cache_dir),
    )
    return replace(config, **changes)


def _scores(results: dict[str, Any], side: str) -> dict[str, Any]:
    values = dict(results[side])
    values.pop("seconds")
    return values


def _run(config: RunConfig, job_dir: Path) -> dict[str, Any]:
    from quantsweep.job import execute

    results = execute(config, job_dir, {}, {})
    return results.to_dict()


def test_jobs_share_export_evaluation_and_calibration_and_key_changes_invalidate(
    tmp_path, distilbert_dir, conll_dir
):
    cache_dir = tmp_path / "cache"
    first = _run(_config(distilbert_dir, conll_dir, cache_dir), tmp_path / "first")
    assert {k: v["hit"] for k, v in first["cache"].items()} == {
        "export": False,
        "calibration": False,
        "original_evaluation": False,
    }
    # the same job again: everything shared comes from the cache, and results are identical
    again = _run(_config(distilbert_dir, conll_dir, cache_dir), tmp_path / "again")
    assert all(use["hit"] for use in again["cache"].values())
    assert again["original"] == first["original"]  # the very record, with its original timing
    assert _scores(again, "quantized") == _scores(first, "quantized")
    assert (tmp_path / "again" / "model_quantized.onnx").read_bytes() == (
        tmp_path / "first" / "model_quantized.onnx"
    ).read_bytes()
    assert (tmp_path / "again" / "model.onnx").is_file()

    # what changes with each key part
    def hits(**changes: Any) -> dict[str, bool]:
        name = "-".join(f"{k}" for k in changes)
        results = _run(_config(distilbert_dir, conll_dir, cache_dir, **changes), tmp_path / name)
        return {k: v["hit"] for k, v in results["cache"].items()}

    assert hits(
        calibration=CalibrationConfig(num_calibration_samples=16, method=CalibrationMethod.percentile)
    ) == {
        "export": True,
        "calibration": False,
        "original_evaluation": True,
    }
    assert hits(dataset=DatasetConfig(path=str(conll_dir), max_eval_samples=10)) == {
        "export": True,
        "calibration": True,
        "original_evaluation": False,
    }
    assert hits(framework_args=FrameworkArgs(opset=14)) == {
        "export": False,
        "calibration": False,
        "original_evaluation": False,
    }


def test_changed_evaluation_code_misses_the_fp32_evaluation_and_keeps_the_export(
    tmp_path, distilbert_dir, conll_dir
):
    """The version stays 0.1.0 while the labelling code changes: the code itself keys the entry."""
    import importlib
    import shutil

    import quantsweep
    from quantsweep.testing import run_module

    source = tmp_path / "src" / "quantsweep"
    shutil.copytree(Path(quantsweep.__file__).parent, source, ignore=shutil.ignore_patterns("__pycache__"))
    conf = importlib.import_module("quantsweep.conf")
    assert conf.__file__ is not None
    if not (source / "conf").is_dir():  # a checkout keeps conf/ beside src/; a wheel installs it inside
        shutil.copytree(
            Path(conf.__file__).parent, source / "conf", ignore=shutil.ignore_patterns("__pycache__")
        )

    def job(name: str) -> dict[str, Any]:
        run_module(
            "quantsweep.cli",
            f"model_name_or_path={distilbert_dir}",
            f"dataset.path={conll_dir}",
            f"cache_dir={tmp_path / 'cache'}",
            "benchmark.duration=0.02",
            "benchmark.batch_sizes=[1]",
            "benchmark.input_lengths=[8]",
            "benchmark.warmup=0",
            "benchmark.windows=2",
            "mlflow.enabled=false",
            f"hydra.run.dir={tmp_path / name}",
            cwd=tmp_path,
            env={"PYTHONPATH": str(tmp_path / "src")},  # the copy, not the installed package, runs
        )
        return json.loads((tmp_path / name / "results.json").read_text())

    first = job("first")
    again = job("again")
    evaluate = source / "tasks" / "token_classification" / "scoring.py"
    evaluate.write_text(evaluate.read_text() + "\n# a change to the code that labels words\n")
    changed = job("changed")
    assert {k: v["hit"] for k, v in again["cache"].items()} == {"export": True, "original_evaluation": True}
    assert {k: v["hit"] for k, v in changed["cache"].items()} == {
        "export": True,
        "original_evaluation": False,
    }
    assert first["environment"]["code_sha256"] == again["environment"]["code_sha256"]
    assert changed["environment"]["code_sha256"] != first["environment"]["code_sha256"]


def test_changed_model_weights_miss_and_cache_off_matches_cache_on(tmp_path, distilbert_dir, conll_dir):
    import shutil

    from quantsweep import testing as tiny

    cache_dir = tmp_path / "cache"
    cached = _run(_config(distilbert_dir, conll_dir, cache_dir), tmp_path / "cached")
    uncached = _run(_config(distilbert_dir, conll_dir, cache_dir, cache=False), tmp_path / "uncached")
    assert not any(use["hit"] or use["path"] for use in uncached["cache"].values())
    for side in ("original", "quantized"):
        assert _scores(uncached, side) == _scores(cached, side)
    assert not [p for p in (tmp_path / "uncached").iterdir() if p.name.startswith(".")]

    # a model folder with the same files except re-initialised weights is another model
    other = tmp_path / "other-model"
    shutil.copytree(distilbert_dir, other)
    tiny.write_model(other, "distilbert", seed=1)
    changed = _run(_config(other, conll_dir, cache_dir), tmp_path / "changed")
    assert not changed["cache"]["export"]["hit"]
