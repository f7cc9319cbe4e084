"""The plain records a job writes into ``results.json``: export, quantization and graph facts,
timing, the environment, the exclusion search's steps, groups and bounds.

A bottom-layer module (no imports from quantsweep): the stages fill these records, the
report, tracking and sweep reader read them, and each serialises itself. A task's own score
records live in its folder under :mod:`quantsweep.tasks`; :class:`TaskScores` is what every
report needs of them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


class TaskScores(Protocol):
    """One model's scores from its task's evaluation (a dataclass; results.json's ``original`` and ``quantized``)."""

    # every task's score record is a dataclass: results.json serialises it with dataclasses.asdict
    __dataclass_fields__: ClassVar[dict[str, Any]]
    num_samples: int
    num_truncated: int
    seconds: float

    def truncation_note(self, max_length: int | None) -> str:
        """How many rows the model's maximum length cut off, for the console and the card."""


@dataclass
class LatencyStats:
    """One model at one shape; latencies in milliseconds per forward pass."""

    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    forward_passes: int
    seconds: float
    # samples (sequences) per second: forward passes per second times batch size
    throughput_samples_per_s: float
    forward_passes_per_s: float


@dataclass
class ShapeTiming:
    batch_size: int
    input_length: int
    original: LatencyStats
    quantized: LatencyStats
    # original mean latency / quantized mean latency over the whole shape
    speedup: float
    # the same ratio per alternating window, to show its spread
    window_speedups: list[float]


def window_spread(window_speedups: list[float]) -> tuple[float, float, float]:
    """The lowest, median and highest per-window speed-up."""
    return min(window_speedups), statistics.median(window_speedups), max(window_speedups)


def _shape_from_dict(data: dict[str, Any]) -> ShapeTiming:
    values = dict(data)
    values["original"] = LatencyStats(**data["original"])
    values["quantized"] = LatencyStats(**data["quantized"])
    return ShapeTiming(**values)


@dataclass
class TimingResult:
    duration_s: float
    windows: int
    warmup: int
    intra_op_threads: int
    inter_op_threads: int
    execution_mode: str
    graph_optimization_level: str
    allow_spinning: bool
    input_description: str
    shapes: list[ShapeTiming]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimingResult:
        # the earliest schema-1 files predate `allow_spinning`: null, not known
        values = {"allow_spinning": None, **data}
        return cls(**{**values, "shapes": [_shape_from_dict(shape) for shape in data["shapes"]]})

    def shape(self, batch_size: int, input_length: int) -> ShapeTiming | None:
        """The timing of one shape, or None when this job did not time it."""
        return next(
            (s for s in self.shapes if (s.batch_size, s.input_length) == (batch_size, input_length)), None
        )


@dataclass
class GraphFacts:
    """What quantization did to the graph."""

    operators_to_quantize: list[str]
    nodes_quantized_by_op_type: dict[str, int]
    nodes_quantized: int
    candidate_nodes: int
    nodes_excluded: list[str]
    nodes_excluded_by_pattern: dict[str, list[str]]
    original_size_mb: float
    quantized_size_mb: float
    nothing_quantized: bool
    note: str


@dataclass
class QuantizationFacts:
    """The quantizer settings that were really used (after the instruction-set preset)."""

    approach: str
    format: str
    mode: str
    activations_dtype: str
    weights_dtype: str
    per_channel: bool
    reduce_range: bool
    instruction_set: str
    instruction_set_detected: bool
    calibration_method: str | None
    calibration_samples: int | None


@dataclass
class ExportFacts:
    opset: int
    optimization_level: int
    optimization_applied: str
    attention_implementation: str
    model_type: str
    seconds: float
    # the Hub commit the model resolved to (None for a local folder); reproduce pins it
    model_revision: str | None = None


@dataclass
class Environment:
    cpu_model: str
    cpu_flags: list[str]
    physical_cores: int
    logical_cores: int
    platform: str
    python: str
    packages: dict[str, str]
    # the commit of the checkout whose tracked files ran; None for an installed wheel
    git_commit: str | None
    hostname: str
    # what the CPU supports of the instruction sets that decide int8 speed (AVX2, AVX512-VNNI, ...)
    int8_instruction_sets: list[str] = field(default_factory=list)
    # a hash of the quantsweep modules that ran, and where pip installed them from (PEP 610)
    code_sha256: str | None = None
    installed_from: str | None = None


@dataclass
class NodeSensitivity:
    """How much damage quantizing one candidate node's tensors does, alone, on held-out rows."""

    node: str
    op_type: str
    # the lowest signal-to-quantization-noise ratio (dB) among the node's quantized
    # activations; lower is worse. None: the quantizer left this node's tensors alone.
    sqnr_db: float | None
    # the tensor behind that figure
    tensor: str | None
    # 1 = most sensitive; None when not ranked (sqnr_db is None)
    rank: int | None


@dataclass
class SearchStep:
    """One quantize-and-evaluate step of the exclusion search."""

    step: int
    # start: the starting set; grow: more ranked nodes kept; prune: one node given back
    phase: str
    nodes: list[str]
    f1: float
    # measured on the held-out rows
    f1_drop: float
    # what the budget is checked against: the drop at the search's confidence (a paired
    # bootstrap bound over held-out sentences), or the measured drop when it has none
    f1_drop_bound: float
    meets_budget: bool
    seconds: float
    # the nodes this step added to or removed from the set it was compared with
    changed: list[str] = field(default_factory=list)
    # objective=speed: fp32 mean latency / this set's, timed against fp32 in alternating
    # windows at the search's timing shape, and the lowest and highest per-window ratio
    speedup: float | None = None
    speedup_min: float | None = None
    speedup_max: float | None = None


@dataclass
class NodeGroup:
    """Candidate nodes of one kind (an op type, a role, or one name pattern across layers) and their speed.

    Timed as: the model with the search's starting set kept in fp32 against the same model
    with this group kept in fp32 too, in alternating windows. ``speedup`` > 1: quantizing
    the group made the model slower.
    """

    name: str
    # "op_type", "role" (op type and the op types producing its inputs: "Add after MatMul"),
    # or "pattern" (a name across layers)
    kind: str
    nodes: list[str]
    speedup: float
    speedup_min: float
    speedup_max: float
    # "slower" (quantized: every window ran faster with the group in fp32), "faster", or
    # "unclear" (the windows straddle 1)
    verdict: str = "unclear"
    # slower, and the most specific clear verdict for some of its nodes (pattern, then role,
    # then op type): those start kept in fp32 and are never given back
    kept: bool = False


@dataclass
class Confirmation:
    """A chosen set scored on held-out rows the search never scored on."""

    step: int
    nodes_kept: int
    f1: float
    fp32_f1: float
    f1_drop: float
    # the drop at ``confidence``: the search's, corrected for the number of sets confirmed
    f1_drop_bound: float
    confidence: float | None
    meets_budget: bool


@dataclass
class RowsResolution:
    """Whether the held-out rows can tell a drop of the budget's size from noise.

    ``margin`` is what the paired bootstrap adds to a measured drop (the bound minus the
    drop) on the first evaluated set whose drop is within twice the budget either way;
    when it exceeds the budget, no set that loses anything can meet it. ``rows_needed``
    would bring it to half the budget (it shrinks as one over the square root of the rows).
    """

    step: int
    rows: int
    margin: float
    resolved: bool
    rows_needed: int
    # ``exclusion.holdout_samples`` that would give these rows ``rows_needed`` (the search
    # rows are a share of the held-out rows, the confirmation rows the rest)
    holdout_samples_needed: int | None = None

    def warning(self, what: str, budget: float) -> str:
        """The one sentence log, console and card give when these ``what`` ("search") rows cannot resolve the budget."""
        holdout = (
            f", i.e. exclusion.holdout_samples of about {self.holdout_samples_needed}"
            if self.holdout_samples_needed
            else ""
        )
        return (
            f"{self.rows} {what} rows cannot resolve a budget of {budget:g}: the bootstrap adds {self.margin:.4f} "
            f"to a measured drop (step {self.step}), more than the budget, so only sets that lose nothing can "
            f"meet it; about {self.rows_needed} {what} rows would{holdout} (or a larger exclusion.holdout_split)."
        )


@dataclass
class EvaluationDrop:
    """The budget metric's drop on the evaluation split, where a job reports it, with its bound.

    A paired bootstrap over the evaluation rows at the search's confidence (both models
    scored on the same resampled rows), as the search judged its own rows: the third
    line of "which rows chose, confirmed and report the set".
    """

    metric: str
    rows: int
    drop: float
    bound: float
    confidence: float | None
    meets_budget: bool


@dataclass
class ExclusionSearchResult:
    """What exclusion=auto did: the ranking, every step, and the node set it chose."""

    strategy: str
    max_f1_drop: float
    confidence: float | None
    start_from: list[str]
    # the starting set after resolving patterns, restricted to candidate nodes
    start_nodes: list[str]
    holdout_samples: int
    holdout_fingerprint: str
    sensitivity_samples: int
    # F1 of the fp32 model on the held-out rows: the reference the budget is measured from
    fp32_f1: float
    ranking: list[NodeSensitivity]
    steps: list[SearchStep]
    chosen: list[str]
    # F1 of the chosen set on the rows the search scored on (its confirmation: ``confirmations``)
    chosen_f1: float
    meets_budget: bool
    # "done", or the budget that ended the search early: "evaluations" or "minutes"
    stopped_by: str
    evaluations: int
    seconds: float
    sensitivity_seconds: float
    # what the search minimised: "speed" or "fewest_fp32" (searches before schema 6: the latter)
    objective: str = "fewest_fp32"
    # the held-out rows the steps were scored on, and the ones kept back to confirm the
    # chosen set (holdout_samples = both); None: every held-out row was a search row
    search_rows: int | None = None
    confirm_rows: int = 0
    # the step whose set was chosen
    chosen_step: int | None = None
    # objective=speed: [batch, length] the candidates were timed at, seconds per model and
    # candidate, the groups timed before the search, and how long that took
    timing_shape: list[int] | None = None
    speed_seconds: float | None = None
    groups: list[NodeGroup] = field(default_factory=list)
    group_seconds: float = 0.0
    # the chosen set (and fallbacks) scored on the confirmation rows, in the order tried
    confirmations: list[Confirmation] = field(default_factory=list)
    # whether the search rows, and the confirmation rows, can resolve the budget
    resolution: RowsResolution | None = None
    confirm_resolution: RowsResolution | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExclusionSearchResult:
        values = dict(data)
        values["ranking"] = [NodeSensitivity(**r) for r in data["ranking"]]
        values["steps"] = [SearchStep(**s) for s in data["steps"]]
        values["groups"] = [NodeGroup(**g) for g in data.get("groups", [])]
        values["confirmations"] = [Confirmation(**c) for c in data.get("confirmations", [])]
        for key in ("resolution", "confirm_resolution"):
            values[key] = RowsResolution(**data[key]) if data.get(key) else None
        return cls(**values)

    @property
    def chosen_speedup(self) -> float | None:
        step = next((s for s in self.steps if s.step == self.chosen_step), None)
        return step.speedup if step else None

    def resolution_warnings(self) -> list[str]:
        """One sentence per row set (search, confirmation) too small to resolve the budget."""
        return [
            res.warning(what, self.max_f1_drop)
            for what, res in (("search", self.resolution), ("confirmation", self.confirm_resolution))
            if res is not None and not res.resolved
        ]
