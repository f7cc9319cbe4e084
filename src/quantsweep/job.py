"""One quantization job, from a typed config to a finished job directory.

Knows nothing of Hydra: it takes a :class:`RunConfig`, a job directory and the config
as plain data to record, so tests and other launchers can call it directly. The work is
in the stages (:mod:`quantsweep.stages`, one module each); :func:`execute` runs them in order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from quantsweep.config import RunConfig
from quantsweep.files import EXCLUSION_FILE, RESULTS_FILE
from quantsweep.job_folder import (
    digest,
    finish_superseding,
    identity_of_run,
    locked,
    previous_run,
    restore_saved_config,
    supersede,
)
from quantsweep.records import window_spread
from quantsweep.results import JobResults
from quantsweep.stages import (
    assemble,
    calibrate,
    evaluate,
    export,
    load,
    plan,
    quantize,
    search,
    time,
)
from quantsweep.stages.context import JobRun
from quantsweep.tasks import get

log = logging.getLogger(__name__)


@dataclass
class JobOutcome:
    results: dict[str, Any]
    skipped: bool


def run_job(
    cfg: RunConfig,
    job_dir: Path,
    config_dict: dict[str, Any],
    choices: dict[str, str],
    reproduces: str | None = None,
    config_files: dict[Path, str] | None = None,
) -> JobOutcome:
    """Run the job into ``job_dir`` unless the folder holds this very job's results (and ``force`` is off).

    Under the folder's lock: results of another config, other code or another preset are
    moved aside (naming what differs) before any work, as are those of a forced rerun.
    ``reproduces`` names the job folder or MLflow run this job reruns (quantsweep-reproduce);
    ``config_files`` are the files that record this run's config (Hydra's ``.hydra/``), put
    back if another run replaced them meanwhile.
    """
    identity = identity_of_run(config_dict)
    with locked(job_dir):
        for path in finish_superseding(job_dir):
            log.warning("Completed moving an interrupted run's files aside, to %s", path)
        previous = previous_run(job_dir, identity, cfg.force)
        if previous.reusable:
            assert previous.results is not None
            log.info("Skipping %s: its %s is this job's (force=true reruns it).", job_dir, RESULTS_FILE)
            return JobOutcome(results=previous.results, skipped=True)
        if previous.to_supersede:
            moved = supersede(job_dir, previous)
            log.warning(
                "%s: %s; its files are moved to %s and the job runs again.", job_dir, previous.reason, moved
            )
        try:
            results = replace(
                execute(cfg, job_dir, config_dict, choices),
                reproduces=reproduces,
                job_digest=digest(identity),
            )
        finally:  # finished or failed, the folder's .hydra/ is this run's, not a refused one's
            restore_saved_config(config_files or {})
        path = results.write(job_dir)
    log.info("Wrote %s", path)
    print(summary_table(results))
    return JobOutcome(results=results.to_dict(), skipped=False)


def execute(cfg: RunConfig, job_dir: Path, config: dict[str, Any], choices: dict[str, str]) -> JobResults:
    """The job's stages in order; each times itself, and the cached ones go through ``job``'s cache."""
    job = JobRun.start(cfg, job_dir)
    inputs = load.run(job)  # cheap checks first: a bad label or shape fails before the export
    exported = export.run(job, inputs)
    planned = plan.run(job, inputs, exported)
    calibration = calibrate.run(job, inputs, exported, planned)
    planned, found = search.run(job, inputs, exported, planned, calibration)
    quantized = quantize.run(job, inputs, exported, planned, calibration)
    evaluations = evaluate.run(job, inputs, exported, quantized, planned)
    timing = time.run(job, inputs, evaluations)
    return assemble.run(
        job, config, choices, inputs, exported, planned, calibration, found, quantized, evaluations, timing
    )


def summary_table(results: JobResults) -> str:
    """The console summary: original vs quantized, metrics then timings."""
    lines = [f"quantsweep: {' '.join(f'{k}={v}' for k, v in results.choices.items())}"]
    if results.graph.nothing_quantized:
        lines.append(f"  NOTE: {results.graph.note}")
    else:
        lines.append(
            f"  {results.graph.note}  size {results.graph.original_size_mb:.2f} -> {results.graph.quantized_size_mb:.2f} MB"
        )
    found = results.exclusion_search
    if found is not None:
        verdict = "within" if found.meets_budget else "NOT within"
        confirmed = (
            " (confirmed on rows the search never scored on)"
            if found.confirmations and found.meets_budget
            else ""
        )
        speed = f", {found.chosen_speedup:.2f}x fp32 while searching" if found.chosen_speedup else ""
        lines.append(
            f"  exclusion=auto ({found.objective}) kept {len(found.chosen)} nodes in fp32: held-out F1 "
            f"{found.chosen_f1:.4f} vs fp32 {found.fp32_f1:.4f}, {verdict} the budget of {found.max_f1_drop}"
            f"{confirmed}{speed} ({found.evaluations} steps, {found.seconds:.0f} s; list in {EXCLUSION_FILE})"
        )
        if results.eval_drop is not None:
            drop = results.eval_drop
            lines.append(
                f"  evaluation split ({drop.rows} rows): {drop.metric} drop {drop.drop:+.4f}, bound {drop.bound:+.4f} "
                f"at confidence {drop.confidence}: {'within' if drop.meets_budget else 'NOT within'} the budget"
            )
        lines += [f"  NOTE: {warning}" for warning in found.resolution_warnings()]
    if results.original.num_truncated:
        lines.append(f"  NOTE: {results.original.truncation_note(results.dataset.get('eval_max_length'))}")
    names = get(results.task).METRICS
    width = max(12, *(len(name) + 1 for name in names))
    lines.append(f"  {'metric':<{width}}{'original':>10}{'quantized':>11}{'delta':>9}")
    for name in names:
        a, b = getattr(results.original, name), getattr(results.quantized, name)
        lines.append(f"  {name:<{width}}{a:>10.4f}{b:>11.4f}{b - a:>+9.4f}")
    lines.append(
        f"  {'batch x len':<12}{'orig ms':>10}{'quant ms':>11}{'speed-up':>9}  (per window: min / median / max)"
    )
    for shape in results.timing.shapes:
        low, median, high = window_spread(shape.window_speedups)
        spread = f"{low:.2f} / {median:.2f} / {high:.2f}"
        lines.append(
            f"  {f'{shape.batch_size} x {shape.input_length}':<12}{shape.original.mean_ms:>10.2f}"
            f"{shape.quantized.mean_ms:>11.2f}{shape.speedup:>8.2f}x  ({spread})"
        )
    return "\n".join(lines)
