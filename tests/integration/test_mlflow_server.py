"""MLflow against a real `mlflow server` on 127.0.0.1, checked over its REST API, and a server that is down.

One server (tests/conftest.py's ``mlflow_server``) serves every test of the pytest worker;
each test logs to an experiment of its own name.
Everything is read back with plain HTTP requests to /api/2.0/mlflow/..., not through the
MLflow client, so the checks see what the UI sees.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf
from test_tracking import FAST

from loopback import free_port
from quantsweep.callback import ReportCallback
from quantsweep.files import CARD_FILE, CSV_FILE, PARETO_PLOT, UNREACHABLE_FILE
from quantsweep.testing import run_module
from quantsweep.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG


def rest(url: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def artifact_text(url: str, run_id: str, path: str) -> str:
    query = urllib.parse.urlencode({"path": path, "run_uuid": run_id})
    with urllib.request.urlopen(f"{url}/get-artifact?{query}", timeout=30) as response:
        return str(response.read().decode("utf-8"))


def runs_of(url: str, experiment_id: str) -> list[dict[str, Any]]:
    return list(
        rest(url, "runs/search", {"experiment_ids": [experiment_id], "max_results": 100}).get("runs", [])
    )


def tags_of(entity: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in entity.get("data", entity).get("tags", [])}


def experiment(url: str, name: str) -> dict[str, Any]:
    query = urllib.parse.urlencode({"experiment_name": name})
    found: dict[str, Any] = rest(url, f"experiments/get-by-name?{query}")["experiment"]
    return found


def parent_and_children(url: str, experiment_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    runs = runs_of(url, experiment_id)
    parents = [r for r in runs if "quantsweep.sweep_key" in tags_of(r)]
    children = [r for r in runs if "mlflow.parentRunId" in tags_of(r)]
    assert len(parents) == 1 and len(parents) + len(children) == len(runs), [
        r["info"]["run_name"] for r in runs
    ]
    assert {tags_of(c)["mlflow.parentRunId"] for c in children} == {parents[0]["info"]["run_id"]}
    return parents[0], children


def job_of(child: dict[str, Any], sweep: Path) -> Path:
    job = Path(tags_of(child)["quantsweep.job_dir"])
    assert job.parent == sweep.resolve()
    return job


def check_datasets(child: dict[str, Any], sweep: Path, data_dir: Path) -> None:
    """The run's dataset inputs are the rows its job measured on, as its results.json records them."""
    job = job_of(child, sweep)
    recorded = json.loads((job / "results.json").read_text())["dataset"]
    logged = {}
    for item in child["inputs"]["dataset_inputs"]:
        dataset, context = item["dataset"], tags_of(item)["mlflow.data.context"]
        logged[context] = dataset
        assert dataset["source_type"] == "local"
        assert json.loads(dataset["source"]) == {"uri": str(data_dir.resolve())}
    expected = {"evaluation": ("eval_split", "eval_samples", "eval_fingerprint")}
    if recorded["calibration_fingerprint"]:
        expected["calibration"] = ("calibration_split", "calibration_samples", "calibration_fingerprint")
    assert set(logged) == set(expected)
    for context, (split, samples, fingerprint) in expected.items():
        assert logged[context]["name"] == f"{data_dir.name}/{recorded[split]}"
        assert logged[context]["digest"] == recorded[fingerprint]
        assert json.loads(logged[context]["profile"]) == {"num_rows": recorded[samples]}


def check_span(parent: dict[str, Any], children: list[dict[str, Any]], sweep: Path) -> None:
    """Each run spans its job (from its files); the parent spans its children."""
    for child in children:
        job = job_of(child, sweep)
        finished = int((job / "results.json").stat().st_mtime * 1000)
        started = int((job / ".hydra" / "config.yaml").stat().st_mtime * 1000)
        assert int(child["info"]["end_time"]) == finished
        assert int(child["info"]["start_time"]) == started < finished
    assert int(parent["info"]["start_time"]) == min(int(c["info"]["start_time"]) for c in children)
    assert int(parent["info"]["end_time"]) == max(int(c["info"]["end_time"]) for c in children)
    assert parent["info"]["status"] == "FINISHED"


