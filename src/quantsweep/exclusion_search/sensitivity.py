"""Per-node sensitivity to static quantization, from the activations of a QDQ model.

For every activation the quantizer wraps in a QuantizeLinear/DequantizeLinear pair,
the QDQ model itself shows the tensor before and after the pair; both are made graph
outputs and compared over held-out batches, streamed, so that memory stays bounded.

The figure is an SQNR per channel (the last axis: hidden units, or key positions for
attention scores), and then the median over channels. Not the plain SQNR of the whole
tensor, which is what ONNX Runtime's ``qdq_loss_debug`` reports: it weighs each value by
its energy, so it is blind to the two failures that matter most in transformers. One
outlier channel can stretch the 8-bit range so far that every other channel rounds to
zero while the outlier itself, holding most of the energy, is kept almost exactly; and
an attention mask's -3.4e38 at padded positions does the same to every real attention
score. (On the test suite's planted node the whole-tensor SQNR was 64 dB, the best of
its graph, while its channels' median is near 0 dB, the worst. On the demo model the
mean over channels still ranked the six mask Adds last, because the padded positions
dominate the channels they appear in; the median ranks them first.) Batches are small
and length-sorted, so that most key positions are real words in every row.

A node's figure is the worst among its inputs and outputs: the local damage that
quantizing it does. How that damage reaches F1 is what the search measures.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from quantsweep.records import NodeSensitivity

if TYPE_CHECKING:
    import onnx

# energies below this count as zero; keeps the figures finite (and valid JSON)
_TINY = 1e-30
# per-channel figures are clamped to this many dB either way: a channel quantized
# without error (all zeros, or exactly representable) would otherwise be infinite, and a
# channel of pure noise minus infinity, neither of which JSON can hold
_LIMIT_DB = 100.0


def qdq_pairs(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """Activation name -> (tensor before the Q/DQ pair, tensor after it), read from a QDQ graph."""
    from onnxruntime.quantization.quant_utils import QUANT_INPUT_SUFFIX

    graph = model.graph
    constants = {init.name for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    pairs: dict[str, tuple[str, str]] = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        quantize = producers.get(node.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear" or quantize.input[0] in constants:
            continue  # a weight, or a tensor quantized offline: not an activation
        before = quantize.input[0]
        # a quantized graph output keeps its name after the pair; its producer's output is renamed
        name = before.removesuffix(QUANT_INPUT_SUFFIX)
        pairs.setdefault(name, (before, node.output[0]))
    return pairs


def activation_sqnr(
    qdq_model: Path, batches: Iterable[dict[str, np.ndarray]], threads: int
) -> dict[str, float]:
    """Median per-channel SQNR (dB) of every activation the QDQ model quantizes, by tensor name."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(qdq_model))
    pairs = qdq_pairs(model)
    existing = {output.name for output in model.graph.output}
    for before, after in pairs.values():
        for name in (before, after):
            if name not in existing:
                model.graph.output.append(
                    onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                )
                existing.add(name)
    options = ort.SessionOptions()
    # unoptimized, so that the Q/DQ pairs are not fused away before they are read
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory(prefix="quantsweep-sensitivity-") as tmp:
        augmented = Path(tmp) / "augmented.onnx"
        onnx.save(model, str(augmented))
        session = ort.InferenceSession(str(augmented), options, providers=["CPUExecutionProvider"])
    wanted = sorted({name for pair in pairs.values() for name in pair})
    figures: dict[str, list[tuple[float, int]]] = {name: [] for name in pairs}
    for inputs in batches:
        values = dict(zip(wanted, session.run(wanted, inputs), strict=True))
        for name, (before, after) in pairs.items():
            x = np.asarray(values[before], dtype=np.float64)
            y = np.asarray(values[after], dtype=np.float64)
            figures[name].append((channel_sqnr(x, y), x.size))
    # batches differ in length (and so in the number of key positions): weigh them by size
    return {
        name: round(sum(db * n for db, n in seen) / sum(n for _, n in seen), 3)
        for name, seen in figures.items()
        if seen
    }


def channel_sqnr(before: np.ndarray, after: np.ndarray) -> float:
    """SQNR of each channel (last axis), in dB, and the median over channels."""
    if before.ndim == 0:
        before, after = before.reshape(1), after.reshape(1)
    signal = np.square(before).reshape(-1, before.shape[-1]).sum(axis=0)
    noise = np.square(before - after).reshape(-1, before.shape[-1]).sum(axis=0)
    return float(np.median([_decibels(float(s), float(n)) for s, n in zip(signal, noise, strict=True)]))


def _decibels(signal: float, noise: float) -> float:
    if noise <= _TINY:
        return _LIMIT_DB
    return max(-_LIMIT_DB, min(_LIMIT_DB, 10.0 * math.log10(max(signal, _TINY) / noise)))


def rank_nodes(
    candidates: Sequence[tuple[str, str, Sequence[str]]], sqnr: dict[str, float]
) -> list[NodeSensitivity]:
    """Candidates (name, op type, tensors) ranked worst SQNR first; ties keep graph order.

    A candidate none of whose tensors was quantized is listed unranked: keeping it in
    fp32 would change nothing.
    """
    figures: list[NodeSensitivity] = []
    for name, op_type, tensors in candidates:
        measured = [(sqnr[t], t) for t in tensors if t in sqnr]
        worst = min(measured) if measured else None
        figures.append(
            NodeSensitivity(
                node=name,
                op_type=op_type,
                sqnr_db=worst[0] if worst else None,
                tensor=worst[1] if worst else None,
                rank=None,
            )
        )
    order = sorted(
        (i for i, f in enumerate(figures) if f.sqnr_db is not None),
        key=lambda i: (figures[i].sqnr_db, i),
    )
    for rank, index in enumerate(order, start=1):
        figures[index].rank = rank
    return figures
