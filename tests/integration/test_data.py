"""Loading tagged sentences from every supported source, the offline Hub error, and one file per split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantsweep import testing as tiny
from quantsweep.config import RunConfig
from quantsweep.data import read_conll, sample_rows
from quantsweep.tasks.token_classification.rows import TaggedSentences

# datasets writes the Arrow copies of what these tests load into a temporary folder
pytestmark = pytest.mark.usefixtures("datasets_cache_in_tmp")


# ---------------------------------------------------------------- one source per split


def conll_files(folder: Path) -> Path:
    """train.conll and dev.conll: names no split convention would find."""
    tiny.write_conll(folder / "train.conll", tiny.sentences(40, seed=1))
    tiny.write_conll(folder / "dev.conll", tiny.sentences(24, seed=2))
    return folder


FAST = ["quantization=static", "calibration.num_calibration_samples=16", *tiny.FAST_JOB]


def test_quantsweep_refuses_a_single_file_for_calibration(tmp_path, distilbert_dir):
    tiny.write_conll(tmp_path / "all.conll", tiny.sentences(40, seed=1))
    job = tmp_path / "job"
    result = tiny.run_module(
        "quantsweep.cli",
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={tmp_path / 'all.conll'}",
        *FAST,
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={job}",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.split("quantsweep: ", 1)[1]
    assert "`dataset.path` is" in message and "a single file without splits" in message
    assert "`dataset.calibration_split` (train)" in message and "dataset.data_files={train:" in message
    assert not (job / "results.json").exists() and not (job / "model.onnx").exists()


def test_quantsweep_calibrates_on_the_train_file_never_on_the_evaluation_rows(tmp_path, distilbert_dir):
    folder = conll_files(tmp_path / "data")
    job = tmp_path / "job"
    tiny.run_module(
        "quantsweep.cli",
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={folder}",
        "dataset.data_files={train: train.conll, validation: dev.conll}",
        *FAST,
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={job}",
        cwd=tmp_path,
    )
    recorded = json.loads((job / "results.json").read_text())["dataset"]

    def rows_of(file: str, split: str) -> TaggedSentences:
        columns = read_conll(folder / file)
        return TaggedSentences(columns["tokens"], columns["ner_tags"], tiny.LABELS, file, split)

    evaluation = rows_of("dev.conll", "validation")
    # the job draws its calibration rows from the train file by a shuffle seeded with `seed`
    calibration = sample_rows(rows_of("train.conll", "train"), 16, seed=RunConfig().seed)
    assert recorded["eval_fingerprint"] == evaluation.fingerprint
    assert recorded["calibration_fingerprint"] == calibration.fingerprint
    assert recorded["calibration_samples"] == 16
    # and not one calibration sentence is an evaluation sentence
    assert not {tuple(t) for t in calibration.tokens} & {tuple(t) for t in evaluation.tokens}
