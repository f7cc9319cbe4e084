"""exclusion=auto: the smallest set of nodes to keep in fp32 that meets an F1 budget.

The search never sees the evaluation split: it judges every candidate set by F1 on
held-out rows (of the calibration split, disjoint from the rows that calibrate, or of
``holdout_split``), so the eval metrics a job reports stay an honest test of the set it
chose. A set meets the budget when its F1 drop holds at ``confidence`` in a paired
bootstrap over those rows: a search takes dozens of accept-or-reject decisions, and
judging measured drops would favour sets that were merely lucky on the held-out rows.

1. Rank: quantize every candidate node (static QDQ, the job's calibrated ranges) and
   measure each node's SQNR on held-out rows (:mod:`quantsweep.sensitivity`).
2. Start: evaluate the starting set (nothing, or ``start_from`` patterns and names).
3. Grow, if the start misses the budget: keep more of the ranked nodes, worst SQNR
   first, until it is met: ``bisect`` halves the ranked prefix (about log2 N steps, and
   assumes F1 rises with the prefix), ``greedy`` adds one node per step.
4. Prune: give kept nodes back to quantization, least sensitive first, in chunks that
   halve down to single nodes, whenever the set without them still meets the budget.

Every step quantizes the model and scores it; ``max_evaluations`` and ``max_minutes``
bound the steps. When they run out the search ends with the best set evaluated so far:
the smallest one meeting the budget, or, when none does, the one with the highest F1,
marked as not meeting it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantsweep.config import ExclusionConfig, SearchStrategy
from quantsweep.results import ExclusionSearchResult, NodeSensitivity, SearchStep

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from quantsweep.data import EncodedSentence
    from quantsweep.quantize import QuantizationRequest
    from quantsweep.sessions import SessionSettings
    from quantsweep.tasks import Task, TaskRows

log = logging.getLogger(__name__)

# bump when the ranking or the search changes what it chooses: cached searches stop matching
SEARCH_FORMAT = 1


@dataclass(frozen=True)
class Scored:
    """A candidate set's held-out F1, and the F1 drop it may be charged with."""

    f1: float
    # the drop at the requested confidence (a bootstrap bound), or the measured drop
    drop_bound: float


# quantizes with these nodes kept in fp32 and scores the model on the held-out rows
ScoreSet = Callable[[list[str]], Scored]


@dataclass(frozen=True)
class SearchBudget:
    max_f1_drop: float
    max_evaluations: int | None
    max_minutes: float | None


def drop_bound(
    reference: np.ndarray,
    candidate: np.ndarray,
    confidence: float | None,
    seed: int,
    resamples: int = 2000,
    metric: Callable[[np.ndarray], np.ndarray] | None = None,
) -> float:
    """The metric's drop from ``reference`` to ``candidate`` that holds at ``confidence``, or the measured one.

    A paired bootstrap over rows: both models are scored on the same resampled rows, and
    the bound is the ``confidence`` quantile of the drops. Inputs are the per-row counts of
    the task (``Task.counts``) and ``metric`` turns summed counts into the budget's metric
    (``Task.metric_from_counts``; default: seqeval's micro F1, token classification's).
    """
    from quantsweep.evaluate import f1_from_counts

    score = metric or f1_from_counts
    measured = float(score(reference.sum(axis=0)) - score(candidate.sum(axis=0)))
    if confidence is None or len(reference) < 2:
        return measured
    rows = np.random.default_rng(seed).integers(0, len(reference), size=(resamples, len(reference)))
    drops = score(reference[rows].sum(axis=1)) - score(candidate[rows].sum(axis=1))
    return float(np.quantile(drops, confidence))


@dataclass
class SearchOutcome:
    steps: list[SearchStep]
    chosen: list[str]
    chosen_f1: float
    meets_budget: bool
    stopped_by: str


