"""The plots: a sweep's F1 against speed-up and latency against length, and a search's course.

Kept apart from :mod:`quantsweep.report` so that a job can draw its own plot (the
exclusion search's) without importing the report's Hydra callback; matplotlib itself
loads only when a plot is drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from quantsweep.records import ExclusionSearchResult, ShapeTiming
    from quantsweep.sweep import JobRecord, Sweep


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both axes (higher is better on both)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any(
            (x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i
        ):
            front.append(i)
    return front


def _short(job: JobRecord) -> str:
    return job.name.rsplit("-", 1)[0] if len(job.name.split("-")) > 3 else job.name


def _all_shapes(sweep: Sweep) -> list[ShapeTiming]:
    return [shape for job in sweep.finished if job.results for shape in job.results.timing.shapes]


def _timed(job: JobRecord, batch: int) -> list[ShapeTiming]:
    """The job's timings at one batch size (none if it did not time that batch size)."""
    return [s for s in (job.results.timing.shapes if job.results else []) if s.batch_size == batch]


# An F1 drop beyond this many points is a collapsed model: it is drawn off the scale, at the
# axis' bottom edge with its value, so that it does not stretch the axis the other configs share
COLLAPSED_POINTS = 10.0


@dataclass(frozen=True)
class DropAxis:
    """The y range of a metric-drop plot (in points), and which points lie off it, below."""

    bottom: float
    top: float
    off_scale: list[int]


def drop_axis(drops: list[float], budget: float) -> DropAxis:
    """Zoom on what a user compares: the drops (in points, negative = worse) around the budget.

    Drops worse than :data:`COLLAPSED_POINTS` go off the scale; the axis covers the budget
    line (with room below it) and every other drop, with a margin.
    """
    off = [i for i, d in enumerate(drops) if d < -COLLAPSED_POINTS]
    shown = [d for i, d in enumerate(drops) if i not in off]
    low = min([-2.0 * budget, -0.2, *shown])
    high = max([0.0, *shown])
    margin = 0.12 * (high - low)
    return DropAxis(bottom=low - margin, top=high + margin, off_scale=off)


def _budget_points(sweep: Sweep) -> float:
    """The sweep's accuracy budget in points (exclusion.max_f1_drop; its default if the jobs vary it)."""
    values = {job.config.get("exclusion.max_f1_drop") for job in sweep.finished}
    value = values.pop() if len(values) == 1 else None
    return 100.0 * float(value if isinstance(value, int | float) else 0.005)


def _pareto_point(job: JobRecord, batch: int, metric: str) -> tuple[float, float]:
    """A config's speed-up (geometric mean over the batch size's input lengths) and metric change in points."""
    assert job.results is not None
    ups = [s.speedup for s in _timed(job, batch)]
    drop = 100.0 * (getattr(job.results.quantized, metric) - getattr(job.results.original, metric))
    return math.exp(sum(math.log(u) for u in ups) / len(ups)), drop


def _scatter_config(
    ax: Any, color: Any, label: str, x: float, y: float, on_front: bool, axis: DropAxis, off: bool
) -> None:
    """One config's point: ringed on the Pareto front; a collapsed one drawn at the axis' foot with its value."""
    ax.scatter(
        x,
        axis.bottom if off else y,
        color=color,
        edgecolors="black" if on_front else "none",
        linewidths=1.5,
        s=60,
        zorder=3,
        marker="v" if off else "o",
        clip_on=False,
        label=label + (f" ({y:+.1f} pts, off scale)" if off else ""),
    )
    if off:
        ax.annotate(
            f"{y:+.1f}", (x, axis.bottom), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7
        )


