"""Text classification: one label per text (or text pair), argmax of the logits, scikit-learn's scores.

Rows come from the same readers as token classification (Hub Parquet conversions, local
folders and files, :func:`quantsweep.data.read_split`); ``dataset.data_keys`` names the
text column (``primary``) and, for pairs such as NLI, the second one (``secondary``);
``dataset.ref_keys`` names the label column. Labels are matched by name, case aside,
between the model's ``id2label`` and the column's ClassLabel names (or
``dataset.label_names`` for plain integer ids, or the strings themselves).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from quantsweep.batching import EncodedSentence
    from quantsweep.config import DatasetConfig
    from quantsweep.tasks.text_classification.scores import ClassificationResult

log = logging.getLogger(__name__)

NAME: str = "text-classification"
# scikit-learn's accuracy and macro/micro averages; MLflow names them eval/<side>/<metric>
METRICS: tuple[str, ...] = ("accuracy", "f1_macro", "f1_micro", "precision_macro", "recall_macro")
# what exclusion=auto's budget (`exclusion.max_f1_drop`) and the Pareto plot measure
BUDGET_METRIC: str = "f1_macro"
# the scoring library, whose version is part of the cached fp32 evaluation's key
PACKAGES: tuple[str, ...] = ("scikit-learn",)
ROWS: str = "texts"  # or text pairs


def scores_from_dict(data: dict[str, Any]) -> ClassificationResult:
    from quantsweep.tasks.text_classification.scores import ClassificationResult

    return ClassificationResult.from_dict(data)


@dataclass
class LabelledTexts:
    """Texts (and their second texts for pairs) with one label name each."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[str]
    label_names: list[str]
    source: str
    split: str

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def fingerprint(self) -> str:
        """A hash of exactly the rows used, stable across machines and library versions."""
        digest = hashlib.sha256()
        for i, (text, label) in enumerate(zip(self.texts, self.labels, strict=True)):
            row = [text, self.pairs[i], label] if self.pairs is not None else [text, label]
            digest.update(json.dumps(row, ensure_ascii=False).encode("utf-8"))
            digest.update(b"\n")
        return digest.hexdigest()[:16]

    def take(self, indices: Sequence[int]) -> LabelledTexts:
        return LabelledTexts(
            texts=[self.texts[i] for i in indices],
            pairs=[self.pairs[i] for i in indices] if self.pairs is not None else None,
            labels=[self.labels[i] for i in indices],
            label_names=self.label_names,
            source=self.source,
            split=self.split,
        )


def model_class() -> Any:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification


def check_columns(cfg: DatasetConfig) -> tuple[str, str] | None:
    """The key that cannot describe text classification and what it allows, or None."""
    if not cfg.data_keys.get("primary") or set(cfg.data_keys) - {"primary", "secondary"}:
        return "dataset.data_keys", (
            "text classification takes `primary` (the text column) and optionally `secondary` (the second "
            "text of a pair), e.g. dataset.data_keys={primary: sentence} or {primary: premise, secondary: hypothesis}."
        )
    if len(cfg.ref_keys) != 1:
        return (
            "dataset.ref_keys",
            "text classification takes exactly one reference column (the label column), e.g. [label].",
        )
    return None


def load(cfg: DatasetConfig, split: str, limit: int | None = None) -> LabelledTexts:
    from quantsweep.data import DataError, read_split

    rows, source = read_split(cfg, split)
    wanted = {
        "dataset.data_keys.primary": cfg.data_keys["primary"],
        "dataset.data_keys.secondary": cfg.data_keys.get("secondary"),
        "dataset.ref_keys": cfg.ref_keys[0],
    }
    names: list[str] | None = None
    if isinstance(rows, dict):
        column_names = list(rows)
    else:
        column_names = list(rows.column_names)
        if limit is not None:
            rows = rows.select(range(min(limit, len(rows))))
        feature = rows.features.get(cfg.ref_keys[0]) if cfg.ref_keys[0] in column_names else None
        names = list(getattr(feature, "names", None) or []) or None
    columns: dict[str, list[Any]] = {}
    for key, column in wanted.items():
        if column is None:
            continue
        if column not in column_names:
            raise DataError(
                f"`{key}` names the column {column!r}, which {source} does not have; its columns are {column_names}."
            )
        columns[key] = list(rows[column])[:limit] if limit is not None else list(rows[column])
    texts = columns["dataset.data_keys.primary"]
    pairs = columns.get("dataset.data_keys.secondary")
    labels, names = _label_names(cfg, columns["dataset.ref_keys"], names, source)
    for key, values in (("dataset.data_keys.primary", texts), ("dataset.data_keys.secondary", pairs or [])):
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise DataError(
                f"`{key}` names a column of {source} whose row {bad} is {values[bad]!r}, not a text; "
                "text classification reads one string per row (token classification reads word lists)."
            )
    if not texts:
        raise DataError(f"Split {split!r} of {source} is empty.")
    return LabelledTexts(texts, pairs, labels, names, source, split)


