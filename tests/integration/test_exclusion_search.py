"""exclusion=auto: the search on its own, and whole jobs on a tiny model with one node made fragile on purpose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import quantsweep.testing as tiny
from quantsweep.config import (
    Approach,
    BenchmarkConfig,
    CalibrationConfig,
    ConfigError,
    DatasetConfig,
    ExclusionConfig,
    MlflowConfig,
    OperatorsConfig,
    QuantizationConfig,
    RunConfig,
    SearchObjective,
)
from quantsweep.exclusion_search.search import (
    ordered_choices,
)
from quantsweep.exclusion_search.speed import kept_nodes
from quantsweep.records import NodeGroup, SearchStep

# ---------------------------------------------------------------- config checks


# ---------------------------------------------------------------- whole jobs on a planted node


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A tiny DistilBERT with one fragile MatMul, and data tagged by the fp32 model itself."""
    root = tmp_path_factory.mktemp("planted")
    model = tiny.write_model(root / "model", "distilbert", seed=0)
    node = tiny.plant_sensitive_node(model)
    data = tiny.write_self_labelled_dataset(model, root / "data")
    return model, data, node


def _config(model: Path, data: Path, tmp: Path, **exclusion: Any) -> RunConfig:
    # the planted node costs about 0.3 F1; all the others together a few hundredths
    settings = {
        "auto": True,
        "max_f1_drop": 0.1,
        "holdout_samples": 100,
        # these tests are about the accuracy search: the speed objective's test is the CLI one
        "objective": SearchObjective.fewest_fp32,
        **exclusion,
    }
    return RunConfig(
        model_name_or_path=str(model),
        dataset=DatasetConfig(path=str(data)),
        quantization=QuantizationConfig(approach=Approach.static),
        operators=OperatorsConfig(operators_to_quantize=["MatMul"]),
        exclusion=ExclusionConfig(**settings),
        calibration=CalibrationConfig(num_calibration_samples=40),
        benchmark=BenchmarkConfig(
            batch_sizes=[1], input_lengths=[8], duration=0.02, warmup=1, windows=2, threads=1
        ),
        mlflow=MlflowConfig(enabled=False),
        cache=False,
        cache_dir=str(tmp / "cache"),
    )


def _job(config: RunConfig, job_dir: Path) -> dict[str, Any]:
    from quantsweep.job import run_job

    outcome = run_job(config, job_dir, {}, {"exclusion": "auto" if config.exclusion.auto else "nodes"})
    assert (job_dir / "results.json").is_file()
    return outcome.results


def _cli(tmp_path: Path, model: Path, data: Path, job: Path, *args: str) -> dict[str, Any]:
    tiny.run_module(
        "quantsweep.cli",
        f"model_name_or_path={model}",
        f"dataset.path={data}",
        "quantization=static",
        "operators=matmul",
        "calibration.num_calibration_samples=40",
        "benchmark.batch_sizes=[1]",
        "benchmark.input_lengths=[8]",
        "benchmark.duration=0.02",
        "benchmark.windows=1",
        "benchmark.threads=1",  # as _config: evaluation sessions use the same threads
        "mlflow.enabled=false",
        f"hydra.run.dir={job}",
        *args,
        cwd=tmp_path,
    )
    return json.loads((job / "results.json").read_text())


