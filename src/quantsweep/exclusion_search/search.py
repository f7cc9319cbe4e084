"""The search for a set of nodes to keep in fp32 (steps 3 to 6 of :mod:`quantsweep.exclusion_search`).

It sees a model only through two functions: one that scores a set of nodes kept in fp32
(its held-out F1 and the drop charged), and, for ``objective=speed``, one that times
it. So the algorithm can be read, and tested, apart from quantizing and scoring models:
start, grow, prune within the evaluation and time budget, then order the sets that met
the budget and confirm the first that holds on rows the search never scored on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from quantsweep.config import SearchObjective, SearchStrategy
from quantsweep.exclusion_search.speed import Speed
from quantsweep.exclusion_search.statistics import MAX_CONFIRMATIONS, resolution, within_budget
from quantsweep.records import Confirmation, NodeSensitivity, RowsResolution, SearchStep

# the package's one logger: the job log names the search as it always has
log = logging.getLogger(__package__)


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


@dataclass(frozen=True)
class SearchBudget:
    max_f1_drop: float
    max_evaluations: int | None
    max_minutes: float | None

    def deadline(self, started: float) -> float | None:
        """When ``max_minutes`` from ``started`` (``time.perf_counter()``) run out."""
        return None if self.max_minutes is None else started + 60 * self.max_minutes


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
