"""One quantization job, from a typed config to a finished job directory.

Knows nothing of Hydra: it takes a :class:`RunConfig`, a job directory and the config
as plain data to record, so tests and other launchers can call it directly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantsweep.cache import ArtifactCache, CacheUse
from quantsweep.config import ConfigError, RunConfig
from quantsweep.results import (
    EXCLUSION_FILE,
    METRICS,
    RESULTS_FILE,
    SENSITIVITY_PLOT,
    EvaluationResult,
    ExclusionSearchResult,
    JobResults,
    atomic_write_text,
    read_results,
    window_spread,
)

if TYPE_CHECKING:
    from quantsweep.exclusion_search import HeldOutRows
    from quantsweep.quantize import QuantizationRequest

log = logging.getLogger(__name__)

# the packages whose versions can change an export (and so everything computed from it)
_EXPORT_PACKAGES = ("quantsweep", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime")
# The quantsweep modules whose code computes each cache entry: their source is part of its key,
# since the package version stays the same while the code changes.
_CODE = {
    "export": ("quantsweep.export",),
    "calibration": ("quantsweep.data", "quantsweep.quantize"),
    "original_evaluation": ("quantsweep.data", "quantsweep.evaluate", "quantsweep.sessions"),
    "exclusion_search": (
        "quantsweep.data",
        "quantsweep.evaluate",
        "quantsweep.exclusion_search",
        "quantsweep.quantize",
        "quantsweep.sensitivity",
        "quantsweep.sessions",
    ),
}
_EVALUATION_FILE = "evaluation.json"
_SEARCH_FILE = "search.json"


@dataclass
class JobOutcome:
    results: dict[str, Any]
    skipped: bool


def finished(job_dir: Path) -> bool:
    return (job_dir / RESULTS_FILE).is_file()


def run_job(
    cfg: RunConfig,
    job_dir: Path,
    config_dict: dict[str, Any],
    choices: dict[str, str],
    reproduces: str | None = None,
) -> JobOutcome:
    """Run the job into ``job_dir`` unless it already finished there (and ``force`` is off).

    ``reproduces`` names the job folder or MLflow run this job reruns (quantsweep-reproduce).
    """
    if finished(job_dir) and not cfg.force:
        log.info("Skipping %s: %s exists (force=true reruns it).", job_dir, RESULTS_FILE)
        return JobOutcome(results=read_results(job_dir), skipped=True)
    results = replace(execute(cfg, job_dir, config_dict, choices), reproduces=reproduces)
    path = results.write(job_dir)
    log.info("Wrote %s", path)
    print(summary_table(results))
    return JobOutcome(results=results.to_dict(), skipped=False)


class PhaseClock:
    """Seconds spent per step of a job, for results.json and the sweep-overhead benchmark."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[phase] = round(self.seconds.get(phase, 0.0) + elapsed, 3)


def _log_cache_use(what: str, use: CacheUse) -> None:
    if use.hit:
        log.info(
            "%s: from the cache (computed in %.1f s by an earlier job; key %s)",
            what,
            use.seconds,
            use.key[:12],
        )
    elif use.path is not None:
        log.info("%s: computed in %.1f s and cached (key %s)", what, use.seconds, use.key[:12])


