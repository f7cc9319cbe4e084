"""A synthetic ONNX model with a planted latency effect, for tests of the quantization search.

The graph (opset 17, IR 8, input ``input_ids`` [batch, sequence], output ``logits``)::

    input_ids -> Gather(embeddings [VOCAB_SIZE, HIDDEN])
      -> (/fast/MatMul_i -> Tanh) x FAST_NODES       on [batch, sequence, HIDDEN]
      -> Tile(1, 1, WIDEN)                           to [batch, sequence, HIDDEN * WIDEN]
      -> (/slow/Add_i(+ bias_i) -> Neg) x SLOW_NODES on the widened tensor
      -> logits

The SLOW group (all the Add nodes) is slower when quantized. Static QDQ quantization of
an Add puts QuantizeLinear/DequantizeLinear pairs on its inputs and its output. Here every
Add sits between two ops that are not quantized (Tile or Neg before, Neg after), so no
neighbour shares those pairs: ONNX Runtime runs each Add as QuantizeLinear -> QLinearAdd
-> DequantizeLinear, three memory-bound passes over a large tensor (a million floats at
:data:`SHAPE`) where fp32 needs one Add. ORT's profiler at :data:`SHAPE` on 2 AVX2 cores,
per Add: fp32 Add 0.18 ms; QuantizeLinear 0.2 + QLinearAdd 0.19 + DequantizeLinear 0.15 ms;
Neg about 0.15 ms either way. Neg is the separator because it is cheap and ONNX Runtime has
no QDQ fusion for it (Relu before a QuantizeLinear is dropped by ReluQuantFusion, and
Sigmoid can become QLinearSigmoid, both of which would make the quantized chain integer).

The FAST group (all the MatMul nodes) is not: the MatMuls run on the narrow tensor before
the Tile, where QLinearMatMul costs no more than the fp32 MatMul (0.65 against 0.75-1.07 ms
for the three), and they are a small part of a forward pass. The Tile keeps them cheap while
the Add chain still runs on a large tensor.

Measured at SHAPE with ``time_shape`` (2 s per model, 4 alternating windows, warm-up 3),
5 repetitions per pair, sessions from ``SessionSettings.for_threads(None)`` (2 threads), on 2
AVX2 cores that another test process kept partly busy; two builds (seeds 0 and 1):

* all quantized vs SLOW kept in fp32: speed-up 0.40-0.53 (medians 0.44, 0.48), i.e. the
  quantized SLOW group makes the model 1.9-2.5x slower; every single window under 0.61.
* all quantized vs FAST kept in fp32: 0.94-1.13 (medians 1.035, 1.04): no slower.
* fp32 vs all quantized: 0.44-0.52 (medians 0.49, 0.49).

One forward pass: about 4-6 ms in fp32 or with the SLOW group in fp32, 9-13 ms all quantized.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantsweep.batching import EncodedSentence
from quantsweep.config import CalibrationConfig
from quantsweep.quantize import (
    CalibrationBatches,
    QuantizationRequest,
    build_quantization_config,
    calibrate,
    load_ranges,
    save_ranges,
)

# The (batch, length) at which the effect was measured; synthetic ids are drawn from VOCAB_SIZE.
SHAPE = (2, 128)
VOCAB_SIZE = 1000
HIDDEN = 256
WIDEN = 16  # the SLOW chain runs on [batch, sequence, HIDDEN * WIDEN]
FAST_NODES = 3
SLOW_NODES = 12
OPERATORS = ["Add", "MatMul"]
# calibration: CALIBRATION_BATCHES batches of CALIBRATION_BATCH_SIZE random rows of CALIBRATION_LENGTH ids
CALIBRATION_BATCHES = 8
CALIBRATION_BATCH_SIZE = 2
CALIBRATION_LENGTH = 32


@dataclass(frozen=True)
class PlantedLatency:
    model: Path  # the fp32 ONNX model
    ranges: Any  # calibration ranges (ONNX Runtime's TensorsData) usable by quantize_model
    slow: list[str]  # node names of the SLOW group
    fast: list[str]  # node names of the FAST group
    operators: list[str]  # op types to quantize


def _build_model(path: Path, seed: int) -> tuple[list[str], list[str]]:
    """Write the fp32 model to ``path``; returns the (slow, fast) node names."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    initializers = [
        numpy_helper.from_array(
            (rng.standard_normal((VOCAB_SIZE, HIDDEN)) * 0.5).astype(np.float32), "embeddings"
        )
    ]
    nodes = [helper.make_node("Gather", ["embeddings", "input_ids"], ["embedded"], name="/embed/Gather")]
    current = "embedded"
    fast: list[str] = []
    for i in range(FAST_NODES):
        weight = (rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"fast_weight_{i}"))
        name = f"/fast/MatMul_{i}"
        nodes.append(helper.make_node("MatMul", [current, f"fast_weight_{i}"], [f"fast_out_{i}"], name=name))
        nodes.append(helper.make_node("Tanh", [f"fast_out_{i}"], [f"fast_act_{i}"], name=f"/fast/Tanh_{i}"))
        fast.append(name)
        current = f"fast_act_{i}"
    initializers.append(numpy_helper.from_array(np.array([1, 1, WIDEN], dtype=np.int64), "widen_repeats"))
    nodes.append(helper.make_node("Tile", [current, "widen_repeats"], ["widened"], name="/widen/Tile"))
    current = "widened"
    slow: list[str] = []
    for i in range(SLOW_NODES):
        bias = (rng.standard_normal(HIDDEN * WIDEN) * 0.1).astype(np.float32)
        initializers.append(numpy_helper.from_array(bias, f"slow_bias_{i}"))
        name = f"/slow/Add_{i}"
        nodes.append(helper.make_node("Add", [current, f"slow_bias_{i}"], [f"slow_out_{i}"], name=name))
        output = "logits" if i == SLOW_NODES - 1 else f"slow_act_{i}"
        nodes.append(helper.make_node("Neg", [f"slow_out_{i}"], [output], name=f"/slow/Neg_{i}"))
        slow.append(name)
        current = output
    graph = helper.make_graph(
        nodes,
        "planted_latency",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", HIDDEN * WIDEN])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="quantsweep-tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return slow, fast


def _calibration_ranges(model_path: Path, folder: Path, seed: int) -> Any:
    """Ranges as the ``calibrate`` stage makes them: project calibrator, saved and loaded back."""
    request = QuantizationRequest(
        is_static=True,
        operators=list(OPERATORS),
        nodes_to_exclude=[],
        per_channel=False,
        instruction_set="avx2",
        reduce_range=None,
    )
    qconfig, _, _ = build_quantization_config(request)
    rng = np.random.default_rng(seed + 1)
    rows = [
        EncodedSentence(
            input_ids=[int(i) for i in rng.integers(0, VOCAB_SIZE, CALIBRATION_LENGTH)],
            token_type_ids=None,
            word_ids=[None] * CALIBRATION_LENGTH,
            num_words=CALIBRATION_LENGTH,
        )
        for _ in range(CALIBRATION_BATCHES * CALIBRATION_BATCH_SIZE)
    ]
    batches = CalibrationBatches(rows, CALIBRATION_BATCH_SIZE, 0, ["input_ids"])
    ranges = calibrate(
        model_path,
        batches,
        CalibrationConfig(),
        list(OPERATORS),
        symmetric=bool(qconfig.activations_symmetric),
    )
    folder.mkdir(parents=True, exist_ok=True)
    save_ranges(ranges, folder, batches.samples_fed)
    loaded, _ = load_ranges(folder)
    return loaded


def write_planted_latency_model(folder: Path, seed: int = 0) -> PlantedLatency:
    """Write ``folder/model.onnx`` and its calibration ranges (``folder/calibration``)."""
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / "model.onnx"
    slow, fast = _build_model(model_path, seed)
    ranges = _calibration_ranges(model_path, folder / "calibration", seed)
    return PlantedLatency(model=model_path, ranges=ranges, slow=slow, fast=fast, operators=list(OPERATORS))
