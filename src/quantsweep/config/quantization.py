"""The groups ``quantization``, ``operators`` and ``calibration``: how ONNX Runtime quantizes a model.

They sit together because each one configures the quantizer itself (the approach and its
integer types, the op types it touches, how static quantization learns activation
ranges), and :mod:`quantsweep.quantize` reads all three. Nothing here imports a heavy
library: the known op types are a plain list, so a typo fails before ONNX Runtime loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from quantsweep.config.base import _Section, invalid

# ONNX op types the ONNX Runtime quantizer knows in at least one of its modes (integer
# ops, QLinear ops or QDQ). Which of them a given approach really quantizes is recorded
# per run from the graph; this list only catches typos early.
KNOWN_QUANTIZABLE_OPERATORS: tuple[str, ...] = (
    "Add",
    "ArgMax",
    "Attention",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Conv",
    "ConvTranspose",
    "CumSum",
    "EmbedLayerNormalization",
    "Flatten",
    "Gather",
    "GatherElements",
    "Gemm",
    "GlobalAveragePool",
    "InstanceNormalization",
    "LayerNormalization",
    "LeakyRelu",
    "LSTM",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pad",
    "Relu",
    "Reshape",
    "Resize",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Squeeze",
    "TopK",
    "Transpose",
    "Unsqueeze",
    "Where",
)
INSTRUCTION_SETS: tuple[str, ...] = ("auto", "avx512_vnni", "avx512", "avx2", "arm64")


class Approach(str, Enum):
    dynamic = "dynamic"
    static = "static"


class CalibrationMethod(str, Enum):
    minmax = "minmax"
    percentile = "percentile"
    entropy = "entropy"


@dataclass
class QuantizationConfig(_Section):
    """Group ``quantization``: the approach and the integer types it uses."""

    KEY: ClassVar[str] = "quantization"

    approach: Approach = Approach.dynamic
    # Which of optimum's per-instruction-set presets picks the integer types and
    # reduce_range; "auto" detects it from this CPU.
    instruction_set: str = "auto"
    # None keeps the preset's choice.
    reduce_range: bool | None = None

    def check(self) -> None:
        if self.instruction_set not in INSTRUCTION_SETS:
            raise invalid(
                "quantization.instruction_set",
                self.instruction_set,
                f"allowed: {', '.join(INSTRUCTION_SETS)}.",
            )


@dataclass
class OperatorsConfig(_Section):
    """Group ``operators``: the ONNX op types the quantizer may touch."""

    KEY: ClassVar[str] = "operators"

    operators_to_quantize: list[str] = field(default_factory=lambda: ["Add", "MatMul"])

    def check(self) -> None:
        if not self.operators_to_quantize:
            raise invalid(
                "operators.operators_to_quantize", [], "name at least one ONNX op type, e.g. [Add, MatMul]."
            )
        unknown = [op for op in self.operators_to_quantize if op not in KNOWN_QUANTIZABLE_OPERATORS]
        if unknown:
            raise invalid(
                "operators.operators_to_quantize",
                list(self.operators_to_quantize),
                f"{', '.join(unknown)} is not an op type ONNX Runtime's quantizer knows "
                f"(op types are case-sensitive; known: {', '.join(KNOWN_QUANTIZABLE_OPERATORS)}).",
            )
        if len(set(self.operators_to_quantize)) != len(self.operators_to_quantize):
            raise invalid(
                "operators.operators_to_quantize",
                list(self.operators_to_quantize),
                "each op type may appear once.",
            )


@dataclass
class CalibrationConfig(_Section):
    """Group ``calibration``: how static quantization learns activation ranges."""

    KEY: ClassVar[str] = "calibration"

    method: CalibrationMethod = CalibrationMethod.minmax
    num_calibration_samples: int = 100
    # minmax only
    moving_average: bool = False
    averaging_constant: float = 0.01
    # histogram methods (percentile, entropy)
    num_bins: int = 2048
    percentile: float = 99.999
    num_quantized_bins: int = 128
    # rows of the calibration split fed to the calibrator at once
    batch_size: int = 8

    def check(self) -> None:
        if self.num_calibration_samples <= 0:
            raise invalid(
                "calibration.num_calibration_samples",
                self.num_calibration_samples,
                "it must be a positive integer.",
            )
        if not 0.0 < self.averaging_constant <= 1.0:
            raise invalid("calibration.averaging_constant", self.averaging_constant, "it must lie in (0, 1].")
        if not 0.0 < self.percentile <= 100.0:
            raise invalid("calibration.percentile", self.percentile, "it must lie in (0, 100].")
        if self.num_bins < 2:
            raise invalid("calibration.num_bins", self.num_bins, "it must be at least 2.")
        if self.num_quantized_bins < 2:
            raise invalid("calibration.num_quantized_bins", self.num_quantized_bins, "it must be at least 2.")
        # ONNX Runtime's entropy calibrator tries thresholds from num_quantized_bins/2 to
        # num_bins/2 bins around zero: with more quantized bins than bins it has none to try
        # and fails with a numpy error after the export
        if self.method is CalibrationMethod.entropy and self.num_quantized_bins > self.num_bins:
            raise invalid(
                "calibration.num_quantized_bins",
                self.num_quantized_bins,
                f"the entropy method merges calibration.num_bins={self.num_bins} histogram bins into this many, "
                f"so it must be at most {self.num_bins} (or raise num_bins).",
            )
        if self.batch_size <= 0:
            raise invalid("calibration.batch_size", self.batch_size, "it must be a positive integer.")
