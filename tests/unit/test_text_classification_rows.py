from __future__ import annotations

import numpy as np
import pytest
from test_text_classification import dataset

from quantsweep.data import DataError
from quantsweep.tasks import text_classification as task
from quantsweep.tasks.token_classification.scoring import LabelMismatchError


def test_rows_carry_classlabel_names_and_pairs(sentences_dir, pairs_dir):
    rows = task.load(dataset(sentences_dir), "validation")
    assert rows.label_names == ["negative", "neutral", "positive"]
    assert len(rows) == 48 and rows.pairs is None
    assert set(rows.labels) == set(rows.label_names)  # the fixture's model predicts all three
    assert task.load(dataset(sentences_dir), "validation", limit=5).texts == rows.texts[:5]
    pairs = task.load(
        dataset(pairs_dir, data_keys={"primary": "sentence", "secondary": "second"}), "validation"
    )
    assert pairs.pairs is not None and pairs.pairs != pairs.texts and all(" " in text for text in pairs.pairs)
    # the second text is part of the rows' identity (and so of the cache keys)
    alone = task.load(dataset(pairs_dir), "validation")
    assert alone.pairs is None and alone.fingerprint != pairs.fingerprint
    assert pairs.take([2, 0]).pairs == [pairs.pairs[2], pairs.pairs[0]]


def test_labels_as_ids_need_names_and_as_strings_name_themselves(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"sentence": ["a b", "c"], "label": [1, 0]}).to_parquet(
        str(tmp_path / "validation.parquet")
    )
    with pytest.raises(DataError, match=r"integer ids without names.*`dataset.label_names`"):
        task.load(dataset(tmp_path), "validation")
    named = task.load(dataset(tmp_path, label_names=["no", "yes"]), "validation")
    assert named.labels == ["yes", "no"] and named.label_names == ["no", "yes"]
    Dataset.from_dict({"sentence": ["a b", "c"], "label": [-1, -1]}).to_parquet(
        str(tmp_path / "test.parquet")
    )
    with pytest.raises(DataError, match=r"negative ids .*dataset.eval_split=validation"):
        task.load(dataset(tmp_path, eval_split="test", label_names=["no", "yes"]), "test")
    Dataset.from_dict({"sentence": ["a b", "c"], "label": ["yes", "no"]}).to_parquet(
        str(tmp_path / "train.parquet")
    )
    strings = task.load(dataset(tmp_path, eval_split="train"), "train")
    assert strings.labels == ["yes", "no"] and strings.label_names == ["no", "yes"]


def test_a_missing_column_names_the_key_and_the_columns(sentences_dir):
    with pytest.raises(
        DataError, match=r"`dataset.data_keys.secondary` names the column 'hypothesis'.*'sentence'"
    ):
        task.load(
            dataset(sentences_dir, data_keys={"primary": "sentence", "secondary": "hypothesis"}), "validation"
        )
    with pytest.raises(DataError, match=r"`dataset.ref_keys` names the column 'stars'"):
        task.load(dataset(sentences_dir, ref_keys=["stars"]), "validation")


