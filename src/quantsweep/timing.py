"""Latency and throughput of the original and the quantized model, measured side by side.

For each (batch size, input length) both models warm up, then take turns in
``windows`` alternating windows (original first in even windows, quantized first in odd
ones) until each has run ``duration`` seconds. Drift of a shared, noisy machine then
hits both models alike, and the per-window speed-ups show how much the ratio moves.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from quantsweep.config import BenchmarkConfig
from quantsweep.records import LatencyStats, ShapeTiming, TimingResult
from quantsweep.sessions import SessionSettings

if TYPE_CHECKING:
    import onnxruntime as ort

INPUT_DESCRIPTION = (
    "token ids drawn uniformly (seeded) from the tokenizer's vocabulary without special tokens; "
    "attention_mask all ones (no padding); token_type_ids all zeros"
)


def synthetic_inputs(
    input_names: Sequence[str],
    batch_size: int,
    length: int,
    vocab_size: int,
    special_ids: Sequence[int],
    seed: int,
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    allowed = np.setdiff1d(np.arange(vocab_size), np.asarray(list(special_ids), dtype=np.int64))
    ids = rng.choice(allowed if allowed.size else np.arange(vocab_size), size=(batch_size, length))
    available = {
        "input_ids": ids.astype(np.int64),
        "attention_mask": np.ones((batch_size, length), dtype=np.int64),
        "token_type_ids": np.zeros((batch_size, length), dtype=np.int64),
    }
    return {name: available[name] for name in input_names}


def latency_stats(latencies_s: Sequence[float], batch_size: int) -> LatencyStats:
    values = np.asarray(latencies_s, dtype=np.float64)
    ms = values * 1e3
    total = float(values.sum())
    passes = int(values.size)
    return LatencyStats(
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std()),
        p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)),
        p95_ms=float(np.percentile(ms, 95)),
        p99_ms=float(np.percentile(ms, 99)),
        forward_passes=passes,
        seconds=total,
        throughput_samples_per_s=passes * batch_size / total,
        forward_passes_per_s=passes / total,
    )


def _run_window(session: ort.InferenceSession, inputs: dict[str, np.ndarray], seconds: float) -> list[float]:
    """Forward passes until ``seconds`` have elapsed (at least one); each pass's latency."""
    latencies: list[float] = []
    clock = time.perf_counter
    deadline = clock() + seconds
    while True:
        start = clock()
        session.run(None, inputs)
        end = clock()
        latencies.append(end - start)
        if end >= deadline:
            return latencies


def time_shape(
    original: ort.InferenceSession,
    quantized: ort.InferenceSession,
    inputs: dict[str, np.ndarray],
    batch_size: int,
    input_length: int,
    bench: BenchmarkConfig,
) -> ShapeTiming:
    for session in (original, quantized):
        for _ in range(bench.warmup):
            session.run(None, inputs)
    window_seconds = bench.duration / bench.windows
    per_model: dict[str, list[float]] = {"original": [], "quantized": []}
    window_speedups: list[float] = []
    for window in range(bench.windows):
        order = ("original", "quantized") if window % 2 == 0 else ("quantized", "original")
        means: dict[str, float] = {}
        for name in order:
            session = original if name == "original" else quantized
            latencies = _run_window(session, inputs, window_seconds)
            per_model[name].extend(latencies)
            means[name] = float(np.mean(latencies))
        window_speedups.append(means["original"] / means["quantized"])
    original_stats = latency_stats(per_model["original"], batch_size)
    quantized_stats = latency_stats(per_model["quantized"], batch_size)
    return ShapeTiming(
        batch_size=batch_size,
        input_length=input_length,
        original=original_stats,
        quantized=quantized_stats,
        speedup=original_stats.mean_ms / quantized_stats.mean_ms,
        window_speedups=window_speedups,
    )


def time_models(
    original: ort.InferenceSession,
    quantized: ort.InferenceSession,
    bench: BenchmarkConfig,
    settings: SessionSettings,
    vocab_size: int,
    special_ids: Sequence[int],
    seed: int,
    show_progress: bool = True,
) -> TimingResult:
    from tqdm.auto import tqdm

    input_names = [i.name for i in original.get_inputs()]
    shapes = [(b, n) for b in bench.batch_sizes for n in bench.input_lengths]
    timings: list[ShapeTiming] = []
    for batch_size, length in tqdm(shapes, desc="timing", disable=not show_progress):
        inputs = synthetic_inputs(input_names, batch_size, length, vocab_size, special_ids, seed)
        timings.append(time_shape(original, quantized, inputs, batch_size, length, bench))
    return TimingResult(
        duration_s=bench.duration,
        windows=bench.windows,
        warmup=bench.warmup,
        intra_op_threads=settings.intra_op_threads,
        inter_op_threads=settings.inter_op_threads,
        execution_mode=settings.execution_mode,
        graph_optimization_level=settings.graph_optimization_level,
        allow_spinning=settings.allow_spinning,
        input_description=INPUT_DESCRIPTION,
        shapes=timings,
    )
