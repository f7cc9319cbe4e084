"""The sweep's card (README.md) in the seed card's structure, rendered from named sections.

Each section is a function of the sweep returning its markdown lines; :data:`SECTIONS`
lists them in the card's order and :func:`render_card` joins their output, so a new section
is one function and one entry in that list.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from quantsweep.files import LATENCY_PLOT, PARETO_PLOT
from quantsweep.records import window_spread
from quantsweep.report.exclusion_search import search_section
from quantsweep.report.markdown import code, table
from quantsweep.report.results_csv import SIDES
from quantsweep.results import JobResults
from quantsweep.sweep import JobRecord, Sweep

Section = Callable[[Sweep], list[str]]


def _first(sweep: Sweep) -> JobResults | None:
    return sweep.finished[0].results if sweep.finished else None


def _front_matter(sweep: Sweep) -> list[str]:
    """The YAML block the Hub reads: the task, the dataset, the metrics and tags."""
    first = _first(sweep)
    dataset = str(sweep.fixed.get("dataset.path", "dataset"))
    front = {
        "pipeline_tag": sweep.task.NAME,
        "datasets": [Path(dataset).name or dataset],
        "metrics": list(sweep.task.METRICS),
        "tags": [first.export.model_type if first else "transformer", "onnxruntime", "quantization"],
    }
    return ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", ""]


def _backend(sweep: Sweep) -> list[str]:
    """The task, the runtime and the machine it ran on, and how many rows were evaluated."""
    first = _first(sweep)
    env = first.environment if first else None
    backend_args = {
        "cpu": env.cpu_model if env else None,
        "physical_cores": env.physical_cores if env else None,
        "intra_op_threads": first.timing.intra_op_threads if first else None,
        # what the CPU has, and optimum's quantizer preset: two different things, named apart
        "cpu_int8_instruction_sets": env.int8_instruction_sets if env else None,
        "quantization_preset": first.quantization.instruction_set if first else None,
    }
    limit = sweep.fixed.get("dataset.max_eval_samples")
    samples = first.original.num_samples if first else None
    count = f"All dataset ({samples} {sweep.task.ROWS})" if limit is None else str(limit)
    return [
        f"**task**: `{sweep.task.NAME}`",
        "",
        f"**Backend:** `onnxruntime {env.packages.get('onnxruntime', '') if env else ''}`",
        "",
        f"**Backend args:** `{backend_args}`",
        "",
        f"**Number of evaluation samples:** `{count}`",
        "",
    ]


def _parameters(sweep: Sweep) -> list[str]:
    """The settings every job shares, then the ones the sweep varied with their values."""
    return [
        "Fixed parameters:",
        "",
        *_fixed_list(sweep.fixed),
        "",
        "Benchmarked parameters:",
        "",
        *[f"* **{key}**: " + ", ".join(code(v) for v in values) for key, values in sweep.benchmarked.items()],
        "",
    ]


def _fixed_list(fixed: dict[str, Any]) -> list[str]:
    """The fixed settings as a list, nested by group (``quantization.approach`` under quantization)."""
    lines: list[str] = []
    groups: dict[str, list[tuple[str, Any]]] = {}
    for key, value in fixed.items():
        head, _, rest = key.partition(".")
        groups.setdefault(head, []).append((rest, value))
    for head, items in groups.items():
        if len(items) == 1 and items[0][0] == "":
            lines.append(f"* **{head}**: {code(items[0][1])}")
            continue
        lines.append(f"* **{head}**:")
        lines.extend(f"    * **{rest}**: {code(value)}" for rest, value in items)
    return lines


def _label(sweep: Sweep, job: JobRecord) -> list[str]:
    """A job's row heading: its values of the benchmarked keys."""
    return [code(v) for v in sweep.label(job)]


def _non_time_metrics(sweep: Sweep) -> list[str]:
    """The evaluation part's first section: both models' scores, per job."""
    rows = []
    for job in sweep.finished:
        assert job.results is not None
        row = _label(sweep, job)
        for metric in sweep.task.METRICS:
            row += [f"{getattr(getattr(job.results, side), metric):.3f}" for _, side in SIDES]
        rows.append(row)
    header = [*sweep.benchmarked, *(f"{m} ({name})" for m in sweep.task.METRICS for name, _ in SIDES)]
    return ["# Evaluation", "", "## Non-time metrics", "", table(header, rows), ""]


def _truncation(sweep: Sweep) -> list[str]:
    """Rows cut off at the model's maximum length: say how many, per job when they differ."""
    notes: dict[str, list[str]] = {}
    for job in sweep.finished:
        assert job.results is not None
        evaluation = job.results.original
        if evaluation.num_truncated:
            note = evaluation.truncation_note(job.results.dataset.get("eval_max_length"))
            notes.setdefault(note, []).append(job.name)
    if not notes:
        return []
    if len(notes) == 1 and len(next(iter(notes.values()))) == len(sweep.finished):
        return [f"Truncation: {next(iter(notes))}", ""]
    return [
        "Truncation:",
        "",
        *(f"* {', '.join(f'`{n}`' for n in names)}: {note}" for note, names in notes.items()),
        "",
    ]


