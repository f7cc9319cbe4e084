"""Stage ``search``: ``exclusion=auto``'s search for the nodes to keep in fp32, cached.

Scores candidate sets on held-out rows (never the evaluation split), times them against
fp32 for the speed objective, and returns the plan with the chosen set, beside the
search's record; writes ``exclusion.yaml`` (the set as a reusable config) and the
search's plot into the job folder.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantsweep.config import RunConfig
from quantsweep.files import EXCLUSION_FILE, SENSITIVITY_PLOT, atomic_write_text
from quantsweep.records import ExclusionSearchResult
from quantsweep.stages.calibrate import CACHE_KIND as CALIBRATION
from quantsweep.stages.calibrate import Calibration
from quantsweep.stages.context import JobRun
from quantsweep.stages.load import Inputs
from quantsweep.stages.plan import Plan

if TYPE_CHECKING:
    from quantsweep.exclusion_search.candidates import HeldOutRows
    from quantsweep.exclusion_search.speed import SpeedProbe
    from quantsweep.export import ExportedModel
    from quantsweep.sessions import SessionSettings

NAME = "search"
CACHE_KIND = "exclusion_search"
# every module of the exclusion_search package by name: code_digest hashes <module>.py files
CODE = (
    __name__,
    "quantsweep.batching",
    "quantsweep.data",
    "quantsweep.exclusion_search",
    "quantsweep.quantize",
    "quantsweep.sessions",
    "quantsweep.timing",
)
PACKAGES = ("quantsweep", "onnxruntime")  # and the task's scoring library (Task.PACKAGES)
_SEARCH_FILE = "search.json"

log = logging.getLogger("quantsweep.job")


def key_parts(
    cfg: RunConfig,
    calibration_key: str,
    plan: Plan,
    holdout_fingerprint: str,
    batch_size: int,
    packages: Mapping[str, str | None],
) -> dict[str, Any]:
    """Calibration, rows, settings, starting set and request: the same ones find the same set.

    A time budget (``exclusion.max_minutes``) makes the outcome depend on this machine's
    speed, so such a search gets a key of its own and is never reused. The speed objective
    times candidates on this machine: its key names the CPU, its flags and the threads, so
    that a shared cache never hands one machine's choice to another.
    """
    from quantsweep.config import SearchObjective
    from quantsweep.environment import cpu_flags, cpu_model
    from quantsweep.exclusion_search import SEARCH_FORMAT
    from quantsweep.sessions import SessionSettings

    parts: dict[str, Any] = {
        "calibration": calibration_key,
        "max_length": plan.max_length,
        "packages": dict(packages),
        "format": SEARCH_FORMAT,
        "seed": cfg.seed,
        "holdout": holdout_fingerprint,
        "settings": {k: getattr(v, "value", v) for k, v in asdict(cfg.exclusion).items()},
        "start_nodes": sorted(plan.excluded),
        "request": {k: v for k, v in asdict(plan.request).items() if k != "nodes_to_exclude"},
        "batch_size": batch_size,
    }
    if cfg.exclusion.objective is SearchObjective.speed:
        parts["machine"] = {
            "cpu": cpu_model(),
            "flags": sorted(cpu_flags()),
            "threads": SessionSettings.for_threads(cfg.benchmark.threads).intra_op_threads,
            "timing_shape": timing_shape(cfg),
        }
    if cfg.exclusion.max_minutes is not None:
        parts["not_reusable"] = time.time_ns()
    return parts


def timing_shape(cfg: RunConfig) -> list[int]:
    """[batch, length] the speed objective times at: the configured one, or batch 1 at the longest length."""
    return list(cfg.exclusion.timing_shape or [1, max(cfg.benchmark.input_lengths)])


def run(
    job: JobRun, inputs: Inputs, exported: ExportedModel, plan: Plan, calibration: Calibration | None
) -> tuple[Plan, ExclusionSearchResult | None]:
    """The plan with the chosen nodes kept in fp32, and the search's record (None: no search)."""
    if not job.cfg.exclusion.auto:
        return plan, None
    assert inputs.holdout_data is not None and calibration is not None
    with job.clock(NAME):
        found = _search(job, inputs, exported, plan, calibration)
    write_exclusion_file(job.job_dir, found)
    plot_search(found, job.job_dir / SENSITIVITY_PLOT)
    return plan.excluding(list(found.chosen)), found


