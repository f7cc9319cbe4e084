"""The typed schema of one quantsweep run.

Hydra composes YAML from ``conf/`` on top of these dataclasses (registered in its
ConfigStore), so an unknown key or a value of the wrong type fails while the config is
composed. :func:`to_run_config` turns the composed DictConfig into a :class:`RunConfig`
and runs the semantic checks in ``__post_init__``; each failure is a
:class:`ConfigError` whose message is one paragraph naming the key, the value and what
is allowed. Nothing here imports a heavy library: this module runs before any model,
dataset or runtime is touched.
"""

from __future__ import annotations

import difflib
import math
import posixpath
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from quantsweep.tasks import TASKS

# ONNX op types the ONNX Runtime quantizer knows in at least one of its modes (integer
# ops, QLinear ops or QDQ). Which of them a given approach really quantizes is recorded
# per run from the graph; this list only catches typos early.
KNOWN_QUANTIZABLE_OPERATORS: tuple[str, ...] = (
    "Add",
    "ArgMax",
    "Attention",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Conv",
    "ConvTranspose",
    "CumSum",
    "EmbedLayerNormalization",
    "Flatten",
    "Gather",
    "GatherElements",
    "Gemm",
    "GlobalAveragePool",
    "InstanceNormalization",
    "LayerNormalization",
    "LeakyRelu",
    "LSTM",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pad",
    "Relu",
    "Reshape",
    "Resize",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Squeeze",
    "TopK",
    "Transpose",
    "Unsqueeze",
    "Where",
)

# Named exclusion patterns; everything else in ``exclusion.nodes`` is a node name.
EXCLUSION_PATTERNS: tuple[str, ...] = ("layernorm", "gelu", "residual", "gather", "softmax")

SUPPORTED_TASKS: tuple[str, ...] = tuple(TASKS)  # quantsweep/tasks/: one module per task
INSTRUCTION_SETS: tuple[str, ...] = ("auto", "avx512_vnni", "avx512", "avx2", "arm64")
OPTIMIZATION_LEVELS: tuple[int, ...] = (0, 1)


class ConfigError(ValueError):
    """A configuration value that cannot run; the message is meant for the user as is."""


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"Invalid configuration: `{key}` is {value!r}; {allowed}")


# The fewest rows exclusion=auto decides on: the rows its search scores every candidate on,
# and the rows it confirms the chosen set on (when `confirm_fraction` > 0). Its verdicts
# are quantiles (0.95; 0.983 on confirmation) of a paired bootstrap over those rows, which
# stand in for the sampling distribution of the metric's drop only when the rows are
# enough for that drop to be roughly normal; on small samples bootstrap percentile bounds
# are too narrow and hold too rarely. 30 is the usual rule of thumb for that. A floor, not
# a sufficiency: whether the rows resolve the budget, the search reports (rows_needed).
MIN_BOOTSTRAP_ROWS = 30

# The largest `seed`: numpy's default_rng takes any non-negative integer, but its legacy
# seeding (np.random.seed, RandomState) stops at 2**32 - 1; within that range a seed
# recorded in results.json seeds every numpy generator.
MAX_SEED = 2**32 - 1


class _Section:
    """A config section (each dataclass below): ``__post_init__`` refuses nan and inf in every
    float field, then runs the section's own :meth:`check`.

    Once for every key rather than key by key: nan compares false with every bound, so a
    check such as ``duration <= 0`` lets it through (a timing loop that never ends, a time
    limit that never fires), and inf passes every lower bound.
    """

    # the section's dotted prefix in the config, e.g. "benchmark"; "" for the root
    KEY: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _refuse_non_finite(self)
        self.check()

    def check(self) -> None:
        """The section's own checks; every float is finite by then."""


