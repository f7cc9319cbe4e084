"""exclusion=auto: the nodes to keep in fp32, fastest or fewest, within an F1 budget.

The search never sees the evaluation split: it judges every candidate set by F1 on
held-out rows (of the calibration split, disjoint from the rows that calibrate, or of
``holdout_split``), so the eval metrics a job reports stay an honest test of the set it
chose. A set meets the budget when its F1 drop holds at ``confidence`` in a paired
bootstrap over those rows.

1. Rank: quantize every candidate node (static QDQ, the job's calibrated ranges) and
   measure each node's SQNR on held-out rows (:mod:`quantsweep.sensitivity`).
2. Speed (``objective=speed``): time node groups (op types, name patterns across
   layers) kept in fp32 against the model without them (:mod:`quantsweep.exclusion_speed`);
   groups that are slower quantized start kept and are never given back.
3. Start: evaluate the starting set (``start_from`` patterns and names, and the slow groups).
4. Grow, if the start misses the budget: keep more of the ranked nodes, worst SQNR
   first, until it is met: ``bisect`` halves the ranked prefix (about log2 N steps, and
   assumes F1 rises with the prefix), ``greedy`` adds one node per step.
5. Prune: give kept nodes back to quantization, least sensitive first, in chunks that
   halve down to single nodes, whenever the set without them still meets the budget.
6. Choose and confirm: the sets that met the budget, fastest (every step is timed
   against fp32) or fewest first, are scored on held-out rows the search never scored
   on, at a confidence corrected for the number confirmed; the first that holds is chosen.

A search takes dozens of accept-or-reject decisions on the same rows and keeps the best
set that passed, so that set passed partly by luck; the bootstrap bound of each step
does not count that selection, the confirmation on fresh rows does.

Every step quantizes the model and scores it; ``max_evaluations`` and ``max_minutes``
bound the steps. When they run out the search ends with the sets evaluated so far.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantsweep.config import ExclusionConfig, SearchObjective, SearchStrategy, split_held_out
from quantsweep.exclusion_speed import (
    Speed,
    SpeedProbe,
    kept_nodes,
    mark_kept,
    node_groups,
    producers,
    verdict,
)
from quantsweep.records import (
    Confirmation,
    ExclusionSearchResult,
    NodeGroup,
    NodeSensitivity,
    RowsResolution,
    SearchStep,
)

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from quantsweep.batching import EncodedSentence
    from quantsweep.quantize import QuantizationRequest
    from quantsweep.sessions import SessionSettings
    from quantsweep.tasks import Task, TaskRows

log = logging.getLogger(__name__)

# bump when the ranking or the search changes what it chooses: cached searches stop matching
SEARCH_FORMAT = 2


@dataclass(frozen=True)
class Scored:
    """A candidate set's held-out F1, and the F1 drop it may be charged with."""

    f1: float
    # the drop at the requested confidence (a bootstrap bound), or the measured drop
    drop_bound: float


# quantizes with these nodes kept in fp32 and scores the model on the held-out rows
ScoreSet = Callable[[list[str]], Scored]
# quantizes with these nodes kept in fp32 and times the model against fp32
TimeSet = Callable[[list[str]], Speed]


def within_budget(bound: float, budget: float) -> bool:
    """Whether a drop charged at ``bound`` meets ``budget``; rounding keeps a drop of exactly the budget from failing on float noise."""
    return round(bound, 9) <= budget


def resolution(step: int, rows: int, drop: float, bound: float, budget: float) -> RowsResolution:
    """Whether ``rows`` resolve ``budget``: the bootstrap's margin on a drop near it, against the budget.

    ``rows_needed`` would bring the margin to half the budget (it shrinks as one over the
    square root of the rows), so that a set losing half the budget could meet it.
    """
    margin = max(bound - drop, 0.0)
    needed = math.ceil(rows * (margin / (budget / 2)) ** 2)
    return RowsResolution(
        step=step,
        rows=rows,
        margin=round(margin, 6),
        resolved=margin <= budget,
        rows_needed=max(needed, rows),
    )


