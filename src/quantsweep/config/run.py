"""The root of the config (:class:`RunConfig`) and its small sections: export, timing, MLflow.

The root holds the checks that span groups (static quantization needs a calibration
split, the search never sees the evaluation split, a single local file serves one split);
each group's own checks live with its section. Also here: which groups a sweep varies,
which keys only say how to run a job, dotted keys, and the ConfigStore registration.
Which tasks exist and the columns each needs are the tasks' to check
(:func:`quantsweep.tasks.checks.check_task`): the schema knows nothing of them. Nothing
here imports a heavy library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from quantsweep.config.base import _blank, _Section, invalid
from quantsweep.config.dataset import DatasetConfig
from quantsweep.config.exclusion import ExclusionConfig
from quantsweep.config.opsets import check_opset
from quantsweep.config.quantization import (
    Approach,
    CalibrationConfig,
    OperatorsConfig,
    QuantizationConfig,
)

# framework_args.optimization_level: 0 (none) or 1 (basic); see FrameworkArgs
OPTIMIZATION_LEVELS: tuple[int, ...] = (0, 1)
# The largest `seed`: numpy's default_rng takes any non-negative integer, but its legacy
# seeding (np.random.seed, RandomState) stops at 2**32 - 1; within that range a seed
# recorded in results.json seeds every numpy generator.
MAX_SEED = 2**32 - 1
# the config groups a sweep varies, in the order job names, run names and card tables show them
GROUPS = ("quantization", "operators", "exclusion", "calibration")
# Keys that say how to run a job, not what it computes or measures (a key or a section):
# they neither name its folder, nor change its job_digest, nor show in a card as a parameter.
HOW_TO_RUN_KEYS = ("force", "cache", "cache_dir", "mlflow")


def is_how_to_run(dotted_key: str) -> bool:
    return dotted_key.split(".", 1)[0] in HOW_TO_RUN_KEYS


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
            raise invalid(
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
                raise invalid(key, list(values), "give at least one positive integer.")
            bad = [v for v in values if v <= 0]
            if bad:
                raise invalid(key, list(values), f"every entry must be a positive integer (got {bad[0]}).")
            # a repeated entry would time its shapes twice, and their results and MLflow keys
            # (time/bs<b>_len<n>/...) would collide
            twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
            if twice is not None:
                raise invalid(key, list(values), f"each entry may appear once ({twice} is repeated).")
        if self.duration <= 0:
            raise invalid("benchmark.duration", self.duration, "it must be a positive number of seconds.")
        if self.warmup < 0:
            raise invalid(
                "benchmark.warmup", self.warmup, "it must be zero or a positive number of forward passes."
            )
        if self.windows <= 0:
            raise invalid("benchmark.windows", self.windows, "it must be a positive integer.")
        if self.threads is not None and self.threads <= 0:
            raise invalid(
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

    # a name of quantsweep.tasks.TASKS, which (with the columns it needs) the task side checks
    # where a config becomes a RunConfig: quantsweep.tasks.checks.check_task
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
        self._check_model()
        self._check_approach()
        if self.exclusion.auto:
            self._check_holdout_split()
        self._check_calibration_split()
        # one local file serves one split: refuse it as a second one before any work
        self.dataset.check_split_sources(
            {
                "dataset.eval_split": self.dataset.eval_split,
                "dataset.calibration_split": self.dataset.calibration_split if self.is_static else None,
                "exclusion.holdout_split": self.exclusion.holdout_split if self.exclusion.auto else None,
            }
        )
        self._check_job_keys()

    def _check_model(self) -> None:
        """A model to quantize, post-training, with ONNX Runtime."""
        if self.framework != "onnxruntime":
            raise invalid(
                "framework", self.framework, "quantsweep quantizes with ONNX Runtime only: use `onnxruntime`."
            )
        if self.aware_training:
            raise invalid(
                "aware_training",
                True,
                "quantization-aware training is not supported; quantsweep does post-training quantization only, so set it to false.",
            )
        if not self.model_name_or_path:
            raise invalid(
                "model_name_or_path", self.model_name_or_path, "give a Hub model id or a local model folder."
            )

    def _check_approach(self) -> None:
        """What static quantization needs: a split to calibrate on, and it alone has exclusion=auto."""
        if self.quantization.approach is Approach.static and not self.dataset.calibration_split:
            raise invalid(
                "dataset.calibration_split",
                self.dataset.calibration_split,
                "static quantization needs a split to calibrate on (for example `train`); "
                "name one, or use `quantization=dynamic`.",
            )
        if self.exclusion.auto and not self.is_static:
            raise invalid(
                "exclusion.auto",
                True,
                "the search ranks nodes by the error of their static (QDQ) quantization, measured on the QDQ "
                "model's own activations before and after each quantize/dequantize pair; a dynamic model "
                "quantizes inside its integer kernels and has no such pair to read, so its ranking would be a "
                "guess. It needs `quantization=static`; dynamic quantization takes a fixed list "
                "(`exclusion=none`, `sensitive` or `nodes`).",
            )

    def _check_holdout_split(self) -> None:
        """exclusion=auto's held-out rows never come from the evaluation split."""
        holdout = self.exclusion.holdout_split or self.dataset.calibration_split
        if holdout != self.dataset.eval_split:
            return
        instead = (
            "name another split (null holds out rows of `dataset.calibration_split`, which is the "
            "evaluation split here)"
            if self.exclusion.holdout_split is None
            else "use null (rows of the calibration split that calibration does not use) or another split"
        )
        # never allowed, not even with dataset.calibrate_on_eval_split: the search's choice
        # would be tested on the rows that chose it
        raise invalid(
            "exclusion.holdout_split",
            holdout,
            f"the search must not see the evaluation split (`{self.dataset.eval_split}`), or the metrics "
            f"a job reports would no longer test the set it chose; {instead}.",
        )

    def _check_calibration_split(self) -> None:
        """Static quantization calibrates on the evaluation split only when told to, knowingly."""
        if (
            self.is_static
            and self.dataset.calibration_split == self.dataset.eval_split
            and not self.dataset.calibrate_on_eval_split
        ):
            raise invalid(
                "dataset.calibration_split",
                self.dataset.calibration_split,
                "it is the evaluation split (`dataset.eval_split`), so static quantization would set its ranges on "
                "the rows the quantized model is then scored on, and its metrics would flatter it. Name another "
                "split (e.g. train), or set dataset.calibrate_on_eval_split=true to calibrate on them knowingly "
                "(results.json's config records it).",
            )

    def _check_job_keys(self) -> None:
        """The root's own keys: batch size, seed, model revision, opset, cache folder."""
        if self.eval_batch_size <= 0:
            raise invalid("eval_batch_size", self.eval_batch_size, "it must be a positive integer.")
        if not 0 <= self.seed <= MAX_SEED:
            raise invalid(
                "seed",
                self.seed,
                f"it seeds numpy's generators (row samples, bootstrap, timing inputs): use 0 to {MAX_SEED} "
                "(2**32 - 1), the range every numpy seeding takes; numpy refuses negative seeds.",
            )
        if _blank(self.revision):
            raise invalid(
                "revision", self.revision, "use null (the default branch) or a branch, tag or commit."
            )
        if self.framework_args.opset is not None:
            check_opset(self.framework_args.opset)
        if self.cache and not self.cache_dir:
            raise invalid("cache_dir", self.cache_dir, "name a folder for the cache, or set `cache=false`.")

    @property
    def is_static(self) -> bool:
        return self.quantization.approach is Approach.static


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
