"""MLflow tracking to the embedded store, to a dead server, and its metric names (a live server: test_mlflow_server.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from loopback import free_port
from quantsweep.config import MlflowConfig
from quantsweep.redaction import redact
from quantsweep.testing import FAST_JOB, run_module
from quantsweep.tracking import metrics_of

# the suite's quick job, with MLflow on and two input lengths (per-shape metrics and verdicts)
FAST = [
    *(o for o in FAST_JOB if not o.startswith(("mlflow.enabled", "benchmark.input_lengths"))),
    "benchmark.input_lengths=[8,16]",
]


def test_unreachable_server_is_said_once_at_the_start_and_loses_nothing(tmp_path, distilbert_dir, conll_dir):
    job = tmp_path / "job"
    # a closed port, and credentials in the URI that must never be shown
    dead = f"http://alice:s3cret@127.0.0.1:{free_port()}"
    args = [
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        *FAST,
        f"mlflow.tracking_uri={dead}",
        f"hydra.run.dir={job}",
    ]
    # no MLFLOW_HTTP_* variables: the check at the start must keep MLflow's retries out of it
    result = run_module("quantsweep.cli", *args, cwd=tmp_path)
    assert (job / "results.json").is_file()
    log_text = (job / "quantsweep.log").read_text()
    shown = dead.replace("alice:s3cret@", "***@")
    # one warning naming the URI (redacted) and the error, before the job does any work
    assert log_text.count(f"The MLflow tracking server {shown} is unreachable (") == 1
    assert "Connection refused" in log_text
    assert log_text.index("is unreachable (") < log_text.index("Evaluation data:")
    # and the way back, at the end
    assert f"log this run with: quantsweep-log {job}" in log_text.splitlines()[-1]
    assert "s3cret" not in log_text + result.stdout + result.stderr
    # nor kept in the job folder: the saved configs and results.json
    for path in job.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".json", ".log"):
            assert "s3cret" not in path.read_text(), path


def test_embedded_store_by_default_and_secrets_redacted(tmp_path, distilbert_dir, conll_dir):
    import mlflow

    job = tmp_path / "job"
    args = [
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        *FAST,
        f"hydra.run.dir={job}",
        "+hub_token=hf_secret_value",
    ]
    result = run_module("quantsweep.cli", *args, cwd=tmp_path, check=False)
    # a token can't ride along in the config: refused, and scrubbed from what Hydra saved
    assert result.returncode == 2 and "unknown key `hub_token`" in result.stderr
    for saved in (job / ".hydra").glob("*.yaml"):
        assert "hf_secret_value" not in saved.read_text()
    assert not (tmp_path / "outputs" / "mlflow.db").exists()
    assert redact(
        {
            "dataset.token": "abc",
            "aws_secret_access_key": "x",
            "model_name_or_path": "m",
            "mlflow.tracking_uri": "https://bob:pw@mlflow.example:5000/x",
        }
    ) == {
        "dataset.token": "***",
        "aws_secret_access_key": "***",
        "model_name_or_path": "m",
        "mlflow.tracking_uri": "https://***@mlflow.example:5000/x",
    }

    run_module("quantsweep.cli", *args[:-1], cwd=tmp_path)
    store = tmp_path / "outputs" / "mlflow.db"
    assert store.is_file() and (tmp_path / "outputs" / "mlartifacts").is_dir()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(f"quantsweep {distilbert_dir.name} on {conll_dir.name}")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "dynamic-add_matmul-none"
    assert run.data.metrics["eval/original/accuracy"] == pytest.approx(
        json.loads((job / "results.json").read_text())["original"]["accuracy"]
    )


def _records(value: Any) -> Any:
    """Nested mappings as objects with attributes: the few fields of JobResults metrics_of reads."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _records(v) for k, v in value.items()})
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [_records(v) for v in value]
    return value


def test_metric_names_sort_by_shape():
    results = {
        "original": dict.fromkeys(("precision", "recall", "f1", "accuracy"), 0.5),
        "quantized": dict.fromkeys(("precision", "recall", "f1", "accuracy"), 0.25),
        "timing": {
            "shapes": [
                {
                    "batch_size": 8,
                    "input_length": 128,
                    "speedup": 2.0,
                    "window_speedups": [1.5, 2.5],
                    **{
                        side: dict.fromkeys(
                            (
                                "mean_ms",
                                "p50_ms",
                                "p90_ms",
                                "p99_ms",
                                "throughput_samples_per_s",
                                "forward_passes_per_s",
                            ),
                            1.0,
                        )
                        for side in ("original", "quantized")
                    },
                }
            ]
        },
        "graph": {
            "nodes_quantized": 3,
            "nodes_excluded": ["a"],
            "original_size_mb": 2.0,
            "quantized_size_mb": 1.0,
        },
    }
    metrics = metrics_of(
        _records(results | {"task": "token-classification", "exclusion_search": None, "eval_drop": None})
    )
    assert metrics["eval/delta/f1"] == -0.25
    assert (
        metrics["time/bs8_len0128/speedup"] == 2.0 and metrics["time/bs8_len0128/speedup_window_min"] == 1.5
    )
    assert metrics["graph/nodes_excluded"] == 1.0
    assert MlflowConfig().enabled


def test_reproduce_from_a_job_folder_and_from_an_mlflow_run(tmp_path, distilbert_dir, conll_dir):
    import mlflow

    job = tmp_path / "job"
    store = f"sqlite:///{tmp_path / 'store.db'}"
    args = [
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        *FAST,
        "quantization=static",
        f"mlflow.tracking_uri={store}",
        f"hydra.run.dir={job}",
    ]
    run_module("quantsweep.cli", *args, cwd=tmp_path)

    again = run_module(
        "quantsweep.reproduce",
        str(job),
        "--out",
        str(tmp_path / "again"),
        "mlflow.enabled=false",
        cwd=tmp_path,
    )
    assert "evaluation: must be identical" in again.stdout and "DIFFERS" not in again.stdout
    # both shapes compared (whether tiny 0.02 s timings agree is noise; test_reproduce owns the verdict)
    verdicts = [
        line for line in again.stdout.splitlines() if "timing: agrees" in line or "timing: differs" in line
    ]
    assert len(verdicts) == 2
    saved = json.loads((job / "results.json").read_text())
    new = json.loads((tmp_path / "again" / "results.json").read_text())
    # reproduce pins the preset `auto` resolved to: the same job, so the same digest
    pinned = saved["config"]["quantization"] | {"instruction_set": saved["quantization"]["instruction_set"]}
    assert new["config"] == saved["config"] | {"mlflow": new["config"]["mlflow"], "quantization": pinned}
    assert new["job_digest"] == saved["job_digest"]
    assert [new["quantized"][m] for m in ("precision", "recall", "f1", "accuracy")] == [
        saved["quantized"][m] for m in ("precision", "recall", "f1", "accuracy")
    ]

    client = mlflow.MlflowClient(tracking_uri=store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    original = client.search_runs(experiments)[0]
    # reproduced from its run id, and logged to the same store (the saved config's URI)
    from_run = run_module(
        "quantsweep.reproduce",
        original.info.run_id,
        "--tracking-uri",
        store,
        "--out",
        str(tmp_path / "from-run"),
        cwd=tmp_path,
    )
    assert "DIFFERS" not in from_run.stdout
    reproduced = [
        run
        for run in client.search_runs(experiments)
        if run.data.tags.get("quantsweep.reproduces") == original.info.run_id
    ]
    assert len(reproduced) == 1
    # named after the job it reproduces, not "run"
    assert reproduced[0].info.run_name == original.info.run_name == "static-add_matmul-none-minmax"
