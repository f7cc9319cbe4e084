"""Token classification (NER): CoNLL-style word lists and tags, first-sub-token labels, seqeval.

The split is read by :mod:`quantsweep.data`; the rows are :mod:`.rows`, the scoring :mod:`.scoring`, the score records :mod:`.scores`; this
module is what binds them to the :class:`~quantsweep.tasks.Task` interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from quantsweep.batching import EncodedSentence
    from quantsweep.config import DatasetConfig
    from quantsweep.tasks.token_classification.rows import TaggedSentences
    from quantsweep.tasks.token_classification.scores import EvaluationResult

NAME: str = "token-classification"
# seqeval's micro-averaged entity scores and word-level accuracy; MLflow names them eval/<side>/<metric>
METRICS: tuple[str, ...] = ("precision", "recall", "f1", "accuracy")
# what exclusion=auto's budget (`exclusion.max_f1_drop`) and the Pareto plot measure
BUDGET_METRIC: str = "f1"
# the scoring library, whose version is part of the cached fp32 evaluation's key
PACKAGES: tuple[str, ...] = ("seqeval",)
ROWS: str = "sentences"


def scores_from_dict(data: dict[str, Any]) -> EvaluationResult:
    from quantsweep.tasks.token_classification.scores import EvaluationResult

    return EvaluationResult.from_dict(data)


def model_class() -> Any:
    from transformers import AutoModelForTokenClassification

    return AutoModelForTokenClassification


def check_columns(cfg: DatasetConfig) -> tuple[str, str] | None:
    """The key that cannot describe token classification and what it allows, or None."""
    if set(cfg.data_keys) != {"primary"}:
        return (
            "dataset.data_keys",
            "token classification takes exactly one key, `primary`, naming the column of word lists.",
        )
    if len(cfg.ref_keys) != 1:
        return "dataset.ref_keys", "token classification takes exactly one reference column (the tag column)."
    return None


def load(cfg: DatasetConfig, split: str, limit: int | None = None) -> TaggedSentences:
    from quantsweep.tasks.token_classification.rows import load_split

    return load_split(cfg, split, limit)


def check_labels(id2label: dict[int, str], rows: TaggedSentences) -> None:
    from quantsweep.tasks.token_classification.scoring import check_labels as check

    check(id2label, rows.label_names, f"{rows.source} ({rows.split})")


def encode(tokenizer: Any, rows: TaggedSentences, max_length: int) -> list[EncodedSentence]:
    from quantsweep.tasks.token_classification.rows import encode_sentences

    return encode_sentences(tokenizer, rows.tokens, max_length)


def evaluate(
    session: Any,
    rows: TaggedSentences,
    encoded: Sequence[EncodedSentence],
    id2label: dict[int, str],
    batch_size: int,
    pad_token_id: int,
    progress_label: str | None = None,
) -> tuple[EvaluationResult, np.ndarray]:
    import time

    from quantsweep.tasks.token_classification.scoring import entity_counts, predict_word_labels, scores_of

    start = time.perf_counter()
    predictions = predict_word_labels(session, encoded, id2label, batch_size, pad_token_id, progress_label)
    return scores_of(rows, encoded, predictions, start), entity_counts(rows.tags, predictions)


def counts(
    session: Any,
    rows: TaggedSentences,
    encoded: Sequence[EncodedSentence],
    id2label: dict[int, str],
    batch_size: int,
    pad_token_id: int,
) -> np.ndarray:
    """Per sentence: entities predicted exactly right, predicted, in the reference (seqeval's F1)."""
    from quantsweep.tasks.token_classification.scoring import entity_counts, predict_word_labels

    return entity_counts(rows.tags, predict_word_labels(session, encoded, id2label, batch_size, pad_token_id))


def metric_from_counts(summed: np.ndarray) -> np.ndarray:
    from quantsweep.tasks.token_classification.scoring import f1_from_counts

    return f1_from_counts(summed)
