"""Encoded rows in, padded batches out: the one batching every task, calibration and the search use.

A bottom-layer module (numpy only). Batches group rows of similar length so each is padded
only to its own longest row, which keeps evaluation of variable-length text cheap.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class EncodedSentence:
    """One sentence's model inputs and, per sub-token, the index of its word (None for specials)."""

    input_ids: list[int]
    token_type_ids: list[int] | None
    word_ids: list[int | None]
    num_words: int
    truncated: bool = False


@dataclass
class EncodedBatch:
    indices: list[int]
    inputs: dict[str, np.ndarray]
    word_ids: list[list[int | None]] = field(default_factory=list)


def length_sorted_batches(
    encoded: Sequence[EncodedSentence], batch_size: int, pad_token_id: int, input_names: Sequence[str]
) -> Iterator[EncodedBatch]:
    """Batches of similar length, each padded only to its own longest row."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        width = max(len(encoded[i].input_ids) for i in indices)
        ids = np.full((len(indices), width), pad_token_id, dtype=np.int64)
        mask = np.zeros((len(indices), width), dtype=np.int64)
        types = np.zeros((len(indices), width), dtype=np.int64)
        for row, i in enumerate(indices):
            n = len(encoded[i].input_ids)
            ids[row, :n] = encoded[i].input_ids
            mask[row, :n] = 1
            token_types = encoded[i].token_type_ids
            if token_types is not None:
                types[row, :n] = token_types
        available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        yield EncodedBatch(
            indices=indices,
            inputs={name: available[name] for name in input_names},
            word_ids=[encoded[i].word_ids for i in indices],
        )
