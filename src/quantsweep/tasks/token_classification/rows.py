"""Token classification's rows: tagged sentences read from a split, tag names resolved, and
word lists tokenized into inputs that remember which word each sub-token came from.

The split itself is read by :func:`quantsweep.data.read_split` (Hub Parquet, local folders,
CoNLL files); what makes its columns words and tags is this task's business.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quantsweep.batching import EncodedSentence
from quantsweep.config import DatasetConfig
from quantsweep.data import DataError, check_label_ids, read_split

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


# The tag order of the Hub's conll2003, used for integer tags that carry no names.
CONLL2003_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


@dataclass
class TaggedSentences:
    """Word lists and their tag names, as the evaluation and calibration see them."""

    tokens: list[list[str]]
    tags: list[list[str]]
    label_names: list[str]
    source: str
    split: str

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def fingerprint(self) -> str:
        """A hash of exactly the rows used, stable across machines and library versions."""
        digest = hashlib.sha256()
        for words, tags in zip(self.tokens, self.tags, strict=True):
            digest.update(json.dumps([words, tags], ensure_ascii=False).encode("utf-8"))
            digest.update(b"\n")
        return digest.hexdigest()[:16]

    def take(self, indices: Sequence[int]) -> TaggedSentences:
        return TaggedSentences(
            tokens=[self.tokens[i] for i in indices],
            tags=[self.tags[i] for i in indices],
            label_names=self.label_names,
            source=self.source,
            split=self.split,
        )


def _tag_names_from_feature(feature: Any) -> list[str] | None:
    inner = getattr(feature, "feature", None)
    if inner is None and isinstance(feature, list) and feature:
        inner = feature[0]
    names = getattr(inner, "names", None)
    return list(names) if names else None


def _tag_rows(
    cfg: DatasetConfig, raw_tags: Sequence[Sequence[Any]], names: list[str] | None, column: str, source: str
) -> tuple[list[list[str]], list[str]]:
    """The tags of every row by name, and the tag names: the column's ClassLabel names, else
    ``dataset.label_names``, else CoNLL-2003's order for integer ids, else the names seen."""
    integer_tags = any(row and not isinstance(row[0], str) for row in raw_tags)
    if names is None and integer_tags:
        names = list(cfg.label_names) if cfg.label_names else list(CONLL2003_LABELS)
        if cfg.label_names is None:
            log.warning(
                "The tag column %r of %s holds integer ids without names; assuming the CoNLL-2003 order %s "
                "(set dataset.label_names to override).",
                column,
                source,
                names,
            )
    if names is not None:
        check_label_ids(
            ([int(t) for t in row] for row in raw_tags), names, f"the tag column {column!r} of {source}"
        )
        return [[names[int(t)] for t in row] for row in raw_tags], names
    tags = [list(row) for row in raw_tags]
    seen: dict[str, None] = {}
    for row in tags:
        seen.update(dict.fromkeys(row))
    return tags, list(seen)


def load_split(cfg: DatasetConfig, split: str, limit: int | None = None) -> TaggedSentences:
    """One split as tagged sentences, its first ``limit`` rows when a limit is given."""
    rows, source = read_split(cfg, split)
    token_col, tag_col = cfg.tokens_column, cfg.tags_column
    if isinstance(rows, dict):
        column_names = list(rows)
        tokens, raw_tags, names = rows.get(token_col), rows.get(tag_col), None
    else:
        column_names = list(rows.column_names)
        if limit is not None:
            rows = rows.select(range(min(limit, len(rows))))
        tokens = rows[token_col] if token_col in column_names else None
        raw_tags = rows[tag_col] if tag_col in column_names else None
        names = _tag_names_from_feature(rows.features.get(tag_col)) if tag_col in column_names else None
    for key, col, value in (
        ("dataset.data_keys.primary", token_col, tokens),
        ("dataset.ref_keys", tag_col, raw_tags),
    ):
        if value is None:
            raise DataError(
                f"`{key}` names the column {col!r}, which {source} does not have; its columns are {column_names}."
            )
    assert tokens is not None and raw_tags is not None
    if limit is not None:
        tokens, raw_tags = tokens[:limit], raw_tags[:limit]
    tags, names = _tag_rows(cfg, raw_tags, names, tag_col, source)
    for index, (words, row_tags) in enumerate(zip(tokens, tags, strict=True)):
        if len(words) != len(row_tags):
            raise DataError(f"Row {index} of {source} has {len(words)} tokens but {len(row_tags)} tags.")
    if not tokens:
        raise DataError(f"Split {split!r} of {source} is empty.")
    return TaggedSentences(
        tokens=[list(w) for w in tokens], tags=tags, label_names=list(names), source=source, split=split
    )


def encode_sentences(
    tokenizer: PreTrainedTokenizerBase, sentences: Sequence[Sequence[str]], max_length: int
) -> list[EncodedSentence]:
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(
            "Token classification needs a fast (Rust) tokenizer to map sub-tokens back to words; "
            f"{type(tokenizer).__name__} is not one."
        )
    encoding = tokenizer(
        [list(s) for s in sentences], is_split_into_words=True, truncation=True, max_length=max_length
    )
    encoded: list[EncodedSentence] = []
    for i, words in enumerate(sentences):
        word_ids = encoding.word_ids(i)
        covered = max((w for w in word_ids if w is not None), default=-1) + 1
        encoded.append(
            EncodedSentence(
                input_ids=list(encoding["input_ids"][i]),
                token_type_ids=list(encoding["token_type_ids"][i]) if "token_type_ids" in encoding else None,
                word_ids=word_ids,
                num_words=len(words),
                truncated=covered < len(words),
            )
        )
    return encoded
