"""Quantization on real exported graphs: what gets quantized, exclusions, calibration."""

from __future__ import annotations

from collections import Counter

import onnx
import pytest
from transformers import AutoTokenizer

from quantsweep.config import CalibrationConfig, CalibrationMethod, DatasetConfig
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
from quantsweep.tasks.token_classification.rows import encode_sentences, load_split


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
    operators = ["Add", "MatMul"]
    original = onnx.load(str(fp32.onnx_path))
    exclusion = resolve_exclusions(original, ["layernorm", "residual"])
    classifier = next(
        n.name for n in original.graph.node if n.op_type == "MatMul" and n.name.startswith("/classifier")
    )
    excluded = [*exclusion.node_names, classifier]
    # the same quantization with nothing excluded: which of the excluded nodes it would quantize
    (tmp_path / "all").mkdir()
    (tmp_path / "excluded").mkdir()
    everything = names(
        fp32, quantize(fp32, tmp_path / "all", static, operators, (), calibration_inputs)[0], operators
    )
    withheld = [name for name in excluded if name in everything]
    assert classifier in withheld
    path, _ = quantize(fp32, tmp_path / "excluded", static, operators, excluded, calibration_inputs)

    # The quantizer honoured the exclusions: each node keeps its name and float op type, and
    # its own weights and biases (initializers no other node reads) are not dequantized.
    quantized = onnx.load(str(path))
    by_name = {n.name: n for n in quantized.graph.node}
    producers = {o: n.op_type for n in quantized.graph.node for o in n.output}
    readers = Counter(tensor for n in original.graph.node for tensor in n.input)
    # the exporter merges identical initializers (the tiny model's zero biases): only unshared ones count
    own = {i.name for i in original.graph.initializer if readers[i.name] == 1}
    op_types = {n.name: n.op_type for n in original.graph.node}
    own_weights = 0
    for name in withheld:
        assert by_name[name].op_type == op_types[name], name
        original_node = next(n for n in original.graph.node if n.name == name)
        for position, tensor in enumerate(original_node.input):
            if tensor in own:
                own_weights += 1
                assert producers.get(by_name[name].input[position]) != "DequantizeLinear", (name, tensor)
    assert own_weights > 0

    facts = graph_facts(
        fp32.onnx_path, path, operators, excluded, exclusion.by_pattern, "static" if static else "dynamic"
    )
    # counted from the graphs: everything the unexcluded run quantized, less what was withheld
    assert facts.nodes_quantized == len(everything) - len(withheld)
    assert sum(facts.nodes_quantized_by_op_type.values()) == facts.nodes_quantized
    assert facts.candidate_nodes == sum(1 for t in op_types.values() if t in operators)
    assert facts.quantized_size_mb == round(path.stat().st_size / 1e6, 3)
    assert facts.original_size_mb == round(fp32.onnx_path.stat().st_size / 1e6, 3)


def test_instruction_set_override_and_reduce_range():
    request = QuantizationRequest(True, ["MatMul"], [], True, "avx512_vnni", True)
    qconfig, isa, detected = build_quantization_config(request)
    assert (isa, detected) == ("avx512_vnni", False)
    assert qconfig.reduce_range is True and qconfig.per_channel is True
    assert qconfig.weights_dtype.name == "QInt8"
