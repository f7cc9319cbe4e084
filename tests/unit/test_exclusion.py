"""Exclusion patterns resolved on real exported and optimized graphs (DistilBERT and BERT)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import pytest

from quantsweep.exclusion import ExclusionError, resolve_exclusions
from quantsweep.export import export_model

ALL = ["layernorm", "gelu", "residual", "gather", "softmax"]
LAYERS = 2  # the tiny models' depth
LAYERNORMS = 1 + 2 * LAYERS  # embeddings + two per layer


@pytest.fixture(scope="module")
def exported(distilbert_dir: Path, bert_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """arch, opset -> the optimized fp32 graph quantsweep quantizes."""
    cache: dict[tuple[str, int | None], onnx.ModelProto] = {}

    def get(arch: str, opset: int | None) -> onnx.ModelProto:
        if (arch, opset) not in cache:
            model_dir = distilbert_dir if arch == "distilbert" else bert_dir
            out = tmp_path_factory.mktemp(f"{arch}-{opset}")
            result = export_model(str(model_dir), None, "token-classification", opset, 1, out)
            cache[(arch, opset)] = onnx.load(str(result.onnx_path))
        return cache[(arch, opset)]

    return get


def op_types(model: onnx.ModelProto, names: list[str]) -> Counter[str]:
    by_name = {n.name: n.op_type for n in model.graph.node}
    return Counter(by_name[name] for name in names)


@pytest.mark.parametrize("arch", ["distilbert", "bert"])
def test_opset_11_decomposed_patterns(exported, arch):
    model = exported(arch, 11)
    resolved = resolve_exclusions(model, ALL).by_pattern
    # decomposed LayerNorm: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add
    assert op_types(model, resolved["layernorm"]) == Counter(
        {
            "ReduceMean": 2 * LAYERNORMS,
            "Add": 2 * LAYERNORMS,
            "Sub": LAYERNORMS,
            "Pow": LAYERNORMS,
            "Sqrt": LAYERNORMS,
            "Div": LAYERNORMS,
            "Mul": LAYERNORMS,
        }
    )
    # decomposed GELU: Div, Erf, Add, Mul, Mul per layer
    assert op_types(model, resolved["gelu"]) == Counter(
        {"Div": LAYERS, "Erf": LAYERS, "Add": LAYERS, "Mul": 2 * LAYERS}
    )
    # two skip connections per layer, plus BERT's second embedding Add (fed by an Add)
    residual = resolved["residual"]
    assert len([n for n in residual if "embeddings" not in n]) == 2 * LAYERS
    assert all(t == "Add" for t in op_types(model, residual))
    gathers = resolved["gather"]
    assert len(gathers) == (1 if arch == "distilbert" else 2)
    assert all("embeddings" in n for n in gathers)
    if arch == "distilbert":
        # DistilBERT's eager attention masks with Where: there is no Add before Softmax.
        assert resolved["softmax"] == []
    else:
        assert len(resolved["softmax"]) == LAYERS
        assert all("attention" in n for n in resolved["softmax"])


@pytest.mark.parametrize("arch", ["distilbert", "bert"])
def test_default_opset_single_node_layernorm(exported, arch):
    model = exported(arch, None)  # the exporter's default opset for the architecture
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    resolved = resolve_exclusions(model, ALL).by_pattern
    assert op_types(model, resolved["layernorm"]) == Counter({"LayerNormalization": LAYERNORMS})
    assert op_types(model, resolved["gelu"]) == Counter(
        {"Div": LAYERS, "Erf": LAYERS, "Add": LAYERS, "Mul": 2 * LAYERS}
    )
    assert len([n for n in resolved["residual"] if "embeddings" not in n]) == 2 * LAYERS
    assert len(resolved["softmax"]) == LAYERS  # the traced SDPA adds its mask before Softmax


def test_opset_20_single_node_gelu(exported):
    model = exported("bert", 20)
    resolved = resolve_exclusions(model, ["gelu", "layernorm"]).by_pattern
    assert op_types(model, resolved["gelu"]) == Counter({"Gelu": LAYERS})
    assert op_types(model, resolved["layernorm"]) == Counter({"LayerNormalization": LAYERNORMS})


def test_explicit_node_names_and_patterns_combine(exported):
    model = exported("bert", 11)
    classifier = next(
        n.name for n in model.graph.node if n.name.startswith("/classifier/") and n.op_type == "MatMul"
    )
    resolved = resolve_exclusions(model, ["gather", classifier])
    assert resolved.explicit == [classifier]
    assert classifier in resolved.node_names
    assert set(resolved.by_pattern["gather"]) <= set(resolved.node_names)


def test_unknown_node_name_is_a_clear_error(exported):
    model = exported("distilbert", 11)
    with pytest.raises(
        ExclusionError,
        match=r"`exclusion.nodes` contains '/classifier/Matmul'.*Closest node names: /classifier/MatMul",
    ):
        resolve_exclusions(model, ["/classifier/Matmul"])


def test_export_records_what_was_applied(distilbert_dir, tmp_path):
    eager = export_model(str(distilbert_dir), None, "token-classification", 11, 1, tmp_path / "a")
    assert eager.facts.attention_implementation == "eager"
    assert eager.facts.optimization_applied.startswith("onnxruntime ORT_ENABLE_BASIC")
    plain = export_model(str(distilbert_dir), None, "token-classification", 11, 0, tmp_path / "b")
    assert plain.facts.optimization_applied == "none"
    # basic optimization really ran: constant folding removes the exporter's Constant nodes
    ops_plain = Counter(n.op_type for n in onnx.load(str(plain.onnx_path)).graph.node)
    ops_opt = Counter(n.op_type for n in onnx.load(str(eager.onnx_path)).graph.node)
    assert ops_plain["Constant"] > 0 and ops_opt["Constant"] == 0
    assert sum(ops_opt.values()) < sum(ops_plain.values())
    assert [
        o.version for o in onnx.load(str(eager.onnx_path)).opset_import if o.domain in ("", "ai.onnx")
    ] == [11]