def plot_pareto(sweep: Sweep, path: Path, metric: str) -> None:
    """Per batch size: each config's metric drop (points) against its speed-up, the Pareto front ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10")
    budget = _budget_points(sweep)
    batch_sizes = sorted({s.batch_size for s in _all_shapes(sweep)})
    fig, axes = plt.subplots(1, len(batch_sizes), figsize=(5.5 * len(batch_sizes), 4.5), squeeze=False)
    for ax, batch in zip(axes[0], batch_sizes, strict=True):
        # a sweep over benchmark.* may time some batch sizes in some jobs only
        jobs = [job for job in sweep.finished if _timed(job, batch)]
        points = [_pareto_point(job, batch, metric) for job in jobs]
        front = set(pareto_front(points))
        axis = drop_axis([y for _, y in points], budget)
        for i, (job, (x, y)) in enumerate(zip(jobs, points, strict=True)):
            _scatter_config(
                ax, colors(i % 10), _short(job), x, y, on_front=i in front, axis=axis, off=i in axis.off_scale
            )
        ordered = sorted((points[i] for i in front if i not in axis.off_scale), key=lambda p: p[0])
        ax.plot(
            [p[0] for p in ordered],
            [p[1] for p in ordered],
            color="tab:red",
            linestyle="--",
            label="Pareto front",
        )
        ax.axhspan(-budget, axis.top, color="tab:green", alpha=0.08, label=f"within budget (-{budget:g} pts)")
        ax.axhline(-budget, color="tab:green", linewidth=0.8)
        ax.axhline(0.0, color="gray", linestyle=":", label=f"original {metric}")
        ax.axvline(1.0, color="gray", linewidth=0.5)
        ax.set_ylim(axis.bottom, axis.top)
        ax.set_title(f"batch size {batch}")
        ax.set_xlabel("speed-up (geometric mean over input lengths)")
        ax.set_ylabel(f"{metric} change, points (optimized - original)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="center right",
        fontsize=7,
        title="black ring: on the Pareto front\n▼: collapsed, drawn off scale",
        title_fontsize=7,
    )
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(sweep: Sweep, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = _all_shapes(sweep)
    batch_sizes = sorted({s.batch_size for s in shapes})
    fig, axes = plt.subplots(1, len(batch_sizes), figsize=(5.5 * len(batch_sizes), 4.5), squeeze=False)
    for ax, batch in zip(axes[0], batch_sizes, strict=True):
        lengths = sorted({s.input_length for s in shapes if s.batch_size == batch})
        originals: dict[int, list[float]] = {n: [] for n in lengths}
        for job in sweep.finished:
            mine = {s.input_length: s for s in _timed(job, batch)}
            if not mine:
                continue
            own = [n for n in lengths if n in mine]
            ax.plot(own, [mine[n].quantized.mean_ms for n in own], marker="o", label=_short(job))
            for n in own:
                originals[n].append(mine[n].original.mean_ms)
        lengths = [n for n in lengths if originals[n]]
        median = [sorted(originals[n])[len(originals[n]) // 2] for n in lengths]
        ax.plot(
            lengths, median, color="black", linewidth=2.5, linestyle="--", label="original (median over jobs)"
        )
        ax.set_title(f"batch size {batch}")
        ax.set_xlabel("input length (tokens)")
        ax.set_ylabel("mean latency (ms)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short_node(name: str) -> str:
    """The last four parts of a node's path: enough to tell layers and blocks apart on an axis."""
    return "/".join(name.strip("/").split("/")[-4:])


def sensitivity_figure(search: ExclusionSearchResult) -> Figure:
    """exclusion=auto at a glance: each candidate's SQNR in graph order, F1 at each search step and,
    when the steps were timed (objective=speed), each step's speed-up against its F1 drop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(step.speedup is not None for step in search.steps):
        fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [2.2, 1]})
        _sensitivity_panel(left, search)
        _steps_panel(right, search)
        fig.tight_layout()
        return fig
    # three panels: the ranking keeps the whole width (it has a bar per candidate), the steps
    # and their speed share the row below
    fig = plt.figure(figsize=(14, 10))
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.15])
    _sensitivity_panel(fig.add_subplot(grid[0, :]), search)
    _steps_panel(fig.add_subplot(grid[1, 0]), search)
    _speed_panel(fig.add_subplot(grid[1, 1]), search)
    fig.tight_layout()
    return fig


def plot_sensitivity(search: ExclusionSearchResult, path: Path) -> None:
    """Draw :func:`sensitivity_figure` into ``path`` (a PNG)."""
    import matplotlib.pyplot as plt

    fig = sensitivity_figure(search)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sensitivity_panel(left: Axes, search: ExclusionSearchResult) -> None:
    """Each candidate's SQNR in graph order, the kept nodes and the starting set marked."""
    ranking = search.ranking
    chosen = set(search.chosen)
    start = set(search.start_nodes)
    xs = list(range(len(ranking)))
    heights = [r.sqnr_db if r.sqnr_db is not None else 0.0 for r in ranking]
    left.bar(
        xs, heights, color=["lightgray" if r.sqnr_db is None else "tab:blue" for r in ranking], width=0.85
    )
    # kept nodes are often the ones near 0 dB, where a bar has no height: mark them
    kept = [x for x, r in zip(xs, ranking, strict=True) if r.node in chosen]
    left.scatter(kept, [heights[x] for x in kept], color="tab:red", zorder=3, s=18, label="kept in fp32")
    started = [x for x, r in zip(xs, ranking, strict=True) if r.node in start]
    if started:
        left.scatter(
            started, [heights[x] + 2 for x in started], marker="v", color="black", s=10, label="starting set"
        )
    left.set_xticks(kept, [_short_node(ranking[x].node) for x in kept], rotation=90, fontsize=6)
    left.set_xlim(-1, len(ranking))
    left.set_ylim(bottom=min(-3.0, min(heights, default=0.0) - 3))
    left.set_xlabel("candidate nodes in graph order (labelled: kept in fp32)")
    left.set_ylabel("SQNR, median over channels (dB)")
    left.set_title("Sensitivity: lower is more damage (gray: untouched by the quantizer)", fontsize=9)
    left.legend(fontsize=7, loc="upper right")


