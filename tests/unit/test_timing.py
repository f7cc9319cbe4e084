"""Timing fields on real ONNX Runtime sessions (short windows: this checks bookkeeping, not speed)."""

from __future__ import annotations

import pytest

from quantsweep.config import BenchmarkConfig
from quantsweep.export import export_model
from quantsweep.sessions import SessionSettings, create_session
from quantsweep.timing import latency_stats, synthetic_inputs, time_models


@pytest.fixture(scope="module")
def sessions(distilbert_dir, tmp_path_factory):
    exported = export_model(
        str(distilbert_dir), None, "token-classification", 11, 1, tmp_path_factory.mktemp("t")
    )
    settings = SessionSettings.for_threads(1)
    # the same model twice: timing must not care which one is quantized
    return (
        create_session(exported.onnx_path, settings),
        create_session(exported.onnx_path, settings),
        settings,
    )


def test_every_shape_gets_both_models_and_all_statistics(sessions):
    original, quantized, settings = sessions
    bench = BenchmarkConfig(batch_sizes=[1, 3], input_lengths=[8, 16], duration=0.06, warmup=1, windows=3)
    result = time_models(
        original,
        quantized,
        bench,
        settings,
        vocab_size=50,
        special_ids=[0, 1, 2, 3, 4],
        seed=0,
        show_progress=False,
    )
    assert [(s.batch_size, s.input_length) for s in result.shapes] == [(1, 8), (1, 16), (3, 8), (3, 16)]
    assert (result.windows, result.warmup, result.intra_op_threads) == (3, 1, 1)
    for shape in result.shapes:
        assert len(shape.window_speedups) == 3
        for stats in (shape.original, shape.quantized):
            assert stats.forward_passes >= 3  # at least one pass per window
            assert 0 < stats.p50_ms <= stats.p90_ms <= stats.p95_ms <= stats.p99_ms
            assert stats.std_ms >= 0
            assert stats.throughput_samples_per_s == pytest.approx(
                stats.forward_passes_per_s * shape.batch_size
            )
            assert stats.seconds >= 0.06 / 3 * 3 * 0.5  # each model ran about its share of the duration
        assert shape.speedup == pytest.approx(shape.original.mean_ms / shape.quantized.mean_ms)


def test_latency_statistics():
    stats = latency_stats([0.001, 0.002, 0.003, 0.004], batch_size=4)
    assert stats.mean_ms == pytest.approx(2.5)
    assert stats.p50_ms == pytest.approx(2.5)
    assert stats.forward_passes == 4 and stats.seconds == pytest.approx(0.01)
    assert stats.forward_passes_per_s == pytest.approx(400)
    assert stats.throughput_samples_per_s == pytest.approx(1600)


def test_synthetic_inputs_avoid_special_tokens_and_are_seeded():
    a = synthetic_inputs(["input_ids", "attention_mask"], 2, 32, 40, [0, 1, 2], seed=7)
    b = synthetic_inputs(["input_ids", "attention_mask"], 2, 32, 40, [0, 1, 2], seed=7)
    assert (a["input_ids"] == b["input_ids"]).all()
    assert a["input_ids"].shape == (2, 32) and a["input_ids"].min() >= 3
    assert set(a) == {"input_ids", "attention_mask"} and a["attention_mask"].all()
