"""Dynamic and static quantization with ONNX Runtime (through optimum), and what it changed.

optimum's per-instruction-set presets pick the integer types and ``reduce_range``;
optimum's ORTQuantizer drives ONNX Runtime's quantizer. What this module adds: a
calibration reader that feeds every sample at its real length, and the graph facts
(which nodes really were quantized), so that a configuration that changes nothing is
reported as such rather than as a speed-up.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantsweep.batching import EncodedSentence, length_sorted_batches
from quantsweep.config import CalibrationConfig, CalibrationMethod
from quantsweep.environment import detect_instruction_set
from quantsweep.files import QUANTIZED_FILE
from quantsweep.records import GraphFacts, QuantizationFacts

if TYPE_CHECKING:
    import onnx
    from optimum.onnxruntime.configuration import QuantizationConfig as OrtQuantizationConfig
    from transformers import PretrainedConfig

log = logging.getLogger(__name__)


@dataclass
class QuantizationRequest:
    """The plain inputs of one quantization, taken from the run config."""

    is_static: bool
    operators: list[str]
    nodes_to_exclude: list[str]
    per_channel: bool
    instruction_set: str
    reduce_range: bool | None


def build_quantization_config(request: QuantizationRequest) -> tuple[OrtQuantizationConfig, str, bool]:
    """optimum's preset for the instruction set, with our overrides; returns (config, isa, detected)."""
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    detected = request.instruction_set == "auto"
    isa = detect_instruction_set() if detected else request.instruction_set
    preset = getattr(AutoQuantizationConfig, isa)
    qconfig = preset(
        is_static=request.is_static,
        per_channel=request.per_channel,
        nodes_to_exclude=list(request.nodes_to_exclude),
        operators_to_quantize=list(request.operators),
    )
    if request.reduce_range is not None:
        qconfig.reduce_range = request.reduce_range
    return qconfig, isa, detected


class CalibrationBatches:
    """Length-sorted calibration batches, each padded only to its own longest row."""

    def __init__(
        self,
        encoded: Sequence[EncodedSentence],
        batch_size: int,
        pad_token_id: int,
        input_names: Sequence[str],
    ) -> None:
        self._batches: Iterator[Any] = length_sorted_batches(encoded, batch_size, pad_token_id, input_names)
        self.samples_fed = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for batch in self._batches:
            self.samples_fed += len(batch.indices)
            yield batch.inputs


class _OneBatch:
    """An ONNX Runtime CalibrationDataReader that yields a single batch."""

    def __init__(self, inputs: dict[str, np.ndarray]) -> None:
        self._inputs: dict[str, np.ndarray] | None = inputs

    def get_next(self) -> dict[str, np.ndarray] | None:
        inputs, self._inputs = self._inputs, None
        return inputs


def calibrate(
    model_path: Path,
    batches: CalibrationBatches,
    calibration: CalibrationConfig,
    operators: list[str],
    symmetric: bool,
) -> Any:
    """Activation ranges of ``model_path`` over every batch, accumulated batch by batch.

    ONNX Runtime's calibrators stack everything one ``collect_data`` call saw into one
    array, which fails for batches of different lengths and holds every intermediate
    tensor in memory; one call per batch keeps real lengths and bounded memory, while
    the calibrator merges ranges (min/max) or histograms across calls.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod as OrtMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    method = {
        CalibrationMethod.minmax: OrtMethod.MinMax,
        CalibrationMethod.percentile: OrtMethod.Percentile,
        CalibrationMethod.entropy: OrtMethod.Entropy,
    }[calibration.method]
    options: dict[str, Any] = {"symmetric": symmetric}
    if calibration.method is CalibrationMethod.minmax:
        # ONNX Runtime's `max_intermediate_outputs` is not used: in onnxruntime 1.32 it
        # clears collected batches without merging them.
        options.update(
            moving_average=calibration.moving_average, averaging_constant=calibration.averaging_constant
        )
    elif calibration.method is CalibrationMethod.percentile:
        options.update(num_bins=calibration.num_bins, percentile=calibration.percentile)
    else:
        options.update(num_bins=calibration.num_bins, num_quantized_bins=calibration.num_quantized_bins)
    with tempfile.TemporaryDirectory(prefix="quantsweep-calibration-") as tmp:
        calibrator = create_calibrator(
            str(model_path),
            op_types_to_calibrate=operators,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=method,
            extra_options=options,
            providers=["CPUExecutionProvider"],
        )
        for inputs in batches:
            calibrator.collect_data(_OneBatch(inputs))
        if batches.samples_fed == 0:
            raise ValueError("Calibration received no samples.")
        return calibrator.compute_data()


_RANGES_FILE = "ranges.npz"
_RANGES_INDEX = "ranges.json"


def save_ranges(ranges: Any, folder: Path, samples: int) -> None:
    """Write calibration statistics (ONNX Runtime's TensorsData) as arrays plus a JSON index."""
    import json

    from quantsweep.files import atomic_write_text

    arrays: dict[str, Any] = {}
    tensors: list[dict[str, Any]] = []
    for index, (name, data) in enumerate(ranges.data.items()):
        attrs = list(data._attrs)
        for attr in attrs:
            arrays[f"{index}/{attr}"] = np.asarray(getattr(data, attr))
        tensors.append({"name": name, "attrs": attrs})
    np.savez(folder / _RANGES_FILE, **arrays)
    index_data = {"method": ranges.calibration_method.name, "samples": samples, "tensors": tensors}
    atomic_write_text(folder / _RANGES_INDEX, json.dumps(index_data, indent=1) + "\n")


def load_ranges(folder: Path) -> tuple[Any, int]:
    """The statistics written by :func:`save_ranges`, and the number of samples behind them."""
    import json

    from onnxruntime.quantization.calibrate import CalibrationMethod as OrtMethod
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    index_data = json.loads((folder / _RANGES_INDEX).read_text(encoding="utf-8"))
    with np.load(folder / _RANGES_FILE) as arrays:
        data = {
            tensor["name"]: TensorData(**{attr: arrays[f"{i}/{attr}"] for attr in tensor["attrs"]})
            for i, tensor in enumerate(index_data["tensors"])
        }
    return TensorsData(OrtMethod[index_data["method"]], data), int(index_data["samples"])


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer logs a line per tensor on the root logger at INFO."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_model(
    model_path: Path,
    out_dir: Path,
    qconfig: OrtQuantizationConfig,
    calibration_ranges: Any | None,
    model_config: PretrainedConfig | None = None,
) -> Path:
    """Write the quantized model to ``out_dir/model_quantized.onnx``."""
    from optimum.onnxruntime import ORTQuantizer
    from transformers import PretrainedConfig

    # The quantizer wants a model config beside the ONNX file; ours lives with the model.
    quantizer = ORTQuantizer(model_path, config=model_config or PretrainedConfig())
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".quantize-") as tmp:
        quantizer.quantize(
            qconfig, tmp, file_suffix="quantized", calibration_tensors_range=calibration_ranges
        )
        produced = Path(tmp) / f"{model_path.stem}_quantized.onnx"
        target = out_dir / QUANTIZED_FILE
        produced.replace(target)
    return target


