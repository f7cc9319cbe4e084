"""The default dataset against a Hub cache laid out as the Hub's Parquet conversion of CoNLL-2003.

Each test builds, in tmp_path, the Hugging Face Hub cache huggingface_hub writes when it
downloads that conversion (blobs, a snapshot per commit, the ref of the revision), and
runs quantsweep offline in a subprocess whose HF_HOME, HF_HUB_CACHE and HF_DATASETS_CACHE
point there. The dataset settings are never given: they are the defaults of the real
conf/config.yaml, composed by Hydra.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantsweep import testing as tiny
from quantsweep.tasks.token_classification.rows import TaggedSentences

# Where the Hub keeps CoNLL-2003 as Parquet, stated here apart from the defaults: the tests
# check that the defaults point at it. `conll2003` redirects to eriktks/conll2003, whose
# main branch holds the loading script conll2003.py; the Parquet conversion is on the
# revision refs/convert/parquet, one folder per config and split, 0000.parquet onwards.
HUB_REPO = "eriktks/conll2003"
HUB_REVISION = "refs/convert/parquet"
HUB_CONFIG = "conll2003"
# rows per split, and the seed of their generated sentences
SPLITS = {"train": (30, 1), "validation": (12, 2), "test": (9, 3)}

# Compose the real conf/config.yaml (overrides from argv), take its dataset settings and
# load each split as a job would; print what was loaded.
LOAD_DEFAULTS = """
import json, sys
from hydra import compose, initialize_config_module
from quantsweep.cli import to_run_config
from quantsweep.data import DataError
from quantsweep.tasks.token_classification.rows import load_split

with initialize_config_module(config_module="quantsweep.conf", version_base="1.3"):
    run = to_run_config(compose(config_name="config", overrides=sys.argv[1:]))
out = {}
try:
    for split in (run.dataset.eval_split, run.dataset.calibration_split, "test"):
        data = load_split(run.dataset, split)
        out[split] = {"tokens": data.tokens, "tags": data.tags, "label_names": data.label_names,
                      "source": data.source}
except DataError as error:
    out["error"] = str(error)
