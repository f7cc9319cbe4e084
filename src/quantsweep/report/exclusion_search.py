"""The card's exclusion-search section: what each ``exclusion=auto`` job chose, from which ranking, how.

The longest part of the card, and the one that changes whenever the search records
something new (confirmation rows, timed groups, the speed objective), so it has a module of
its own; :mod:`quantsweep.report.card` lists :func:`search_section` among its sections.
"""

from __future__ import annotations

from typing import Any

from quantsweep.files import SENSITIVITY_PLOT
from quantsweep.records import ExclusionSearchResult, SearchStep
from quantsweep.report.markdown import table
from quantsweep.sweep import JobRecord, Sweep

# ranking rows shown per searched job; the full ranking is in its results.json
_RANKING_ROWS = 10


def search_section(sweep: Sweep) -> list[str]:
    """exclusion=auto: what each searching job chose, from which ranking, in which steps."""
    searched = [
        (job, job.results.exclusion_search)
        for job in sweep.finished
        if job.results and job.results.exclusion_search
    ]
    if not searched:
        return []
    out = [
        "## Exclusion search",
        "",
        "Jobs with `exclusion=auto` chose their fp32 nodes by quantizing and scoring candidate sets on "
        "held-out rows (never the evaluation split, whose metrics above stay an honest test of the chosen "
        "set); a set is within the budget when its F1 drop holds at the stated confidence (a paired "
        "bootstrap over the held-out rows). Each job folder's `exclusion.yaml` holds the list, "
        "reusable as `exclusion=nodes` without searching again.",
        "",
        *_search_summary(searched),
        "",
    ]
    for job, found in searched:
        out += _search_job(sweep, job, found)
    return out


def _search_summary(searched: list[tuple[JobRecord, ExclusionSearchResult]]) -> list[str]:
    """One row per searching job: its objective, what it kept and whether that met the budget."""
    rows = [
        [
            f"`{job.name}`",
            found.objective,
            found.strategy,
            str(len(found.start_nodes)),
            str(len(found.chosen)),
            f"{found.fp32_f1:.4f}",
            f"{found.chosen_f1:.4f}",
            f"{found.max_f1_drop} ({found.confidence or 'measured'})",
            "yes" if found.meets_budget else "**no**",
            f"{found.evaluations} ({found.stopped_by})",
            f"{found.seconds:.0f}",
        ]
        for job, found in searched
    ]
    header = [
        "job",
        "objective",
        "strategy",
        "start nodes",
        "kept in fp32",
        "held-out F1 fp32",
        "held-out F1 chosen",
        "max F1 drop (confidence)",
        "within budget",
        "steps (ended by)",
        "seconds",
    ]
    return [table(header, rows)]


def _search_job(sweep: Sweep, job: JobRecord, found: ExclusionSearchResult) -> list[str]:
    """One searching job's subsection: warnings, objective, rows, confirmations, groups, ranking, steps."""
    out = [f"### `{job.name}`", ""]
    # rows too few to tell a drop of the budget's size from noise: said first, in bold
    out += [line for warning in found.resolution_warnings() for line in (f"**{warning}**", "")]
    out += [_objective_sentence(found), ""]
    if not any(step.meets_budget for step in found.steps):
        out += [
            f"**The search ended ({found.stopped_by}) without a set within the budget**; the job used "
            "the best set it had evaluated. Raise `exclusion.max_evaluations` or `exclusion.max_minutes`.",
            "",
        ]
    elif not found.meets_budget:
        out += [
            "**Sets met the budget on the search rows, but none held on the confirmation rows**; the job used "
            "the one with the smallest bound there. More held-out rows (`exclusion.holdout_samples`) resolve "
            "smaller drops.",
            "",
        ]
    chosen = ", ".join(f"`{n}`" for n in found.chosen) or "none"
    out += [f"Kept in fp32 ({len(found.chosen)}): {chosen}", ""]
    out += _rows_table(sweep, job, found)
    out += _confirmation_lines(found)
    out += _group_lines(found)
    out += _ranking_table(found)
    out += _steps_table(found)
    out += _exclusion_comparison(sweep, job)
    if (job.path / SENSITIVITY_PLOT).is_file():
        out += [f"![Sensitivity and search of {job.name}]({job.name}/{SENSITIVITY_PLOT})", ""]
    return out


def _chosen(found: ExclusionSearchResult) -> SearchStep | None:
    """The step whose set the job uses (None for searches that did not record it)."""
    return next((s for s in found.steps if s.step == found.chosen_step), None)


def _at(bound: float, confidence: float | None) -> str:
    return f"{bound:+.4f} " + (f"(confidence {confidence:g})" if confidence else "(measured)")


def _objective_sentence(found: ExclusionSearchResult) -> str:
    if found.objective != "speed":
        return (
            f"Objective `{found.objective}`: of the sets within the budget, the one keeping the fewest "
            "nodes in fp32."
        )
    speed = found.chosen_speedup
    return (
        "Objective `speed`: of the sets within the budget, the fastest, every step timed against the fp32 "
        f"model in alternating windows ({_timing_shape(found)})"
        + (f"; the chosen set ran at {speed:.2f}x fp32." if speed is not None else ".")
    )


