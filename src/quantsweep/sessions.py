"""ONNX Runtime inference sessions, configured once and the same way for both models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from quantsweep.environment import physical_cores

if TYPE_CHECKING:
    import onnxruntime as ort


@dataclass(frozen=True)
class SessionSettings:
    """What every session of a run uses; recorded in results.json."""

    intra_op_threads: int
    inter_op_threads: int = 1
    execution_mode: str = "sequential"
    graph_optimization_level: str = "ORT_ENABLE_ALL"
    # Off: while one model runs, the other session's idle worker threads would otherwise
    # spin on the same cores. benchmarks/thread_spinning.py times the demo model against
    # itself both ways (RESULTS.md, "Thread spinning" of 2026-11-30 08:58 UTC, 2 AVX2
    # cores under load): "speed-ups" 0.95-1.41 (median 1.08) on, 0.73-1.28 (median 0.95) off.
    allow_spinning: bool = False

    @classmethod
    def for_threads(cls, threads: int | None) -> SessionSettings:
        # One thread per physical core: hyper-threads share the vector units the
        # integer kernels depend on, and oversubscription adds noise to timings.
        return cls(intra_op_threads=threads or physical_cores())


def create_session(model_path: Path, settings: SessionSettings) -> ort.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings.graph_optimization_level)
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = (
        ort.ExecutionMode.ORT_SEQUENTIAL
        if settings.execution_mode == "sequential"
        else ort.ExecutionMode.ORT_PARALLEL
    )
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0"
    )
    options.add_session_config_entry(
        "session.inter_op.allow_spinning", "1" if settings.allow_spinning else "0"
    )
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
