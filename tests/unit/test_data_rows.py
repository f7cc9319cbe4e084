from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_data import conll_files

from quantsweep import testing as tiny
from quantsweep.config import ConfigError, DatasetConfig
from quantsweep.data import DataError, read_conll, sample_rows
from quantsweep.tasks.token_classification.rows import load_split

# datasets writes the Arrow copies of what these tests load into a temporary folder
pytestmark = pytest.mark.usefixtures("datasets_cache_in_tmp")


def test_conll_columns_and_docstart(conll_dir):
    columns = read_conll(conll_dir / "train.txt")
    assert len(columns["tokens"]) == 40
    assert all(len(t) == len(n) for t, n in zip(columns["tokens"], columns["ner_tags"], strict=True))
    assert "-DOCSTART-" not in {t for sentence in columns["tokens"] for t in sentence}


def test_folder_of_split_files(conll_dir):
    data = load_split(DatasetConfig(path=str(conll_dir)), "validation", limit=5)
    expected = tiny.sentences(24, seed=2)[:5]
    assert data.tokens == [t for t, _ in expected]
    assert data.tags == [g for _, g in expected]
    assert set(data.label_names) <= set(tiny.LABELS)


def test_jsonl_parquet_and_save_to_disk_agree(tmp_path, conll_dir):
    import datasets

    rows = tiny.sentences(12, seed=5)
    jsonl = tmp_path / "validation.jsonl"
    jsonl.write_text("".join(json.dumps({"tokens": t, "ner_tags": g}) + "\n" for t, g in rows))
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=tiny.LABELS)),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"tokens": [t for t, _ in rows], "ner_tags": [[tiny.LABELS.index(x) for x in g] for _, g in rows]},
        features=features,
    )
    ds.to_parquet(str(tmp_path / "v.parquet"))
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "saved"))

    from_jsonl = load_split(DatasetConfig(path=str(tmp_path)), "validation")
    from_parquet = load_split(DatasetConfig(path=str(tmp_path / "v.parquet")), "validation")
    from_disk = load_split(DatasetConfig(path=str(tmp_path / "saved")), "validation")
    assert from_jsonl.tags == from_parquet.tags == from_disk.tags == [g for _, g in rows]
    assert from_disk.label_names == tiny.LABELS  # names come from the ClassLabel feature
    assert from_jsonl.fingerprint == from_parquet.fingerprint == from_disk.fingerprint


def test_missing_column_names_the_key(conll_dir):
    with pytest.raises(DataError, match=r"`dataset.ref_keys` names the column 'labels'"):
        load_split(DatasetConfig(path=str(conll_dir), ref_keys=["labels"]), "validation")


def test_missing_split_file(conll_dir):
    with pytest.raises(DataError, match="without a file for split 'test'"):
        load_split(DatasetConfig(path=str(conll_dir)), "test")


def test_hub_dataset_offline_names_the_local_alternatives():
    with pytest.raises(DataError, match="save_to_disk") as error:
        load_split(DatasetConfig(path="conll2003"), "validation")
    assert "CoNLL-2003 column text" in str(error.value)


def test_sampling_is_seeded_and_without_replacement(conll_dir):
    data = load_split(DatasetConfig(path=str(conll_dir)), "train")
    a, b = sample_rows(data, 10, seed=3), sample_rows(data, 10, seed=3)
    assert a.tokens == b.tokens and len(a) == 10
    assert sample_rows(data, 10, seed=4).tokens != a.tokens
    assert len(sample_rows(data, 1000, seed=3)) == len(data)


def test_integer_tags_without_names_use_label_names_or_the_conll_order(tmp_path):
    rows = [{"tokens": ["Anna", "visited", "Oslo"], "ner_tags": [1, 0, 5]}]
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    default = load_split(DatasetConfig(path=str(tmp_path)), "validation")
    assert default.tags == [["B-PER", "O", "B-LOC"]]
    custom = DatasetConfig(path=str(tmp_path), label_names=["O", "B-X", "I-X", "B-Y", "I-Y", "B-Z"])
    assert load_split(custom, "validation").tags == [["B-X", "O", "B-Z"]]
    with pytest.raises(DataError, match=r"holds the id 5, but only 3 tag names"):
        load_split(DatasetConfig(path=str(tmp_path), label_names=["O", "B-X", "I-X"]), "validation")


