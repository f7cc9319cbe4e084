"""Measured speed for ``exclusion.objective=speed``: node groups, and candidates timed head to head.

Which quantized nodes pay depends on the CPU (VNNI or not), the operator, the shapes and
the runtime version: on 2 AVX2 cores a QDQ Add runs slower than the fp32 Add it replaces,
while an int8 MatMul may pay. No model of that is trusted here; every figure is a timing
on this machine, with the session settings the job uses, of two models taking turns in
alternating windows (:func:`quantsweep.timing.time_shape`), so that drift of a shared
machine hits both alike and the per-window ratios show the noise.

Single nodes are too small to time (a few percent of a pass is within the noise of a
short window), so nodes are timed in groups of one kind: all candidates of an op type;
one role, the op type and the op types that produce its inputs (an Add after a MatMul is
a bias, which the quantizer can keep in int8 with its MatMul; an Add after Add+Mul a
residual); and one name pattern across layers (the attention-mask Add of every layer,
every layer's FFN output MatMul, ...), found by replacing a layer index in the name.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from quantsweep.records import NodeGroup

if TYPE_CHECKING:
    import onnxruntime as ort

    from quantsweep.sessions import SessionSettings

# a layer index: digits after "." or "_" that end a path segment ("layer.3/", "h_11/")
_LAYER_INDEX = re.compile(r"(?<=[._])\d+(?=/)")


def pattern_of(node: str) -> str:
    """The node's name with its layer index replaced by ``*``: the same node in every layer."""
    return _LAYER_INDEX.sub("*", node)


def producers(model_path: Path) -> dict[str, str]:
    """Node name -> the op types that compute its activation inputs, e.g. "MatMul" for a bias Add.

    Together with the node's own op type this names its role across the graph: an Add after
    a MatMul is a bias, after Add+Mul a residual, after Erf part of GELU, after Div+Mul an
    attention mask. Constants and graph inputs are not producers.
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    made_by = {out: node.op_type for node in graph.node for out in node.output}
    return {
        node.name: "+".join(sorted({made_by[i] for i in node.input if i in made_by})) or "input"
        for node in graph.node
    }


def node_groups(
    nodes: Sequence[tuple[str, str]], made_by: dict[str, str] | None = None
) -> list[tuple[str, str, list[str]]]:
    """(name, kind, nodes) of every op type, role and name pattern of two or more (node, op type) pairs.

    From the broadest to the most specific: op types (one timing each, the largest and so
    the clearest effect); roles, the op type and what produces its inputs ("Add after
    MatMul": every bias Add), when ``made_by`` (:func:`producers`) is given; name patterns
    across layers. A group that holds the same nodes as a broader one adds nothing and is
    left out.
    """
    by_type: dict[str, list[str]] = defaultdict(list)
    by_role: dict[str, list[str]] = defaultdict(list)
    by_pattern: dict[str, list[str]] = defaultdict(list)
    for node, op_type in nodes:
        by_type[op_type].append(node)
        if made_by is not None:
            by_role[f"{op_type} after {made_by.get(node, 'input')}"].append(node)
        by_pattern[pattern_of(node)].append(node)
    groups: list[tuple[str, str, list[str]]] = []
    seen: set[frozenset[str]] = set()
    for kind, members_by_name in (("op_type", by_type), ("role", by_role), ("pattern", by_pattern)):
        for name, members in sorted(members_by_name.items()):
            key = frozenset(members)
            if (kind == "op_type" or len(members) > 1) and key not in seen:
                groups.append((name, kind, members))
                seen.add(key)
    return groups


def verdict(group: NodeGroup) -> str:
    """ "slower" quantized when every window ran faster with the group in fp32, "faster" when none did, else "unclear"."""
    if group.speedup_min > 1.0:
        return "slower"
    if group.speedup_max < 1.0:
        return "faster"
    return "unclear"


# the most specific group with a clear verdict decides for a node
_PRECEDENCE = ("pattern", "role", "op_type")


def deciding_groups(groups: Sequence[NodeGroup]) -> dict[str, NodeGroup]:
    """For each node, the most specific of its groups whose recorded verdict is clear.

    A name pattern, then a role, then its op type: an unclear group (its windows straddle
    1) says nothing, because a few percent is within the noise of short windows. A node
    whose groups are all unclear has no entry.
    """
    deciding: dict[str, NodeGroup] = {}
    for kind in _PRECEDENCE:
        for group in groups:
            if group.kind != kind or group.verdict == "unclear":
                continue
            for node in group.nodes:
                deciding.setdefault(node, group)
    return deciding


def kept_nodes(groups: Sequence[NodeGroup]) -> list[str]:
    """The nodes kept in fp32 because quantizing them costs time: their deciding group is slower.

    Derived from the groups' recorded verdicts alone, so a saved search can be checked
    against it. A node no clear group decides is quantized, as without the speed objective.
    """
    return sorted(node for node, group in deciding_groups(groups).items() if group.verdict == "slower")


def mark_kept(groups: Sequence[NodeGroup]) -> None:
    """Set each group's ``kept``: its verdict is slower and it decides for some of its nodes."""
    deciders = {id(group) for group in deciding_groups(groups).values()}
    for group in groups:
        group.kept = group.verdict == "slower" and id(group) in deciders


@dataclass(frozen=True)
class Speed:
    """The reference's mean latency over the candidate's, and the per-window extremes."""

    speedup: float
    window_min: float
    window_max: float


@dataclass
class SpeedProbe:
    """Times two models against each other at one input shape, in alternating windows."""

    inputs: dict[str, np.ndarray]
    seconds: float
    settings: SessionSettings
    windows: int = 4
    warmup: int = 3
    _sessions: dict[Path, ort.InferenceSession] = field(default_factory=dict)

    @property
    def shape(self) -> list[int]:
        first = next(iter(self.inputs.values()))
        return [int(first.shape[0]), int(first.shape[1])]

    def session(self, model: Path, keep: bool = False) -> ort.InferenceSession:
        """A session of ``model``; ``keep`` holds it for later comparisons (the fp32 model, a base)."""
        from quantsweep.sessions import create_session

        if model in self._sessions:
            return self._sessions[model]
        session = create_session(model, self.settings)
        if keep:
            self._sessions[model] = session
        return session

    def compare(self, reference: Path, candidate: Path) -> Speed:
        """How much faster ``candidate`` runs than ``reference`` (>1: faster)."""
        from quantsweep.config import BenchmarkConfig
        from quantsweep.timing import time_shape

        batch, length = self.shape
        bench = BenchmarkConfig(
            batch_sizes=[batch],
            input_lengths=[length],
            duration=self.seconds,
            windows=self.windows,
            warmup=self.warmup,
        )
        timed = time_shape(
            self.session(reference), self.session(candidate), self.inputs, batch, length, bench
        )
        return Speed(
            speedup=round(timed.speedup, 4),
            window_min=round(min(timed.window_speedups), 4),
            window_max=round(max(timed.window_speedups), 4),
        )

    def forget(self) -> None:
        self._sessions.clear()