def test_the_search_finds_the_planted_node_and_the_job_and_report_show_it(planted, tmp_path, monkeypatch):
    from quantsweep.report import build_report

    monkeypatch.chdir(tmp_path)  # MLflow puts a sqlite store's artifacts in ./mlruns

    model, data, node = planted
    job = tmp_path / "sweep" / "auto"
    results = _cli(
        tmp_path,
        model,
        data,
        job,
        "exclusion=auto",  # objective speed, the default
        "exclusion.max_f1_drop=0.1",
        "exclusion.holdout_samples=100",
        "exclusion.speed_seconds=0.2",
    )
    found = results["exclusion_search"]
    # the planted node is kept by every set within the budget, and so by the chosen one
    assert found["objective"] == "speed" and node in found["chosen"]
    meeting = [s for s in found["steps"] if s["meets_budget"]]
    assert meeting and all(node in s["nodes"] for s in meeting)
    # every step timed; the objective's first choice (the fastest, or a set keeping fewer
    # nodes within its window spread: timings on a loaded machine vary) was confirmed first
    assert all(s["speedup"] is not None for s in found["steps"])
    first = ordered_choices([SearchStep(**s) for s in found["steps"]], SearchObjective.speed)[0]
    fastest = max(meeting, key=lambda s: s["speedup"])
    assert found["confirmations"][0]["step"] == first.step
    assert first.speedup_max is not None and fastest["speedup_min"] is not None
    assert first.step == fastest["step"] or (
        first.speedup_max >= fastest["speedup_min"] and len(first.nodes) < len(fastest["nodes"])
    )
    assert found["search_rows"] + found["confirm_rows"] == 100 and found["confirm_rows"] == 40
    # the nodes each group decided for (the most specific clear verdict), from the saved timings
    slow = kept_nodes([NodeGroup(**g) for g in found["groups"]])
    chosen = found["chosen"]
    assert found["meets_budget"] and found["stopped_by"] == "done"
    ranked = sorted((r for r in found["ranking"] if r["rank"]), key=lambda r: r["rank"])
    assert ranked[0]["node"] == node
    # the search starts from the groups timed slower quantized (on a model this small, often
    # every MatMul); unless that kept it, the planted node costs F1 well beyond the budget
    start = found["steps"][0]
    assert start["nodes"] == slow
    assert node in slow or (start["f1_drop"] > 0.1 and not start["meets_budget"])
    # the job quantized with the chosen set: everything else quantized, those nodes in fp32
    assert results["graph"]["nodes_excluded"] == chosen
    assert results["graph"]["nodes_quantized"] == results["graph"]["candidate_nodes"] - len(chosen)
    # held-out rows: none of the evaluation split's, none of calibration's
    assert results["dataset"]["holdout_fingerprint"] not in (
        results["dataset"]["eval_fingerprint"],
        results["dataset"]["calibration_fingerprint"],
    )
    assert results["original"]["f1"] - results["quantized"]["f1"] < 0.1
    # the drop on the evaluation split, bounded at the search's confidence like the search's own
    reported = results["eval_drop"]
    assert reported["rows"] == results["dataset"]["eval_samples"] and reported["confidence"] == 0.95
    assert reported["drop"] == pytest.approx(results["original"]["f1"] - results["quantized"]["f1"], abs=1e-6)
    assert reported["bound"] >= reported["drop"]
    saved = (job / "exclusion.yaml").read_text()
    assert f'- "{node}"' in saved and "exclusion=nodes" in saved
    assert (job / "sensitivity.png").stat().st_size > 10_000

    files = build_report(tmp_path / "sweep", plots=False)
    card = files.card.read_text()
    assert "## Exclusion search" in card
    assert f"Kept in fp32 ({len(chosen)}): " in card and f"`{node}`" in card
    assert "![Sensitivity and search of auto](auto/sensitivity.png)" in card

    # quantsweep-reproduce passes the chosen list back through the command line (node
    # names with slashes and dots) instead of searching, and gets the same graph
    out = tmp_path / "reproduced"
    reproduced = tiny.run_module("quantsweep.reproduce", str(job), "--out", str(out), cwd=tmp_path)
    assert "nodes the saved exclusion search chose" in reproduced.stdout
    again = json.loads((out / "results.json").read_text())
    assert again["exclusion_search"] is None and again["graph"]["nodes_excluded"] == chosen
    assert (out / "model_quantized.onnx").read_bytes() == (job / "model_quantized.onnx").read_bytes()

    # MLflow: the search's figures, its course step by step, and the reusable list
    import mlflow

    from quantsweep.config import MlflowConfig
    from quantsweep.tracking import log_job

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_job(job, MlflowConfig(tracking_uri=store))
    client = mlflow.MlflowClient(tracking_uri=store)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["search/nodes_kept"] == len(chosen) and metrics["search/meets_budget"] == 1.0
    assert metrics["search/evaluations"] == len(found["steps"])
    assert metrics["search/eval_drop_bound"] == pytest.approx(reported["bound"])
    assert metrics["search/objective_speed"] == 1.0 and metrics["search/confirm_rows"] == 40
    history = client.get_metric_history(run_id, "search/step_f1")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (s["step"], s["f1"]) for s in found["steps"]
    ]
    logged = {a.path for a in client.list_artifacts(run_id, "job")}
    assert {"job/exclusion.yaml", "job/sensitivity.png"} <= logged