print(json.dumps(out))
"""


def rows(split: str) -> list[tuple[list[str], list[str]]]:
    count, seed = SPLITS[split]
    return tiny.sentences(count, seed)


def write_conversion(tmp_path: Path, splits: tuple[str, ...] = tuple(SPLITS)) -> str:
    """The Parquet conversion of a small CoNLL-2003 in the Hub cache; returns its commit."""
    files = {
        f"{HUB_CONFIG}/{split}/0000.parquet": tiny.write_conll2003_parquet(
            tmp_path / "parquet" / split / "0000.parquet", rows(split)
        )
        for split in splits
    }
    return tiny.write_hub_cache(tmp_path / "hf" / "hub", HUB_REPO, HUB_REVISION, files)


def offline_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "hf"
    return {
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_DATASETS_CACHE": str(home / "datasets"),
    }


def load_defaults(tmp_path: Path, *overrides: str) -> tuple[dict, str]:
    result = tiny.run_module_code(LOAD_DEFAULTS, *overrides, cwd=tmp_path, env=offline_env(tmp_path))
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_default_settings_load_the_parquet_conversion_from_an_offline_hub_cache(tmp_path):
    commit = write_conversion(tmp_path)
    loaded, stderr = load_defaults(tmp_path)
    assert "error" not in loaded, loaded.get("error")
    assert set(loaded) == set(SPLITS)  # eval split, calibration split and test
    for split, data in loaded.items():
        assert len(data["tokens"]) == SPLITS[split][0], split
        assert data["tokens"] == [t for t, _ in rows(split)]
        assert data["tags"] == [g for _, g in rows(split)]
        # the ClassLabel names of the Parquet schema, in CoNLL-2003's id order
        assert data["label_names"] == tiny.LABELS
        assert HUB_REPO in data["source"] and commit in data["source"]
    # the names came from the files, not from the fallback for unnamed integer tags
    assert "integer ids without names" not in stderr


def test_a_pinned_commit_loads_that_snapshot_and_an_unknown_one_is_refused(tmp_path):
    commit = write_conversion(tmp_path)
    loaded, _ = load_defaults(tmp_path, f"dataset.revision={commit}")
    assert "error" not in loaded, loaded.get("error")
    assert loaded["validation"]["tags"] == [g for _, g in rows("validation")]
    loaded, _ = load_defaults(tmp_path, "dataset.revision=" + "0" * 40)
    assert "`dataset.revision` '" + "0" * 40 in loaded["error"]
    assert "Hub cache (HF_HUB_CACHE)" in loaded["error"]


def test_a_split_missing_from_the_cached_snapshot_is_named(tmp_path):
    """An online run that evaluated only (dynamic) cached the validation files alone."""
    commit = write_conversion(tmp_path, splits=("validation",))
    loaded, _ = load_defaults(tmp_path)
    assert f"(commit {commit}) has no conll2003/train/*.parquet" in loaded["error"]
    assert "split 'train'" in loaded["error"]


def test_the_default_run_gets_past_loading_and_records_the_hub_rows(tmp_path, distilbert_dir):
    """The real `quantsweep` with the default data (only the model is a tiny local one)."""
    commit = write_conversion(tmp_path)
    job = tmp_path / "job"
    tiny.run_module(
        "quantsweep.cli",
        f"model_name_or_path={distilbert_dir}",
        "quantization=static",
        "calibration.num_calibration_samples=16",
        *tiny.FAST_JOB,
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={job}",
        cwd=tmp_path,
        env=offline_env(tmp_path),
    )
    dataset = json.loads((job / "results.json").read_text())["dataset"]
    assert HUB_REPO in dataset["source"] and commit in dataset["source"]
    assert dataset["label_names"] == tiny.LABELS
    assert dataset["eval_samples"] == SPLITS["validation"][0]
    validation = TaggedSentences(
        tokens=[t for t, _ in rows("validation")],
        tags=[g for _, g in rows("validation")],
        label_names=tiny.LABELS,
        source="",
        split="validation",
    )
    assert dataset["eval_fingerprint"] == validation.fingerprint
    assert (dataset["calibration_split"], dataset["calibration_samples"]) == ("train", 16)


def write_script_repo(tmp_path: Path, repo: str) -> None:
    """A Hub dataset repository whose main branch holds only a card and a loading script."""
    script = tmp_path / "script" / "conll2003.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text("import datasets\n\nclass Conll2003(datasets.GeneratorBasedBuilder):\n    pass\n")
    card = tmp_path / "script" / "README.md"
    card.write_text("---\nlicense: other\n---\n# CoNLL-2003\n")
    tiny.write_hub_cache(tmp_path / "hf" / "hub", repo, "main", {"conll2003.py": script, "README.md": card})


@pytest.mark.parametrize("repo", [HUB_REPO, "conll2003"])
def test_a_script_dataset_names_the_parquet_revision(tmp_path, distilbert_dir, repo):
    write_script_repo(tmp_path, repo)
    result = tiny.run_module(
        "quantsweep.cli",
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={repo}",
        "dataset.revision=null",  # main: the loading script
        "mlflow.enabled=false",
        f"hydra.run.dir={tmp_path / 'job'}",
        cwd=tmp_path,
        env=offline_env(tmp_path),
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.split("quantsweep: ", 1)[1]
    assert "loading script (conll2003.py)" in message
    assert "dataset.revision=refs/convert/parquet" in message
    assert (
        "dataset.path=eriktks/conll2003 dataset.name=conll2003 dataset.revision=refs/convert/parquet"
        in message
    )
    assert len(message.strip().splitlines()) == 1  # one paragraph
    assert not (tmp_path / "job" / "model.onnx").exists()  # refused before the export


def test_datasets_own_script_refusal_gets_the_same_paragraph():
    """datasets >= 4 refuses a path that names a script before it looks anywhere."""
    from quantsweep.config import DatasetConfig
    from quantsweep.data import DataError
    from quantsweep.tasks.token_classification.rows import load_split

    with pytest.raises(DataError, match=r"loading script \(conll2003\.py\)") as error:
        load_split(DatasetConfig(path="someone/conll2003.py", revision=None), "validation")
    assert "Dataset scripts are no longer supported" in str(error.value.__cause__)
    assert "dataset.revision=refs/convert/parquet" in str(error.value)


def test_a_local_folder_holding_a_loading_script_names_the_parquet_revision(tmp_path):
    from quantsweep.config import DatasetConfig
    from quantsweep.data import DataError
    from quantsweep.tasks.token_classification.rows import load_split

    folder = tmp_path / "conll2003"
    folder.mkdir()
    (folder / "conll2003.py").write_text("import datasets\n")
    with pytest.raises(DataError, match=r"loading script \(conll2003\.py\)") as error:
        load_split(DatasetConfig(path=str(folder)), "validation")
    assert "dataset.path=eriktks/conll2003 dataset.name=conll2003" in str(error.value)


def test_the_hub_layout_also_loads_from_a_local_folder(tmp_path):
    """`huggingface-cli download --revision refs/convert/parquet --local-dir X` gives this folder."""
    from quantsweep.config import DatasetConfig
    from quantsweep.data import DataError
    from quantsweep.tasks.token_classification.rows import load_split

    for split in SPLITS:
        tiny.write_conll2003_parquet(tmp_path / "local" / HUB_CONFIG / split / "0000.parquet", rows(split))
    for name in (HUB_CONFIG, None):  # None: the folder's only config
        data = load_split(DatasetConfig(path=str(tmp_path / "local"), name=name), "test")
        assert data.tags == [g for _, g in rows("test")] and data.label_names == tiny.LABELS
    with pytest.raises(DataError, match=r"`dataset.name` is 'default'.*configs \['conll2003'\]"):
        load_split(DatasetConfig(path=str(tmp_path / "local"), name="default"), "test")