def _timing_shape(found: ExclusionSearchResult) -> str:
    shape = found.timing_shape
    where = f"batch size {shape[0]}, input length {shape[1]}" if shape and len(shape) == 2 else "its shape"
    seconds = f", {found.speed_seconds:g} s per model and candidate" if found.speed_seconds else ""
    return where + seconds


def _rows_table(sweep: Sweep, job: JobRecord, found: ExclusionSearchResult) -> list[str]:
    """Which rows chose the set, confirmed it and report it: their counts, drops and bounds."""
    if found.search_rows is None:
        return []  # a search from before the split: every held-out row chose the set
    step = _chosen(found)
    rows = [
        [
            "chose the set (search rows)",
            str(found.search_rows),
            f"{step.f1_drop:+.4f}" if step else "not recorded",
            _at(step.f1_drop_bound, found.confidence) if step else "not recorded",
        ]
    ]
    check = next((c for c in found.confirmations if c.step == found.chosen_step), None)
    check = check or (found.confirmations[-1] if found.confirmations else None)
    if check is None:
        rows.append(["confirmed it", "none (exclusion.confirm_fraction=0)", "", ""])
    else:
        rows.append(
            [
                "confirmed it",
                str(found.confirm_rows),
                f"{check.f1_drop:+.4f}",
                _at(check.f1_drop_bound, check.confidence),
            ]
        )
    assert job.results is not None
    metric = sweep.task.BUDGET_METRIC
    measured = job.results.eval_drop
    if measured is not None:
        bound = _at(measured.bound, measured.confidence) + (
            "" if measured.meets_budget else " **over the budget**"
        )
        rows.append(["reports it (evaluation split)", str(measured.rows), f"{measured.drop:+.4f}", bound])
    else:  # a job from before schema 6
        drop = getattr(job.results.original, metric) - getattr(job.results.quantized, metric)
        count = job.results.dataset.get("eval_samples", job.results.original.num_samples)
        rows.append(["reports it (evaluation split)", str(count), f"{drop:+.4f}", "not computed"])
    return [
        table(["rows", "count", "F1 drop", "bound"], rows),
        "",
        f"The evaluation split's drop is in `{metric}`, original minus optimized, as in the tables above.",
        "",
    ]


def _confirmation_lines(found: ExclusionSearchResult) -> list[str]:
    """Every set scored on the confirmation rows, and whether the search fell back from its first choice."""
    if not found.confirmations:
        return []
    rows = [
        [
            str(c.step),
            str(c.nodes_kept),
            f"{c.fp32_f1:.4f}",
            f"{c.f1:.4f}",
            f"{c.f1_drop:+.4f}",
            f"{c.f1_drop_bound:+.4f}",
            f"{c.confidence:g}" if c.confidence else "measured",
            "yes" if c.meets_budget else "**no**",
        ]
        for c in found.confirmations
    ]
    out = [
        f"Confirmed on {found.confirm_rows} held-out rows the search never scored on, at a confidence corrected "
        "for the number of sets tried:",
        "",
        table(["step", "kept in fp32", "fp32 F1", "F1", "drop", "bound", "confidence", "confirmed"], rows),
        "",
    ]
    first = found.confirmations[0]
    if not first.meets_budget:
        held = next((c for c in found.confirmations if c.meets_budget), None)
        then = (
            f"the search fell back to step {held.step}'s set ({held.nodes_kept} nodes kept), which held."
            if held
            else f"the search fell back to step {found.chosen_step}'s set, the smallest bound of the "
            f"{len(found.confirmations)} tried, none of which held: the job misses the budget."
        )
        out += [
            f"Step {first.step}'s set, the search's first choice, did not hold on the confirmation rows; {then}",
            "",
        ]
    return out


def _group_lines(found: ExclusionSearchResult) -> list[str]:
    """objective=speed: the node groups timed before the search, and which of them start kept."""
    if found.objective != "speed":
        return []
    out = [
        f"Timing: every candidate set at {_timing_shape(found)}. Before the search, "
        f"{len(found.groups)} groups of nodes were timed kept in fp32 against the starting set "
        f"({found.group_seconds:.0f} s): a speed-up above 1 means the model ran faster with the group in fp32, "
        "so it is slower quantized and was kept in fp32 from the start.",
        "",
    ]
    if not found.groups:
        return out
    rows = [
        [
            f"`{g.name}`",
            g.kind,
            str(len(g.nodes)),
            f"{g.speedup:.2f}x ({g.speedup_min:.2f}-{g.speedup_max:.2f})",
            "yes" if g.kept else "",
        ]
        for g in found.groups
    ]
    header = ["group", "kind", "nodes", "speed-up in fp32 (windows)", "kept in fp32 (slower quantized)"]
    return [*out, table(header, rows), ""]