def test_conll_files_load_through_datasets_builder_when_available(conll_dir):
    from importlib.util import find_spec

    data = load_split(DatasetConfig(path=str(conll_dir / "train.txt"), eval_split="train"), "train")
    ours = read_conll(conll_dir / "train.txt")
    assert data.tokens == ours["tokens"] and data.tags == ours["ner_tags"]
    if find_spec("datasets.packaged_modules.conll") is not None:
        assert "datasets conll builder" in data.source


SPLIT_FILES = {"train": "train.conll", "validation": "dev.conll"}


def test_data_files_name_one_file_per_split(tmp_path):
    folder = conll_files(tmp_path / "data")
    cfg = DatasetConfig(path=str(folder), data_files=SPLIT_FILES)
    train, validation = load_split(cfg, "train"), load_split(cfg, "validation")
    assert train.tokens == [t for t, _ in tiny.sentences(40, seed=1)]
    assert validation.tokens == [t for t, _ in tiny.sentences(24, seed=2)]
    assert train.source.startswith(str(folder / "train.conll"))
    with pytest.raises(
        ConfigError, match=r"`exclusion.holdout_split` is 'test'.*names files for train, validation"
    ):
        load_split(cfg, "test")


@pytest.mark.parametrize(
    ("files", "key", "fragment"),
    [
        ({"train": "all.conll", "validation": "./all.conll"}, "dataset.data_files", "all name 'all.conll'"),
        ({"train": "train.conll"}, "dataset.eval_split", "names files for train only"),
        ({"train": "/data/train.conll", "validation": "dev.conll"}, "dataset.data_files", "not inside"),
        ({"train": "../train.conll", "validation": "dev.conll"}, "dataset.data_files", "not inside"),
        ({"train": "train.conll", "validation": " "}, "dataset.data_files", "must be a non-empty string"),
        ({}, "dataset.data_files", "name one file per split"),
        ("train.conll", "dataset.data_files", "name one file per split"),
    ],
)
def test_data_files_are_checked_with_the_config(files, key, fragment):
    with pytest.raises(ConfigError, match=rf"`{key}` is .*{fragment}"):
        DatasetConfig(path="data", data_files=files)


def test_data_files_need_a_local_folder(tmp_path):
    folder = conll_files(tmp_path / "data")
    with pytest.raises(DataError, match="must then be a folder"):
        load_split(DatasetConfig(path=str(folder / "dev.conll"), data_files=SPLIT_FILES), "validation")
    with pytest.raises(DataError, match="must then be a local folder; 'eriktks/conll2003' is not one"):
        load_split(DatasetConfig(data_files=SPLIT_FILES), "validation")


def single_sources(tmp_path: Path) -> dict[str, Path]:
    """Each kind of local source that has no splits: one file, or one saved Dataset."""
    import datasets

    rows = tiny.sentences(12, seed=5)
    (tmp_path / "one.jsonl").write_text(
        "".join(json.dumps({"tokens": t, "ner_tags": g}) + "\n" for t, g in rows)
    )
    datasets.Dataset.from_dict(
        {"tokens": [t for t, _ in rows], "ner_tags": [g for _, g in rows]}
    ).save_to_disk(str(tmp_path / "saved-one"))
    return {
        "conll": tiny.write_conll(tmp_path / "one.conll", rows),
        "jsonl": tmp_path / "one.jsonl",
        "parquet": tiny.write_conll2003_parquet(tmp_path / "one.parquet", rows),
        "saved Dataset": tmp_path / "saved-one",
    }


def test_a_single_source_serves_the_evaluation_split_only(tmp_path):
    for kind, source in single_sources(tmp_path).items():
        cfg = DatasetConfig(path=str(source))
        assert len(load_split(cfg, "validation")) == 12, kind
        for split, key in (("train", "dataset.calibration_split"), ("test", "exclusion.holdout_split")):
            with pytest.raises(ConfigError) as error:
                load_split(cfg, split)
            message = str(error.value)
            assert f"`dataset.eval_split` (validation), `{key}` ({split})" in message, kind
            assert "`dataset.data_files`" in message and "dataset.path=" in message


def test_a_saved_dataset_dict_still_serves_its_splits(tmp_path):
    import datasets

    rows = tiny.sentences(6, seed=5)
    part = datasets.Dataset.from_dict({"tokens": [t for t, _ in rows], "ner_tags": [g for _, g in rows]})
    datasets.DatasetDict({"train": part, "validation": part}).save_to_disk(str(tmp_path / "saved"))
    assert len(load_split(DatasetConfig(path=str(tmp_path / "saved")), "train")) == 6
