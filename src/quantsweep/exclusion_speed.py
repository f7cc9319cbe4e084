"""Measured speed for ``exclusion.objective=speed``: node groups, and candidates timed head to head.

Which quantized nodes pay depends on the CPU (VNNI or not), the operator, the shapes and
the runtime version: on 2 AVX2 cores a QDQ Add runs slower than the fp32 Add it replaces,
while an int8 MatMul may pay. No model of that is trusted here; every figure is a timing
on this machine, with the session settings the job uses, of two models taking turns in
alternating windows (:func:`quantsweep.timing.time_shape`), so that drift of a shared
machine hits both alike and the per-window ratios show the noise.

Single nodes are too small to time (a few percent of a pass is within the noise of a
short window), so nodes are timed in groups of one kind: all candidates of an op type,
and one name pattern across layers (the attention-mask Add of every layer, every
layer's FFN output MatMul, ...), found by replacing a layer index in the node's name.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from quantsweep.results import NodeGroup

if TYPE_CHECKING:
    import onnxruntime as ort

    from quantsweep.sessions import SessionSettings

# a layer index: digits after "." or "_" that end a path segment ("layer.3/", "h_11/")
_LAYER_INDEX = re.compile(r"(?<=[._])\d+(?=/)")


def pattern_of(node: str) -> str:
    """The node's name with its layer index replaced by ``*``: the same node in every layer."""
    return _LAYER_INDEX.sub("*", node)


def node_groups(nodes: Sequence[tuple[str, str]]) -> list[tuple[str, str, list[str]]]:
    """(name, kind, nodes) of every op type and every name pattern of two or more (node, op type) pairs.

    Op types come first: one timing each, and their effect is the largest, so the
    clearest. A pattern that holds a whole op type adds nothing and is left out.
    """
    by_type: dict[str, list[str]] = defaultdict(list)
    by_pattern: dict[str, list[str]] = defaultdict(list)
    for node, op_type in nodes:
        by_type[op_type].append(node)
        by_pattern[pattern_of(node)].append(node)
    groups = [(op_type, "op_type", members) for op_type, members in sorted(by_type.items())]
    whole_types = {frozenset(members) for members in by_type.values()}
    groups += [
        (pattern, "pattern", members)
        for pattern, members in sorted(by_pattern.items())
        if len(members) > 1 and frozenset(members) not in whole_types
    ]
    return groups


def verdict(group: NodeGroup) -> str:
    """ "slower" quantized when every window ran faster with the group in fp32, "faster" when none did, else "unclear"."""
    if group.speedup_min > 1.0:
        return "slower"
    if group.speedup_max < 1.0:
        return "faster"
    return "unclear"


def free_nodes(groups: list[NodeGroup]) -> list[str]:
    """Decide each group's ``verdict`` and ``kept``; the nodes kept in fp32 because quantizing them costs time.

    A pattern with a clear verdict decides for its nodes; an unclear one (its windows
    straddle 1: a few percent is within the noise of short windows) follows its op type,
    as does a node in no timed pattern. An op type is kept only when it is clearly slower.
    """
    types = {g.name: g for g in groups if g.kind == "op_type"}
    type_of = {node: g.name for g in types.values() for node in g.nodes}
    for group in groups:
        group.verdict = verdict(group)
    kept: set[str] = set()
    decided: set[str] = set()
    for group in groups:
        if group.kind != "pattern":
            continue
        own = types.get(type_of.get(group.nodes[0], ""))
        group.kept = group.verdict == "slower" or (
            group.verdict == "unclear" and own is not None and own.verdict == "slower"
        )
        decided.update(group.nodes)
        if group.kept:
            kept.update(group.nodes)
    for group in types.values():
        group.kept = group.verdict == "slower"
        if group.kept:
            kept.update(n for n in group.nodes if n not in decided)
    return sorted(kept)


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