def _ranking_table(found: ExclusionSearchResult) -> list[str]:
    ranked = sorted((r for r in found.ranking if r.rank is not None), key=lambda r: r.rank or 0)
    rows = [
        [
            str(r.rank),
            f"`{r.node}`",
            r.op_type,
            f"{r.sqnr_db:.1f}",
            f"`{r.tensor}`",
            "yes" if r.node in found.chosen else "",
        ]
        for r in ranked[:_RANKING_ROWS]
    ]
    return [table(["rank", "node", "op type", "SQNR (dB)", "worst tensor", "kept"], rows), ""]


def _speed_cell(speedup: float | None, low: float | None, high: float | None) -> str:
    if speedup is None:
        return ""
    spread = f" ({low:.2f}-{high:.2f})" if low is not None and high is not None else ""
    return f"{speedup:.2f}x{spread}"


def _steps_table(found: ExclusionSearchResult) -> list[str]:
    """Every search step; the timed ones with their speed-up, the chosen one marked."""
    timed = any(step.speedup is not None for step in found.steps)
    rows = []
    for step in found.steps:
        changed = step.changed
        shown = ", ".join(f"`{n}`" for n in changed[:2]) + (
            f" and {len(changed) - 2} more" if len(changed) > 2 else ""
        )
        rows.append(
            [
                f"{step.step} **chosen**" if step.step == found.chosen_step else str(step.step),
                step.phase,
                str(len(step.nodes)),
                shown,
                f"{step.f1:.4f}",
                f"{step.f1_drop:+.4f}",
                f"{step.f1_drop_bound:+.4f}",
                "yes" if step.meets_budget else "no",
                *([_speed_cell(step.speedup, step.speedup_min, step.speedup_max)] if timed else []),
                f"{step.seconds:.1f}",
            ]
        )
    header = ["step", "phase", "kept", "changed", "held-out F1", "drop", "drop charged", "within budget"]
    header += [*(["speed-up (windows)"] if timed else []), "seconds"]
    return [table(header, rows), ""]


# the order the comparison lists exclusions in: no exclusion, the hand-written list, the searches
_EXCLUSION_ORDER = ("none", "sensitive", "auto (fewest_fp32)", "auto (speed)")


def _exclusion_label(job: JobRecord) -> str:
    """A job's exclusion as the comparison names it: its group choice, and a search's objective."""
    assert job.results is not None
    found = job.results.exclusion_search
    default = "auto" if found else "nodes" if job.config.get("exclusion.nodes") else "none"
    choice = job.results.choices.get("exclusion") or default
    return f"{choice} ({found.objective})" if found else choice


def _but_exclusion(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != "exclusion" and not k.startswith("exclusion.")}


def _same_but_exclusion(job: JobRecord, other: JobRecord) -> bool:
    """Whether two jobs ran the same configuration (group choices and settings) apart from the exclusion."""
    assert job.results is not None and other.results is not None
    return _but_exclusion(job.results.choices) == _but_exclusion(other.results.choices) and _but_exclusion(
        job.config
    ) == _but_exclusion(other.config)


def _exclusion_comparison(sweep: Sweep, job: JobRecord) -> list[str]:
    """This job against the sweep's jobs that differ from it in the exclusion only."""
    peers = [other for other in sweep.finished if other is job or _same_but_exclusion(job, other)]
    if len(peers) < 2:
        return []

    def order(record: JobRecord) -> tuple[int, str]:
        label = _exclusion_label(record)
        rank = _EXCLUSION_ORDER.index(label) if label in _EXCLUSION_ORDER else len(_EXCLUSION_ORDER)
        return rank, record.name

    metric = sweep.task.BUDGET_METRIC
    rows = []
    for other in sorted(peers, key=order):
        results = other.results
        assert results is not None
        graph = results.graph
        speeds = "; ".join(
            f"bs{s.batch_size}/len{s.input_length}: "
            + _speed_cell(
                s.speedup, min(s.window_speedups, default=None), max(s.window_speedups, default=None)
            )
            for s in results.timing.shapes
        )
        rows.append(
            [
                f"`{_exclusion_label(other)}`",
                f"`{other.name}`" + (" (this job)" if other is job else ""),
                f"{graph.candidate_nodes - graph.nodes_quantized} of {graph.candidate_nodes}",
                f"{getattr(results.quantized, metric) - getattr(results.original, metric):+.4f}",
                speeds or "not timed",
            ]
        )
    header = [
        "exclusion",
        "job",
        "candidates kept in fp32",
        f"{metric} change (evaluation split)",
        "speed-up (windows)",
    ]
    return [
        "The jobs of this sweep that differ from this one in the exclusion only:",
        "",
        table(header, rows),
        "",
        "Each speed-up divides by an fp32 timing taken within that job (alternating windows in its own "
        "process, at that job's load on the machine), so the speed-ups compare across jobs only roughly.",
        "",
    ]