def _refuse_non_finite(section: Any) -> None:
    prefix = f"{section.KEY}." if section.KEY else ""
    for item in fields(section):
        value = getattr(section, item.name)
        entries = value if isinstance(value, list) else [value]
        if not any(isinstance(v, float) and not math.isfinite(v) for v in entries):
            continue
        default = item.default if item.default is not MISSING else None
        if item.default_factory is not MISSING:
            default = item.default_factory()
        nullable = ", or null" if "None" in str(item.type) else ""
        raise _fail(
            f"{prefix}{item.name}",
            value,
            "every numeric key takes a finite number, never nan or inf (they slip past range checks: a timing "
            f"window of nan seconds never ends); give a finite number{nullable}; the default is "
            f"{'null' if default is None else repr(default)}.",
        )


def _blank(value: Any) -> bool:
    return isinstance(value, str) and not value.strip()


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


class Approach(str, Enum):
    dynamic = "dynamic"
    static = "static"


class CalibrationMethod(str, Enum):
    minmax = "minmax"
    percentile = "percentile"
    entropy = "entropy"


@dataclass
class QuantizationConfig(_Section):
    """Group ``quantization``: the approach and the integer types it uses."""

    KEY: ClassVar[str] = "quantization"

    approach: Approach = Approach.dynamic
    # Which of optimum's per-instruction-set presets picks the integer types and
    # reduce_range; "auto" detects it from this CPU.
    instruction_set: str = "auto"
    # None keeps the preset's choice.
    reduce_range: bool | None = None

    def check(self) -> None:
        if self.instruction_set not in INSTRUCTION_SETS:
            raise _fail(
                "quantization.instruction_set",
                self.instruction_set,
                f"allowed: {', '.join(INSTRUCTION_SETS)}.",
            )


