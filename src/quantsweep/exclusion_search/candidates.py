"""The candidates of a search: its held-out rows, the nodes it may keep, and the models each set makes.

Everything here touches ONNX models: a set of nodes kept in fp32 is quantized with the
job's calibrated ranges, scored on held-out rows against the fp32 model (the bootstrap
of :mod:`~quantsweep.exclusion_search.statistics`) and, for ``objective=speed``, timed
against it. The search itself (:mod:`~quantsweep.exclusion_search.search`) only calls
the functions :class:`CandidateModels` hands it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantsweep.config import split_held_out
from quantsweep.exclusion_search.search import Scored, ScoreSet, TimeSet
from quantsweep.exclusion_search.speed import Speed, SpeedProbe, mark_kept, node_groups, producers, verdict
from quantsweep.exclusion_search.statistics import drop_bound
from quantsweep.records import NodeGroup, NodeSensitivity

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from quantsweep.batching import EncodedSentence
    from quantsweep.quantize import QuantizationRequest
    from quantsweep.sessions import SessionSettings
    from quantsweep.tasks import Task, TaskRows

# the package's one logger: the job log names the search as it always has
log = logging.getLogger(__package__)


@dataclass
class HeldOutRows:
    """The rows the search scores on, encoded, and what scoring them needs."""

    data: TaskRows
    encoded: list[EncodedSentence]
    id2label: dict[int, str]
    batch_size: int
    pad_token_id: int
    input_names: list[str]
    # smaller batches for the SQNR ranking: rows of similar length, so little padding
    sensitivity_batch_size: int = 8

    def split(self, fraction: float) -> tuple[HeldOutRows, HeldOutRows | None]:
        """(rows the search scores on, the last ``fraction`` of them kept back to confirm); rows are shuffled already."""
        from dataclasses import replace

        # the same split the config's check counted (ExclusionConfig.check_rows)
        _, confirm = split_held_out(len(self.encoded), fraction)
        if confirm == 0 or confirm == len(self.encoded):
            return self, None
        cut = len(self.encoded) - confirm
        head, tail = list(range(cut)), list(range(cut, len(self.encoded)))
        return (
            replace(self, data=self.data.take(head), encoded=self.encoded[:cut]),
            replace(self, data=self.data.take(tail), encoded=self.encoded[cut:]),
        )


def candidate_nodes(model_path: Path, operators: Sequence[str]) -> list[tuple[str, str, list[str]]]:
    """(name, op type, input and output tensors) of every node the quantizer may touch."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [
        (node.name, node.op_type, [t for t in [*node.input, *node.output] if t])
        for node in graph.node
        if node.op_type in operators
    ]


