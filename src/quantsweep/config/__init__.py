"""The typed schema of one quantsweep run, one module per config group as ``conf/`` has them.

Hydra composes YAML from ``conf/`` on top of these dataclasses (registered in its
ConfigStore), so an unknown key or a value of the wrong type fails while the config is
composed. :func:`quantsweep.cli.to_run_config` turns the composed DictConfig into a
:class:`RunConfig` and runs the semantic checks in ``__post_init__``, then the task's
own (:func:`quantsweep.tasks.checks.check_task`: the schema knows nothing of tasks); each
failure is a :class:`ConfigError` whose message is one paragraph naming the key, the
value and what is allowed. Nothing here imports a heavy library: this package runs before
any model, dataset or runtime is touched.

The modules: :mod:`~quantsweep.config.base` (the error, the section base class),
:mod:`~quantsweep.config.run` (the root, export, benchmark and MLflow sections, the
groups and how-to-run keys), :mod:`~quantsweep.config.dataset`,
:mod:`~quantsweep.config.quantization` (with operators and calibration),
:mod:`~quantsweep.config.exclusion` and :mod:`~quantsweep.config.opsets`. Every public
name is re-exported here, so ``from quantsweep.config import X`` is the way to import one.
"""

from __future__ import annotations

from quantsweep.config.base import ConfigError
from quantsweep.config.dataset import PARQUET_CONVERSION_REVISION, DatasetConfig
from quantsweep.config.exclusion import (
    EXCLUSION_PATTERNS,
    MIN_BOOTSTRAP_ROWS,
    ExclusionConfig,
    SearchObjective,
    SearchStrategy,
    held_out_rows_needed,
    misspelt_pattern,
    split_held_out,
)
from quantsweep.config.opsets import check_opset, exporter_opset_range
from quantsweep.config.quantization import (
    INSTRUCTION_SETS,
    KNOWN_QUANTIZABLE_OPERATORS,
    Approach,
    CalibrationConfig,
    CalibrationMethod,
    OperatorsConfig,
    QuantizationConfig,
)
from quantsweep.config.run import (
    GROUPS,
    HOW_TO_RUN_KEYS,
    MAX_SEED,
    OPTIMIZATION_LEVELS,
    BenchmarkConfig,
    FrameworkArgs,
    MlflowConfig,
    RunConfig,
    flatten,
    is_how_to_run,
    register_configs,
)

__all__ = [
    "EXCLUSION_PATTERNS",
    "GROUPS",
    "HOW_TO_RUN_KEYS",
    "INSTRUCTION_SETS",
    "KNOWN_QUANTIZABLE_OPERATORS",
    "MAX_SEED",
    "MIN_BOOTSTRAP_ROWS",
    "OPTIMIZATION_LEVELS",
    "PARQUET_CONVERSION_REVISION",
    "Approach",
    "BenchmarkConfig",
    "CalibrationConfig",
    "CalibrationMethod",
    "ConfigError",
    "DatasetConfig",
    "ExclusionConfig",
    "FrameworkArgs",
    "MlflowConfig",
    "OperatorsConfig",
    "QuantizationConfig",
    "RunConfig",
    "SearchObjective",
    "SearchStrategy",
    "check_opset",
    "exporter_opset_range",
    "flatten",
    "held_out_rows_needed",
    "is_how_to_run",
    "misspelt_pattern",
    "register_configs",
    "split_held_out",
]
