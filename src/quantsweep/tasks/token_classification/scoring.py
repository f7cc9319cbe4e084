"""Task metrics of one ONNX model: batched inference, first-sub-token word labels, seqeval.

The scores are those of the ``evaluate`` library's seqeval metric (seqeval's default,
non-strict mode): overall precision/recall/F1 are seqeval's micro averages over entity
spans, accuracy is word-level tag accuracy including ``O``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from quantsweep.batching import EncodedSentence, length_sorted_batches
from quantsweep.tasks.token_classification.rows import TaggedSentences
from quantsweep.tasks.token_classification.scores import EntityScores, EvaluationResult

if TYPE_CHECKING:
    import onnxruntime as ort

OUTSIDE = "O"


class LabelMismatchError(ValueError):
    """The model's labels do not cover the dataset's tags; the message is for the user."""


def check_labels(id2label: dict[int, str], dataset_labels: Sequence[str], source: str) -> None:
    """Labels are matched by name; every tag of the dataset must be one the model can predict."""
    model_labels = set(id2label.values())
    missing = [name for name in dataset_labels if name not in model_labels]
    if missing:
        raise LabelMismatchError(
            f"The model's labels {sorted(model_labels)} do not include the tags {missing} of {source}. "
            "Labels are matched by name between the model's id2label and the dataset's tag names; "
            "use a model fine-tuned on this tag set (or fix its config.json id2label)."
        )


def first_subtoken_labels(
    word_ids: Sequence[int | None], token_label_ids: Sequence[int], num_words: int, id2label: dict[int, str]
) -> list[str]:
    """One tag per word: the label of the word's first sub-token; ``O`` for words cut off."""
    words = [OUTSIDE] * num_words
    previous: int | None = None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous:
            words[word] = id2label[int(token_label_ids[position])]
        previous = word
    return words


def predict_word_labels(
    session: ort.InferenceSession,
    encoded: Sequence[EncodedSentence],
    id2label: dict[int, str],
    batch_size: int,
    pad_token_id: int,
    progress_label: str | None = None,
) -> list[list[str]]:
    """One predicted tag per word: the label of the word's first sub-token (``O`` if cut off)."""
    from tqdm.auto import tqdm

    input_names = [i.name for i in session.get_inputs()]
    predictions: list[list[str]] = [[] for _ in encoded]
    batches = length_sorted_batches(encoded, batch_size, pad_token_id, input_names)
    total = (len(encoded) + batch_size - 1) // batch_size
    for batch in tqdm(
        batches, total=total, desc=progress_label, disable=progress_label is None, mininterval=1.0
    ):
        logits = session.run(None, batch.inputs)[0]
        label_ids = np.asarray(logits).argmax(axis=-1)
        for row, index in enumerate(batch.indices):
            predictions[index] = first_subtoken_labels(
                batch.word_ids[row], label_ids[row], encoded[index].num_words, id2label
            )
    return predictions


@dataclass
class Scores:
    precision: float
    recall: float
    f1: float
    accuracy: float
    per_entity: dict[str, EntityScores]


def score(references: list[list[str]], predictions: list[list[str]]) -> Scores:
    """seqeval overall and per-entity scores, as ``evaluate``'s seqeval metric defines them."""
    from seqeval.metrics import accuracy_score, classification_report

    report = classification_report(references, predictions, output_dict=True, zero_division=0)
    overall = report.pop("micro avg")
    for key in ("macro avg", "weighted avg"):
        report.pop(key, None)
    return Scores(
        precision=float(overall["precision"]),
        recall=float(overall["recall"]),
        f1=float(overall["f1-score"]),
        accuracy=float(accuracy_score(references, predictions)),
        per_entity={
            entity: EntityScores(
                precision=float(values["precision"]),
                recall=float(values["recall"]),
                f1=float(values["f1-score"]),
                number=int(values["support"]),
            )
            for entity, values in sorted(report.items())
        },
    )


def entity_counts(references: list[list[str]], predictions: list[list[str]]) -> np.ndarray:
    """Per sentence: entities predicted exactly right, entities predicted, entities in the reference.

    Summed over sentences they give seqeval's micro-averaged precision, recall and F1
    (its default mode finds entities per sentence the same way), so a resample of
    sentences can be scored from these counts alone, without running seqeval again.
    """
    from seqeval.metrics.sequence_labeling import get_entities

    counts = np.zeros((len(references), 3), dtype=np.int64)
    for row, (truth, guess) in enumerate(zip(references, predictions, strict=True)):
        actual = set(get_entities(list(truth)))
        predicted = set(get_entities(list(guess)))
        counts[row] = (len(actual & predicted), len(predicted), len(actual))
    return counts


def f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """Micro F1 from summed (correct, predicted, actual) counts, along the last axis; 0 when undefined."""
    correct, predicted, actual = counts[..., 0], counts[..., 1], counts[..., 2]
    total = predicted + actual
    return np.where(total > 0, 2.0 * correct / np.maximum(total, 1), 0.0)


def evaluate_model(
    session: ort.InferenceSession,
    data: TaggedSentences,
    encoded: Sequence[EncodedSentence],
    id2label: dict[int, str],
    batch_size: int,
    pad_token_id: int,
    progress_label: str | None = None,
) -> EvaluationResult:
    start = time.perf_counter()
    predictions = predict_word_labels(session, encoded, id2label, batch_size, pad_token_id, progress_label)
    return scores_of(data, encoded, predictions, start)


def scores_of(
    data: TaggedSentences, encoded: Sequence[EncodedSentence], predictions: list[list[str]], start: float
) -> EvaluationResult:
    """seqeval's scores of one model's word labels; ``start`` (``time.perf_counter()``) began its pass."""
    scores = score(data.tags, predictions)
    return EvaluationResult(
        precision=scores.precision,
        recall=scores.recall,
        f1=scores.f1,
        accuracy=scores.accuracy,
        per_entity=scores.per_entity,
        num_samples=len(data),
        num_truncated=sum(1 for e in encoded if e.truncated),
        seconds=round(time.perf_counter() - start, 3),
        truncated_words=sum(e.num_words - words_covered(e) for e in encoded),
    )


def words_covered(encoded: EncodedSentence) -> int:
    """How many leading words of a sentence kept at least one sub-token after truncation."""
    return max((w for w in encoded.word_ids if w is not None), default=-1) + 1
