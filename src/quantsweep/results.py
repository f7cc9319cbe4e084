"""The ``results.json`` of one job: typed records that serialise themselves.

The schema is documented in docs/results_schema.md; bump ``SCHEMA_VERSION`` when
a field changes meaning. Files are written atomically: a crash leaves either the old
file or none, never half of one, and a job's ``results.json`` exists only once the job
has finished.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantsweep.tasks import DEFAULT_TASK, token_classification

# 5: `original`/`quantized` hold the scores of the job's task (config.task); files of
# schema <= 4 are token classification's, the one task there was, and read unchanged.
# 6: exclusion_search's objective, speed, groups, confirmation and resolution, and eval_drop;
# a schema-5 search read today is a fewest_fp32 search without them
# 7: job_digest, the digest of what decides the job's numbers (quantsweep.job_folder)
SCHEMA_VERSION = 7
RESULTS_FILE = "results.json"
# written instead of results.json when a job fails: "<ExceptionType>: <message>"
ERROR_FILE = "error.txt"
# exclusion=auto only: the chosen nodes as a config group file, and the search's plot
EXCLUSION_FILE = "exclusion.yaml"
SENSITIVITY_PLOT = "sensitivity.png"
# the optimized fp32 model and the quantized one (ONNX external data, if any, beside them
# as <name>.data or <name>_data)
ONNX_FILE = "model.onnx"
QUANTIZED_FILE = "model_quantized.onnx"
# every file a job writes into its folder: what a rerun moves aside, and nothing else
JOB_FILES = (RESULTS_FILE, ERROR_FILE, ONNX_FILE, QUANTIZED_FILE, EXCLUSION_FILE, SENSITIVITY_PLOT)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    # mkstemp creates files readable by the owner only; results are meant to be shared
    current = os.umask(0)
    os.umask(current)
    return current


# token classification's scores, the names MLflow and the CSV have always used; a job's own
# metric names come from its task (quantsweep.tasks.get(config["task"]).METRICS)
METRICS = token_classification.METRICS


@dataclass
class EntityScores:
    precision: float
    recall: float
    f1: float
    number: int


@dataclass
class EvaluationResult:
    """seqeval scores of one model on the evaluation split (word level, first sub-token)."""

    precision: float
    recall: float
    f1: float
    accuracy: float
    per_entity: dict[str, EntityScores]
    num_samples: int
    # sentences longer than the model's maximum length; their cut-off words count as "O"
    num_truncated: int
    seconds: float
    # words cut off in those sentences (each scored as "O": a miss wherever its tag is not "O")
    truncated_words: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        values = dict(data)
        values["per_entity"] = {k: EntityScores(**v) for k, v in data["per_entity"].items()}
        return cls(**values)

    def truncation_note(self, max_length: int | None) -> str:
        """How many sentences and words the model's maximum length cut off, for the console and the card."""
        limit = f"{max_length} tokens" if max_length else "the model's maximum length"
        return (
            f"{self.num_truncated} of {self.num_samples} evaluation sentences are longer than {limit}: "
            f"{self.truncated_words} words past the cut score as 'O' (a miss wherever their tag is not 'O')."
        )


@dataclass
class LabelScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class ClassificationResult:
    """scikit-learn's scores of one sequence classifier on the evaluation split (one label per row)."""

    accuracy: float
    # unweighted mean over the labels in the references or the predictions (sklearn's "macro")
    f1_macro: float
    # over all rows; with one label per row it equals accuracy (kept: users compare it across tools)
    f1_micro: float
    precision_macro: float
    recall_macro: float
    per_label: dict[str, LabelScores]
    num_samples: int
    # rows longer than the model's maximum length, classified from the tokens that fit
    num_truncated: int
    seconds: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassificationResult:
        values = dict(data)
        values["per_label"] = {k: LabelScores(**v) for k, v in data["per_label"].items()}
        return cls(**values)

    def truncation_note(self, max_length: int | None) -> str:
        limit = f"{max_length} tokens" if max_length else "the model's maximum length"
        return (
            f"{self.num_truncated} of {self.num_samples} evaluation texts are longer than {limit}: "
            "each is classified from the tokens that fit (for a pair, the longer text is cut first)."
        )


# what a task's evaluation returns; results.json's `original` and `quantized` hold one each
TaskScores = EvaluationResult | ClassificationResult


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


@dataclass
class JobResults:
    config: dict[str, Any]
    choices: dict[str, str]
    environment: Environment
    export: ExportFacts
    quantization: QuantizationFacts
    graph: GraphFacts
    original: TaskScores
    quantized: TaskScores
    timing: TimingResult
    wall_seconds: float
    schema_version: int = SCHEMA_VERSION
    dataset: dict[str, Any] = field(default_factory=dict)
    # seconds spent per step of the job (load, export, calibrate, quantize, evaluate_*, time)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # per cached piece of work (export, original_evaluation, calibration): key, hit, path, seconds
    cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    # exclusion=auto only: how the nodes kept in fp32 were chosen
    exclusion_search: ExclusionSearchResult | None = None
    # exclusion=auto only: the budget metric's drop on the evaluation split, with its bound
    eval_drop: EvaluationDrop | None = None
    # quantsweep-reproduce only: the job folder or MLflow run id this job reran
    reproduces: str | None = None
    # the digest of what decides this job's numbers: the config less how-to-run keys, the code,
    # the package versions, the preset (quantsweep.job_folder); None in files of schema <= 6
    job_digest: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobResults:
        """A ``results.json`` read back into its records (any schema version: older ones lack only defaulted fields)."""
        from quantsweep.tasks import of_results

        task = of_results(data)
        search = data.get("exclusion_search")
        eval_drop = data.get("eval_drop")
        return cls(
            **{
                **data,
                "environment": Environment(**data["environment"]),
                "export": ExportFacts(**data["export"]),
                "quantization": QuantizationFacts(**data["quantization"]),
                "graph": GraphFacts(**data["graph"]),
                "original": task.scores_from_dict(data["original"]),
                "quantized": task.scores_from_dict(data["quantized"]),
                "timing": TimingResult.from_dict(data["timing"]),
                "exclusion_search": ExclusionSearchResult.from_dict(search) if search else None,
                "eval_drop": EvaluationDrop(**eval_drop) if eval_drop else None,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def task(self) -> str:
        return str(self.config.get("task", DEFAULT_TASK))

    def write(self, job_dir: Path) -> Path:
        path = job_dir / RESULTS_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path


def read_results(job_dir: Path) -> dict[str, Any]:
    """The raw ``results.json`` of a finished job (:meth:`JobResults.from_dict` types it)."""
    with (job_dir / RESULTS_FILE).open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data