def test_labels_match_by_name_case_aside_and_a_mismatch_names_both(sentences_dir):
    rows = task.load(dataset(sentences_dir), "validation")
    task.check_labels({0: "NEGATIVE", 1: "NEUTRAL", 2: "POSITIVE"}, rows)  # GLUE's names against upper case
    with pytest.raises(LabelMismatchError) as error:
        task.check_labels({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, rows)
    message = str(error.value)
    assert "['LABEL_0', 'LABEL_1', 'LABEL_2']" in message and "['negative', 'neutral', 'positive']" in message


def test_labels_equal_case_aside_are_told_apart_or_refused():
    rows = task.LabelledTexts(["x", "y"], None, ["A", "a"], ["A", "a"], "data", "validation")
    # names that differ only by case match exactly, each to its own
    task.check_labels({0: "A", 1: "a"}, rows)
    assert task._by_name({0: "a", 1: "A"}, rows.label_names) == {0: "a", 1: "A"}
    merged = task.LabelledTexts(["x"], None, ["positive"], ["negative", "positive"], "data", "validation")
    with pytest.raises(
        LabelMismatchError, match=r"\['POSITIVE', 'Positive'\] all match the label 'positive'"
    ):
        task.check_labels({0: "negative", 1: "Positive", 2: "POSITIVE"}, merged)


class _Logits:
    """An ONNX Runtime session stand-in that answers fixed logits per row (by its first token id)."""

    def __init__(self, by_first_token: dict[int, list[float]]) -> None:
        self.by_first_token = by_first_token

    def get_inputs(self) -> list[object]:
        from types import SimpleNamespace

        return [SimpleNamespace(name="input_ids"), SimpleNamespace(name="attention_mask")]

    def run(self, _: object, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.array([self.by_first_token[int(row[0])] for row in inputs["input_ids"]])]


def test_counts_have_one_layout_for_every_model_of_a_search():
    from quantsweep.batching import EncodedSentence

    rows = task.LabelledTexts(
        ["a", "b", "c"], None, ["neg", "pos", "pos"], ["neg", "pos"], "data", "validation"
    )
    encoded = [EncodedSentence([i], None, [], 0) for i in range(3)]
    id2label = {0: "NEG", 1: "POS", 2: "OTHER"}  # the model knows a label the data never uses
    right = _Logits({0: [1, 0, 0], 1: [0, 1, 0], 2: [0, 1, 0]})
    wrong = _Logits({0: [0, 0, 1], 1: [0, 1, 0], 2: [1, 0, 0]})
    fp32 = task.counts(right, rows, encoded, id2label, 2, 0)
    quantized = task.counts(wrong, rows, encoded, id2label, 2, 0)
    assert fp32.shape == quantized.shape == (3, 9)  # neg, pos, OTHER in each of three blocks
    assert task.metric_from_counts(fp32.sum(axis=0)) == 1.0
    # neg: no tp (ref 1, pred 1) -> 0; pos: tp 1 (ref 2, pred 1) -> 2/3; OTHER: predicted once -> 0
    assert task.metric_from_counts(quantized.sum(axis=0)) == pytest.approx((0 + 2 / 3 + 0) / 3)
    # the evaluation's one pass gives the same counts beside the scores they agree with
    scores, counted = task.evaluate(wrong, rows, encoded, id2label, 2, 0)
    assert np.array_equal(counted, quantized)
    assert scores.f1_macro == pytest.approx(task.metric_from_counts(counted.sum(axis=0)))


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_from_counts_is_sklearns_on_every_resample(seed):
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(seed)
    names = ["a", "b", "c", "d"]
    truth = [names[i] for i in rng.integers(0, 3, size=60)]  # "d" is never a reference...
    guess = [names[i] for i in rng.integers(0, 4, size=60)]  # ...but is predicted
    counts = task.label_counts(truth, guess, names)
    for rows in (np.arange(60), rng.integers(0, 60, size=60)):
        t, g = [truth[i] for i in rows], [guess[i] for i in rows]
        expected = f1_score(t, g, average="macro", zero_division=0)
        assert task.metric_from_counts(counts[rows].sum(axis=0)) == pytest.approx(expected, abs=1e-12)
        width = counts.shape[1] // 3
        assert counts[rows, 2 * width :].sum() / len(rows) == pytest.approx(accuracy_score(t, g))
    # a batch of resamples at once, as the bootstrap scores them
    batch = counts[rng.integers(0, 60, size=(7, 60))].sum(axis=1)
    assert task.metric_from_counts(batch).shape == (7,)


def test_scores_are_sklearns():
    truth = ["x", "x", "y", "z", "z", "z"]
    guess = ["x", "y", "y", "z", "x", "z"]
    scores = task.score(truth, guess)
    assert scores["accuracy"] == pytest.approx(4 / 6) and scores["f1_micro"] == pytest.approx(4 / 6)
    # per label F1: x 1/2, y 2/3, z 4/5
    assert scores["f1_macro"] == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)
    assert scores["per_label"]["z"].support == 3 and scores["per_label"]["y"].precision == pytest.approx(0.5)
