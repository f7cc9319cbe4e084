"""The group ``exclusion``: which nodes stay in fp32, named or searched for, and the search's limits.

Besides the section it holds what the config and the search agree on: the named patterns
(:mod:`quantsweep.exclusion` resolves them in a graph), the fewest rows a bootstrap verdict
stands on, and how the held-out rows split between the search and its confirmation, so
that the config refuses a split the search could not use. Nothing here imports a heavy
library.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from quantsweep.config.base import _blank, _Section, invalid

# Named exclusion patterns; everything else in ``exclusion.nodes`` is a node name.
EXCLUSION_PATTERNS: tuple[str, ...] = ("layernorm", "gelu", "residual", "gather", "softmax")

# The fewest rows exclusion=auto decides on: the rows its search scores every candidate on,
# and the rows it confirms the chosen set on (when `confirm_fraction` > 0). Its verdicts
# are quantiles (0.95; 0.983 on confirmation) of a paired bootstrap over those rows, which
# stand in for the sampling distribution of the metric's drop only when the rows are
# enough for that drop to be roughly normal; on small samples bootstrap percentile bounds
# are too narrow and hold too rarely. 30 is the usual rule of thumb for that. A floor, not
# a sufficiency: whether the rows resolve the budget, the search reports (rows_needed).
MIN_BOOTSTRAP_ROWS = 30


def misspelt_pattern(entry: str) -> str | None:
    """The exclusion pattern ``entry`` misspells, if it is none and cannot be a node name of an export.

    Exporters name nodes with a scope path (``/bert/encoder/layer.0/output/Add``) or a
    counter (``Add_12``), so an entry of letters and separators alone that is close to a
    pattern name, or starts with one, is a typo of it (``LayerNorm``, ``layernrom``,
    ``residuals``), caught before any export. Anything else may be a node name, which
    only the exported graph can confirm.
    """
    if entry in EXCLUSION_PATTERNS or not re.fullmatch(r"[A-Za-z][A-Za-z _-]*", entry):
        return None
    folded = re.sub(r"[ _-]", "", entry.lower())
    starts = [p for p in EXCLUSION_PATTERNS if folded.startswith(p)]
    close = starts or difflib.get_close_matches(folded, EXCLUSION_PATTERNS, n=1, cutoff=0.75)
    return close[0] if close else None


def split_held_out(rows: int, confirm_fraction: float) -> tuple[int, int]:
    """exclusion=auto's held-out rows as (rows the search scores on, rows kept back to confirm)."""
    confirm = round(rows * confirm_fraction)
    return rows - confirm, confirm


def held_out_rows_needed(confirm_fraction: float) -> int:
    """The fewest held-out rows that leave the search, and its confirmation, MIN_BOOTSTRAP_ROWS each."""
    # lower bounds from the rounding in split_held_out; the loop finds the first count that holds
    rows = max(
        MIN_BOOTSTRAP_ROWS,
        math.floor((MIN_BOOTSTRAP_ROWS - 0.5) / (1 - confirm_fraction)),
        math.floor((MIN_BOOTSTRAP_ROWS - 0.5) / confirm_fraction) if confirm_fraction > 0 else 0,
    )
    while True:
        search, confirm = split_held_out(rows, confirm_fraction)
        if search >= MIN_BOOTSTRAP_ROWS and (confirm_fraction == 0 or confirm >= MIN_BOOTSTRAP_ROWS):
            return rows
        rows += 1


class SearchStrategy(str, Enum):
    # rank nodes by sensitivity, bisect the shortest ranked prefix that meets the budget
    bisect = "bisect"
    # add ranked nodes one at a time until the budget is met
    greedy = "greedy"


class SearchObjective(str, Enum):
    # the fastest set (measured against fp32 on this machine) whose drop meets the budget
    speed = "speed"
    # the fewest nodes kept in fp32 whose drop meets the budget
    fewest_fp32 = "fewest_fp32"