def _steps_panel(right: Axes, search: ExclusionSearchResult) -> None:
    """Held-out F1 at each search step, against fp32's and the budget's."""
    steps = search.steps
    budget = search.fp32_f1 - search.max_f1_drop
    # collapsed sets would squeeze the interesting range near fp32 into a line: clip them
    floor = budget - max(0.03, 6 * search.max_f1_drop)
    top = max([s.f1 for s in steps] + [search.fp32_f1]) + 0.005
    for step in steps:
        clipped = step.f1 < floor
        right.scatter(
            step.step,
            max(step.f1, floor),
            marker="v" if clipped else "o",
            color="tab:green" if step.meets_budget else "tab:orange",
            zorder=2,
        )
        right.annotate(
            str(len(step.nodes)),
            (step.step, max(step.f1, floor)),
            fontsize=6,
            xytext=(2, 3),
            textcoords="offset points",
        )
    right.axhline(search.fp32_f1, color="gray", linestyle=":", label="fp32 F1 (held out)")
    right.axhline(budget, color="tab:red", linestyle="--", label=f"fp32 F1 - {search.max_f1_drop}")
    right.set_ylim(floor - 0.003, top)
    right.set_xlabel("search step (labels: nodes kept in fp32)")
    right.set_ylabel("held-out F1 (▼: below the axis)")
    confidence = search.confidence
    judged = f"drop at confidence {confidence}" if confidence else "measured drop"
    right.set_title(
        f"Search steps: green within the budget\n(judged by the {judged}), orange outside", fontsize=9
    )
    right.legend(fontsize=7, loc="lower right")


def speed_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (F1 drop, speed-up) points no other beats: lower-or-equal drop and
    higher-or-equal speed-up, strictly better in one."""
    return pareto_front([(-drop, speedup) for drop, speedup in points])


def drop_limit(budget: float) -> float:
    """The right edge of the speed panel's F1-drop axis: collapsed sets beyond it are clipped."""
    return max(6 * budget, 0.03)


def _speed_panel(ax: Axes, search: ExclusionSearchResult) -> None:
    """Each timed step's speed-up over fp32 against its measured held-out F1 drop."""
    timed = [s for s in search.steps if s.speedup is not None]
    limit = drop_limit(search.max_f1_drop)
    xs = [min(s.f1_drop, limit) for s in timed]
    ys = [float(s.speedup or 0.0) for s in timed]
    for step, x, y in zip(timed, xs, ys, strict=True):
        color = "tab:green" if step.meets_budget else "tab:orange"
        clipped = step.f1_drop > limit
        if step.speedup_min is not None and step.speedup_max is not None:
            spread = [[max(y - step.speedup_min, 0.0)], [max(step.speedup_max - y, 0.0)]]
            ax.errorbar(x, y, yerr=spread, fmt="none", ecolor=color, alpha=0.6, capsize=2, clip_on=False)
        ax.scatter(x, y, marker=">" if clipped else "o", color=color, zorder=3, s=22, clip_on=False)
        label = f"{step.step} ({step.f1_drop:+.2f})" if clipped else str(step.step)
        ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    front = sorted(speed_front([(s.f1_drop, float(s.speedup or 0.0)) for s in timed]), key=lambda i: xs[i])
    ax.plot(
        [xs[i] for i in front], [ys[i] for i in front], color="tab:blue", linewidth=1, label="Pareto front"
    )
    chosen = next((i for i, s in enumerate(timed) if s.step == search.chosen_step), None)
    if chosen is not None:
        ax.scatter(
            xs[chosen],
            ys[chosen],
            marker="*",
            s=180,
            color="tab:red",
            zorder=4,
            clip_on=False,
            label=f"chosen (step {timed[chosen].step}, {ys[chosen]:.2f}x)",
        )
    ax.axhline(1.0, color="gray", linestyle=":", label="fp32 speed")
    ax.axvline(search.max_f1_drop, color="tab:red", linestyle="--", label=f"budget ({search.max_f1_drop})")
    low = min([0.0, *xs])
    margin = 0.04 * (limit - low)
    ax.set_xlim(low - margin, limit + margin)
    ax.set_xlabel(f"held-out F1 drop, measured (▶: beyond {limit:g}, value in brackets)")
    ax.set_ylabel("speed-up over fp32 (bars: lowest-highest window)")
    ax.set_title(
        "Speed against F1 drop per step (labels: step)\ngreen within the budget, orange outside", fontsize=9
    )
    ax.legend(fontsize=7, loc="best")