@dataclass
class CandidateModels:
    """Quantizes the model with a set of nodes kept in fp32, and scores and times it."""

    model_path: Path
    request: QuantizationRequest
    ranges: Any
    model_config: PretrainedConfig
    sessions: SessionSettings
    task: Task
    folder: Path
    # the last set quantized, kept so that scoring and timing one step quantize once
    _latest: tuple[frozenset[str], Path] | None = None

    def model_with(self, nodes: Sequence[str]) -> Path:
        """The model quantized with ``nodes`` kept in fp32; the previous one is deleted."""
        import shutil
        import tempfile

        key = frozenset(nodes)
        if self._latest is not None and self._latest[0] == key:
            return self._latest[1]
        if self._latest is not None:
            shutil.rmtree(self._latest[1].parent, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(dir=self.folder, prefix="set-"))
        self._latest = (key, self.quantized_with(sorted(key), folder))
        return self._latest[1]

    def counts(self, model: Path, rows: HeldOutRows) -> np.ndarray:
        """Per held-out row, the task's counts (for tokens: entities right, predicted, in the reference)."""
        from quantsweep.sessions import create_session

        session = create_session(model, self.sessions)
        return self.task.counts(
            session, rows.data, rows.encoded, rows.id2label, rows.batch_size, rows.pad_token_id
        )

    def quantized_with(self, nodes: Sequence[str], folder: Path) -> Path:
        from dataclasses import replace

        from quantsweep.quantize import build_quantization_config, quantize_model

        qconfig, _, _ = build_quantization_config(replace(self.request, nodes_to_exclude=list(nodes)))
        return quantize_model(self.model_path, folder, qconfig, self.ranges, self.model_config)

    def scorer(self, rows: HeldOutRows, confidence: float | None, seed: int) -> tuple[float, ScoreSet]:
        """The fp32 model's F1 on ``rows``, and a function scoring a set's drop from it there."""
        metric = self.task.metric_from_counts  # the budget's metric (Task.BUDGET_METRIC) from summed counts
        reference = self.counts(self.model_path, rows)

        def score(nodes: list[str]) -> Scored:
            candidate = self.counts(self.model_with(nodes), rows)
            return Scored(
                f1=float(metric(candidate.sum(axis=0))),
                drop_bound=drop_bound(reference, candidate, confidence, seed, metric=metric),
            )

        return float(metric(reference.sum(axis=0))), score

    def timer(self, probe: SpeedProbe) -> TimeSet:
        """Times a set kept in fp32 against the fp32 model (one session of it for every step)."""
        probe.session(self.model_path, keep=True)

        def speed(nodes: list[str]) -> Speed:
            return probe.compare(self.model_path, self.model_with(nodes))

        return speed

    def time_groups(
        self,
        probe: SpeedProbe,
        ranking: Sequence[NodeSensitivity],
        base: list[str],
        deadline: float | None = None,
    ) -> list[NodeGroup]:
        """Every node group kept in fp32 on top of ``base``, timed against ``base`` alone.

        Groups not started by ``deadline`` (``time.perf_counter()``; ``max_minutes``) are not
        timed: their nodes are quantized, as without the speed objective.
        """
        import tempfile

        quantized = [(r.node, r.op_type) for r in ranking if r.rank is not None and r.node not in base]
        made_by = producers(self.model_path)
        every = node_groups(quantized, made_by)
        with tempfile.TemporaryDirectory(dir=self.folder, prefix="base-") as folder:
            reference = self.quantized_with(base, Path(folder))
            probe.session(reference, keep=True)
            groups: list[NodeGroup] = []
            for name, kind, nodes in every:
                if deadline is not None and time.perf_counter() >= deadline:
                    log.warning(
                        "Exclusion search: exclusion.max_minutes ran out after timing %d of %d node groups; "
                        "the others' nodes are quantized, as without the speed objective",
                        len(groups),
                        len(every),
                    )
                    break
                groups.append(self._time_group(probe, reference, base, name, kind, nodes))
            probe.forget()
        mark_kept(groups)
        return groups

    def _time_group(
        self, probe: SpeedProbe, reference: Path, base: list[str], name: str, kind: str, nodes: list[str]
    ) -> NodeGroup:
        """One group kept in fp32 on top of ``base``, timed against ``reference`` (``base`` quantized)."""
        import tempfile

        with tempfile.TemporaryDirectory(dir=self.folder, prefix="group-") as other:
            speed = probe.compare(reference, self.quantized_with([*base, *nodes], Path(other)))
        group = NodeGroup(
            name=name,
            kind=kind,
            nodes=sorted(nodes),
            speedup=speed.speedup,
            speedup_min=speed.window_min,
            speedup_max=speed.window_max,
        )
        group.verdict = verdict(group)
        log.info(
            "Exclusion search: keeping %s %s (%d nodes) in fp32: %.2fx (windows %.2f-%.2f)",
            kind.replace("_", " "),
            name,
            len(nodes),
            speed.speedup,
            speed.window_min,
            speed.window_max,
        )
        return group

    def rank(
        self, candidates: list[tuple[str, str, list[str]]], rows: HeldOutRows, samples: int
    ) -> list[NodeSensitivity]:
        """The candidates ranked by SQNR, measured on the model with every candidate quantized."""
        import tempfile

        from quantsweep.batching import length_sorted_batches
        from quantsweep.exclusion_search.sensitivity import activation_sqnr, rank_nodes

        with tempfile.TemporaryDirectory(dir=self.folder, prefix="rank-") as folder:
            full = self.quantized_with([], Path(folder))
            batches = (
                batch.inputs
                for batch in length_sorted_batches(
                    rows.encoded[:samples], rows.sensitivity_batch_size, rows.pad_token_id, rows.input_names
                )
            )
            ranking = rank_nodes(candidates, activation_sqnr(full, batches, self.sessions.intra_op_threads))
        worst = [r for r in ranking if r.rank is not None and r.rank <= 5]
        log.info(
            "Exclusion search: %d candidate nodes, %d quantized when none is kept; worst SQNR: %s",
            len(candidates),
            sum(r.rank is not None for r in ranking),
            ", ".join(f"{r.node} {r.sqnr_db:.1f} dB" for r in sorted(worst, key=lambda r: r.rank or 0)),
        )
        return ranking