def _search(
    job: JobRun, inputs: Inputs, exported: ExportedModel, plan: Plan, calibration: Calibration
) -> ExclusionSearchResult:
    from quantsweep.exclusion_search.candidates import HeldOutRows
    from quantsweep.exclusion_search.find import find_exclusions
    from quantsweep.sessions import SessionSettings

    cfg, data = job.cfg, inputs.holdout_data
    assert data is not None
    rows: HeldOutRows = HeldOutRows(
        data=data,
        encoded=list(job.task.encode(inputs.tokenizer, data, plan.max_length)),
        id2label=inputs.id2label,
        batch_size=cfg.eval_batch_size,
        pad_token_id=inputs.pad_id,
        input_names=list(exported.input_names),
        sensitivity_batch_size=cfg.calibration.batch_size,
    )

    settings = SessionSettings.for_threads(cfg.benchmark.threads)

    def build(folder: Path) -> None:
        found = find_exclusions(
            cfg.exclusion,
            plan.excluded,
            exported.onnx_path,
            plan.request,
            calibration.ranges,
            inputs.model_config,
            rows,
            settings,
            job.job_dir,
            cfg.seed,
            job.task,
            _probe(cfg, inputs, rows.input_names, settings),
        )
        atomic_write_text(folder / _SEARCH_FILE, json.dumps(asdict(found), indent=1) + "\n")

    parts = key_parts(
        cfg,
        job.key(CALIBRATION),
        plan,
        data.fingerprint,
        rows.batch_size,
        job.packages(*PACKAGES, *job.task.PACKAGES),
    )
    with job.cached(CACHE_KIND, job.code(CODE), parts, build, "Exclusion search") as folder:
        return ExclusionSearchResult.from_dict(
            json.loads((folder / _SEARCH_FILE).read_text(encoding="utf-8"))
        )


def _probe(cfg: RunConfig, inputs: Inputs, input_names: list[str], settings: SessionSettings) -> SpeedProbe:
    """Times candidates as the time stage will: the job's session settings and synthetic rows."""
    from quantsweep.exclusion_search.speed import SpeedProbe
    from quantsweep.timing import synthetic_inputs

    batch, length = timing_shape(cfg)
    rows = synthetic_inputs(
        input_names, batch, length, len(inputs.tokenizer), list(inputs.tokenizer.all_special_ids), cfg.seed
    )
    return SpeedProbe(rows, cfg.exclusion.speed_seconds, settings)


def write_exclusion_file(job_dir: Path, found: ExclusionSearchResult) -> Path:
    """The chosen nodes as a config group file and an override: reuse them without searching."""
    import shlex

    override = shlex.quote(f"exclusion.nodes=[{','.join(found.chosen)}]")
    verdict = "within" if found.meets_budget else "NOT within"
    lines = [
        "# @package exclusion",
        f"# The nodes exclusion=auto kept in fp32: held-out F1 {found.chosen_f1:.4f} against fp32 "
        f"{found.fp32_f1:.4f}, {verdict} the budget of {found.max_f1_drop}.",
        "# Reuse them without searching: put this file in a config folder as exclusion/<name>.yaml",
        "# (quantsweep hydra.searchpath=[file://that/folder] exclusion=<name>), or pass",
        f"#   exclusion=nodes {override}",
        "nodes:" + ("" if found.chosen else " []"),
        *(f"- {json.dumps(node)}" for node in found.chosen),
    ]
    path = job_dir / EXCLUSION_FILE
    atomic_write_text(path, "\n".join(lines) + "\n")
    log.info("Chosen exclusions written to %s; reuse them with: exclusion=nodes %s", path, override)
    return path


def plot_search(found: ExclusionSearchResult, path: Path) -> None:
    """The search's plot beside its results; a plotting failure costs the plot, not the job."""
    from quantsweep.plots import plot_sensitivity

    try:
        plot_sensitivity(found, path)
    except Exception as error:  # matplotlib missing a font or backend must not fail a finished search
        log.warning("Could not draw %s (%s: %s)", path, type(error).__name__, error)