@dataclass
class OperatorsConfig(_Section):
    """Group ``operators``: the ONNX op types the quantizer may touch."""

    KEY: ClassVar[str] = "operators"

    operators_to_quantize: list[str] = field(default_factory=lambda: ["Add", "MatMul"])

    def check(self) -> None:
        if not self.operators_to_quantize:
            raise _fail(
                "operators.operators_to_quantize", [], "name at least one ONNX op type, e.g. [Add, MatMul]."
            )
        unknown = [op for op in self.operators_to_quantize if op not in KNOWN_QUANTIZABLE_OPERATORS]
        if unknown:
            raise _fail(
                "operators.operators_to_quantize",
                list(self.operators_to_quantize),
                f"{', '.join(unknown)} is not an op type ONNX Runtime's quantizer knows "
                f"(op types are case-sensitive; known: {', '.join(KNOWN_QUANTIZABLE_OPERATORS)}).",
            )
        if len(set(self.operators_to_quantize)) != len(self.operators_to_quantize):
            raise _fail(
                "operators.operators_to_quantize",
                list(self.operators_to_quantize),
                "each op type may appear once.",
            )


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
        for key, entries in (("exclusion.nodes", self.nodes), ("exclusion.start_from", self.start_from)):
            if any(not isinstance(n, str) or not n.strip() for n in entries):
                raise _fail(key, list(entries), "every entry must be a non-empty pattern or node name.")
            twice = next((n for i, n in enumerate(entries) if n in entries[:i]), None)
            if twice is not None:
                raise _fail(
                    key, list(entries), f"each pattern or node name may appear once ({twice!r} is twice)."
                )
            for entry in entries:
                pattern = misspelt_pattern(entry)
                if pattern is not None:
                    raise _fail(
                        key,
                        list(entries),
                        f"{entry!r} is not a pattern name, and too close to the pattern {pattern!r} to be a "
                        f"node name of an export (exporters name nodes with a scope path or a counter, e.g. "
                        f"/bert/encoder/layer.0/output/Add or Add_12). Pattern names are exact and lower-case: "
                        f"{', '.join(EXCLUSION_PATTERNS)}; node names are checked against the exported graph.",
                    )
        if _blank(self.holdout_split):
            raise _fail(
                "exclusion.holdout_split",
                self.holdout_split,
                "use null (rows of the calibration split that calibration does not use) or a split's name.",
            )
        # start_from without the search is ignored, not refused: quantsweep-reproduce reruns a
        # search's job with exclusion.auto=false and the chosen nodes, beside its start_from
        if not self.auto:
            return
        if self.nodes:
            raise _fail(
                "exclusion.nodes",
                list(self.nodes),
                "with `exclusion.auto=true` the search chooses the nodes; name where it starts in "
                "`exclusion.start_from` (it may drop those), or turn the search off to keep a fixed list.",
            )
        if not 0.0 < self.max_f1_drop < 1.0:
            raise _fail(
                "exclusion.max_f1_drop",
                self.max_f1_drop,
                "it is the F1 the quantized model may lose (F1 runs from 0 to 1), so it must lie in (0, 1); "
                "0.005 is half an F1 point.",
            )
        if self.confidence is not None and not 0.5 <= self.confidence < 1.0:
            raise _fail(
                "exclusion.confidence",
                self.confidence,
                "use null (judge the measured drop) or a probability in [0.5, 1), e.g. 0.9.",
            )
        if self.max_evaluations is not None and self.max_evaluations <= 0:
            raise _fail(
                "exclusion.max_evaluations",
                self.max_evaluations,
                "use null (no limit) or a positive number of quantize-and-evaluate steps.",
            )
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise _fail(
                "exclusion.max_minutes",
                self.max_minutes,
                "use null (no limit) or a positive number of minutes.",
            )
        if self.holdout_samples <= 0:
            raise _fail("exclusion.holdout_samples", self.holdout_samples, "it must be a positive integer.")
        if self.sensitivity_samples <= 0:
            raise _fail(
                "exclusion.sensitivity_samples", self.sensitivity_samples, "it must be a positive integer."
            )
        if not 0.0 <= self.confirm_fraction < 1.0:
            raise _fail(
                "exclusion.confirm_fraction",
                self.confirm_fraction,
                "it is the share of the held-out rows kept back to confirm the chosen set: a number in "
                "[0, 1), e.g. 0.4; 0 confirms on nothing.",
            )
        self.check_rows(self.holdout_samples)
        if self.timing_shape is not None and (
            len(self.timing_shape) != 2 or any(not isinstance(v, int) or v <= 0 for v in self.timing_shape)
        ):
            raise _fail(
                "exclusion.timing_shape",
                list(self.timing_shape),
                "give [batch size, input length] as two positive integers, e.g. [1, 128], or null for "
                "batch 1 at the job's longest input length.",
            )
        if self.speed_seconds <= 0:
            raise _fail(
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
            raise _fail(
                "exclusion.confirm_fraction",
                self.confirm_fraction,
                f"of {held_out} held-out rows (exclusion.holdout_samples) it keeps back {confirm} to confirm the "
                f"chosen set on; {floor}. At this fraction that takes exclusion.holdout_samples={needed} or more; "
                f"or use confirm_fraction=0 to confirm on nothing.",
            )
        if search < MIN_BOOTSTRAP_ROWS:
            raise _fail(
                "exclusion.holdout_samples",
                held_out,
                f"at confirm_fraction={self.confirm_fraction} that leaves the search {search} rows to score every "
                f"candidate on; {floor}. Use exclusion.holdout_samples={needed} or more.",
            )


@dataclass
class CalibrationConfig(_Section):
    """Group ``calibration``: how static quantization learns activation ranges."""

    KEY: ClassVar[str] = "calibration"

    method: CalibrationMethod = CalibrationMethod.minmax
    num_calibration_samples: int = 100
    # minmax only
    moving_average: bool = False
    averaging_constant: float = 0.01
    # histogram methods (percentile, entropy)
    num_bins: int = 2048
    percentile: float = 99.999
    num_quantized_bins: int = 128
    # rows of the calibration split fed to the calibrator at once
    batch_size: int = 8

    def check(self) -> None:
        if self.num_calibration_samples <= 0:
            raise _fail(
                "calibration.num_calibration_samples",
                self.num_calibration_samples,
                "it must be a positive integer.",
            )
        if not 0.0 < self.averaging_constant <= 1.0:
            raise _fail("calibration.averaging_constant", self.averaging_constant, "it must lie in (0, 1].")
        if not 0.0 < self.percentile <= 100.0:
            raise _fail("calibration.percentile", self.percentile, "it must lie in (0, 100].")
        if self.num_bins < 2:
            raise _fail("calibration.num_bins", self.num_bins, "it must be at least 2.")
        if self.num_quantized_bins < 2:
            raise _fail("calibration.num_quantized_bins", self.num_quantized_bins, "it must be at least 2.")
        # ONNX Runtime's entropy calibrator tries thresholds from num_quantized_bins/2 to
        # num_bins/2 bins around zero: with more quantized bins than bins it has none to try
        # and fails with a numpy error after the export
        if self.method is CalibrationMethod.entropy and self.num_quantized_bins > self.num_bins:
            raise _fail(
                "calibration.num_quantized_bins",
                self.num_quantized_bins,
                f"the entropy method merges calibration.num_bins={self.num_bins} histogram bins into this many, "
                f"so it must be at most {self.num_bins} (or raise num_bins).",
            )
        if self.batch_size <= 0:
            raise _fail("calibration.batch_size", self.batch_size, "it must be a positive integer.")


# Where the Hub keeps CoNLL-2003 in a form datasets >= 4 can read: the repository
# `conll2003` now points to holds a loading script, which datasets refuses, and the Hub's
# Parquet conversion of it lives on the revision below, one folder of Parquet files per
# config and split (conll2003/train/0000.parquet, ...). Those files carry the ClassLabel
# tag names in their schema, so the tags keep their CoNLL-2003 names.
PARQUET_CONVERSION_REVISION = "refs/convert/parquet"
# the config groups a sweep varies, in the order job names, run names and card tables show them
GROUPS = ("quantization", "operators", "exclusion", "calibration")
# Keys that say how to run a job, not what it computes or measures (a key or a section):
# they neither name its folder, nor change its job_digest, nor show in a card as a parameter.
HOW_TO_RUN_KEYS = ("force", "cache", "cache_dir", "mlflow")


def is_how_to_run(dotted_key: str) -> bool:
    return dotted_key.split(".", 1)[0] in HOW_TO_RUN_KEYS


@dataclass
class DatasetConfig(_Section):
    """Where the evaluation and calibration sentences come from.

    One source serves each split by name: a Hub dataset's split, a ``save_to_disk``
    DatasetDict's split, ``<split>.<ext>`` in a local folder, or the file named for the
    split in ``data_files``. A single local file (or one saved Dataset) has no splits, so it
    may serve one split only: :meth:`check_split_sources` refuses it as a second split,
    where calibration or exclusion=auto's held-out rows would silently be drawn from the
    evaluation rows.
    """

    KEY: ClassVar[str] = "dataset"

    # A Hub id; a local folder (a save_to_disk folder, <split>.txt/.conll/.jsonl/.parquet
    # files, the Hub's Parquet-conversion layout <config>/<split>/*.parquet, or the folder
    # `data_files` is relative to); or a single CoNLL-2003 text, JSON lines or Parquet file.
    path: str = "eriktks/conll2003"
    # the dataset config: for a Parquet conversion, the folder that holds its split folders
    name: str | None = "conll2003"
    # a branch, tag or commit of a Hub dataset; a commit pins the data
    revision: str | None = PARQUET_CONVERSION_REVISION
    # one file per split (a mapping split -> file name), relative to the local folder `path`,
    # e.g. {train: train.conll, validation: dev.conll}; null: files named by split (or the
    # splits of a Hub dataset). Typed Any because Hydra can neither merge a mapping into a
    # null Dict node nor add keys to an empty one; __post_init__ checks the type.
    data_files: Any = None
    eval_split: str = "validation"
    # the text columns: `primary` (and, for text pairs, `secondary`). Typed Any so that a
    # task's `secondary: null` can hold null; __post_init__ checks the type.
    data_keys: Any = field(default_factory=lambda: {"primary": "tokens"})
    ref_keys: list[str] = field(default_factory=lambda: ["ner_tags"])
    calibration_split: str | None = "train"
    # static quantization calibrates on rows of `calibration_split`; naming the evaluation
    # split there is refused (the quantized model would be scored on the rows that set its
    # ranges) unless this is true, which results.json's config then records
    calibrate_on_eval_split: bool = False
    max_eval_samples: int | None = None
    # names of integer tags, in id order, for data that stores plain ids without
    # ClassLabel names; null means the CoNLL-2003 order
    label_names: list[str] | None = None

    def check(self) -> None:
        if _blank(self.path):
            raise _fail(
                "dataset.path", self.path, "give a Hub id, a save_to_disk folder or a local data file."
            )
        if _blank(self.eval_split):
            raise _fail(
                "dataset.eval_split", self.eval_split, "name the split to evaluate on, e.g. validation."
            )
        for key, value, default in (
            ("dataset.name", self.name, "no config name"),
            ("dataset.revision", self.revision, "the default branch"),
            ("dataset.calibration_split", self.calibration_split, "no calibration split"),
        ):
            if _blank(value):
                raise _fail(key, value, f"use null ({default}) or a non-empty name.")
        if self.data_files is not None:
            self._check_data_files()
        if not isinstance(self.data_keys, Mapping) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in self.data_keys.items()
        ):
            raise _fail(
                "dataset.data_keys",
                self.data_keys,
                "name the text columns as a mapping, e.g. dataset.data_keys={primary: tokens}.",
            )
        if self.label_names is not None and not self.label_names:
            # an empty list would read as "not given" and silently mean the default order
            raise _fail(
                "dataset.label_names",
                [],
                "use null (the column's ClassLabel names, or the CoNLL-2003 order for tags) or name the labels "
                "in id order, e.g. dataset.label_names=[negative,positive].",
            )
        if self.label_names is not None and any(_blank(n) for n in self.label_names):
            raise _fail("dataset.label_names", list(self.label_names), "every label name must be non-empty.")
        if self.label_names is not None and len(set(self.label_names)) != len(self.label_names):
            raise _fail("dataset.label_names", list(self.label_names), "each tag name may appear once.")
        if self.max_eval_samples is not None and self.max_eval_samples <= 0:
            raise _fail(
                "dataset.max_eval_samples",
                self.max_eval_samples,
                "use null for the whole split or a positive integer.",
            )

    def _check_data_files(self) -> None:
        example = "e.g. dataset.data_files={train: train.conll, validation: dev.conll}"
        files = self.data_files
        if not isinstance(files, Mapping) or not files:
            raise _fail("dataset.data_files", files, f"name one file per split, {example}, or use null.")
        for split, name in files.items():
            if (
                not isinstance(split, str)
                or not isinstance(name, str)
                or not split.strip()
                or not name.strip()
            ):
                raise _fail(
                    "dataset.data_files",
                    dict(files),
                    f"every split and file name must be a non-empty string, {example}.",
                )
            relative = PurePosixPath(name.replace("\\", "/"))
            if relative.is_absolute() or ".." in relative.parts:
                raise _fail(
                    "dataset.data_files",
                    dict(files),
                    f"{name!r} is not inside `dataset.path`; the files are named relative to that folder "
                    f"(so that a launcher that ships `dataset.path` ships them too), {example}.",
                )
        by_file: dict[str, list[str]] = {}
        for split, name in files.items():
            by_file.setdefault(posixpath.normpath(name.replace("\\", "/")), []).append(split)
        shared = {name: splits for name, splits in by_file.items() if len(splits) > 1}
        if shared:
            name, splits = next(iter(shared.items()))
            raise _fail(
                "dataset.data_files",
                dict(files),
                f"the splits {', '.join(splits)} all name {name!r}; each split needs its own file, or the rows "
                "that calibrate the model (or that exclusion=auto judges) would be the rows it is evaluated on.",
            )
        if self.eval_split not in files:
            raise _fail(
                "dataset.eval_split",
                self.eval_split,
                f"`dataset.data_files` names files for {', '.join(sorted(files))} only; add the evaluation "
                f"split, {example}.",
            )

    @property
    def split_files(self) -> dict[str, str]:
        """``data_files`` as checked: split -> file name inside ``path``; empty when not given."""
        return dict(self.data_files or {})

    @property
    def single_source(self) -> Path | None:
        """The local file, or folder holding one saved Dataset, that ``path`` names, if it is one.

        Such a source has no splits: any split asked of it returns the same rows.
        """
        if self.split_files:
            return None
        local = Path(self.path).expanduser()
        if local.is_file():
            return local
        # datasets' save_to_disk writes state.json for one Dataset, dataset_dict.json for splits
        if (
            local.is_dir()
            and (local / "state.json").is_file()
            and not (local / "dataset_dict.json").is_file()
        ):
            return local
        return None

    def check_split_sources(self, splits: Mapping[str, str | None]) -> None:
        """Refuse splits this config cannot serve apart; ``splits`` maps config keys to split names.

        A key whose split is None is not used by the run (e.g. calibration under dynamic
        quantization).
        """
        used = {key: split for key, split in splits.items() if split}
        files = self.split_files
        if files:
            for key, split in used.items():
                if split not in files:
                    raise _fail(
                        key,
                        split,
                        f"`dataset.data_files` names files for {', '.join(sorted(files))} only; add a "
                        f"file for {split!r}, or name one of those splits.",
                    )
            return
        single = self.single_source
        if single is None or len(set(used.values())) < 2:
            return
        roles = ", ".join(f"`{key}` ({split})" for key, split in used.items())
        raise ConfigError(
            f"Invalid configuration: `dataset.path` is {self.path!r}, a single "
            f"{'file' if single.is_file() else 'saved Dataset'} without splits, and this run reads it as "
            f"{roles}: every split would get the same rows, so the rows that calibrate the model (or that "
            "exclusion=auto judges) would be the rows it is evaluated on. Give each split its own file: point "
            "`dataset.path` at a folder and name the files in `dataset.data_files`, e.g. dataset.path=./conll "
            "dataset.data_files={train: train.conll, validation: dev.conll}, or use a folder holding "
            "<split>.txt / <split>.jsonl / <split>.parquet files. A single file can serve the evaluation "
            "split alone (quantization=dynamic)."
        )

    @property
    def tokens_column(self) -> str:
        return self.data_keys["primary"]

    @property
    def tags_column(self) -> str:
        return self.ref_keys[0]


