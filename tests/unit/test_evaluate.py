"""Evaluation: word alignment, batching and seqeval metrics, with a real ONNX Runtime session.

The model here is an "oracle" ONNX graph (logits = a lookup table indexed by token id),
so the expected word labels are known exactly and the metric path can be checked end to end.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
from transformers import AutoTokenizer

from quantsweep import testing as tiny
from quantsweep.config import DatasetConfig
from quantsweep.sessions import SessionSettings, create_session
from quantsweep.tasks import get
from quantsweep.tasks.token_classification.rows import encode_sentences, load_split
from quantsweep.tasks.token_classification.scoring import (
    LabelMismatchError,
    check_labels,
    evaluate_model,
    f1_from_counts,
    predict_word_labels,
    score,
)

ID2LABEL = dict(enumerate(tiny.LABELS))


def oracle_model(path: Path, token_labels: dict[int, int], vocab_size: int) -> Path:
    table = np.full((vocab_size, len(tiny.LABELS)), -5.0, dtype=np.float32)
    for token, label in token_labels.items():
        table[token, label] = 5.0
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["logits"], axis=0)],
        "oracle",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", len(tiny.LABELS)])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.fixture(scope="module")
def tokenizer(distilbert_dir):
    return AutoTokenizer.from_pretrained(str(distilbert_dir))


@pytest.fixture(scope="module")
def validation(conll_dir):
    return load_split(DatasetConfig(path=str(conll_dir)), "validation")


def label_of_piece(piece: str) -> int:
    """The oracle's rule: a deterministic label per vocabulary piece, continuation pieces always B-PER."""
    if piece.startswith("##"):
        return tiny.LABELS.index("B-PER")
    return sum(map(ord, piece)) % len(tiny.LABELS)


def expected_labels(tokenizer, sentences) -> list[list[str]]:
    out = []
    for words in sentences:
        labels = []
        for word in words:
            first_piece = tokenizer.tokenize(word)[0]
            labels.append(tiny.LABELS[label_of_piece(first_piece)])
        out.append(labels)
    return out


@pytest.fixture(scope="module")
def oracle_session(tmp_path_factory, tokenizer):
    vocab = tokenizer.get_vocab()
    mapping = {index: label_of_piece(piece) for piece, index in vocab.items()}
    path = oracle_model(tmp_path_factory.mktemp("oracle") / "oracle.onnx", mapping, len(vocab))
    return create_session(path, SessionSettings.for_threads(1))


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_word_labels_come_from_the_first_sub_token(oracle_session, tokenizer, validation, batch_size):
    encoded = encode_sentences(tokenizer, validation.tokens, 256)
    assert any(len(set(w for w in e.word_ids if w is not None)) < len(e.input_ids) - 2 for e in encoded), (
        "the fixture must contain words split into several sub-tokens"
    )
    result = evaluate_model(oracle_session, validation, encoded, ID2LABEL, batch_size, tokenizer.pad_token_id)
    expected = expected_labels(tokenizer, validation.tokens)
    assert result.precision == pytest.approx(precision_score(validation.tags, expected))
    assert result.recall == pytest.approx(recall_score(validation.tags, expected))
    assert result.f1 == pytest.approx(f1_score(validation.tags, expected))
    assert result.accuracy == pytest.approx(accuracy_score(validation.tags, expected))
    assert result.num_samples == len(validation)
    assert result.num_truncated == 0 and result.truncated_words == 0


def kept_words(tokenizer, words, max_length: int) -> int:
    """Words whose first sub-token fits in ``max_length`` beside [CLS] and [SEP], counted piece by piece."""
    room, kept = max_length - 2, 0
    for word in words:
        if room <= 0:
            break
        kept += 1
        room -= len(tokenizer.tokenize(word))
    return kept