# sets tried on the confirmation rows before the search gives up: each try is one more
# decision, so each is judged at 1 - (1 - confidence) / MAX_CONFIRMATIONS
MAX_CONFIRMATIONS = 3


@dataclass(frozen=True)
class SearchBudget:
    max_f1_drop: float
    max_evaluations: int | None
    max_minutes: float | None

    def deadline(self, started: float) -> float | None:
        """When ``max_minutes`` from ``started`` (``time.perf_counter()``) run out."""
        return None if self.max_minutes is None else started + 60 * self.max_minutes


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
    from quantsweep.tasks.token_classification.scoring import f1_from_counts

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
    # the steps that met the budget, in the order the objective prefers them
    choices: list[SearchStep]
    stopped_by: str
    resolution: RowsResolution | None

    @property
    def best(self) -> SearchStep:
        """The objective's pick before any confirmation."""
        return self.choices[0]

    @property
    def chosen(self) -> list[str]:
        return self.best.nodes

    @property
    def chosen_f1(self) -> float:
        return self.best.f1

    @property
    def meets_budget(self) -> bool:
        return self.best.meets_budget


class _OutOfBudget(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Steps:
    """Evaluated sets, each at most once, within the evaluation and time budget."""

    def __init__(
        self,
        score: ScoreSet,
        fp32_f1: float,
        budget: SearchBudget,
        started: float,
        timer: TimeSet | None = None,
        rows: int = 0,
    ) -> None:
        self.score = score
        self.timer = timer
        self.fp32_f1 = fp32_f1
        self.budget = budget
        self.started = started
        self.rows = rows
        self.steps: list[SearchStep] = []
        self.resolution: RowsResolution | None = None
        self._seen: dict[frozenset[str], SearchStep] = {}

    def meets(self, bound: float) -> bool:
        return within_budget(bound, self.budget.max_f1_drop)

    def _exhausted(self) -> str | None:
        if self.budget.max_evaluations is not None and len(self.steps) >= self.budget.max_evaluations:
            return "evaluations"
        deadline = self.budget.deadline(self.started)
        if deadline is not None and time.perf_counter() >= deadline:
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
        speed = self.timer(kept) if self.timer else None
        step = SearchStep(
            step=len(self.steps),
            phase=phase,
            nodes=kept,
            f1=round(scored.f1, 6),
            f1_drop=round(self.fp32_f1 - scored.f1, 6),
            f1_drop_bound=round(scored.drop_bound, 6),
            meets_budget=self.meets(scored.drop_bound),
            seconds=round(time.perf_counter() - start, 3),
            changed=sorted(changed),
            speedup=speed.speedup if speed else None,
            speedup_min=speed.window_min if speed else None,
            speedup_max=speed.window_max if speed else None,
        )
        log.info(
            "Exclusion search step %d (%s): %d nodes kept in fp32, held-out F1 %.4f (%+.4f against fp32; "
            "drop charged %.4f, %s the budget of %.4f)%s",
            step.step,
            phase,
            len(kept),
            scored.f1,
            -step.f1_drop,
            step.f1_drop_bound,
            "within" if step.meets_budget else "outside",
            self.budget.max_f1_drop,
            f"; {speed.speedup:.2f}x fp32 (windows {speed.window_min:.2f}-{speed.window_max:.2f})"
            if speed
            else "",
        )
        self.steps.append(step)
        self._seen[key] = step
        self._check_resolution(step)
        return step

    def _check_resolution(self, step: SearchStep) -> None:
        """Whether the rows can resolve the budget: the widest margin among drops near it (within twice, either way)."""
        budget = self.budget.max_f1_drop
        if self.rows < 2 or abs(step.f1_drop) > 2 * budget:
            return
        seen = resolution(step.step, self.rows, step.f1_drop, step.f1_drop_bound, budget)
        if self.resolution is not None and seen.margin <= self.resolution.margin:
            return
        warned = self.resolution is not None and not self.resolution.resolved
        self.resolution = seen
        if not seen.resolved and not warned:
            log.warning("Exclusion search: %s", seen.warning("search", budget))


def search(
    ranking: Sequence[NodeSensitivity],
    start: Sequence[str],
    strategy: SearchStrategy,
    budget: SearchBudget,
    fp32_f1: float,
    score: ScoreSet,
    started: float | None = None,
    objective: SearchObjective = SearchObjective.fewest_fp32,
    timer: TimeSet | None = None,
    fixed: Sequence[str] = (),
    rows: int = 0,
) -> SearchOutcome:
    """Find the sets of nodes to keep in fp32 that meet the budget, ordered by ``objective``.

    ``score`` quantizes with a set and returns held-out F1; ``timer`` (objective=speed)
    times it against fp32. ``fixed`` nodes are kept from the start and never given back.
    """
    ranked = [r.node for r in sorted((r for r in ranking if r.rank is not None), key=lambda r: r.rank or 0)]
    sqnr = {r.node: r.sqnr_db for r in ranking}
    # a starting node the quantizer leaves alone would change nothing: it is not kept
    current = sorted({node for node in [*start, *fixed] if sqnr.get(node) is not None})
    pinned = set(fixed)
    steps = _Steps(score, fp32_f1, budget, time.perf_counter() if started is None else started, timer, rows)
    stopped_by = "done"
    try:
        if not steps.evaluate(current, "start", current).meets_budget:
            current = _grow(steps, current, [n for n in ranked if n not in current], strategy)
        _prune(steps, current, sqnr, pinned)
    except _OutOfBudget as out:
        stopped_by = out.reason
        log.warning(
            "Exclusion search: the %s budget ran out; taking the best set evaluated so far.", out.reason
        )
    return SearchOutcome(
        steps=steps.steps,
        choices=ordered_choices(steps.steps, objective),
        stopped_by=stopped_by,
        resolution=steps.resolution,
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


def _prune(steps: _Steps, kept: list[str], sqnr: dict[str, float | None], pinned: set[str]) -> None:
    """Give nodes back to quantization, least sensitive (highest SQNR) first, while the budget holds.

    Nodes go back in chunks, halved each round down to single nodes: when most of a
    large set is not needed, a few big chunks settle it instead of one step per node.
    ``pinned`` nodes (slower quantized) are never given back.
    """
    current = list(kept)
    if not steps.evaluate(current, "grow", []).meets_budget:
        return
    order = sorted((n for n in current if n not in pinned), key=lambda n: (-(sqnr.get(n) or 0.0), n))
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


def ordered_choices(steps: list[SearchStep], objective: SearchObjective) -> list[SearchStep]:
    """The steps that met the budget, best first: fastest measured, or fewest nodes kept.

    Speed: a set whose windows reach the fastest set's slowest window is not measurably
    slower, so among those the one keeping the fewest nodes in fp32 comes first (short
    windows would otherwise pick the luckiest of near-identical sets); the rest follow by
    speed-up. Fewest: by nodes kept, then higher F1. When no step met the budget, the one
    step with the highest F1 (marked as missing it).
    """
    meeting = [s for s in steps if s.meets_budget]
    if not meeting:
        return [min(steps, key=lambda s: (-s.f1, len(s.nodes), s.step))]
    if objective is not SearchObjective.speed:
        return sorted(meeting, key=lambda s: (len(s.nodes), -s.f1, s.step))
    by_speed = sorted(meeting, key=lambda s: (-(s.speedup or 0.0), len(s.nodes), -s.f1, s.step))
    fastest = by_speed[0]
    floor = fastest.speedup_min if fastest.speedup_min is not None else (fastest.speedup or 0.0)
    ties = [
        s for s in by_speed if (s.speedup_max if s.speedup_max is not None else (s.speedup or 0.0)) >= floor
    ]
    first = min(ties, key=lambda s: (len(s.nodes), -(s.speedup or 0.0), s.step))
    return [first, *(s for s in by_speed if s is not first)]


def confirm(
    choices: Sequence[SearchStep], score: ScoreSet, fp32_f1: float, budget: float, confidence: float | None
) -> tuple[SearchStep, list[Confirmation]]:
    """The first of ``choices`` whose drop holds on the confirmation rows, and every try.

    ``score`` scores on rows the search never saw, at ``confidence`` already corrected
    for ``MAX_CONFIRMATIONS`` tries. When none holds, the try with the smallest bound is
    chosen and marked as missing the budget.
    """
    tried: list[tuple[SearchStep, Confirmation]] = []
    for step in list(choices)[:MAX_CONFIRMATIONS]:
        scored = score(step.nodes)
        check = Confirmation(
            step=step.step,
            nodes_kept=len(step.nodes),
            f1=round(scored.f1, 6),
            fp32_f1=round(fp32_f1, 6),
            f1_drop=round(fp32_f1 - scored.f1, 6),
            f1_drop_bound=round(scored.drop_bound, 6),
            confidence=confidence,
            meets_budget=step.meets_budget and within_budget(scored.drop_bound, budget),
        )
        log.info(
            "Exclusion search: step %d's set on the confirmation rows: F1 %.4f against fp32 %.4f, drop charged "
            "%.4f at confidence %s: %s",
            step.step,
            scored.f1,
            fp32_f1,
            check.f1_drop_bound,
            confidence,
            "confirmed" if check.meets_budget else "not confirmed",
        )
        tried.append((step, check))
        if check.meets_budget:
            return step, [c for _, c in tried]
    best = min(tried, key=lambda t: (t[1].f1_drop_bound, t[0].step))
    return best[0], [c for _, c in tried]


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
                groups.append(group)
                log.info(
                    "Exclusion search: keeping %s %s (%d nodes) in fp32: %.2fx (windows %.2f-%.2f)",
                    kind.replace("_", " "),
                    name,
                    len(nodes),
                    speed.speedup,
                    speed.window_min,
                    speed.window_max,
                )
            probe.forget()
        mark_kept(groups)
        return groups

    def rank(
        self, candidates: list[tuple[str, str, list[str]]], rows: HeldOutRows, samples: int
    ) -> list[NodeSensitivity]:
        """The candidates ranked by SQNR, measured on the model with every candidate quantized."""
        import tempfile

        from quantsweep.batching import length_sorted_batches
        from quantsweep.sensitivity import activation_sqnr, rank_nodes

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
    probe: SpeedProbe | None = None,
) -> ExclusionSearchResult:
    """Rank, time groups, search, confirm; ``probe`` times for objective=speed, ``scratch`` holds models."""
    import tempfile

    started = time.perf_counter()
    candidates = candidate_nodes(model_path, request.operators)
    names = {name for name, _, _ in candidates}
    starting = [n for n in start_nodes if n in names]
    search_rows, confirm_rows = rows.split(settings.confirm_fraction)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".exclusion-search-") as tmp:
        models = CandidateModels(model_path, request, ranges, model_config, sessions, task, Path(tmp))
        fp32_f1, score = models.scorer(search_rows, settings.confidence, seed)
        ranking = models.rank(candidates, search_rows, settings.sensitivity_samples)
        sensitivity_seconds = round(time.perf_counter() - started, 3)
        timing = probe if settings.objective is SearchObjective.speed else None
        budget = SearchBudget(settings.max_f1_drop, settings.max_evaluations, settings.max_minutes)
        groups = models.time_groups(timing, ranking, starting, budget.deadline(started)) if timing else []
        group_seconds = round(time.perf_counter() - started - sensitivity_seconds, 3)
        outcome = search(
            ranking,
            starting,
            settings.strategy,
            budget,
            fp32_f1,
            score,
            started,
            settings.objective,
            models.timer(timing) if timing else None,
            fixed=kept_nodes(groups),
            rows=len(search_rows.encoded),
        )
        chosen, confirmations = _confirm(models, outcome, confirm_rows, settings, seed)
    result = _record(settings, starting, rows, search_rows, confirm_rows, ranking, outcome, fp32_f1)
    result.chosen, result.chosen_f1, result.chosen_step = chosen.nodes, chosen.f1, chosen.step
    result.meets_budget = confirmations[-1].meets_budget if confirmations else chosen.meets_budget
    result.confirmations = confirmations
    _scale_resolutions(result)
    if timing:
        result.objective = settings.objective.value
        result.timing_shape, result.speed_seconds = timing.shape, timing.seconds
        result.groups, result.group_seconds = groups, group_seconds
    result.sensitivity_seconds = sensitivity_seconds
    result.seconds = round(time.perf_counter() - started, 3)
    _announce(result)
    return result


