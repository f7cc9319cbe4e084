"""`quantsweep-reproduce`: what it compares, and what it says about the comparison."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from quantsweep.reproduce import comparison
from quantsweep.testing import run_module

METRICS = ("precision", "recall", "f1", "accuracy")


def results(shapes: dict[tuple[int, int], list[float]], cache_hit: bool = False) -> dict[str, Any]:
    """A results.json reduced to what the comparison reads; speed-ups from their windows."""
    scores = dict.fromkeys(METRICS, 0.5)
    return {
        "original": dict(scores),
        "quantized": dict(scores),
        "timing": {
            "shapes": [
                {"batch_size": b, "input_length": n, "speedup": sum(w) / len(w), "window_speedups": w}
                for (b, n), w in shapes.items()
            ]
        },
        "cache": {"original_evaluation": {"hit": cache_hit, "key": "0123456789abcdef"}},
    }


def row(table: str, label: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(label))


def test_speed_ups_agree_only_when_their_window_ranges_overlap():
    saved = results({(1, 32): [1.40, 1.50, 1.62]})
    table, identical = comparison(saved, results({(1, 32): [1.55, 1.70, 1.80]}))
    assert identical and "timing: agrees" in row(table, "speed-up 1x32")
    table, identical = comparison(saved, results({(1, 32): [1.65, 1.70, 1.80]}))
    assert identical  # timing never decides the exit code: the evaluation does
    assert "timing: differs (per window 1.40-1.62 vs 1.65-1.80 do not overlap)" in row(table, "speed-up 1x32")


def test_only_the_same_shapes_are_compared():
    """A new run at 1x128 is never compared with the saved 1x32 (the shapes were overridden)."""
    table, _ = comparison(results({(1, 32): [1.5, 1.52]}), results({(1, 128): [1.7, 1.71]}))
    assert "only the saved run timed this shape, not compared" in row(table, "speed-up 1x32")
    assert "only the new run timed this shape, not compared" in row(table, "speed-up 1x128")
    assert "agrees" not in table and "differs" not in table


def test_a_changed_metric_is_flagged_and_fails():
    saved = results({(1, 32): [1.5, 1.6]})
    new = copy.deepcopy(saved)
    new["quantized"]["f1"] = 0.49
    table, identical = comparison(saved, new)
    assert not identical and "<-- DIFFERS" in row(table, "quantized f1")


@pytest.mark.slow
def test_reproduce_says_where_the_fp32_metrics_came_from_and_no_cache_recomputes(
    tmp_path, distilbert_dir, conll_dir
):
    job = tmp_path / "job"
    run_module(
        "quantsweep.cli",
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        "benchmark.duration=0.04",
        "benchmark.batch_sizes=[1]",
        "benchmark.input_lengths=[8,16]",
        "benchmark.warmup=1",
        "benchmark.windows=3",
        "mlflow.enabled=false",
        f"hydra.run.dir={job}",
        cwd=tmp_path,
    )

    def reproduce(out: Path, *args: str) -> tuple[str, dict[str, Any]]:
        done = run_module("quantsweep.reproduce", str(job), "--out", str(out), *args, cwd=tmp_path)
        return done.stdout, json.loads((out / "results.json").read_text())

    cached, new = reproduce(tmp_path / "cached")
    assert "original (fp32) metrics came from the cache" in cached and "--no-cache recomputes" in cached
    assert new["cache"]["original_evaluation"]["hit"]
    assert (
        new["reproduces"] == str(job)
        and new["choices"] == json.loads((job / "results.json").read_text())["choices"]
    )

    fresh, new = reproduce(tmp_path / "fresh", "--no-cache", "benchmark.input_lengths=[16]")
    assert not any(use["hit"] for use in new["cache"].values())
    assert "came from the cache" not in fresh and "DIFFERS" not in fresh
    assert "only the saved run timed this shape" in row(fresh, "speed-up 1x8")
    assert "timing: agrees" in row(fresh, "speed-up 1x16") or "timing: differs" in row(fresh, "speed-up 1x16")
