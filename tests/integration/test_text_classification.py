"""Text classification end to end on a tiny sequence classifier: loading, labels, scores, sweeps.

The classifier has random weights; its datasets are labelled with its own predictions, so
the fp32 model scores accuracy 1 and whatever is lost is what quantization changed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

import quantsweep.testing as tiny
from quantsweep.config import DatasetConfig
from quantsweep.results import SCHEMA_VERSION
from quantsweep.tasks import text_classification as task
from quantsweep.testing import run_module

FAST = list(tiny.FAST_JOB)
METRICS = ("accuracy", "f1_macro", "f1_micro", "precision_macro", "recall_macro")


def data_args(model: Path, data: Path) -> list[str]:
    return [
        "task=text-classification",
        f"model_name_or_path={model}",
        f"dataset.path={data}",
        "dataset.name=null",
        "dataset.revision=null",
    ]


def dataset(path: Path, **overrides: object) -> DatasetConfig:
    values: dict[str, object] = {"path": str(path), "name": None, "revision": None}
    values |= {"data_keys": {"primary": "sentence"}, "ref_keys": ["label"], **overrides}
    return DatasetConfig(**values)  # type: ignore[arg-type]


def test_a_label_mismatch_is_refused_before_the_export(tmp_path, classifier_dir):
    from datasets import ClassLabel, Dataset, Features, Value

    data = tmp_path / "animals"
    data.mkdir()
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["cat", "dog", "neutral"])})
    for split in ("train", "validation"):
        Dataset.from_dict({"sentence": ["a cat", "a dog"], "label": [0, 1]}, features=features).to_parquet(
            str(data / f"{split}.parquet")
        )
    job = tmp_path / "job"
    done = run_module(
        "quantsweep.cli",
        *data_args(classifier_dir, data),
        *FAST,
        f"hydra.run.dir={job}",
        f"cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode != 0
    error = (job / "error.txt").read_text()
    assert error.startswith("LabelMismatchError") and "['cat', 'dog']" in error and "NEUTRAL" in error
    assert (
        not (job / "model.onnx").exists() and not (tmp_path / "cache").exists()
    )  # refused before the export


def test_a_sweep_writes_card_csv_mlflow_runs_and_reproduces(tmp_path, classifier_dir, sentences_dir):
    from mlflow.tracking import MlflowClient

    sweep = tmp_path / "sweep"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_module(
        "quantsweep.cli",
        "--multirun",
        *data_args(classifier_dir, sentences_dir),
        *[arg for arg in FAST if not arg.startswith("mlflow.")],
        "quantization=dynamic,static",
        "operators=add,add_matmul",
        "calibration.num_calibration_samples=32",
        f"mlflow.tracking_uri={tracking}",
        "mlflow.experiment_name=sentences",
        f"hydra.sweep.dir={sweep}",
        f"cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
    )
    jobs = sorted(p for p in sweep.iterdir() if (p / "results.json").is_file())
    assert len(jobs) == 4
    results = {job.name: json.loads((job / "results.json").read_text()) for job in jobs}
    for found in results.values():
        assert found["schema_version"] == SCHEMA_VERSION and found["config"]["task"] == "text-classification"
        assert found["original"]["accuracy"] == 1.0 and found["original"]["f1_macro"] == 1.0  # self-labelled
        assert set(found["original"]["per_label"]) == {"negative", "neutral", "positive"}
        assert found["dataset"]["label_names"] == ["negative", "neutral", "positive"]
        assert set(found["quantized"]) >= set(METRICS) and "f1" not in found["quantized"]
    # something was lost somewhere: the scores are measured, not copied from the fp32 model
    assert min(r["quantized"]["accuracy"] for r in results.values()) < 1.0

    card = (sweep / "README.md").read_text()  # the card
    front = yaml.safe_load(card.split("---")[1])
    assert front["pipeline_tag"] == "text-classification" and front["metrics"] == list(METRICS)
    assert "f1_macro (original)" in card and "f1_macro (optimized)" in card
    assert "precision (original)" not in card
    with (sweep / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {f"{m}_{side}" for m in METRICS for side in ("original", "optimized")} <= set(
        rows[0]
    )
    for row in rows:
        assert float(row["accuracy_optimized"]) == results[row["job"]]["quantized"]["accuracy"]
    assert (sweep / "f1_vs_speedup.png").stat().st_size > 0

    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("sentences")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4
    for child in children:
        found = results[Path(child.data.tags["quantsweep.job_dir"]).name]
        for metric in METRICS:
            assert child.data.metrics[f"eval/quantized/{metric}"] == pytest.approx(found["quantized"][metric])
            assert child.data.metrics[f"eval/original/{metric}"] == 1.0
        assert "eval/original/f1" not in child.data.metrics

    target = next(job for job in jobs if job.name.startswith("static-add_matmul"))
    out = tmp_path / "reproduced"
    done = run_module("quantsweep.reproduce", str(target), "--out", str(out), cwd=tmp_path)
    assert "quantized f1_macro" in done.stdout and "DIFFERS" not in done.stdout
    again = json.loads((out / "results.json").read_text())
    assert again["quantized"] == {
        **results[target.name]["quantized"],
        "seconds": again["quantized"]["seconds"],
    }


def test_text_pairs_reach_the_model_and_exclusion_auto_searches_on_macro_f1(
    tmp_path, classifier_dir, pairs_dir
):
    job = tmp_path / "job"
    run_module(
        "quantsweep.cli",
        *data_args(classifier_dir, pairs_dir),
        "dataset.data_keys={primary: sentence, secondary: second}",
        *FAST,
        "quantization=static",
        "exclusion=auto",
        "calibration.num_calibration_samples=60",
        # 45 rows to search on and 30 to confirm on at confirm_fraction 0.4: at least
        # MIN_BOOTSTRAP_ROWS each (train has 160 rows: 60 calibrate, 75 held out)
        "exclusion.holdout_samples=75",
        "exclusion.sensitivity_samples=8",
        "exclusion.speed_seconds=0.1",
        f"hydra.run.dir={job}",
        f"cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
    )
    found = json.loads((job / "results.json").read_text())
    # labelled by the model from both texts: scoring 1 proves the second text reached it
    assert found["original"]["accuracy"] == 1.0
    search = found["exclusion_search"]
    # the search scored macro F1 on held-out rows the model labelled itself, from both texts
    assert search["fp32_f1"] == 1.0
    assert all(0.0 <= step["f1"] <= 1.0 for step in search["steps"])
    assert (job / "exclusion.yaml").is_file()

    # the job's fp32 model on the same rows without their second texts: the labels no longer
    # follow from the input (in-process: a second job would only repeat the export)
    from transformers import AutoTokenizer

    from quantsweep.sessions import SessionSettings, create_session

    session = create_session(job / "model.onnx", SessionSettings.for_threads(1))
    alone = task.load(dataset(pairs_dir), "validation")
    encoded = task.encode(AutoTokenizer.from_pretrained(classifier_dir), alone, 256)
    id2label = dict(enumerate(tiny.CLASSIFIER_LABELS))
    scores, _ = task.evaluate(session, alone, encoded, id2label, 16, 0)
    assert scores.accuracy < 1.0
