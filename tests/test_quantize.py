"""Quantization on real exported graphs: what gets quantized, exclusions, calibration."""

from __future__ import annotations

import onnx
import pytest
from transformers import AutoTokenizer

from quantsweep.config import CalibrationConfig, CalibrationMethod, DatasetConfig
from quantsweep.data import encode_sentences, load_split
from quantsweep.exclusion import resolve_exclusions
from quantsweep.export import export_model
from quantsweep.quantize import (
    CalibrationBatches,
    QuantizationRequest,
    build_quantization_config,
    calibrate,
    graph_facts,
    quantize_model,
    quantized_node_names,
)


@pytest.fixture(scope="module")
def fp32(distilbert_dir, tmp_path_factory):
    return export_model(
        str(distilbert_dir), None, "token-classification", 11, 1, tmp_path_factory.mktemp("fp32")
    )


@pytest.fixture(scope="module")
def calibration_inputs(distilbert_dir, conll_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(distilbert_dir))
    data = load_split(DatasetConfig(path=str(conll_dir)), "train", limit=13)
    return encode_sentences(tokenizer, data.tokens, 256), tokenizer.pad_token_id


def quantize(
    fp32,
    tmp_path,
    static,
    operators,
    exclude=(),
    calibration_inputs=None,
    method=CalibrationMethod.minmax,
    batch_size=4,
):
    request = QuantizationRequest(static, list(operators), list(exclude), False, "auto", None)
    qconfig, _, _ = build_quantization_config(request)
    ranges = None
    if static:
        encoded, pad = calibration_inputs
        batches = CalibrationBatches(encoded, batch_size, pad, fp32.input_names)
        # entropy's threshold search is quadratic in the bins: its group file sets 128, not 2048
        bins = 128 if method is CalibrationMethod.entropy else 2048
        ranges = calibrate(
            fp32.onnx_path, batches, CalibrationConfig(method=method, num_bins=bins), list(operators), False
        )
        assert batches.samples_fed == len(encoded)  # every sample, not a shard
    path = quantize_model(fp32.onnx_path, tmp_path, qconfig, ranges)
    return path, qconfig


def names(fp32, path, operators, excluded=()):
    return quantized_node_names(onnx.load(str(fp32.onnx_path)), onnx.load(str(path)), operators, excluded)


def test_dynamic_add_quantizes_nothing_and_says_so(fp32, tmp_path):
    path, _ = quantize(fp32, tmp_path, False, ["Add"])
    facts = graph_facts(fp32.onnx_path, path, ["Add"], [], {}, "dynamic")
    assert facts.nodes_quantized == 0 and facts.nothing_quantized
    assert facts.candidate_nodes > 0
    assert "Nothing was quantized" in facts.note and "no integer kernel" in facts.note


def test_dynamic_matmul_becomes_integer_ops(fp32, tmp_path):
    path, qconfig = quantize(fp32, tmp_path, False, ["Add", "MatMul"])
    facts = graph_facts(fp32.onnx_path, path, ["Add", "MatMul"], [], {}, "dynamic")
    matmuls = sum(1 for n in onnx.load(str(fp32.onnx_path)).graph.node if n.op_type == "MatMul")
    assert facts.nodes_quantized_by_op_type == {"MatMul": matmuls}
    assert not facts.nothing_quantized
    assert any(n.op_type == "MatMulInteger" for n in onnx.load(str(path)).graph.node)
    assert qconfig.format.name == "QOperator"


@pytest.mark.parametrize("method", list(CalibrationMethod))
def test_static_quantizes_add_and_matmul_with_every_calibration_method(
    fp32, tmp_path, calibration_inputs, method
):
    path, qconfig = quantize(
        fp32, tmp_path, True, ["Add", "MatMul"], calibration_inputs=calibration_inputs, method=method
    )
    quantized = names(fp32, path, ["Add", "MatMul"])
    counts = {op: sum(1 for t in quantized.values() if t == op) for op in ("Add", "MatMul")}
    assert counts["Add"] > 0 and counts["MatMul"] > 0
    assert qconfig.format.name == "QDQ"


@pytest.mark.parametrize("static", [False, True])
def test_exclusions_apply_to_both_approaches(fp32, tmp_path, calibration_inputs, static):
    graph = onnx.load(str(fp32.onnx_path))
    exclusion = resolve_exclusions(graph, ["layernorm", "residual"])
    classifier = next(
        n.name for n in graph.graph.node if n.op_type == "MatMul" and n.name.startswith("/classifier")
    )
    excluded = [*exclusion.node_names, classifier]
    path, _ = quantize(fp32, tmp_path, static, ["Add", "MatMul"], excluded, calibration_inputs)
    quantized = names(fp32, path, ["Add", "MatMul"], excluded)
    assert quantized  # the rest still is quantized
    assert not set(excluded) & set(quantized)
    # the quantizer honoured the exclusions: the excluded nodes are still float ops
    by_name = {n.name: n for n in onnx.load(str(path)).graph.node}
    assert by_name[classifier].op_type == "MatMul"
    producers = {o: n.op_type for n in by_name.values() for o in n.output}
    assert not all(producers.get(i) == "DequantizeLinear" for i in by_name[classifier].input)
    facts = graph_facts(
        fp32.onnx_path,
        path,
        ["Add", "MatMul"],
        excluded,
        exclusion.by_pattern,
        "static" if static else "dynamic",
    )
    assert facts.nodes_excluded == excluded
    assert facts.quantized_size_mb > 0 and facts.original_size_mb > 0


def test_instruction_set_override_and_reduce_range():
    request = QuantizationRequest(True, ["MatMul"], [], True, "avx512_vnni", True)
    qconfig, isa, detected = build_quantization_config(request)
    assert (isa, detected) == ("avx512_vnni", False)
    assert qconfig.reduce_range is True and qconfig.per_channel is True
    assert qconfig.weights_dtype.name == "QInt8"