def quantization_facts(
    qconfig: OrtQuantizationConfig,
    isa: str,
    detected: bool,
    calibration: CalibrationConfig | None,
    samples: int | None,
) -> QuantizationFacts:
    return QuantizationFacts(
        approach="static" if qconfig.is_static else "dynamic",
        format=qconfig.format.name,
        mode=qconfig.mode.name,
        activations_dtype=qconfig.activations_dtype.name,
        weights_dtype=qconfig.weights_dtype.name,
        per_channel=bool(qconfig.per_channel),
        reduce_range=bool(qconfig.reduce_range),
        instruction_set=isa,
        instruction_set_detected=detected,
        calibration_method=calibration.method.value if calibration is not None else None,
        calibration_samples=samples,
    )


def quantized_node_names(
    original: onnx.ModelProto,
    quantized: onnx.ModelProto,
    operators: Sequence[str],
    excluded: Sequence[str] = (),
) -> dict[str, str]:
    """Nodes of ``original`` (of the given op types) that run quantized in ``quantized``: name -> op type.

    A node counts when the quantizer replaced it by an integer op (its name is gone, as
    MatMul -> MatMulInteger) or when every one of its inputs now comes from a
    DequantizeLinear (QDQ). Excluded nodes never count: in QDQ graphs they may still read
    dequantized tensors that quantized neighbours share, but they compute in fp32.
    """
    producers = {out: node.op_type for node in quantized.graph.node for out in node.output}
    by_name = {node.name: node for node in quantized.graph.node}
    skip = set(excluded)
    result: dict[str, str] = {}
    for node in original.graph.node:
        if node.op_type not in operators or node.name in skip:
            continue
        twin = by_name.get(node.name)
        inputs = [name for name in twin.input if name] if twin is not None else []
        if twin is None or (inputs and all(producers.get(name) == "DequantizeLinear" for name in inputs)):
            result[node.name] = node.op_type
    return result


def graph_facts(
    original_path: Path,
    quantized_path: Path,
    operators: list[str],
    excluded: list[str],
    excluded_by_pattern: dict[str, list[str]],
    approach: str,
) -> GraphFacts:
    import onnx

    original = onnx.load(str(original_path))
    quantized = onnx.load(str(quantized_path))
    names = quantized_node_names(original, quantized, operators, excluded)
    by_type = Counter(names.values())
    candidates = sum(1 for node in original.graph.node if node.op_type in operators)
    nothing = not names
    if nothing:
        note = (
            f"Nothing was quantized: {approach} quantization of {', '.join(operators)} changed no node "
            f"({candidates} candidate nodes, {len(excluded)} excluded). "
        )
        if approach == "dynamic" and "MatMul" not in operators:
            note += "ONNX Runtime's dynamic (integer-ops) mode has no integer kernel for these op types. "
        note += "Its timings compare the fp32 model with itself."
    else:
        note = f"{len(names)} of {candidates} candidate nodes quantized."
    return GraphFacts(
        operators_to_quantize=list(operators),
        nodes_quantized_by_op_type=dict(sorted(by_type.items())),
        nodes_quantized=len(names),
        candidate_nodes=candidates,
        nodes_excluded=list(excluded),
        nodes_excluded_by_pattern=excluded_by_pattern,
        original_size_mb=round(original_path.stat().st_size / 1e6, 3),
        quantized_size_mb=round(quantized_path.stat().st_size / 1e6, 3),
        nothing_quantized=nothing,
        note=note,
    )