def _record(
    settings: ExclusionConfig,
    starting: list[str],
    rows: HeldOutRows,
    search_rows: HeldOutRows,
    confirm_rows: HeldOutRows | None,
    ranking: list[NodeSensitivity],
    outcome: SearchOutcome,
    fp32_f1: float,
) -> ExclusionSearchResult:
    """The search's record with the objective's pick; the caller fills in confirmation, speed and times."""
    best = outcome.best
    return ExclusionSearchResult(
        strategy=settings.strategy.value,
        max_f1_drop=settings.max_f1_drop,
        confidence=settings.confidence,
        start_from=list(settings.start_from),
        start_nodes=sorted(starting),
        holdout_samples=len(rows.data),
        holdout_fingerprint=rows.data.fingerprint,
        sensitivity_samples=len(search_rows.encoded[: settings.sensitivity_samples]),
        fp32_f1=round(fp32_f1, 6),
        ranking=ranking,
        steps=outcome.steps,
        chosen=best.nodes,
        chosen_f1=best.f1,
        meets_budget=best.meets_budget,
        stopped_by=outcome.stopped_by,
        evaluations=len(outcome.steps),
        seconds=0.0,
        sensitivity_seconds=0.0,
        objective=SearchObjective.fewest_fp32.value,
        search_rows=len(search_rows.encoded),
        confirm_rows=len(confirm_rows.encoded) if confirm_rows else 0,
        chosen_step=best.step,
        resolution=outcome.resolution,
    )


