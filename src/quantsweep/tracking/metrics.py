"""A job's results as MLflow metrics: every metric name quantsweep logs is spelled here.

The names are chosen to sort and filter well in MLflow's UI (``eval/<side>/<metric>``,
``time/bs<b>_len<nnnn>/<side>/<stat>``, ``search/...``, ``graph/...``); keeping them in
one module keeps the runs of old and new sweeps comparable, and lets the tests check
them without a tracking store.
"""

from __future__ import annotations

from quantsweep.records import ExclusionSearchResult, SearchStep, window_spread
from quantsweep.results import JobResults


def metrics_of(results: JobResults) -> dict[str, float]:
    """Metric names that sort and filter well: eval/<side>/<metric>, time/bs<b>_len<nnnn>/<side>/<stat>."""
    metrics = {**_eval_metrics(results), **_timing_metrics(results)}
    if results.exclusion_search:
        metrics.update(search_metrics(results.exclusion_search))
    if results.eval_drop is not None:
        metrics["search/eval_drop"] = results.eval_drop.drop
        metrics["search/eval_drop_bound"] = results.eval_drop.bound
    metrics.update(_graph_metrics(results))
    return {k: float(v) for k, v in metrics.items()}


def _eval_metrics(results: JobResults) -> dict[str, float]:
    """The task's scores before and after quantization, and their change."""
    from quantsweep.tasks import get

    metrics: dict[str, float] = {}
    for name in get(results.task).METRICS:
        original, quantized = getattr(results.original, name), getattr(results.quantized, name)
        metrics[f"eval/original/{name}"] = original
        metrics[f"eval/quantized/{name}"] = quantized
        metrics[f"eval/delta/{name}"] = quantized - original
    return metrics


def _timing_metrics(results: JobResults) -> dict[str, float]:
    """Latency and throughput per timed shape and side, and the speed-up with its window spread."""
    metrics: dict[str, float] = {}
    for shape in results.timing.shapes:
        prefix = f"time/bs{shape.batch_size}_len{shape.input_length:04d}"
        for side, stats in (("original", shape.original), ("quantized", shape.quantized)):
            metrics[f"{prefix}/{side}/mean_ms"] = stats.mean_ms
            metrics[f"{prefix}/{side}/p50_ms"] = stats.p50_ms
            metrics[f"{prefix}/{side}/p90_ms"] = stats.p90_ms
            metrics[f"{prefix}/{side}/p99_ms"] = stats.p99_ms
            metrics[f"{prefix}/{side}/throughput_samples_per_s"] = stats.throughput_samples_per_s
            metrics[f"{prefix}/{side}/forward_passes_per_s"] = stats.forward_passes_per_s
        metrics[f"{prefix}/speedup"] = shape.speedup
        low, median, high = window_spread(shape.window_speedups)
        metrics[f"{prefix}/speedup_window_min"] = low
        metrics[f"{prefix}/speedup_window_median"] = median
        metrics[f"{prefix}/speedup_window_max"] = high
    return metrics


def _graph_metrics(results: JobResults) -> dict[str, float]:
    """What quantization did to the graph: nodes quantized and excluded, sizes."""
    graph = results.graph
    return {
        "graph/nodes_quantized": graph.nodes_quantized,
        "graph/nodes_excluded": len(graph.nodes_excluded),
        "graph/original_size_mb": graph.original_size_mb,
        "graph/quantized_size_mb": graph.quantized_size_mb,
    }


def search_metrics(found: ExclusionSearchResult) -> dict[str, float]:
    """exclusion=auto's outcome: search/<name>."""
    metrics = {
        "search/evaluations": float(found.evaluations),
        "search/seconds": found.seconds,
        "search/nodes_kept": float(len(found.chosen)),
        "search/holdout_f1_fp32": found.fp32_f1,
        "search/holdout_f1_chosen": found.chosen_f1,
        "search/holdout_f1_drop": found.fp32_f1 - found.chosen_f1,
        "search/meets_budget": 1.0 if found.meets_budget else 0.0,
        "search/objective_speed": 1.0 if found.objective == "speed" else 0.0,
    }
    if found.chosen_speedup is not None:
        metrics["search/chosen_speedup"] = found.chosen_speedup
    if found.confirmations:
        # the first set that held on the confirmation rows is the one chosen
        metrics["search/confirmed"] = 1.0 if any(c.meets_budget for c in found.confirmations) else 0.0
    if found.search_rows is not None:  # searches before the split scored every held-out row
        metrics["search/search_rows"] = float(found.search_rows)
        metrics["search/confirm_rows"] = float(found.confirm_rows)
    return metrics


def step_metrics(step: SearchStep) -> dict[str, float]:
    """One search step's point on MLflow's charts of the search's course (logged at ``step.step``)."""
    metrics = {"search/step_f1": step.f1, "search/step_nodes_kept": float(len(step.nodes))}
    if step.speedup is not None:
        metrics["search/step_speedup"] = step.speedup
    return metrics