def test_the_chosen_set_is_deterministic_and_its_saved_list_reproduces_the_graph(planted, tmp_path):
    import yaml

    model, data, _ = planted
    first = _job(_config(model, data, tmp_path), tmp_path / "first")
    second = _job(_config(model, data, tmp_path), tmp_path / "second")
    assert first["exclusion_search"]["chosen"] == second["exclusion_search"]["chosen"]
    steps = [[(s["nodes"], s["f1"]) for s in r["exclusion_search"]["steps"]] for r in (first, second)]
    assert steps[0] == steps[1]
    assert first["quantized"]["f1"] == second["quantized"]["f1"]

    # the saved list as a fixed exclusion: no search, the same quantized model
    nodes = yaml.safe_load((tmp_path / "first" / "exclusion.yaml").read_text())["nodes"]
    again = _job(_config(model, data, tmp_path, auto=False, nodes=nodes), tmp_path / "fixed")
    assert again["exclusion_search"] is None
    assert again["graph"]["nodes_excluded"] == nodes
    assert (tmp_path / "fixed" / "model_quantized.onnx").read_bytes() == (
        tmp_path / "first" / "model_quantized.onnx"
    ).read_bytes()
    assert again["quantized"] == {**first["quantized"], "seconds": again["quantized"]["seconds"]}


def test_a_starting_set_is_pruned_to_what_the_budget_needs(planted, tmp_path):
    model, data, node = planted
    start = [node, "/distilbert/transformer/layer.0/ffn/lin1/MatMul", "/classifier/MatMul"]
    results = _job(_config(model, data, tmp_path, start_from=start), tmp_path / "job")
    found = results["exclusion_search"]
    assert found["start_nodes"] == sorted(start)
    assert found["steps"][0]["meets_budget"]
    assert found["chosen"] == [node]
    assert {s["phase"] for s in found["steps"][1:]} == {"prune"}


def test_a_budget_too_small_to_find_a_set_ends_marked_not_meeting_it(planted, tmp_path):
    model, data, _ = planted
    results = _job(_config(model, data, tmp_path, max_evaluations=1), tmp_path / "job")
    found = results["exclusion_search"]
    assert (found["evaluations"], found["stopped_by"], found["meets_budget"]) == (1, "evaluations", False)
    assert found["chosen"] == []
    assert "NOT within" in (tmp_path / "job" / "exclusion.yaml").read_text()


def test_a_calibration_split_too_small_to_hold_out_from_is_refused_before_the_export(planted, tmp_path):
    from quantsweep.job import run_job

    model, data, _ = planted
    config = _config(model, data, tmp_path, holdout_samples=1000)
    with pytest.raises(ConfigError, match=r"`exclusion.holdout_samples` is 1000.*has 160 rows.*takes 40"):
        run_job(config, tmp_path / "job", {}, {})
    assert not (tmp_path / "job" / "model.onnx").exists()


def test_exclusion_nodes_refuses_an_empty_list_before_any_work(tmp_path):
    missing = tiny.run_module(
        "quantsweep.cli",
        "quantization=static",
        "exclusion=nodes",
        "mlflow.enabled=false",
        cwd=tmp_path,
        check=False,
    )
    assert missing.returncode == 2 and "`exclusion.nodes` is []" in missing.stderr