@dataclass
class FrameworkArgs(_Section):
    KEY: ClassVar[str] = "framework_args"

    # null: the exporter's default opset for the architecture
    opset: int | None = 11
    # 0: export as is; 1: ONNX Runtime's basic graph optimizations (constant folding,
    # redundant-node elimination), saved offline. Higher levels fuse into contrib ops
    # that the quantizer cannot type-check, so they are refused rather than ignored.
    optimization_level: int = 1

    def check(self) -> None:
        if self.optimization_level not in OPTIMIZATION_LEVELS:
            raise _fail(
                "framework_args.optimization_level",
                self.optimization_level,
                "allowed: 0 (no graph optimization) or 1 (ONNX Runtime basic optimizations, applied before quantization). "
                "Levels 2 and 99 fuse nodes into ONNX Runtime contrib ops that its quantizer cannot process; "
                "ONNX Runtime still applies its full optimizations when it loads each model for inference.",
            )


@dataclass
class BenchmarkConfig(_Section):
    KEY: ClassVar[str] = "benchmark"

    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 8])
    input_lengths: list[int] = field(default_factory=lambda: [32, 64, 128])
    # seconds of timed forward passes per model and shape, split into alternating windows
    duration: float = 15.0
    # untimed forward passes per model and shape before timing starts
    warmup: int = 10
    # original and quantized take turns this many times per shape
    windows: int = 5
    # intra-op threads of the timed sessions; null means one per physical core
    threads: int | None = None

    def check(self) -> None:
        for key, values in (
            ("benchmark.batch_sizes", self.batch_sizes),
            ("benchmark.input_lengths", self.input_lengths),
        ):
            if not values:
                raise _fail(key, list(values), "give at least one positive integer.")
            bad = [v for v in values if v <= 0]
            if bad:
                raise _fail(key, list(values), f"every entry must be a positive integer (got {bad[0]}).")
            # a repeated entry would time its shapes twice, and their results and MLflow keys
            # (time/bs<b>_len<n>/...) would collide
            twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
            if twice is not None:
                raise _fail(key, list(values), f"each entry may appear once ({twice} is repeated).")
        if self.duration <= 0:
            raise _fail("benchmark.duration", self.duration, "it must be a positive number of seconds.")
        if self.warmup < 0:
            raise _fail(
                "benchmark.warmup", self.warmup, "it must be zero or a positive number of forward passes."
            )
        if self.windows <= 0:
            raise _fail("benchmark.windows", self.windows, "it must be a positive integer.")
        if self.threads is not None and self.threads <= 0:
            raise _fail(
                "benchmark.threads", self.threads, "use null (one per physical core) or a positive integer."
            )


