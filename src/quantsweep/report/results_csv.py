"""The sweep's CSV (results.csv): every number of every job and timed shape, one row each.

Each column is defined once, as its name beside the function that reads its value, so the
header and the rows cannot drift apart. The card names the two compared models as the
columns do (:data:`SIDES`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass

from quantsweep.records import ShapeTiming, window_spread
from quantsweep.results import JobResults
from quantsweep.sweep import Sweep

# the two models every score compares: the name the CSV's columns and the card's headers
# give each, and the JobResults field holding its scores
SIDES: tuple[tuple[str, str], ...] = (("original", "original"), ("optimized", "quantized"))


@dataclass(frozen=True)
class CsvRow:
    """What one row of the CSV is about: a job and one shape it timed."""

    job: str
    results: JobResults
    shape: ShapeTiming


Column = tuple[str, Callable[[CsvRow], object]]

_WHICH: tuple[Column, ...] = (
    ("job", lambda row: row.job),
    ("batch_size", lambda row: row.shape.batch_size),
    ("input_length", lambda row: row.shape.input_length),
)

_TIMING_AND_GRAPH: tuple[Column, ...] = (
    ("latency_mean_ms_original", lambda row: row.shape.original.mean_ms),
    ("latency_mean_ms_optimized", lambda row: row.shape.quantized.mean_ms),
    ("latency_p50_ms_original", lambda row: row.shape.original.p50_ms),
    ("latency_p50_ms_optimized", lambda row: row.shape.quantized.p50_ms),
    ("latency_p90_ms_original", lambda row: row.shape.original.p90_ms),
    ("latency_p90_ms_optimized", lambda row: row.shape.quantized.p90_ms),
    ("latency_p99_ms_original", lambda row: row.shape.original.p99_ms),
    ("latency_p99_ms_optimized", lambda row: row.shape.quantized.p99_ms),
    ("throughput_samples_per_s_original", lambda row: row.shape.original.throughput_samples_per_s),
    ("throughput_samples_per_s_optimized", lambda row: row.shape.quantized.throughput_samples_per_s),
    ("speedup", lambda row: row.shape.speedup),
    ("speedup_window_min", lambda row: window_spread(row.shape.window_speedups)[0]),
    ("speedup_window_median", lambda row: window_spread(row.shape.window_speedups)[1]),
    ("speedup_window_max", lambda row: window_spread(row.shape.window_speedups)[2]),
    ("nodes_quantized", lambda row: row.results.graph.nodes_quantized),
    ("nodes_excluded", lambda row: len(row.results.graph.nodes_excluded)),
    ("size_mb_original", lambda row: row.results.graph.original_size_mb),
    ("size_mb_optimized", lambda row: row.results.graph.quantized_size_mb),
    ("nothing_quantized", lambda row: row.results.graph.nothing_quantized),
)


def _score(metric: str, side: str) -> Callable[[CsvRow], object]:
    return lambda row: getattr(getattr(row.results, side), metric)


def _columns(metrics: tuple[str, ...]) -> tuple[Column, ...]:
    """Every column after the benchmarked keys; a job's task decides its metric columns."""
    scores = tuple((f"{m}_{name}", _score(m, side)) for m in metrics for name, side in SIDES)
    return (*_WHICH, *scores, *_TIMING_AND_GRAPH)


def csv_columns(metrics: tuple[str, ...]) -> tuple[str, ...]:
    """The CSV's columns after the benchmarked keys: a job's task decides its metric columns."""
    return tuple(name for name, _ in _columns(metrics))


def render_csv(sweep: Sweep) -> str:
    """The CSV's text: the benchmarked keys, then every column, for each finished job's timed shapes."""
    columns = _columns(sweep.task.METRICS)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*sweep.benchmarked, *(name for name, _ in columns)])
    for job in sweep.finished:
        assert job.results is not None
        for shape in job.results.timing.shapes:
            row = CsvRow(job.name, job.results, shape)
            writer.writerow([*sweep.label(job), *(value(row) for _, value in columns)])
    return buffer.getvalue()