def test_a_sweep_on_a_live_server_opens_on_its_runs_with_their_data_and_span(
    tmp_path, mlflow_server, distilbert_dir, conll_dir, monkeypatch, request
):
    # an experiment someone made without a kind: quantsweep marks it when it logs to it
    rest(mlflow_server, "experiments/create", {"name": "tracking-test"})
    assert EXPERIMENT_KIND_TAG not in tags_of(experiment(mlflow_server, "tracking-test"))
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
        f"cache_dir={tmp_path / 'cache'}",
    ]
    result = run_module("quantsweep.cli", *args, cwd=tmp_path)
    assert not (sweep / UNREACHABLE_FILE).exists()

    found = experiment(mlflow_server, "tracking-test")
    assert tags_of(found)[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    # MLflow 3.17's UI picks the page by its own switch, not by the tag: the log links the runs
    page = f"{mlflow_server}/#/experiments/{found['experiment_id']}?workflowType=machine_learning"
    assert (result.stdout + result.stderr).count(f"MLflow runs page: {page}") == 1
    parent, children = parent_and_children(mlflow_server, found["experiment_id"])
    assert len(children) == 2
    check_span(parent, children, sweep)
    names = set()
    for child in children:
        check_datasets(child, sweep, conll_dir)
        child_tags = tags_of(child)
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
    model_tags = [tags_of(child) for child in children]
    assert model_tags[0]["quantsweep.original_model_uri"] == model_tags[1]["quantsweep.original_model_uri"]
    assert (
        model_tags[0]["quantsweep.original_model_sha256"] == model_tags[1]["quantsweep.original_model_sha256"]
    )
    assert model_tags[0]["quantsweep.quantized_model_uri"] != model_tags[1]["quantsweep.quantized_model_uri"]

    # the ONNX models come back from the server and run in ONNX Runtime
    import mlflow
    import numpy as np
    import onnxruntime as ort

    run_id = children[0]["info"]["run_id"]
    # Resolving models:/ URIs asks the default tracking URI (else ./mlflow.db in the checkout).
    # An earlier test in this process may have set one with mlflow.set_tracking_uri, which
    # outranks the environment variable: set it for this block and put the old one back.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    request.addfinalizer(lambda: mlflow.set_tracking_uri(previous))
    for label in ("original_model", "quantized_model"):
        model_uri = model_tags[0][f"quantsweep.{label}_uri"]
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
    listed = rest(mlflow_server, f"artifacts/list?run_id={run_id}&path=job")["files"]
    assert {"job/results.json", "job/quantsweep.log"} <= {f["path"] for f in listed}

    # the sweep's report hangs on the parent run
    listed = rest(mlflow_server, f"artifacts/list?run_id={parent['info']['run_id']}&path=report")["files"]
    assert {"report/README.md", "report/results.csv", "report/f1_vs_speedup.png"} <= {
        f["path"] for f in listed
    }

    # re-logging the sweep from disk is idempotent: no new runs, the same span
    run_module("quantsweep.tracking", str(sweep), cwd=tmp_path)
    again_parent, again_children = parent_and_children(mlflow_server, found["experiment_id"])
    assert len(again_children) == 2 and again_parent["info"] == parent["info"]


def test_a_server_that_is_down_costs_the_sweep_nothing_and_quantsweep_log_catches_up(
    tmp_path, mlflow_server, distilbert_dir, conll_dir, caplog
):
    common = [
        "--multirun",
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        *FAST,
        "quantization=dynamic,static",
    ]
    off_sweep, down_sweep = tmp_path / "off", tmp_path / "down"
    # a plot that cannot be written (a folder in its place): the report must say what it lost
    (off_sweep / PARETO_PLOT).mkdir(parents=True)
    began = time.monotonic()
    off = run_module(
        "quantsweep.cli",
        *common,
        "mlflow.enabled=false",
        f"hydra.sweep.dir={off_sweep}",
        f"cache_dir={tmp_path / 'cache-off'}",
        cwd=tmp_path,
    )
    off_seconds = time.monotonic() - began
    off_output = off.stdout + off.stderr
    assert "IsADirectoryError" in off_output and f"its plots ({PARETO_PLOT}" in off_output
    assert (off_sweep / CARD_FILE).is_file() and (off_sweep / CSV_FILE).is_file()
    # the report's MLflow copy fails for real too (a store under a file cannot be created)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    config = OmegaConf.create(
        {
            "hydra": {"sweep": {"dir": str(off_sweep)}},
            "mlflow": {"enabled": True, "tracking_uri": f"sqlite:///{blocked / 'db'}"},
        }
    )
    caplog.set_level("WARNING", logger="quantsweep.callback")
    ReportCallback().on_multirun_end(config)
    [upload] = [r for r in caplog.records if "Could not attach the sweep report" in r.getMessage()]
    assert upload.levelname == "WARNING"
    assert "FileExistsError" in upload.getMessage() and "README.md, results.csv" in upload.getMessage()

    # a closed port, with credentials that must never be shown; both sweeps start with a cold
    # cache of their own, so neither reuses the other's export
    dead = f"http://alice:s3cret@127.0.0.1:{free_port()}"
    began = time.monotonic()
    down = run_module(
        "quantsweep.cli",
        *common,
        f"mlflow.tracking_uri={dead}",
        "mlflow.experiment_name=logged-later",
        f"hydra.sweep.dir={down_sweep}",
        f"cache_dir={tmp_path / 'cache-down'}",
        cwd=tmp_path,
        # before the fix each job sat in MLflow's retries for minutes: fail instead of waiting
        timeout=off_seconds + 120,
    )
    down_seconds = time.monotonic() - began
    print(f"2-job sweep: MLflow off {off_seconds:.1f} s, server down {down_seconds:.1f} s")
    # Loose on purpose: the two sweeps run one after the other on a machine whose 2 cores
    # other tests share (pytest -n 2), so their times wander by tens of seconds; MLflow's
    # default retries cost minutes per request, which this bound still catches.
    assert down_seconds <= off_seconds + 30
    output = down.stdout + down.stderr
    shown = dead.replace("alice:s3cret@", "***@")
    # said once, before the first job starts, naming the URI (redacted) and the error
    assert output.count("is unreachable (") == 1
    assert f"The MLflow tracking server {shown} is unreachable (" in output
    assert "Connection refused" in output
    assert output.index("is unreachable (") < output.index("Launching 2 jobs locally")
    # and the way back, named at the end
    last = [line for line in output.splitlines() if "quantsweep-log" in line][-1]
    assert f"log it with: quantsweep-log {down_sweep} " in last
    assert output.rindex(last) > output.rindex("results.json")
    assert "s3cret" not in output
    jobs = sorted(p for p in down_sweep.iterdir() if (p / "results.json").is_file())
    assert len(jobs) == 2

    # once the server is up (here: the live one), quantsweep-log logs each job once, twice over
    for _ in range(2):
        run_module("quantsweep.tracking", str(down_sweep), "--tracking-uri", mlflow_server, cwd=tmp_path)
        found = experiment(mlflow_server, "logged-later")
        # created by quantsweep: a model-training experiment from the start
        assert tags_of(found)[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
        parent, children = parent_and_children(mlflow_server, found["experiment_id"])
        assert sorted(job_of(c, down_sweep) for c in children) == [p.resolve() for p in jobs]
    # logged minutes after the jobs ran, the runs still span the jobs themselves
    check_span(parent, children, down_sweep)
    for child in children:
        check_datasets(child, down_sweep, conll_dir)
        # the saved config repeats the URI with its credentials: what MLflow gets has none
        params = {p["key"]: p["value"] for p in child["data"]["params"]}
        assert params["mlflow.tracking_uri"] == shown
        for name in ("job/.hydra/config.yaml", "job/.hydra/overrides.yaml", "job/results.json"):
            text = artifact_text(mlflow_server, child["info"]["run_id"], name)
            assert "s3cret" not in text and "***@127.0.0.1" in text
    # the report the sweep could not attach is attached now
    listed = rest(mlflow_server, f"artifacts/list?run_id={parent['info']['run_id']}&path=report")["files"]
    assert {"report/README.md", "report/results.csv"} <= {f["path"] for f in listed}