def test_truncated_words_count_as_outside(oracle_session, tokenizer, validation):
    max_length = 6
    encoded = encode_sentences(tokenizer, validation.tokens, max_length)
    full = expected_labels(tokenizer, validation.tokens)
    kept = [kept_words(tokenizer, words, max_length) for words in validation.tokens]
    expected = [labels[:k] + ["O"] * (len(labels) - k) for labels, k in zip(full, kept, strict=True)]
    cut_tags = [tag for labels, k in zip(full, kept, strict=True) for tag in labels[k:]]
    assert cut_tags and any(tag != "O" for tag in cut_tags), (
        "the oracle must label some cut-off word as an entity"
    )

    predicted = predict_word_labels(oracle_session, encoded, ID2LABEL, 8, tokenizer.pad_token_id)
    assert predicted == expected
    result = evaluate_model(oracle_session, validation, encoded, ID2LABEL, 8, tokenizer.pad_token_id)
    assert result.f1 == pytest.approx(f1_score(validation.tags, expected))
    assert result.accuracy == pytest.approx(accuracy_score(validation.tags, expected))
    assert result.f1 != pytest.approx(f1_score(validation.tags, full))
    assert result.num_truncated == sum(
        k < len(words) for k, words in zip(kept, validation.tokens, strict=True)
    )
    assert result.truncated_words == len(cut_tags)
    # the task's evaluation: the same scores, and per sentence the counts exclusion=auto's
    # bootstrap resamples, from the same pass (their sums give the same F1)
    scores, counts = get("token-classification").evaluate(
        oracle_session, validation, encoded, ID2LABEL, 8, tokenizer.pad_token_id
    )
    assert replace(scores, seconds=result.seconds) == result
    assert counts.shape == (len(validation), 3)
    assert f1_from_counts(counts.sum(axis=0)) == pytest.approx(result.f1)


REFS = [
    ["O", "B-PER", "I-PER", "O", "B-LOC", "O"],
    ["B-ORG", "I-ORG", "I-ORG", "O", "B-MISC"],
    ["O", "O", "B-LOC", "I-LOC"],
]
PREDS = [
    ["O", "B-PER", "I-PER", "O", "B-ORG", "O"],
    ["B-ORG", "I-ORG", "O", "O", "B-MISC"],
    ["B-PER", "O", "B-LOC", "I-LOC"],
]


def test_scores_equal_seqeval():
    scores = score(REFS, PREDS)
    assert scores.precision == pytest.approx(precision_score(REFS, PREDS))
    assert scores.recall == pytest.approx(recall_score(REFS, PREDS))
    assert scores.f1 == pytest.approx(f1_score(REFS, PREDS))
    assert scores.accuracy == pytest.approx(accuracy_score(REFS, PREDS))
    report = classification_report(REFS, PREDS, output_dict=True)
    assert set(scores.per_entity) == {"LOC", "MISC", "ORG", "PER"}
    for entity, values in scores.per_entity.items():
        assert values.f1 == pytest.approx(report[entity]["f1-score"])
        assert values.number == report[entity]["support"]
    # counted by hand: 3 of 6 predicted spans are right, 3 of 5 true spans found, 12 of 15 words right
    assert (scores.precision, scores.recall, scores.accuracy) == (
        pytest.approx(3 / 6),
        pytest.approx(3 / 5),
        pytest.approx(12 / 15),
    )


def test_scores_equal_evaluate_seqeval_when_it_can_be_loaded():
    evaluate = pytest.importorskip("evaluate")
    try:
        metric = evaluate.load("seqeval")
    except Exception as error:  # the metric script lives on the Hub; offline it cannot load
        pytest.skip(f"evaluate's seqeval metric is not available offline: {type(error).__name__}")
    theirs = metric.compute(predictions=PREDS, references=REFS)
    ours = score(REFS, PREDS)
    for name in ("precision", "recall", "f1", "accuracy"):
        assert getattr(ours, name) == pytest.approx(theirs[f"overall_{name}"])
    for entity, values in ours.per_entity.items():
        assert values.f1 == pytest.approx(theirs[entity]["f1"])
        assert values.number == theirs[entity]["number"]


def test_label_names_must_match():
    check_labels(ID2LABEL, ["O", "B-PER", "I-PER"], "data")
    with pytest.raises(LabelMismatchError, match=r"do not include the tags \['B-DISEASE'\]"):
        check_labels(ID2LABEL, ["O", "B-DISEASE"], "data")
    with pytest.raises(LabelMismatchError, match="matched by name"):
        check_labels({0: "LABEL_0", 1: "LABEL_1"}, ["O", "B-PER"], "data")