class _OutOfBudget(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Steps:
    """Evaluated sets, each at most once, within the evaluation and time budget."""

    def __init__(self, score: ScoreSet, fp32_f1: float, budget: SearchBudget, started: float) -> None:
        self.score = score
        self.fp32_f1 = fp32_f1
        self.budget = budget
        self.started = started
        self.steps: list[SearchStep] = []
        self._seen: dict[frozenset[str], SearchStep] = {}

    def meets(self, bound: float) -> bool:
        # rounding keeps a drop of exactly the budget from failing on float noise
        return round(bound, 9) <= self.budget.max_f1_drop

    def _exhausted(self) -> str | None:
        if self.budget.max_evaluations is not None and len(self.steps) >= self.budget.max_evaluations:
            return "evaluations"
        elapsed = time.perf_counter() - self.started
        if self.budget.max_minutes is not None and elapsed >= 60 * self.budget.max_minutes:
            return "minutes"
        return None

    def evaluate(self, nodes: Sequence[str], phase: str, changed: Sequence[str]) -> SearchStep:
        key = frozenset(nodes)
        if key in self._seen:
            return self._seen[key]
        # the starting set is always evaluated, so that there is a measured set to end with
        if self.steps and (reason := self._exhausted()):
            raise _OutOfBudget(reason)
        start = time.perf_counter()
        kept = sorted(key)
        scored = self.score(kept)
        f1 = scored.f1
        step = SearchStep(
            step=len(self.steps),
            phase=phase,
            nodes=kept,
            f1=round(f1, 6),
            f1_drop=round(self.fp32_f1 - f1, 6),
            f1_drop_bound=round(scored.drop_bound, 6),
            meets_budget=self.meets(scored.drop_bound),
            seconds=round(time.perf_counter() - start, 3),
            changed=sorted(changed),
        )
        log.info(
            "Exclusion search step %d (%s): %d nodes kept in fp32, held-out F1 %.4f (%+.4f against fp32; "
            "drop charged %.4f, %s the budget of %.4f)",
            step.step,
            phase,
            len(kept),
            f1,
            -step.f1_drop,
            step.f1_drop_bound,
            "within" if step.meets_budget else "outside",
            self.budget.max_f1_drop,
        )
        self.steps.append(step)
        self._seen[key] = step
        return step


def search(
    ranking: Sequence[NodeSensitivity],
    start: Sequence[str],
    strategy: SearchStrategy,
    budget: SearchBudget,
    fp32_f1: float,
    score: ScoreSet,
    started: float | None = None,
) -> SearchOutcome:
    """Find the nodes to keep in fp32; ``score`` quantizes with a set and returns held-out F1."""
    ranked = [r.node for r in sorted((r for r in ranking if r.rank is not None), key=lambda r: r.rank or 0)]
    sqnr = {r.node: r.sqnr_db for r in ranking}
    # a starting node the quantizer leaves alone would change nothing: it is not kept
    current = sorted({node for node in start if sqnr.get(node) is not None})
    steps = _Steps(score, fp32_f1, budget, time.perf_counter() if started is None else started)
    stopped_by = "done"
    try:
        if not steps.evaluate(current, "start", current).meets_budget:
            current = _grow(steps, current, [n for n in ranked if n not in current], strategy)
        _prune(steps, current, sqnr)
    except _OutOfBudget as out:
        stopped_by = out.reason
        log.warning(
            "Exclusion search: the %s budget ran out; taking the best set evaluated so far.", out.reason
        )
    best = _best(steps.steps)
    return SearchOutcome(
        steps=steps.steps,
        chosen=best.nodes,
        chosen_f1=best.f1,
        meets_budget=best.meets_budget,
        stopped_by=stopped_by,
    )


def _grow(steps: _Steps, base: list[str], rest: list[str], strategy: SearchStrategy) -> list[str]:
    """The base plus the shortest prefix of ``rest`` (ranked) that meets the budget."""
    if strategy is SearchStrategy.greedy:
        for k in range(1, len(rest) + 1):
            if steps.evaluate(base + rest[:k], "grow", rest[k - 1 : k]).meets_budget:
                return base + rest[:k]
        return base + rest
    # bisect: the prefix of length `low` misses the budget; `high` meets it (every
    # ranked node kept leaves nothing quantized, so it meets it by construction, and
    # is still evaluated before it is chosen, so that the figures are measured ones)
    low, high = 0, len(rest)
    while high - low > 1:
        middle = (low + high) // 2
        if steps.evaluate(base + rest[:middle], "grow", rest[low:middle]).meets_budget:
            high = middle
        else:
            low = middle
    steps.evaluate(base + rest[:high], "grow", rest[low:high])
    return base + rest[:high]


def _prune(steps: _Steps, kept: list[str], sqnr: dict[str, float | None]) -> None:
    """Give nodes back to quantization, least sensitive (highest SQNR) first, while the budget holds.

    Nodes go back in chunks, halved each round down to single nodes: when most of a
    large set is not needed, a few big chunks settle it instead of one step per node.
    """
    current = list(kept)
    if not steps.evaluate(current, "grow", []).meets_budget:
        return
    order = sorted(current, key=lambda n: (-(sqnr.get(n) or 0.0), n))
    size = max(1, len(order) // 2)
    while order:
        remaining: list[str] = []
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            without = [n for n in current if n not in chunk]
            if steps.evaluate(without, "prune", chunk).meets_budget:
                current = without
            else:
                remaining.extend(chunk)
        if size == 1:
            return
        order, size = remaining, max(1, size // 2)


def _best(steps: list[SearchStep]) -> SearchStep:
    meeting = [s for s in steps if s.meets_budget]
    if meeting:
        return min(meeting, key=lambda s: (len(s.nodes), -s.f1, s.step))
    return min(steps, key=lambda s: (-s.f1, len(s.nodes), s.step))


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
class _Candidates:
    """Quantizes the model with a set of nodes kept in fp32 and scores it on the held-out rows."""

    model_path: Path
    request: QuantizationRequest
    ranges: Any
    model_config: PretrainedConfig
    rows: HeldOutRows
    sessions: SessionSettings
    task: Task

    def counts(self, model: Path) -> np.ndarray:
        """Per held-out row, the task's counts (for tokens: entities right, predicted, in the reference)."""
        from quantsweep.sessions import create_session

        rows = self.rows
        session = create_session(model, self.sessions)
        return self.task.counts(
            session, rows.data, rows.encoded, rows.id2label, rows.batch_size, rows.pad_token_id
        )

    def quantized_with(self, nodes: list[str], folder: Path) -> Path:
        from dataclasses import replace

        from quantsweep.quantize import build_quantization_config, quantize_model

        qconfig, _, _ = build_quantization_config(replace(self.request, nodes_to_exclude=list(nodes)))
        return quantize_model(self.model_path, folder, qconfig, self.ranges, self.model_config)

    def rank(
        self, candidates: list[tuple[str, str, list[str]]], samples: int, folder: Path
    ) -> list[NodeSensitivity]:
        """The candidates ranked by SQNR, measured on the model with every candidate quantized."""
        from quantsweep.data import length_sorted_batches
        from quantsweep.sensitivity import activation_sqnr, rank_nodes

        rows = self.rows
        full = self.quantized_with([], folder)
        sample = rows.encoded[:samples]
        batches = (
            batch.inputs
            for batch in length_sorted_batches(
                sample, rows.sensitivity_batch_size, rows.pad_token_id, rows.input_names
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


def find_exclusions(
    settings: ExclusionConfig,
    start_nodes: Sequence[str],
    model_path: Path,
    request: QuantizationRequest,
    ranges: Any,
    model_config: PretrainedConfig,
    rows: HeldOutRows,
    sessions: SessionSettings,
    scratch: Path,
    seed: int,
    task: Task,
) -> ExclusionSearchResult:
    """Rank the candidate nodes, search, and report every step; ``scratch`` holds temporary models."""
    import tempfile

    metric = task.metric_from_counts  # the budget's metric (Task.BUDGET_METRIC) from summed counts
    started = time.perf_counter()
    candidates = candidate_nodes(model_path, request.operators)
    names = {name for name, _, _ in candidates}
    models = _Candidates(model_path, request, ranges, model_config, rows, sessions, task)
    reference = models.counts(model_path)
    fp32_f1 = float(metric(reference.sum(axis=0)))
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".exclusion-search-") as tmp:
        ranking = models.rank(candidates, settings.sensitivity_samples, Path(tmp))
        sensitivity_seconds = round(time.perf_counter() - started, 3)

        def score(nodes: list[str]) -> Scored:
            with tempfile.TemporaryDirectory(dir=tmp, prefix="step-") as folder:
                candidate = models.counts(models.quantized_with(nodes, Path(folder)))
            return Scored(
                f1=float(metric(candidate.sum(axis=0))),
                drop_bound=drop_bound(reference, candidate, settings.confidence, seed, metric=metric),
            )

        budget = SearchBudget(settings.max_f1_drop, settings.max_evaluations, settings.max_minutes)
        starting = [n for n in start_nodes if n in names]
        outcome = search(ranking, starting, settings.strategy, budget, fp32_f1, score, started)
    result = ExclusionSearchResult(
        strategy=settings.strategy.value,
        max_f1_drop=settings.max_f1_drop,
        confidence=settings.confidence,
        start_from=list(settings.start_from),
        start_nodes=sorted(starting),
        holdout_samples=len(rows.data),
        holdout_fingerprint=rows.data.fingerprint,
        sensitivity_samples=len(rows.encoded[: settings.sensitivity_samples]),
        fp32_f1=round(fp32_f1, 6),
        ranking=ranking,
        steps=outcome.steps,
        chosen=outcome.chosen,
        chosen_f1=outcome.chosen_f1,
        meets_budget=outcome.meets_budget,
        stopped_by=outcome.stopped_by,
        evaluations=len(outcome.steps),
        seconds=round(time.perf_counter() - started, 3),
        sensitivity_seconds=sensitivity_seconds,
    )
    _announce(result)
    return result


def _announce(result: ExclusionSearchResult) -> None:
    (log.info if result.meets_budget else log.warning)(
        "Exclusion search chose %d nodes to keep in fp32 (held-out F1 %.4f vs fp32 %.4f; %s) in %d steps, %.0f s.",
        len(result.chosen),
        result.chosen_f1,
        result.fp32_f1,
        "within the budget" if result.meets_budget else f"NOT within the budget of {result.max_f1_drop}",
        result.evaluations,
        result.seconds,
    )