@dataclass
class ExclusionConfig(_Section):
    """Group ``exclusion``: nodes kept in fp32, given by pattern or node name, or searched for.

    With ``auto`` the nodes are found by :mod:`quantsweep.exclusion_search`: the fastest
    (``objective=speed``) or the smallest (``fewest_fp32``) set whose static quantization
    loses at most ``max_f1_drop`` F1 on a held-out slice of the calibration split.
    """

    KEY: ClassVar[str] = "exclusion"

    nodes: list[str] = field(default_factory=list)
    auto: bool = False
    objective: SearchObjective = SearchObjective.speed
    # the accuracy budget: F1 (0..1) the quantized model may lose on the held-out slice
    max_f1_drop: float = 0.005
    # how sure the search must be that the drop is within the budget: a set meets it when
    # this quantile of a paired bootstrap over held-out sentences does; null: when the
    # measured drop does (which a search over many sets meets partly by luck). High,
    # because one search takes dozens of accept-or-reject decisions.
    confidence: float | None = 0.95
    # patterns or node names the search starts from and may prune; empty: start from nothing
    start_from: list[str] = field(default_factory=list)
    strategy: SearchStrategy = SearchStrategy.bisect
    # the search's budget: quantize-and-evaluate steps, and wall minutes (null: no limit)
    max_evaluations: int | None = 40
    max_minutes: float | None = None
    # rows the search judges F1 on: of the calibration split, disjoint from the rows that
    # calibrate, or of the split named here (never the evaluation split)
    holdout_samples: int = 200
    holdout_split: str | None = None
    # held-out rows run through the fp32 and the QDQ model to rank nodes by SQNR
    sensitivity_samples: int = 32
    # the share of the held-out rows the search never scores on: the chosen set is
    # confirmed on them (0: no confirmation; the search's own rows then report it). Both
    # parts need MIN_BOOTSTRAP_ROWS (check_rows; held_out_rows_needed: how many that takes)
    confirm_fraction: float = 0.4
    # objective=speed: [batch size, input length] every candidate is timed at against fp32;
    # null: batch 1 at the job's longest input length
    timing_shape: list[int] | None = None
    # objective=speed: seconds of timed forward passes per model and candidate
    speed_seconds: float = 1.0

    @property
    def patterns(self) -> list[str]:
        return [n for n in self.nodes if n in EXCLUSION_PATTERNS]

    @property
    def node_names(self) -> list[str]:
        return [n for n in self.nodes if n not in EXCLUSION_PATTERNS]

    def check(self) -> None:
        self._check_entries("exclusion.nodes", self.nodes)
        self._check_entries("exclusion.start_from", self.start_from)
        if _blank(self.holdout_split):
            raise invalid(
                "exclusion.holdout_split",
                self.holdout_split,
                "use null (rows of the calibration split that calibration does not use) or a split's name.",
            )
        # start_from without the search is ignored, not refused: quantsweep-reproduce reruns a
        # search's job with exclusion.auto=false and the chosen nodes, beside its start_from
        if not self.auto:
            return
        if self.nodes:
            raise invalid(
                "exclusion.nodes",
                list(self.nodes),
                "with `exclusion.auto=true` the search chooses the nodes; name where it starts in "
                "`exclusion.start_from` (it may drop those), or turn the search off to keep a fixed list.",
            )
        self._check_budget()
        self._check_held_out()
        self._check_timing()

    @staticmethod
    def _check_entries(key: str, entries: list[str]) -> None:
        """Every entry of ``nodes`` or ``start_from`` is a pattern or can be a node name, once."""
        if any(not isinstance(n, str) or not n.strip() for n in entries):
            raise invalid(key, list(entries), "every entry must be a non-empty pattern or node name.")
        twice = next((n for i, n in enumerate(entries) if n in entries[:i]), None)
        if twice is not None:
            raise invalid(
                key, list(entries), f"each pattern or node name may appear once ({twice!r} is twice)."
            )
        for entry in entries:
            pattern = misspelt_pattern(entry)
            if pattern is not None:
                raise invalid(
                    key,
                    list(entries),
                    f"{entry!r} is not a pattern name, and too close to the pattern {pattern!r} to be a "
                    f"node name of an export (exporters name nodes with a scope path or a counter, e.g. "
                    f"/bert/encoder/layer.0/output/Add or Add_12). Pattern names are exact and lower-case: "
                    f"{', '.join(EXCLUSION_PATTERNS)}; node names are checked against the exported graph.",
                )

    def _check_budget(self) -> None:
        """The search's accuracy budget, how sure it must be, and its limits in steps and minutes."""
        if not 0.0 < self.max_f1_drop < 1.0:
            raise invalid(
                "exclusion.max_f1_drop",
                self.max_f1_drop,
                "it is the F1 the quantized model may lose (F1 runs from 0 to 1), so it must lie in (0, 1); "
                "0.005 is half an F1 point.",
            )
        if self.confidence is not None and not 0.5 <= self.confidence < 1.0:
            raise invalid(
                "exclusion.confidence",
                self.confidence,
                "use null (judge the measured drop) or a probability in [0.5, 1), e.g. 0.9.",
            )
        if self.max_evaluations is not None and self.max_evaluations <= 0:
            raise invalid(
                "exclusion.max_evaluations",
                self.max_evaluations,
                "use null (no limit) or a positive number of quantize-and-evaluate steps.",
            )
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise invalid(
                "exclusion.max_minutes",
                self.max_minutes,
                "use null (no limit) or a positive number of minutes.",
            )

    def _check_held_out(self) -> None:
        """The rows the search ranks, scores and confirms on."""
        if self.holdout_samples <= 0:
            raise invalid("exclusion.holdout_samples", self.holdout_samples, "it must be a positive integer.")
        if self.sensitivity_samples <= 0:
            raise invalid(
                "exclusion.sensitivity_samples", self.sensitivity_samples, "it must be a positive integer."
            )
        if not 0.0 <= self.confirm_fraction < 1.0:
            raise invalid(
                "exclusion.confirm_fraction",
                self.confirm_fraction,
                "it is the share of the held-out rows kept back to confirm the chosen set: a number in "
                "[0, 1), e.g. 0.4; 0 confirms on nothing.",
            )
        self.check_rows(self.holdout_samples)

    def _check_timing(self) -> None:
        """objective=speed's timing of every candidate against fp32."""
        if self.timing_shape is not None and (
            len(self.timing_shape) != 2 or any(not isinstance(v, int) or v <= 0 for v in self.timing_shape)
        ):
            raise invalid(
                "exclusion.timing_shape",
                list(self.timing_shape),
                "give [batch size, input length] as two positive integers, e.g. [1, 128], or null for "
                "batch 1 at the job's longest input length.",
            )
        if self.speed_seconds <= 0:
            raise invalid(
                "exclusion.speed_seconds",
                self.speed_seconds,
                "it must be a positive number of seconds of timing per model and candidate.",
            )

    def check_rows(self, held_out: int) -> None:
        """Refuse ``held_out`` rows that leave the search or its confirmation under MIN_BOOTSTRAP_ROWS.

        Run on ``holdout_samples`` when the config is read, and on the rows really held out
        once the data is loaded (before the export).
        """
        search, confirm = split_held_out(held_out, self.confirm_fraction)
        needed = held_out_rows_needed(self.confirm_fraction)
        floor = (
            f"exclusion=auto judges its sets by a paired bootstrap over these rows, which needs at least "
            f"{MIN_BOOTSTRAP_ROWS} rows to say anything"
        )
        if self.confirm_fraction > 0 and confirm < MIN_BOOTSTRAP_ROWS:
            raise invalid(
                "exclusion.confirm_fraction",
                self.confirm_fraction,
                f"of {held_out} held-out rows (exclusion.holdout_samples) it keeps back {confirm} to confirm the "
                f"chosen set on; {floor}. At this fraction that takes exclusion.holdout_samples={needed} or more; "
                f"or use confirm_fraction=0 to confirm on nothing.",
            )
        if search < MIN_BOOTSTRAP_ROWS:
            raise invalid(
                "exclusion.holdout_samples",
                held_out,
                f"at confirm_fraction={self.confirm_fraction} that leaves the search {search} rows to score every "
                f"candidate on; {floor}. Use exclusion.holdout_samples={needed} or more.",
            )
