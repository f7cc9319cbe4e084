"""One job's exclusion search, from its settings to its record in ``results.json``.

The order of the work a job's search does (rank, time groups, search, confirm) and the
record it leaves, in one place: the stage (:mod:`quantsweep.stages.search`) hands it the
job's model, ranges and rows and caches what it returns; the parts it calls know nothing
of settings or records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantsweep.config import ExclusionConfig, SearchObjective
from quantsweep.exclusion_search.candidates import CandidateModels, HeldOutRows, candidate_nodes
from quantsweep.exclusion_search.search import SearchBudget, SearchOutcome, confirm, search
from quantsweep.exclusion_search.speed import SpeedProbe, kept_nodes
from quantsweep.exclusion_search.statistics import confirmation_confidence, holdout_rows_needed, resolution
from quantsweep.records import Confirmation, ExclusionSearchResult, NodeSensitivity, SearchStep

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from quantsweep.quantize import QuantizationRequest
    from quantsweep.sessions import SessionSettings
    from quantsweep.tasks import Task

# the package's one logger: the job log names the search as it always has
log = logging.getLogger(__package__)


def find_exclusions(
    settings: ExclusionConfig,
    start_nodes: Sequence[str],
    model_path: Path,
    request: QuantizationRequest,
    ranges: Any,
    model_config: PretrainedConfig,
    rows: HeldOutRows,
    sessions: SessionSettings,
    scratch: Path,
    seed: int,
    task: Task,
    probe: SpeedProbe | None = None,
) -> ExclusionSearchResult:
    """Rank, time groups, search, confirm; ``probe`` times for objective=speed, ``scratch`` holds models."""
    import tempfile

    started = time.perf_counter()
    candidates = candidate_nodes(model_path, request.operators)
    names = {name for name, _, _ in candidates}
    starting = [n for n in start_nodes if n in names]
    search_rows, confirm_rows = rows.split(settings.confirm_fraction)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".exclusion-search-") as tmp:
        models = CandidateModels(model_path, request, ranges, model_config, sessions, task, Path(tmp))
        fp32_f1, score = models.scorer(search_rows, settings.confidence, seed)
        ranking = models.rank(candidates, search_rows, settings.sensitivity_samples)
        sensitivity_seconds = round(time.perf_counter() - started, 3)
        timing = probe if settings.objective is SearchObjective.speed else None
        budget = SearchBudget(settings.max_f1_drop, settings.max_evaluations, settings.max_minutes)
        groups = models.time_groups(timing, ranking, starting, budget.deadline(started)) if timing else []
        group_seconds = round(time.perf_counter() - started - sensitivity_seconds, 3)
        outcome = search(
            ranking,
            starting,
            settings.strategy,
            budget,
            fp32_f1,
            score,
            started,
            settings.objective,
            models.timer(timing) if timing else None,
            fixed=kept_nodes(groups),
            rows=len(search_rows.encoded),
        )
        chosen, confirmations = _confirm(models, outcome, confirm_rows, settings, seed)
    result = _record(settings, starting, rows, search_rows, confirm_rows, ranking, outcome, fp32_f1)
    result.chosen, result.chosen_f1, result.chosen_step = chosen.nodes, chosen.f1, chosen.step
    result.meets_budget = confirmations[-1].meets_budget if confirmations else chosen.meets_budget
    result.confirmations = confirmations
    _scale_resolutions(result)
    if timing:
        result.objective = settings.objective.value
        result.timing_shape, result.speed_seconds = timing.shape, timing.seconds
        result.groups, result.group_seconds = groups, group_seconds
    result.sensitivity_seconds = sensitivity_seconds
    result.seconds = round(time.perf_counter() - started, 3)
    _announce(result)
    return result


def _record(
    settings: ExclusionConfig,
    starting: list[str],
    rows: HeldOutRows,
    search_rows: HeldOutRows,
    confirm_rows: HeldOutRows | None,
    ranking: list[NodeSensitivity],
    outcome: SearchOutcome,
    fp32_f1: float,
) -> ExclusionSearchResult:
    """The search's record with the objective's pick; the caller fills in confirmation, speed and times."""
    best = outcome.best
    return ExclusionSearchResult(
        strategy=settings.strategy.value,
        max_f1_drop=settings.max_f1_drop,
        confidence=settings.confidence,
        start_from=list(settings.start_from),
        start_nodes=sorted(starting),
        holdout_samples=len(rows.data),
        holdout_fingerprint=rows.data.fingerprint,
        sensitivity_samples=len(search_rows.encoded[: settings.sensitivity_samples]),
        fp32_f1=round(fp32_f1, 6),
        ranking=ranking,
        steps=outcome.steps,
        chosen=best.nodes,
        chosen_f1=best.f1,
        meets_budget=best.meets_budget,
        stopped_by=outcome.stopped_by,
        evaluations=len(outcome.steps),
        seconds=0.0,
        sensitivity_seconds=0.0,
        objective=SearchObjective.fewest_fp32.value,
        search_rows=len(search_rows.encoded),
        confirm_rows=len(confirm_rows.encoded) if confirm_rows else 0,
        chosen_step=best.step,
        resolution=outcome.resolution,
    )


def _scale_resolutions(result: ExclusionSearchResult) -> None:
    """The confirmation rows' resolution (from the first set confirmed), and both in held-out rows to ask for."""
    if result.confirmations:
        first = result.confirmations[0]
        result.confirm_resolution = resolution(
            first.step, result.confirm_rows, first.f1_drop, first.f1_drop_bound, result.max_f1_drop
        )
    for found, rows in (
        (result.resolution, result.search_rows),
        (result.confirm_resolution, result.confirm_rows),
    ):
        if found is not None and rows:
            found.holdout_samples_needed = holdout_rows_needed(
                found.rows_needed, result.holdout_samples, rows
            )
    confirming = result.confirm_resolution
    if confirming is not None and not confirming.resolved:
        log.warning("Exclusion search: %s", confirming.warning("confirmation", result.max_f1_drop))


def _confirm(
    models: CandidateModels,
    outcome: SearchOutcome,
    rows: HeldOutRows | None,
    settings: ExclusionConfig,
    seed: int,
) -> tuple[SearchStep, list[Confirmation]]:
    """The chosen step: the best the search found, confirmed on rows it never scored on when there are any."""
    if rows is None:
        return outcome.choices[0], []
    confidence = confirmation_confidence(settings.confidence)
    fp32_f1, score = models.scorer(rows, confidence, seed)
    return confirm(outcome.choices, score, fp32_f1, settings.max_f1_drop, confidence)


def _announce(result: ExclusionSearchResult) -> None:
    speed = result.chosen_speedup
    (log.info if result.meets_budget else log.warning)(
        "Exclusion search (objective %s) chose %d nodes to keep in fp32 (held-out F1 %.4f vs fp32 %.4f; %s%s)%s "
        "in %d steps, %.0f s.",
        result.objective,
        len(result.chosen),
        result.chosen_f1,
        result.fp32_f1,
        "within the budget" if result.meets_budget else f"NOT within the budget of {result.max_f1_drop}",
        ", confirmed on rows the search never scored on"
        if result.meets_budget and result.confirmations
        else "",
        f", {speed:.2f}x fp32" if speed is not None else "",
        result.evaluations,
        result.seconds,
    )
