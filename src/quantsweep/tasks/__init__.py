"""The tasks quantsweep measures, one module each, chosen by the config's ``task``.

A task decides what is task-specific and nothing else: which model class is exported (and
optimum's export task, its ``NAME``), how a dataset split becomes rows with references and
label names, how rows are encoded, how logits become predictions and scores (with the library
that owns the metric), which metrics the console, card, CSV and MLflow show (``METRICS``),
and the per-row counts ``exclusion=auto``'s paired bootstrap resamples. Export,
quantization, sessions and timing (random token ids of each shape) are the same for every
encoder task and stay in their own modules.

To add a task: a module here that satisfies :class:`Task`, and its name in :data:`TASKS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, cast

if TYPE_CHECKING:
    import numpy as np

    from quantsweep.config import DatasetConfig
    from quantsweep.records import TaskScores
    from quantsweep.tasks.text_classification import LabelledTexts
    from quantsweep.tasks.token_classification.rows import TaggedSentences

# one split's rows as a task loads them (with source, split, label names, fingerprint)
TaskRows: TypeAlias = "TaggedSentences | LabelledTexts"

# the task of a config without one, and of every results.json of schema <= 4
DEFAULT_TASK = "token-classification"
# config value -> module
TASKS = {
    "token-classification": "quantsweep.tasks.token_classification",
    "text-classification": "quantsweep.tasks.text_classification",
}


class Task(Protocol):
    NAME: str  # the config's `task`, and optimum's export task
    METRICS: tuple[str, ...]  # scores of both models, in the order every report shows them
    BUDGET_METRIC: str  # the one of METRICS exclusion=auto's budget and the Pareto plot measure
    PACKAGES: tuple[str, ...]  # the scoring library (its version keys the cached fp32 evaluation)
    ROWS: str  # what a row is, for the console and the card ("sentences", "texts")

    def scores_from_dict(self, data: dict[str, Any]) -> TaskScores:
        """One model's scores as ``results.json`` holds them, read back into their type."""

    def check_columns(self, cfg: DatasetConfig) -> tuple[str, str] | None:
        """The one of ``dataset.data_keys``/``ref_keys`` that does not fit the task, and what it allows."""

    def model_class(self) -> Any:
        """The transformers Auto class the exported model is loaded with."""

    def load(self, cfg: DatasetConfig, split: str, limit: int | None = None) -> Any:
        """One split's rows, with their references, label names, source and fingerprint."""

    def check_labels(self, id2label: dict[int, str], rows: Any) -> None:
        """Refuse, naming both, a model whose labels do not cover the dataset's."""

    def encode(self, tokenizer: Any, rows: Any, max_length: int) -> Sequence[Any]:
        """Model inputs per row (``input_ids``, ``token_type_ids``), cut to ``max_length``."""

    def evaluate(
        self,
        session: Any,
        rows: Any,
        encoded: Sequence[Any],
        id2label: dict[int, str],
        batch_size: int,
        pad_token_id: int,
        progress_label: str | None = None,
    ) -> tuple[TaskScores, np.ndarray]:
        """One model's scores on the rows, and per row the counts of :meth:`counts`, from one pass."""

    def counts(
        self,
        session: Any,
        rows: Any,
        encoded: Sequence[Any],
        id2label: dict[int, str],
        batch_size: int,
        pad_token_id: int,
    ) -> np.ndarray:
        """Per row, the counts whose sums give the budget's metric (resampled by the bootstrap)."""

    def metric_from_counts(self, counts: np.ndarray) -> np.ndarray:
        """The budget's metric from counts summed over rows, along the last axis."""


def get(name: str) -> Task:
    """The task module of a config's ``task``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    return cast(Task, importlib.import_module(TASKS[name]))


def of_results(results: Mapping[str, Any]) -> Task:
    """The task of a job's ``results.json`` (files of schema <= 4 are all token classification)."""
    return get(str(results.get("config", {}).get("task", DEFAULT_TASK)))
