"""One quantization job, from a typed config to a finished job directory.

Knows nothing of Hydra: it takes a :class:`RunConfig`, a job directory and the config
as plain data to record, so tests and other launchers can call it directly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantsweep.config import RunConfig
from quantsweep.results import RESULTS_FILE, JobResults, read_results

log = logging.getLogger(__name__)


@dataclass
class JobOutcome:
    results: dict[str, Any]
    skipped: bool


def finished(job_dir: Path) -> bool:
    return (job_dir / RESULTS_FILE).is_file()


def run_job(
    cfg: RunConfig, job_dir: Path, config_dict: dict[str, Any], choices: dict[str, str]
) -> JobOutcome:
    """Run the job into ``job_dir`` unless it already finished there (and ``force`` is off)."""
    if finished(job_dir) and not cfg.force:
        log.info("Skipping %s: %s exists (force=true reruns it).", job_dir, RESULTS_FILE)
        return JobOutcome(results=read_results(job_dir), skipped=True)
    results = execute(cfg, job_dir, config_dict, choices)
    path = results.write(job_dir)
    log.info("Wrote %s", path)
    print(summary_table(results))
    return JobOutcome(results=results.to_dict(), skipped=False)


def execute(
    cfg: RunConfig, job_dir: Path, config_dict: dict[str, Any], choices: dict[str, str]
) -> JobResults:
    # Heavy imports live here so that `quantsweep --help` and config errors stay fast.
    import onnx

    from quantsweep.data import encode_sentences, load_split, sample_rows
    from quantsweep.environment import collect_environment
    from quantsweep.evaluate import check_labels, evaluate_model
    from quantsweep.exclusion import resolve_exclusions
    from quantsweep.export import export_model, load_model_config, load_tokenizer
    from quantsweep.quantize import (
        CalibrationBatches,
        QuantizationRequest,
        build_quantization_config,
        calibrate,
        graph_facts,
        quantization_facts,
        quantize_model,
    )
    from quantsweep.sessions import SessionSettings, create_session
    from quantsweep.timing import time_models

    wall_start = time.perf_counter()
    job_dir.mkdir(parents=True, exist_ok=True)

    # Cheap checks first: model config, tokenizer and data, before the export.
    model_config = load_model_config(cfg.model_name_or_path, cfg.revision)
    max_positions = int(getattr(model_config, "max_position_embeddings", 512) or 512)
    too_long = [n for n in cfg.benchmark.input_lengths if n > max_positions]
    if too_long:
        raise ValueError(
            f"Invalid configuration: `benchmark.input_lengths` is {list(cfg.benchmark.input_lengths)}; "
            f"{cfg.model_name_or_path} accepts at most {max_positions} tokens (got {too_long[0]})."
        )
    tokenizer = load_tokenizer(cfg.model_name_or_path, cfg.revision)
    eval_data = load_split(cfg.dataset, cfg.dataset.eval_split, cfg.dataset.max_eval_samples)
    log.info(
        "Evaluation data: %d sentences of %s (split %s)", len(eval_data), eval_data.source, eval_data.split
    )
    id2label = {int(k): str(v) for k, v in (model_config.id2label or {}).items()}
    check_labels(id2label, eval_data.label_names, f"{eval_data.source} ({eval_data.split})")
    calibration_data = None
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

    log.info("Exporting %s to ONNX (opset %s)", cfg.model_name_or_path, cfg.framework_args.opset or "default")
    exported = export_model(
        cfg.model_name_or_path,
        cfg.revision,
        cfg.task,
        cfg.framework_args.opset,
        cfg.framework_args.optimization_level,
        job_dir,
    )
    log.info("Graph optimization: %s", exported.facts.optimization_applied)

    exclusion = resolve_exclusions(onnx.load(str(exported.onnx_path)), cfg.exclusion.nodes)
    for pattern in exclusion.empty_patterns:
        log.warning("Exclusion pattern %r matched no node in this graph; it excludes nothing.", pattern)
    excluded = exclusion.node_names
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
        batches = CalibrationBatches(
            encode_sentences(tokenizer, calibration_data.tokens, max_length),
            cfg.calibration.batch_size,
            pad_id,
            exported.input_names,
        )
        log.info("Calibrating (%s) on %d sentences", cfg.calibration.method.value, len(calibration_data))
        ranges = calibrate(
            exported.onnx_path,
            batches,
            cfg.calibration,
            request.operators,
            symmetric=qconfig.activations_symmetric,
        )
        samples_used = batches.samples_fed
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
    original_session = create_session(exported.onnx_path, settings)
    quantized_session = create_session(quantized_path, settings)
    encoded = encode_sentences(tokenizer, eval_data.tokens, max_length)
    original_eval = evaluate_model(
        original_session, eval_data, encoded, id2label, cfg.eval_batch_size, pad_id, "evaluate original"
    )
    quantized_eval = evaluate_model(
        quantized_session, eval_data, encoded, id2label, cfg.eval_batch_size, pad_id, "evaluate quantized"
    )
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
            "label_names": eval_data.label_names,
            "calibration_split": cfg.dataset.calibration_split if calibration_data is not None else None,
            "calibration_samples": len(calibration_data) if calibration_data is not None else None,
            "calibration_fingerprint": calibration_data.fingerprint if calibration_data is not None else None,
        },
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
    lines.append(f"  {'metric':<12}{'original':>10}{'quantized':>11}{'delta':>9}")
    for name in ("precision", "recall", "f1", "accuracy"):
        a, b = getattr(results.original, name), getattr(results.quantized, name)
        lines.append(f"  {name:<12}{a:>10.4f}{b:>11.4f}{b - a:>+9.4f}")
    lines.append(f"  {'batch x len':<12}{'orig ms':>10}{'quant ms':>11}{'speed-up':>9}  (windows min..max)")
    for shape in results.timing.shapes:
        spread = f"{min(shape.window_speedups):.2f}..{max(shape.window_speedups):.2f}"
        lines.append(
            f"  {f'{shape.batch_size} x {shape.input_length}':<12}{shape.original.mean_ms:>10.2f}"
            f"{shape.quantized.mean_ms:>11.2f}{shape.speedup:>8.2f}x  ({spread})"
        )
    return "\n".join(lines)
