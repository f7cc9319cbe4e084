"""The task interface: every task module satisfies it (mypy checks the assignment below) and is found by name."""

from __future__ import annotations

import pytest

from quantsweep import tasks
from quantsweep.tasks import Task, text_classification, token_classification
from quantsweep.tasks.checks import SUPPORTED_TASKS

# a type check, not a runtime one: mypy refuses these lines if a module stops satisfying Task
TOKEN_CLASSIFICATION: Task = token_classification
TEXT_CLASSIFICATION: Task = text_classification


def test_every_task_is_found_by_its_config_name_and_names_itself() -> None:
    assert tuple(tasks.TASKS) == SUPPORTED_TASKS
    for name in tasks.TASKS:
        task = tasks.get(name)
        assert name == task.NAME  # also optimum's export task name
        assert task.METRICS and len(set(task.METRICS)) == len(task.METRICS)
    with pytest.raises(ValueError, match="unknown task 'text-generation'"):
        tasks.get("text-generation")


def test_token_classification_keeps_its_metric_names() -> None:
    """The MLflow metric names of token classification (eval/<side>/<metric>) must not change."""
    assert token_classification.METRICS == ("precision", "recall", "f1", "accuracy")


def test_the_token_task_scores_the_budget_metric_from_summed_counts() -> None:
    import numpy as np

    # per sentence: entities right, predicted, in the reference
    counts = np.array([[1, 2, 1], [0, 0, 1], [2, 2, 2]])
    f1 = float(token_classification.metric_from_counts(counts.sum(axis=0)))
    assert f1 == pytest.approx(2 * 3 / (4 + 4))
