"""The statistics of an F1 budget: a paired bootstrap bound, the budget test, and whether the rows resolve it.

Pure functions of per-row counts and numbers: no models, no sessions, nothing of the
search. They live apart so that the evaluation stage can bound the evaluation split's
drop exactly as the search bounds its own, without importing the search, and so that
they can be checked on arrays alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from quantsweep.records import RowsResolution

# sets tried on the confirmation rows before the search gives up: each try is one more
# decision, so each is judged at 1 - (1 - confidence) / MAX_CONFIRMATIONS
MAX_CONFIRMATIONS = 3


def within_budget(bound: float, budget: float) -> bool:
    """Whether a drop charged at ``bound`` meets ``budget``; rounding keeps a drop of exactly the budget from failing on float noise."""
    return round(bound, 9) <= budget


def drop_bound(
    reference: np.ndarray,
    candidate: np.ndarray,
    confidence: float | None,
    seed: int,
    metric: Callable[[np.ndarray], np.ndarray],
    resamples: int = 2000,
) -> float:
    """The metric's drop from ``reference`` to ``candidate`` that holds at ``confidence``, or the measured one.

    A paired bootstrap over rows: both models are scored on the same resampled rows, and
    the bound is the ``confidence`` quantile of the drops. Inputs are the per-row counts of
    the task (``Task.counts``) and ``metric`` turns summed counts into the budget's metric
    (``Task.metric_from_counts``).
    """
    score = metric
    measured = float(score(reference.sum(axis=0)) - score(candidate.sum(axis=0)))
    if confidence is None or len(reference) < 2:
        return measured
    rows = np.random.default_rng(seed).integers(0, len(reference), size=(resamples, len(reference)))
    drops = score(reference[rows].sum(axis=1)) - score(candidate[rows].sum(axis=1))
    return float(np.quantile(drops, confidence))


def confirmation_confidence(confidence: float | None) -> float | None:
    """The confidence each confirmation is judged at: ``confidence`` shared among ``MAX_CONFIRMATIONS`` tries."""
    return None if confidence is None else 1 - (1 - confidence) / MAX_CONFIRMATIONS


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


def holdout_rows_needed(rows_needed: int, holdout_samples: int, rows: int) -> int:
    """``rows_needed`` of a part (``rows`` of the ``holdout_samples``) in held-out rows to ask for."""
    return math.ceil(rows_needed * holdout_samples / rows)