def _label_names(
    cfg: DatasetConfig, raw: list[Any], names: list[str] | None, source: str
) -> tuple[list[str], list[str]]:
    """Each row's label by name, and the label names: ClassLabel's, ``dataset.label_names``, or the strings."""
    from quantsweep.data import DataError, check_label_ids

    if all(isinstance(v, str) for v in raw):
        return list(raw), sorted(set(raw))
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in raw):
        raise DataError(
            f"The label column {cfg.ref_keys[0]!r} of {source} holds {raw[0]!r}; text classification takes one "
            "label per row, as a ClassLabel id, an integer id or a name."
        )
    names = names or (list(cfg.label_names) if cfg.label_names else None)
    if names is None:
        raise DataError(
            f"The label column {cfg.ref_keys[0]!r} of {source} holds integer ids without names (no ClassLabel); "
            "set `dataset.label_names` to the label names in id order, e.g. dataset.label_names=[negative,positive]."
        )
    # GLUE's test splits hold -1 ("no label published"): refused with the row, as an id past the names
    check_label_ids(
        ([int(v)] for v in raw), names, f"the label column {cfg.ref_keys[0]!r} of {source}", per_word=False
    )
    return [names[int(v)] for v in raw], list(names)


def _by_name(id2label: dict[int, str], names: Sequence[str]) -> dict[int, str]:
    """The model's label ids mapped to the dataset's names: the one name equal case aside, else the label itself.

    Names the dataset spells in two cases (``A`` and ``a``) are matched exactly, never folded.
    """
    folded: dict[str, list[str]] = {}
    for name in names:
        folded.setdefault(name.lower(), []).append(name)

    def named(label: str) -> str:
        candidates = folded.get(label.lower(), [])
        return candidates[0] if len(candidates) == 1 else label

    return {i: named(label) for i, label in id2label.items()}


def check_labels(id2label: dict[int, str], rows: LabelledTexts) -> None:
    from quantsweep.tasks.token_classification.scoring import LabelMismatchError

    mapped = _by_name(id2label, rows.label_names)
    merged = sorted({name for name in mapped.values() if list(mapped.values()).count(name) > 1})
    if merged:
        twins = sorted(label for i, label in id2label.items() if mapped[i] in merged)
        raise LabelMismatchError(
            f"The model's labels {twins} all match the label {merged[0]!r} of {rows.source} ({rows.split}), "
            "case aside, so its predictions could not be told apart; fix its config.json id2label."
        )
    missing = [name for name in rows.label_names if name not in set(mapped.values())]
    if missing:
        raise LabelMismatchError(
            f"The model's labels {sorted(id2label.values())} do not include the labels {missing} of "
            f"{rows.source} ({rows.split}). Labels are matched by name (case aside) between the model's "
            "id2label and the dataset's ClassLabel names (or `dataset.label_names`); use a model fine-tuned "
            "on these labels, or fix its config.json id2label (names such as LABEL_0 say nothing)."
        )


def encode(tokenizer: Any, rows: LabelledTexts, max_length: int) -> list[EncodedSentence]:
    """Model inputs per row; a row is truncated when its tokens (both texts, specials included) exceed the length."""
    from quantsweep.batching import EncodedSentence

    pairs = rows.pairs
    encoding = tokenizer(rows.texts, pairs, truncation=True, max_length=max_length)
    full = tokenizer(rows.texts, pairs, truncation=False)["input_ids"]
    return [
        EncodedSentence(
            input_ids=list(encoding["input_ids"][i]),
            token_type_ids=list(encoding["token_type_ids"][i]) if "token_type_ids" in encoding else None,
            word_ids=[],
            num_words=0,
            truncated=len(full[i]) > max_length,
        )
        for i in range(len(rows))
    ]


