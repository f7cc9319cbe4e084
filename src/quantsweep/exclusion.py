"""Exclusion names -> concrete node names, by matching patterns in the ONNX graph.

The seed's five names describe transformer building blocks, not node names:

* ``layernorm``: layer normalisation, decomposed (ReduceMean, Sub, Pow, ReduceMean, Add,
  Sqrt, Div, Mul, Add: exporters below opset 17) or one node (LayerNormalization and
  ONNX Runtime's fused variants);
* ``gelu``: GELU, decomposed (Div, Erf, Add, Mul, Mul: below opset 20) or one node;
* ``residual``: an Add of two activations one of which comes from an Add (the skip
  connection after a dense layer's bias Add);
* ``gather``: an Add fed by a Gather (the sum of embeddings);
* ``softmax``: an Add that feeds a Softmax (the attention mask). Models that mask with
  Where (DistilBERT in eager mode) have none; the run says so instead of guessing.

Matching ignores input order, so it holds across exporters and opsets.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quantsweep.config import EXCLUSION_PATTERNS

if TYPE_CHECKING:
    import onnx

SINGLE_NODE_LAYERNORMS = (
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "EmbedLayerNormalization",
)
SINGLE_NODE_GELUS = ("Gelu", "FastGelu", "BiasGelu", "QuickGelu")


class ExclusionError(ValueError):
    """An exclusion entry that names neither a pattern nor a node; the message is for the user."""


class GraphIndex:
    """Producer and consumer look-ups over one ONNX graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.nodes = list(graph.node)
        self.by_name = {node.name: node for node in self.nodes}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for output in node.output:
                self.producer[output] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.constants = {init.name for init in graph.initializer}
        self.constants.update(out for node in self.nodes if node.op_type == "Constant" for out in node.output)

    def of_type(self, *op_types: str) -> list[onnx.NodeProto]:
        return [node for node in self.nodes if node.op_type in op_types]

    def parents(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        return [self.producer[name] for name in node.input if name in self.producer]

    def children(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        return [child for output in node.output for child in self.consumers.get(output, [])]

    def activation_inputs(self, node: onnx.NodeProto) -> list[str]:
        return [name for name in node.input if name and name not in self.constants]

    def has_constant_input(self, node: onnx.NodeProto) -> bool:
        return any(name in self.constants for name in node.input)

    def parent_path(self, node: onnx.NodeProto, op_types: list[str]) -> list[onnx.NodeProto] | None:
        """A chain of ancestors with these op types, following any input at each step."""
        if not op_types:
            return []
        for parent in self.parents(node):
            if parent.op_type == op_types[0]:
                rest = self.parent_path(parent, op_types[1:])
                if rest is not None:
                    return [parent, *rest]
        return None


def _layernorm(index: GraphIndex) -> set[str]:
    found = {node.name for node in index.of_type(*SINGLE_NODE_LAYERNORMS)}
    chain = ["Mul", "Div", "Sqrt", "Add", "ReduceMean", "Pow", "Sub", "ReduceMean"]
    for add in index.of_type("Add"):
        path = index.parent_path(add, chain)
        if path is not None:
            found.update(node.name for node in [add, *path])
    return found


def _gelu(index: GraphIndex) -> set[str]:
    found = {node.name for node in index.of_type(*SINGLE_NODE_GELUS)}
    for erf in index.of_type("Erf"):
        divs = [p for p in index.parents(erf) if p.op_type == "Div"]
        adds = [c for c in index.children(erf) if c.op_type == "Add" and index.has_constant_input(c)]
        if not divs or not adds:
            continue
        muls = [c for c in index.children(adds[0]) if c.op_type == "Mul"]
        if not muls:
            continue
        members = [divs[0], erf, adds[0], muls[0]]
        # The 0.5 factor sits either after (x * (1 + erf)) * 0.5 or before (x * 0.5) * (1 + erf).
        after = [c for c in index.children(muls[0]) if c.op_type == "Mul" and index.has_constant_input(c)]
        before = [p for p in index.parents(muls[0]) if p.op_type == "Mul" and index.has_constant_input(p)]
        members.extend(after[:1] or before[:1])
        found.update(node.name for node in members)
    return found


def _residual(index: GraphIndex) -> set[str]:
    return {
        add.name
        for add in index.of_type("Add")
        if len(index.activation_inputs(add)) == 2 and any(p.op_type == "Add" for p in index.parents(add))
    }


def _gather(index: GraphIndex) -> set[str]:
    return {
        add.name for add in index.of_type("Add") if any(p.op_type == "Gather" for p in index.parents(add))
    }


def _softmax(index: GraphIndex) -> set[str]:
    return {
        add.name for add in index.of_type("Add") if any(c.op_type == "Softmax" for c in index.children(add))
    }


PATTERN_MATCHERS: dict[str, Callable[[GraphIndex], set[str]]] = {
    "layernorm": _layernorm,
    "gelu": _gelu,
    "residual": _residual,
    "gather": _gather,
    "softmax": _softmax,
}
assert set(PATTERN_MATCHERS) == set(EXCLUSION_PATTERNS)


@dataclass
class ResolvedExclusion:
    """The node names to keep in fp32, and where each came from."""

    by_pattern: dict[str, list[str]]
    explicit: list[str]

    @property
    def node_names(self) -> list[str]:
        names: set[str] = set(self.explicit)
        for members in self.by_pattern.values():
            names.update(members)
        return sorted(names)

    @property
    def empty_patterns(self) -> list[str]:
        return [pattern for pattern, members in self.by_pattern.items() if not members]


def resolve_exclusions(
    model: onnx.ModelProto, entries: Iterable[str], key: str = "exclusion.nodes"
) -> ResolvedExclusion:
    """Resolve pattern names and check explicit node names against ``model``.

    ``key`` is the config key the entries come from (``exclusion.start_from`` for the
    search's starting set), named when one of them is neither a pattern nor a node. Only
    the exported graph knows its node names, so this check comes after the export; the
    config already refused entries that can only be misspelt patterns.
    """
    index = GraphIndex(model)
    by_pattern: dict[str, list[str]] = {}
    explicit: list[str] = []
    for entry in entries:
        if entry in PATTERN_MATCHERS:
            by_pattern[entry] = sorted(PATTERN_MATCHERS[entry](index))
        elif entry in index.by_name:
            explicit.append(entry)
        else:
            close = difflib.get_close_matches(entry, list(index.by_name), n=3)
            hint = f" Closest node names: {', '.join(close)}." if close else ""
            raise ExclusionError(
                f"Invalid configuration: `{key}` contains {entry!r}, which is neither a pattern "
                f"({', '.join(EXCLUSION_PATTERNS)}) nor the name of a node in the exported graph.{hint}"
            )
    return ResolvedExclusion(by_pattern=by_pattern, explicit=explicit)