def place(source: Path, target: Path) -> None:
    """Put a cached file into the job folder: a hard link where possible (no copy), else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def model_identity(
    model_name_or_path: str, resolved_revision: str | None, revision: str | None
) -> dict[str, Any]:
    """What a model's export depends on: a local folder's content, or a Hub id at its resolved commit."""
    from quantsweep.cache import folder_digest

    local = Path(model_name_or_path)
    if local.is_dir():
        return {"local_content": folder_digest(local)}
    return {"hub_id": model_name_or_path, "revision": resolved_revision or revision}


def execute(
    cfg: RunConfig, job_dir: Path, config_dict: dict[str, Any], choices: dict[str, str]
) -> JobResults:
    # Heavy imports live here so that `quantsweep --help` and config errors stay fast.
    import onnx

    from quantsweep.data import encode_sentences, held_out_rows, load_split, sample_rows
    from quantsweep.environment import code_digest, collect_environment, package_versions
    from quantsweep.evaluate import check_labels, evaluate_model
    from quantsweep.exclusion import ResolvedExclusion, resolve_exclusions
    from quantsweep.exclusion_search import HeldOutRows
    from quantsweep.export import ONNX_FILE, export_model, load_exported, load_model_config, load_tokenizer
    from quantsweep.quantize import (
        CalibrationBatches,
        QuantizationRequest,
        build_quantization_config,
        calibrate,
        graph_facts,
        load_ranges,
        quantization_facts,
        quantize_model,
        save_ranges,
    )
    from quantsweep.sessions import SessionSettings, create_session
    from quantsweep.timing import time_models

    wall_start = time.perf_counter()
    clock = PhaseClock()
    job_dir.mkdir(parents=True, exist_ok=True)
    cache = ArtifactCache(Path(cfg.cache_dir) if cfg.cache else None)
    cache_uses: dict[str, CacheUse] = {}
    versions = package_versions()

    # Cheap checks first: model config, tokenizer and data, before the export.
    with clock("load"):
        model_config = load_model_config(cfg.model_name_or_path, cfg.revision)
        tokenizer = load_tokenizer(cfg.model_name_or_path, cfg.revision)
        check_input_lengths(cfg, model_config, tokenizer)
        eval_data = load_split(cfg.dataset, cfg.dataset.eval_split, cfg.dataset.max_eval_samples)
        log.info(
            "Evaluation data: %d sentences of %s (split %s)",
            len(eval_data),
            eval_data.source,
            eval_data.split,
        )
        id2label = {int(k): str(v) for k, v in (model_config.id2label or {}).items()}
        check_labels(id2label, eval_data.label_names, f"{eval_data.source} ({eval_data.split})")
        calibration_data = None
        holdout_data = None
        if cfg.is_static:
            assert cfg.dataset.calibration_split is not None
            full = load_split(cfg.dataset, cfg.dataset.calibration_split)
            calibration_data = sample_rows(full, cfg.calibration.num_calibration_samples, cfg.seed)
            if len(calibration_data) < cfg.calibration.num_calibration_samples:
                log.warning(
                    "calibration.num_calibration_samples=%d but split %s has only %d rows; using all of them.",
                    cfg.calibration.num_calibration_samples,
                    cfg.dataset.calibration_split,
                    len(calibration_data),
                )
            if cfg.exclusion.auto:
                holdout_split = cfg.exclusion.holdout_split
                if holdout_split in (None, cfg.dataset.calibration_split):
                    holdout_data = held_out_rows(
                        full, len(calibration_data), cfg.exclusion.holdout_samples, cfg.seed
                    )
                    check_holdout(cfg, len(full), len(calibration_data), len(holdout_data))
                else:
                    assert holdout_split is not None
                    other = load_split(cfg.dataset, holdout_split)
                    holdout_data = sample_rows(other, cfg.exclusion.holdout_samples, cfg.seed)
                    check_holdout(cfg, len(other), 0, len(holdout_data))

    with clock("export"):
        export_parts = {
            "model": model_identity(
                cfg.model_name_or_path, getattr(model_config, "_commit_hash", None), cfg.revision
            ),
            "task": cfg.task,
            "opset": cfg.framework_args.opset,
            "optimization_level": cfg.framework_args.optimization_level,
            "packages": {name: versions.get(name) for name in _EXPORT_PACKAGES},
            "code": code_digest(_CODE["export"]),
        }

        def build_export(folder: Path) -> None:
            log.info(
                "Exporting %s to ONNX (opset %s)",
                cfg.model_name_or_path,
                cfg.framework_args.opset or "default",
            )
            export_model(
                cfg.model_name_or_path,
                cfg.revision,
                cfg.task,
                cfg.framework_args.opset,
                cfg.framework_args.optimization_level,
                folder,
            )

        with cache.obtain("export", export_parts, build_export, job_dir) as (folder, use):
            place(folder / ONNX_FILE, job_dir / ONNX_FILE)
            exported = replace(load_exported(folder), onnx_path=job_dir / ONNX_FILE)
        cache_uses["export"] = use
        _log_cache_use("fp32 export", use)
        log.info("Graph optimization: %s", exported.facts.optimization_applied)

    exclusion = resolve_exclusions(
        onnx.load(str(exported.onnx_path)),
        cfg.exclusion.start_from if cfg.exclusion.auto else cfg.exclusion.nodes,
    )
    for pattern in exclusion.empty_patterns:
        log.warning("Exclusion pattern %r matched no node in this graph; it excludes nothing.", pattern)
    excluded = exclusion.node_names
    if not cfg.exclusion.auto:
        log.info(
            "Nodes kept in fp32: %d (%s)", len(excluded), {p: len(m) for p, m in exclusion.by_pattern.items()}
        )

    request = QuantizationRequest(
        is_static=cfg.is_static,
        operators=list(cfg.operators.operators_to_quantize),
        nodes_to_exclude=excluded,
        per_channel=cfg.per_channel,
        instruction_set=cfg.quantization.instruction_set,
        reduce_range=cfg.quantization.reduce_range,
    )
    qconfig, isa, detected = build_quantization_config(request)
    max_length = min(
        exported.max_length,
        getattr(tokenizer, "model_max_length", exported.max_length) or exported.max_length,
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ranges = None
    samples_used = None
    if calibration_data is not None:
        calibration_parts = {
            "export": cache_uses["export"].key,
            "data": calibration_data.fingerprint,
            "max_length": max_length,
            "calibration": {k: getattr(v, "value", v) for k, v in asdict(cfg.calibration).items()},
            "operators": sorted(request.operators),
            "symmetric": bool(qconfig.activations_symmetric),
            "code": code_digest(_CODE["calibration"]),
        }
        data = calibration_data

        def build_calibration(folder: Path) -> None:
            batches = CalibrationBatches(
                encode_sentences(tokenizer, data.tokens, max_length),
                cfg.calibration.batch_size,
                pad_id,
                exported.input_names,
            )
            log.info("Calibrating (%s) on %d sentences", cfg.calibration.method.value, len(data))
            computed = calibrate(
                exported.onnx_path,
                batches,
                cfg.calibration,
                request.operators,
                symmetric=qconfig.activations_symmetric,
            )
            save_ranges(computed, folder, batches.samples_fed)

        with clock("calibrate"):
            with cache.obtain("calibration", calibration_parts, build_calibration, job_dir) as (folder, use):
                ranges, samples_used = load_ranges(folder)
            cache_uses["calibration"] = use
            _log_cache_use("Calibration statistics", use)

    search_result = None
    if cfg.exclusion.auto:
        assert holdout_data is not None and ranges is not None
        with clock("exclusion_search"):
            search_result, use = search_exclusions(
                cfg,
                cache,
                job_dir,
                excluded,
                exported.onnx_path,
                request,
                ranges,
                model_config,
                HeldOutRows(
                    data=holdout_data,
                    encoded=encode_sentences(tokenizer, holdout_data.tokens, max_length),
                    id2label=id2label,
                    batch_size=cfg.eval_batch_size,
                    pad_token_id=pad_id,
                    input_names=list(exported.input_names),
                    sensitivity_batch_size=cfg.calibration.batch_size,
                ),
                {
                    "calibration": cache_uses["calibration"].key,
                    "max_length": max_length,
                    "packages": {
                        name: versions.get(name) for name in ("quantsweep", "onnxruntime", "seqeval")
                    },
                    "code": code_digest(_CODE["exclusion_search"]),
                },
            )
        cache_uses["exclusion_search"] = use
        _log_cache_use("Exclusion search", use)
        excluded = list(search_result.chosen)
        exclusion = ResolvedExclusion(by_pattern={}, explicit=excluded)
        request = replace(request, nodes_to_exclude=excluded)
        qconfig, isa, detected = build_quantization_config(request)
        write_exclusion_file(job_dir, search_result)
        plot_search(search_result, job_dir / SENSITIVITY_PLOT)

    with clock("quantize"):
        log.info("Quantizing: %s, instruction set %s", qconfig, isa)
        quantized_path = quantize_model(exported.onnx_path, job_dir, qconfig, ranges, model_config)
        facts = graph_facts(
            exported.onnx_path,
            quantized_path,
            request.operators,
            excluded,
            exclusion.by_pattern,
            "static" if request.is_static else "dynamic",
        )
    (log.warning if facts.nothing_quantized else log.info)(facts.note)

    settings = SessionSettings.for_threads(cfg.benchmark.threads)
    with clock("sessions"):
        original_session = create_session(exported.onnx_path, settings)
        quantized_session = create_session(quantized_path, settings)
        encoded = encode_sentences(tokenizer, eval_data.tokens, max_length)

    evaluation_parts = {
        "export": cache_uses["export"].key,
        "data": eval_data.fingerprint,
        "max_length": max_length,
        "batch_size": cfg.eval_batch_size,
        "packages": {name: versions.get(name) for name in ("onnxruntime", "seqeval")},
        "code": code_digest(_CODE["original_evaluation"]),
    }

    def build_evaluation(folder: Path) -> None:
        result = evaluate_model(
            original_session, eval_data, encoded, id2label, cfg.eval_batch_size, pad_id, "evaluate original"
        )
        atomic_write_text(folder / _EVALUATION_FILE, json.dumps(asdict(result), indent=1) + "\n")

    with clock("evaluate_original"):
        with cache.obtain("original_evaluation", evaluation_parts, build_evaluation, job_dir) as (
            folder,
            use,
        ):
            original_eval = EvaluationResult.from_dict(
                json.loads((folder / _EVALUATION_FILE).read_text(encoding="utf-8"))
            )
        cache_uses["original_evaluation"] = use
        _log_cache_use("fp32 evaluation", use)
    with clock("evaluate_quantized"):
        quantized_eval = evaluate_model(
            quantized_session, eval_data, encoded, id2label, cfg.eval_batch_size, pad_id, "evaluate quantized"
        )
    with clock("time"):
        timing = time_models(
            original_session,
            quantized_session,
            cfg.benchmark,
            settings,
            vocab_size=len(tokenizer),
            special_ids=list(tokenizer.all_special_ids),
            seed=cfg.seed,
        )
    return JobResults(
        config=config_dict,
        choices=choices,
        environment=collect_environment(),
        export=exported.facts,
        quantization=quantization_facts(
            qconfig, isa, detected, cfg.calibration if cfg.is_static else None, samples_used
        ),
        graph=facts,
        original=original_eval,
        quantized=quantized_eval,
        timing=timing,
        wall_seconds=round(time.perf_counter() - wall_start, 3),
        dataset={
            "source": eval_data.source,
            "eval_split": eval_data.split,
            "eval_samples": len(eval_data),
            "eval_fingerprint": eval_data.fingerprint,
            # sentences longer than this (in sub-tokens) are cut; their cut-off words count as misses
            "eval_max_length": max_length,
            "label_names": eval_data.label_names,
            "calibration_split": cfg.dataset.calibration_split if calibration_data is not None else None,
            "calibration_samples": len(calibration_data) if calibration_data is not None else None,
            "calibration_fingerprint": calibration_data.fingerprint if calibration_data is not None else None,
            "holdout_samples": len(holdout_data) if holdout_data is not None else None,
            "holdout_fingerprint": holdout_data.fingerprint if holdout_data is not None else None,
        },
        phase_seconds=clock.seconds,
        cache={kind: asdict(use) for kind, use in cache_uses.items()},
        exclusion_search=search_result,
    )


def check_input_lengths(cfg: RunConfig, model_config: Any, tokenizer: Any) -> None:
    """Refuse timing shapes the model cannot take, before the export rather than after it."""
    limits = {
        "max_position_embeddings in its config.json": getattr(model_config, "max_position_embeddings", None),
        "model_max_length of its tokenizer": getattr(tokenizer, "model_max_length", None),
    }
    # tokenizers without a limit report a huge sentinel (int(1e30)); only real limits count
    known = {what: int(n) for what, n in limits.items() if isinstance(n, int) and 0 < n < 1_000_000}
    if not known:
        return
    what, limit = min(known.items(), key=lambda item: item[1])
    too_long = [n for n in cfg.benchmark.input_lengths if n > limit]
    if too_long:
        allowed = [n for n in cfg.benchmark.input_lengths if n <= limit] or [limit]
        raise ConfigError(
            f"Invalid configuration: `benchmark.input_lengths` is {list(cfg.benchmark.input_lengths)}, but "
            f"{cfg.model_name_or_path} accepts at most {limit} tokens ({what}), so {too_long} cannot be timed. "
            f"Use lengths up to {limit}, e.g. benchmark.input_lengths={allowed}."
        )


def check_holdout(cfg: RunConfig, split_rows: int, calibration_rows: int, holdout_rows: int) -> None:
    """Refuse a search whose held-out slice would be short, before any heavy work."""
    if holdout_rows >= cfg.exclusion.holdout_samples:
        return
    split = cfg.exclusion.holdout_split or cfg.dataset.calibration_split
    if calibration_rows:
        where = (
            f"rows of the calibration split `{split}` that calibration does not use, and that split has "
            f"{split_rows} rows of which calibration takes {calibration_rows}, leaving {holdout_rows}. Lower "
            "`exclusion.holdout_samples` or `calibration.num_calibration_samples`, or name a larger split in "
            "`exclusion.holdout_split`"
        )
    else:
        where = (
            f"rows of `exclusion.holdout_split` `{split}`, which has {split_rows}. Lower "
            "`exclusion.holdout_samples` or name a larger split"
        )
    raise ConfigError(
        f"Invalid configuration: `exclusion.holdout_samples` is {cfg.exclusion.holdout_samples}; "
        f"exclusion=auto judges F1 on {where} (never the evaluation split, so that its metrics stay an "
        "honest test)."
    )


def search_exclusions(
    cfg: RunConfig,
    cache: ArtifactCache,
    job_dir: Path,
    start_nodes: list[str],
    model_path: Path,
    request: QuantizationRequest,
    ranges: Any,
    model_config: Any,
    rows: HeldOutRows,
    upstream: dict[str, Any],
) -> tuple[ExclusionSearchResult, CacheUse]:
    """exclusion=auto's search, cached: the same calibration, rows and settings find the same set.

    ``upstream`` holds the key parts the job already knows (calibration key, maximum
    length, package versions).
    """
    from quantsweep.exclusion_search import SEARCH_FORMAT, find_exclusions
    from quantsweep.sessions import SessionSettings

    settings = {k: getattr(v, "value", v) for k, v in asdict(cfg.exclusion).items()}
    parts = {
        **upstream,
        "format": SEARCH_FORMAT,
        "seed": cfg.seed,
        "holdout": rows.data.fingerprint,
        "settings": settings,
        "start_nodes": sorted(start_nodes),
        "request": {k: v for k, v in asdict(request).items() if k != "nodes_to_exclude"},
        "batch_size": rows.batch_size,
    }
    if cfg.exclusion.max_minutes is not None:
        # a time budget makes the outcome depend on this machine's speed: never reuse it
        parts["not_reusable"] = time.time_ns()

    def build(folder: Path) -> None:
        found = find_exclusions(
            cfg.exclusion,
            start_nodes,
            model_path,
            request,
            ranges,
            model_config,
            rows,
            SessionSettings.for_threads(cfg.benchmark.threads),
            job_dir,
            cfg.seed,
        )
        atomic_write_text(folder / _SEARCH_FILE, json.dumps(asdict(found), indent=1) + "\n")

    with cache.obtain("exclusion_search", parts, build, job_dir) as (folder, use):
        found = ExclusionSearchResult.from_dict(
            json.loads((folder / _SEARCH_FILE).read_text(encoding="utf-8"))
        )
    return found, use


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
        plot_sensitivity(asdict(found), path)
    except Exception as error:  # matplotlib missing a font or backend must not fail a finished search
        log.warning("Could not draw %s (%s: %s)", path, type(error).__name__, error)


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
        lines.append(
            f"  exclusion=auto kept {len(found.chosen)} nodes in fp32: held-out F1 {found.chosen_f1:.4f} vs fp32 "
            f"{found.fp32_f1:.4f}, {verdict} the budget of {found.max_f1_drop} ({found.evaluations} steps, "
            f"{found.seconds:.0f} s; list in {EXCLUSION_FILE})"
        )
    if results.original.num_truncated:
        lines.append(f"  NOTE: {results.original.truncation_note(results.dataset.get('eval_max_length'))}")
    lines.append(f"  {'metric':<12}{'original':>10}{'quantized':>11}{'delta':>9}")
    for name in METRICS:
        a, b = getattr(results.original, name), getattr(results.quantized, name)
        lines.append(f"  {name:<12}{a:>10.4f}{b:>11.4f}{b - a:>+9.4f}")
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