@dataclass
class MlflowConfig(_Section):
    """Where finished jobs are logged. The job folder stays the source of truth."""

    KEY: ClassVar[str] = "mlflow"

    enabled: bool = True
    # null: the embedded store, sqlite:///outputs/mlflow.db (artifacts in outputs/mlartifacts);
    # or an http(s):// tracking server, or a SageMaker managed MLflow ARN (sagemaker-mlflow plugin)
    tracking_uri: str | None = None
    # null: "quantsweep <model> on <dataset>"
    experiment_name: str | None = None


@dataclass
class RunConfig(_Section):
    """Everything one quantization run needs; the root of the Hydra config."""

    task: str = "token-classification"
    model_name_or_path: str = "elastic/distilbert-base-uncased-finetuned-conll03-english"
    # a branch, tag or commit on the Hub; ignored for local folders
    revision: str | None = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    operators: OperatorsConfig = field(default_factory=OperatorsConfig)
    exclusion: ExclusionConfig = field(default_factory=ExclusionConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    per_channel: bool = False
    framework: str = "onnxruntime"
    framework_args: FrameworkArgs = field(default_factory=FrameworkArgs)
    aware_training: bool = False
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    # rows per batch when evaluating either model
    eval_batch_size: int = 32
    seed: int = 42
    # rerun a job even when its results.json exists
    force: bool = False
    # reuse the fp32 export, its evaluation and calibration statistics across jobs and sweeps
    cache: bool = True
    # where cached work lives (relative paths: from the working directory)
    cache_dir: str = "outputs/cache"

    def check(self) -> None:
        if self.task not in SUPPORTED_TASKS:
            raise _fail("task", self.task, f"supported: {', '.join(SUPPORTED_TASKS)}.")
        from quantsweep.tasks import get

        wrong = get(self.task).check_columns(self.dataset)
        if wrong is not None:
            key, allowed = wrong
            value = list(self.dataset.ref_keys) if key == "dataset.ref_keys" else dict(self.dataset.data_keys)
            raise _fail(key, value, allowed)
        if self.framework != "onnxruntime":
            raise _fail(
                "framework", self.framework, "quantsweep quantizes with ONNX Runtime only: use `onnxruntime`."
            )
        if self.aware_training:
            raise _fail(
                "aware_training",
                True,
                "quantization-aware training is not supported; quantsweep does post-training quantization only, so set it to false.",
            )
        if not self.model_name_or_path:
            raise _fail(
                "model_name_or_path", self.model_name_or_path, "give a Hub model id or a local model folder."
            )
        if self.quantization.approach is Approach.static and not self.dataset.calibration_split:
            raise _fail(
                "dataset.calibration_split",
                self.dataset.calibration_split,
                "static quantization needs a split to calibrate on (for example `train`); "
                "name one, or use `quantization=dynamic`.",
            )
        if self.exclusion.auto and not self.is_static:
            raise _fail(
                "exclusion.auto",
                True,
                "the search ranks nodes by the error of their static (QDQ) quantization, measured on the QDQ "
                "model's own activations before and after each quantize/dequantize pair; a dynamic model "
                "quantizes inside its integer kernels and has no such pair to read, so its ranking would be a "
                "guess. It needs `quantization=static`; dynamic quantization takes a fixed list "
                "(`exclusion=none`, `sensitive` or `nodes`).",
            )
        if self.exclusion.auto:
            holdout = self.exclusion.holdout_split or self.dataset.calibration_split
            if holdout == self.dataset.eval_split:
                instead = (
                    "name another split (null holds out rows of `dataset.calibration_split`, which is the "
                    "evaluation split here)"
                    if self.exclusion.holdout_split is None
                    else "use null (rows of the calibration split that calibration does not use) or another split"
                )
                # never allowed, not even with dataset.calibrate_on_eval_split: the search's choice
                # would be tested on the rows that chose it
                raise _fail(
                    "exclusion.holdout_split",
                    holdout,
                    f"the search must not see the evaluation split (`{self.dataset.eval_split}`), or the metrics "
                    f"a job reports would no longer test the set it chose; {instead}.",
                )
        if (
            self.is_static
            and self.dataset.calibration_split == self.dataset.eval_split
            and not self.dataset.calibrate_on_eval_split
        ):
            raise _fail(
                "dataset.calibration_split",
                self.dataset.calibration_split,
                "it is the evaluation split (`dataset.eval_split`), so static quantization would set its ranges on "
                "the rows the quantized model is then scored on, and its metrics would flatter it. Name another "
                "split (e.g. train), or set dataset.calibrate_on_eval_split=true to calibrate on them knowingly "
                "(results.json's config records it).",
            )
        # one local file serves one split: refuse it as a second one before any work
        self.dataset.check_split_sources(
            {
                "dataset.eval_split": self.dataset.eval_split,
                "dataset.calibration_split": self.dataset.calibration_split if self.is_static else None,
                "exclusion.holdout_split": self.exclusion.holdout_split if self.exclusion.auto else None,
            }
        )
        if self.eval_batch_size <= 0:
            raise _fail("eval_batch_size", self.eval_batch_size, "it must be a positive integer.")
        if not 0 <= self.seed <= MAX_SEED:
            raise _fail(
                "seed",
                self.seed,
                f"it seeds numpy's generators (row samples, bootstrap, timing inputs): use 0 to {MAX_SEED} "
                "(2**32 - 1), the range every numpy seeding takes; numpy refuses negative seeds.",
            )
        if _blank(self.revision):
            raise _fail(
                "revision", self.revision, "use null (the default branch) or a branch, tag or commit."
            )
        if self.framework_args.opset is not None:
            check_opset(self.framework_args.opset)
        if self.cache and not self.cache_dir:
            raise _fail("cache_dir", self.cache_dir, "name a folder for the cache, or set `cache=false`.")

    @property
    def is_static(self) -> bool:
        return self.quantization.approach is Approach.static


def exporter_opset_range() -> tuple[int, int]:
    """The opsets torch's ONNX exporter can write, read without importing torch itself."""
    from importlib.util import find_spec

    # torch.onnx._constants is a tiny module; importing it through the torch package
    # would cost seconds, so it is loaded from its file directly.
    spec = find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return (7, 20)
    import importlib.util
    import os

    path = os.path.join(next(iter(spec.submodule_search_locations)), "onnx", "_constants.py")
    if not os.path.exists(path):
        return (7, 20)
    module_spec = importlib.util.spec_from_file_location("_quantsweep_torch_onnx_constants", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    low = int(getattr(module, "ONNX_MIN_OPSET", 7))
    high = int(getattr(module, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", getattr(module, "ONNX_MAX_OPSET", 20)))
    return (low, high)


def check_opset(opset: int) -> None:
    low, high = exporter_opset_range()
    if not low <= opset <= high:
        raise _fail(
            "framework_args.opset",
            opset,
            f"the installed torch ONNX exporter writes opsets {low} to {high}.",
        )


def flatten(tree: dict[str, Any], prefix: str = "", whole: tuple[str, ...] = ()) -> dict[str, Any]:
    """A nested config as dotted keys; mappings named in ``whole`` stay one value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in whole:
            flat.update(flatten(value, f"{dotted}.", whole))
        else:
            flat[dotted] = value
    return flat


def register_configs() -> None:
    """Register the schema so Hydra type-checks every composed config against it."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    # Only the root is registered: group files merge into its typed nodes, which is
    # enough for type checks and keeps the schema out of `--help`'s option lists.
    cs.store(name="run_schema", node=RunConfig)
