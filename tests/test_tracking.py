"""MLflow tracking against a real `mlflow server` on 127.0.0.1, checked through its REST API."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from quantsweep.config import MlflowConfig
from quantsweep.testing import run_module
from quantsweep.tracking import metrics_of, redact

FAST = [
    "benchmark.duration=0.02",
    "benchmark.batch_sizes=[1]",
    "benchmark.input_lengths=[8,16]",
    "benchmark.warmup=0",
    "benchmark.windows=2",
    "benchmark.threads=1",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path):
    """A real tracking server on loopback, stopped at the end whatever happens."""
    port = free_port()
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or shutil.which("mlflow")
    assert mlflow, "the mlflow command is installed with quantsweep"
    process = subprocess.Popen(
        [
            mlflow,
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mlflow server did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def rest(url: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def runs_of(url: str, experiment_id: str) -> list[dict[str, Any]]:
    return list(
        rest(url, "runs/search", {"experiment_ids": [experiment_id], "max_results": 100}).get("runs", [])
    )


@pytest.mark.slow
def test_sweep_logs_parent_and_children_to_a_real_server(tmp_path, mlflow_server, distilbert_dir, conll_dir):
    sweep = tmp_path / "sweep"
    args = [
        "--multirun",
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        *FAST,
        "quantization=dynamic,static",
        f"mlflow.tracking_uri={mlflow_server}",
        "mlflow.experiment_name=tracking-test",
        f"hydra.sweep.dir={sweep}",
    ]
    run_module("quantsweep.cli", *args, cwd=tmp_path)

    experiment = rest(mlflow_server, "experiments/get-by-name?experiment_name=tracking-test")["experiment"]
    runs = runs_of(mlflow_server, experiment["experiment_id"])
    tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs]
    parents = [r for r, t in zip(runs, tags, strict=True) if "quantsweep.sweep_key" in t]
    children = [r for r, t in zip(runs, tags, strict=True) if "mlflow.parentRunId" in t]
    assert len(parents) == 1 and len(children) == 2
    parent_id = parents[0]["info"]["run_id"]
    names = set()
    for child in children:
        child_tags = {t["key"]: t["value"] for t in child["data"]["tags"]}
        assert child_tags["mlflow.parentRunId"] == parent_id
        assert child_tags["cpu_model"] and child_tags["package.onnxruntime"]
        params = {p["key"]: p["value"] for p in child["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in child["data"]["metrics"]}
        names.add(child["info"]["run_name"])
        assert params["model_name_or_path"] == str(distilbert_dir)
        assert params["framework_args.opset"] == "11" and params["choice.operators"] == "add_matmul"
        assert metrics["eval/original/f1"] == pytest.approx(
            metrics["eval/quantized/f1"] - metrics["eval/delta/f1"]
        )
        assert {
            "time/bs1_len0008/speedup",
            "time/bs1_len0016/original/mean_ms",
            "graph/nodes_quantized",
        } <= set(metrics)
    assert names == {"dynamic-add_matmul-none", "static-add_matmul-none-minmax"}
    # the fp32 model both jobs share is uploaded once; each quantized model is its own
    model_tags = [{t["key"]: t["value"] for t in child["data"]["tags"]} for child in children]
    assert model_tags[0]["quantsweep.original_model_uri"] == model_tags[1]["quantsweep.original_model_uri"]
    assert (
        model_tags[0]["quantsweep.original_model_sha256"] == model_tags[1]["quantsweep.original_model_sha256"]
    )
    assert model_tags[0]["quantsweep.quantized_model_uri"] != model_tags[1]["quantsweep.quantized_model_uri"]

    # the ONNX models come back from the server and run in ONNX Runtime
    import mlflow
    import numpy as np
    import onnxruntime as ort

    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    run_id = children[0]["info"]["run_id"]
    run_tags = client.get_run(run_id).data.tags
    for label in ("original_model", "quantized_model"):
        model_uri = run_tags[f"quantsweep.{label}_uri"]
        assert model_uri.startswith("models:/")
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=str(tmp_path / label), tracking_uri=mlflow_server
            )
        )
        onnx_file = next(local.rglob("*.onnx"))
        session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        feeds = {i.name: np.ones((1, 6), dtype=np.int64) for i in session.get_inputs()}
        assert session.run(None, feeds)[0].shape[:2] == (1, 6)
    artifacts = {a.path for a in client.list_artifacts(run_id, "job")}
    assert {"job/results.json", "job/quantsweep.log"} <= artifacts

    # the sweep's report hangs on the parent run
    report = {a.path for a in client.list_artifacts(parent_id, "report")}
    assert {"report/README.md", "report/results.csv", "report/f1_vs_speedup.png"} <= report

    # re-logging the sweep from disk is idempotent: no new runs
    run_module("quantsweep.tracking", str(sweep), cwd=tmp_path)
    assert len(runs_of(mlflow_server, experiment["experiment_id"])) == len(runs)


def test_unreachable_server_loses_nothing(tmp_path, distilbert_dir, conll_dir):
    job = tmp_path / "job"
    dead = f"http://127.0.0.1:{free_port()}"
    args = [
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        *FAST,
        f"mlflow.tracking_uri={dead}",
        f"hydra.run.dir={job}",
    ]
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    run_module("quantsweep.cli", *args, cwd=tmp_path, env=env)
    assert (job / "results.json").is_file()
    log_text = (job / "quantsweep.log").read_text()
    assert "Could not log to MLflow" in log_text and f"quantsweep-log {job}" in log_text


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
    assert redact({"dataset.token": "abc", "aws_secret_access_key": "x", "model_name_or_path": "m"}) == {
        "dataset.token": "***",
        "aws_secret_access_key": "***",
        "model_name_or_path": "m",
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
    metrics = metrics_of(results)
    assert metrics["eval/delta/f1"] == -0.25
    assert (
        metrics["time/bs8_len0128/speedup"] == 2.0 and metrics["time/bs8_len0128/speedup_window_min"] == 1.5
    )
    assert metrics["graph/nodes_excluded"] == 1.0
    assert MlflowConfig().enabled


@pytest.mark.slow
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
    assert "timing: agrees within noise" in again.stdout
    saved = json.loads((job / "results.json").read_text())
    new = json.loads((tmp_path / "again" / "results.json").read_text())
    assert new["config"] == saved["config"] | {"mlflow": new["config"]["mlflow"]}
    assert [new["quantized"][m] for m in ("precision", "recall", "f1", "accuracy")] == [
        saved["quantized"][m] for m in ("precision", "recall", "f1", "accuracy")
    ]

    run_id = (
        mlflow.MlflowClient(tracking_uri=store)
        .search_runs([e.experiment_id for e in mlflow.MlflowClient(tracking_uri=store).search_experiments()])[
            0
        ]
        .info.run_id
    )
    from_run = run_module(
        "quantsweep.reproduce",
        run_id,
        "--tracking-uri",
        store,
        "--out",
        str(tmp_path / "from-run"),
        "mlflow.enabled=false",
        cwd=tmp_path,
    )
    assert "DIFFERS" not in from_run.stdout