def _scale_resolutions(result: ExclusionSearchResult) -> None:
    """The confirmation rows' resolution (from the first set confirmed), and both in held-out rows to ask for."""
    if result.confirmations:
        first = result.confirmations[0]
        result.confirm_resolution = resolution(
            first.step, result.confirm_rows, first.f1_drop, first.f1_drop_bound, result.max_f1_drop
        )
    for found, rows in (
        (result.resolution, result.search_rows),
        (result.confirm_resolution, result.confirm_rows),
    ):
        if found is not None and rows:
            found.holdout_samples_needed = math.ceil(found.rows_needed * result.holdout_samples / rows)
    confirming = result.confirm_resolution
    if confirming is not None and not confirming.resolved:
        log.warning("Exclusion search: %s", confirming.warning("confirmation", result.max_f1_drop))


def _confirm(
    models: CandidateModels,
    outcome: SearchOutcome,
    rows: HeldOutRows | None,
    settings: ExclusionConfig,
    seed: int,
) -> tuple[SearchStep, list[Confirmation]]:
    """The chosen step: the best the search found, confirmed on rows it never scored on when there are any."""
    if rows is None:
        return outcome.choices[0], []
    confidence = None if settings.confidence is None else 1 - (1 - settings.confidence) / MAX_CONFIRMATIONS
    fp32_f1, score = models.scorer(rows, confidence, seed)
    return confirm(outcome.choices, score, fp32_f1, settings.max_f1_drop, confidence)


def _announce(result: ExclusionSearchResult) -> None:
    speed = result.chosen_speedup
    (log.info if result.meets_budget else log.warning)(
        "Exclusion search (objective %s) chose %d nodes to keep in fp32 (held-out F1 %.4f vs fp32 %.4f; %s%s)%s "
        "in %d steps, %.0f s.",
        result.objective,
        len(result.chosen),
        result.chosen_f1,
        result.fp32_f1,
        "within the budget" if result.meets_budget else f"NOT within the budget of {result.max_f1_drop}",
        ", confirmed on rows the search never scored on"
        if result.meets_budget and result.confirmations
        else "",
        f", {speed:.2f}x fp32" if speed is not None else "",
        result.evaluations,
        result.seconds,
    )