def _time_metrics(sweep: Sweep) -> list[str]:
    """How the timings were taken, then one table per timed (batch size, input length)."""
    out = ["## Time metrics", ""]
    if _first(sweep) is None:
        return out
    out += [*_timing_settings(sweep), ""]
    for batch_size, input_length in _shapes(sweep):
        out += [
            f"Below, time metrics for batch size = {batch_size}, input length = {input_length}.",
            "",
            _shape_table(sweep, batch_size, input_length),
            "",
        ]
    return out


def _shapes(sweep: Sweep) -> list[tuple[int, int]]:
    """Every (batch size, input length) any finished job timed, in order."""
    found = {
        (shape.batch_size, shape.input_length)
        for job in sweep.finished
        if job.results
        for shape in job.results.timing.shapes
    }
    return sorted(found)


def _timing_settings(sweep: Sweep) -> list[str]:
    """How the timings were taken; when jobs differ in it, each job's settings are listed."""
    settings = {
        job.name: (
            job.results.timing.duration_s,
            job.results.timing.windows,
            job.results.timing.intra_op_threads,
        )
        for job in sweep.finished
        if job.results
    }
    common = set(settings.values())
    explain = (
        "Latency is the mean time of one forward pass in milliseconds; throughput is in samples (sequences) "
        "per second, i.e. forward passes per second times the batch size. Speed-up is original latency / "
        "optimized latency over the whole measurement; per window gives the lowest, median and highest of the "
        "same ratio across the windows."
    )
    if len(common) == 1:
        duration, windows, threads = common.pop()
        return [
            f"Time benchmarks were run for {duration:g} seconds per model and shape, original and optimized "
            f"taking turns in {windows} alternating windows in the same process ({threads} intra-op threads). "
            + explain
        ]
    return [
        "Time benchmarks took turns between original and optimized in alternating windows in the same process, "
        "with settings that differ between jobs: " + explain,
        "",
        *(
            f"* `{name}`: {duration:g} s per model and shape, {windows} windows, {threads} intra-op threads"
            for name, (duration, windows, threads) in settings.items()
        ),
    ]


def _shape_table(sweep: Sweep, batch_size: int, input_length: int) -> str:
    """Latency, throughput and speed-up at one shape, for the jobs that timed it."""
    rows = []
    for job in sweep.finished:
        assert job.results is not None
        s = job.results.timing.shape(batch_size, input_length)
        if s is None:  # a sweep over benchmark.* times different shapes per job
            continue
        rows.append(
            [
                *_label(sweep, job),
                f"{s.original.mean_ms:.2f}",
                f"{s.quantized.mean_ms:.2f}",
                f"{s.original.throughput_samples_per_s:.2f}",
                f"{s.quantized.throughput_samples_per_s:.2f}",
                f"{s.speedup:.2f}",
                " / ".join(f"{v:.2f}" for v in window_spread(s.window_speedups)),
            ]
        )
    header = [
        *sweep.benchmarked,
        "latency_mean (original, ms)",
        "latency_mean (optimized, ms)",
        "throughput (original, samples/s)",
        "throughput (optimized, samples/s)",
        "speed-up",
        "speed-up per window (min / median / max)",
    ]
    return table(header, rows)


def _quantized_graphs(sweep: Sweep) -> list[str]:
    """What each job's quantized graph holds, and which configurations quantized nothing."""
    rows = []
    notes = []
    for job in sweep.finished:
        assert job.results is not None
        graph = job.results.graph
        by_type = ", ".join(f"{op}: {n}" for op, n in graph.nodes_quantized_by_op_type.items()) or "none"
        rows.append(
            [
                *_label(sweep, job),
                f"{graph.nodes_quantized} of {graph.candidate_nodes}",
                by_type,
                str(len(graph.nodes_excluded)),
                f"{graph.original_size_mb:.2f}",
                f"{graph.quantized_size_mb:.2f}",
            ]
        )
        if graph.nothing_quantized:
            notes.append(f"* `{job.name}`: {graph.note}")
    header = [
        *sweep.benchmarked,
        "nodes quantized",
        "by op type",
        "nodes excluded",
        "size original (MB)",
        "size optimized (MB)",
    ]
    out = ["## Quantized graphs", "", table(header, rows), ""]
    if notes:
        out += [
            "Configurations that quantized nothing (their timings compare the fp32 model with itself):",
            "",
            *notes,
            "",
        ]
    return out


def _failed_jobs(sweep: Sweep) -> list[str]:
    """The jobs that did not finish, each with its error."""
    if not sweep.failed:
        return []
    return ["## Failed jobs", "", *(f"* `{job.name}`: {job.error}" for job in sweep.failed), ""]


def _plots(sweep: Sweep) -> list[str]:
    """Links to the plots written beside the card."""
    return [
        "## Plots",
        "",
        f"![F1 change (points) against speed-up]({PARETO_PLOT})",
        "",
        f"![Latency against input length]({LATENCY_PLOT})",
        "",
    ]


# the card's sections, in the seed card's order
SECTIONS: tuple[Section, ...] = (
    _front_matter,
    _backend,
    _parameters,
    _non_time_metrics,
    _truncation,
    _time_metrics,
    _quantized_graphs,
    search_section,
    _failed_jobs,
    _plots,
)


def render_card(sweep: Sweep) -> str:
    """The card's markdown: every section's lines, in order."""
    return "\n".join(line for section in SECTIONS for line in section(sweep))