def predict(
    session: Any,
    encoded: Sequence[EncodedSentence],
    id2label: dict[int, str],
    names: Sequence[str],
    batch_size: int,
    pad_token_id: int,
    progress_label: str | None = None,
) -> list[str]:
    """One predicted label name per row: the argmax of the logits, named as the dataset names it."""
    from tqdm.auto import tqdm

    from quantsweep.batching import length_sorted_batches

    labels = _by_name(id2label, names)
    input_names = [i.name for i in session.get_inputs()]
    predictions = [""] * len(encoded)
    total = (len(encoded) + batch_size - 1) // batch_size
    batches = length_sorted_batches(encoded, batch_size, pad_token_id, input_names)
    for batch in tqdm(
        batches, total=total, desc=progress_label, disable=progress_label is None, mininterval=1.0
    ):
        logits = np.asarray(session.run(None, batch.inputs)[0])
        for row, index in enumerate(batch.indices):
            predictions[index] = labels[int(logits[row].argmax())]
    return predictions


def score(references: Sequence[str], predictions: Sequence[str]) -> dict[str, Any]:
    """scikit-learn's accuracy, macro and micro averages and per-label scores."""
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        f1_score,
        precision_recall_fscore_support,
    )

    from quantsweep.tasks.text_classification.scores import LabelScores

    precision, recall, f1_macro, _ = precision_recall_fscore_support(
        references, predictions, average="macro", zero_division=0
    )
    report = classification_report(references, predictions, output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(references, predictions)),
        "f1_macro": float(f1_macro),
        "f1_micro": float(f1_score(references, predictions, average="micro", zero_division=0)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "per_label": {
            label: LabelScores(
                precision=float(values["precision"]),
                recall=float(values["recall"]),
                f1=float(values["f1-score"]),
                support=int(values["support"]),
            )
            for label, values in sorted(report.items())
            if isinstance(values, dict) and label not in ("macro avg", "weighted avg", "micro avg")
        },
    }


def evaluate(
    session: Any,
    rows: LabelledTexts,
    encoded: Sequence[EncodedSentence],
    id2label: dict[int, str],
    batch_size: int,
    pad_token_id: int,
    progress_label: str | None = None,
) -> tuple[ClassificationResult, np.ndarray]:
    from quantsweep.tasks.text_classification.scores import ClassificationResult

    start = time.perf_counter()
    predictions = predict(
        session, encoded, id2label, rows.label_names, batch_size, pad_token_id, progress_label
    )
    scores = ClassificationResult(
        **score(rows.labels, predictions),
        num_samples=len(rows),
        num_truncated=sum(1 for e in encoded if e.truncated),
        seconds=round(time.perf_counter() - start, 3),
    )
    return scores, label_counts(rows.labels, predictions, _count_names(id2label, rows))


def label_counts(references: Sequence[str], predictions: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Per row, three one-hot blocks over the labels: reference, prediction, and both (a correct one).

    Summed over rows they hold each label's support, predictions and true positives:
    enough for macro F1 (and accuracy), so a resample of rows is scored without sklearn.
    """
    index = {name: i for i, name in enumerate(names)}
    width = len(index)
    counts = np.zeros((len(references), 3 * width), dtype=np.int64)
    for row, (truth, guess) in enumerate(zip(references, predictions, strict=True)):
        counts[row, index[truth]] = 1
        counts[row, width + index[guess]] = 1
        if truth == guess:
            counts[row, 2 * width + index[truth]] = 1
    return counts


def counts(
    session: Any,
    rows: LabelledTexts,
    encoded: Sequence[EncodedSentence],
    id2label: dict[int, str],
    batch_size: int,
    pad_token_id: int,
) -> np.ndarray:
    """Per row: one-hot reference, prediction and true positive over the labels (macro F1's counts)."""
    predictions = predict(session, encoded, id2label, rows.label_names, batch_size, pad_token_id)
    return label_counts(rows.labels, predictions, _count_names(id2label, rows))


def _count_names(id2label: dict[int, str], rows: LabelledTexts) -> list[str]:
    """The counts' labels: the dataset's, then the model's beyond them (identical for every model compared)."""
    return list(rows.label_names) + sorted(
        set(_by_name(id2label, rows.label_names).values()) - set(rows.label_names)
    )


def metric_from_counts(summed: np.ndarray) -> np.ndarray:
    """Macro F1 from summed one-hot blocks, along the last axis: the mean over labels seen in either."""
    width = summed.shape[-1] // 3
    actual, predicted, correct = summed[..., :width], summed[..., width : 2 * width], summed[..., 2 * width :]
    total = actual + predicted
    per_label = np.where(total > 0, 2.0 * correct / np.maximum(total, 1), 0.0)
    present = (total > 0).sum(axis=-1)
    return np.where(present > 0, per_label.sum(axis=-1) / np.maximum(present, 1), 0.0)
