"""The `quantsweep` command end to end: one run, the 8-job seed sweep, resume, and errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from quantsweep.results import SCHEMA_VERSION
from quantsweep.testing import run_module

FAST = [
    "benchmark.duration=0.04",
    "benchmark.batch_sizes=[1,2]",
    "benchmark.input_lengths=[8,16]",
    "benchmark.warmup=1",
    "benchmark.windows=2",
    "benchmark.threads=1",
    "calibration.num_calibration_samples=16",
    "mlflow.enabled=false",  # tracking has its own tests (test_tracking.py)
]


def quantsweep(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_module("quantsweep.cli", *args, cwd=cwd, check=check)


def data_args(model: Path, data: Path) -> list[str]:
    return [f"model_name_or_path={model}", f"dataset.path={data}"]


def test_single_run_writes_a_complete_job_directory(tmp_path, distilbert_dir, conll_dir):
    job = tmp_path / "job"
    args = [
        *data_args(distilbert_dir, conll_dir),
        *FAST,
        "quantization=static",
        "exclusion=sensitive",
        f"hydra.run.dir={job}",
    ]
    first = quantsweep(tmp_path, *args)
    for name in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "results.json",
        "model.onnx",
        "model_quantized.onnx",
        "quantsweep.log",
    ):
        assert (job / name).is_file(), name
    assert not list(job.glob("*.tmp")) and not list(job.glob(".results.json.*"))
    results = json.loads((job / "results.json").read_text())
    assert results["schema_version"] == SCHEMA_VERSION  # 5 and later: scores follow config.task
    assert results["choices"] == {
        "quantization": "static",
        "operators": "add_matmul",
        "exclusion": "sensitive",
        "calibration": "minmax",
    }
    assert results["config"]["quantization"]["approach"] == "static"
    assert results["export"]["opset"] == 11 and results["export"]["optimization_level"] == 1
    assert results["quantization"]["calibration_samples"] == 16 and results["quantization"]["format"] == "QDQ"
    assert results["graph"]["nodes_quantized"] > 0
    assert set(results["graph"]["nodes_excluded_by_pattern"]) == {
        "layernorm",
        "gelu",
        "residual",
        "gather",
        "softmax",
    }
    for model in ("original", "quantized"):
        assert set(results[model]) >= {"precision", "recall", "f1", "accuracy", "per_entity", "num_samples"}
        assert results[model]["num_samples"] == 24
    shapes = results["timing"]["shapes"]
    assert [(s["batch_size"], s["input_length"]) for s in shapes] == [(1, 8), (1, 16), (2, 8), (2, 16)]
    env = results["environment"]
    assert env["cpu_model"] and env["physical_cores"] >= 1 and "onnxruntime" in env["packages"]
    assert results["dataset"]["eval_fingerprint"] and results["dataset"]["calibration_samples"] == 16
    assert "f1" in first.stdout and "speed-up" in first.stdout  # the console summary

    # rerun: skipped because results.json exists; force=true runs it again
    stamp = (job / "results.json").stat().st_mtime_ns
    quantsweep(tmp_path, *args)
    assert (job / "results.json").stat().st_mtime_ns == stamp
    assert "Skipping" in (job / "quantsweep.log").read_text()
    quantsweep(tmp_path, *args, "force=true")
    assert (job / "results.json").stat().st_mtime_ns != stamp


def test_seed_card_sweep_runs_eight_jobs_and_resumes(tmp_path, distilbert_dir, conll_dir):
    sweep = tmp_path / "sweep"
    args = [
        "--multirun",
        "+experiment=seed_card",
        *data_args(distilbert_dir, conll_dir),
        *FAST,
        f"hydra.sweep.dir={sweep}",
    ]
    quantsweep(tmp_path, *args)
    jobs = sorted(p for p in sweep.iterdir() if (p / "results.json").is_file())
    assert len(jobs) == 8
    seen = set()
    originals = set()
    computed: dict[str, int] = {"export": 0, "original_evaluation": 0, "calibration": 0}
    for job in jobs:
        results = json.loads((job / "results.json").read_text())
        saved = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        approach = saved["quantization"]["approach"]
        operators = saved["operators"]["operators_to_quantize"]
        nodes = saved["exclusion"]["nodes"]
        key = (approach, tuple(operators), tuple(nodes))
        seen.add(key)
        assert job.name.startswith(
            f"{approach}-{'add' if operators == ['Add'] else 'add_matmul'}-{'sensitive' if nodes else 'none'}"
        )
        assert results["config"]["quantization"]["approach"] == approach
        assert results["config"]["operators"]["operators_to_quantize"] == operators
        graph = results["graph"]
        if approach == "dynamic" and operators == ["Add"]:
            assert graph["nothing_quantized"] and "Nothing was quantized" in graph["note"]
        else:
            assert graph["nodes_quantized"] > 0
        assert bool(graph["nodes_excluded"]) == bool(nodes)
        assert (results["quantization"]["calibration_samples"] == 16) == (approach == "static")
        originals.add(json.dumps([results["original"][m] for m in ("precision", "recall", "f1", "accuracy")]))
        for kind, use in results["cache"].items():
            computed[kind] += not use["hit"]
        assert set(results["cache"]) == {"export", "original_evaluation"} | (
            {"calibration"} if approach == "static" else set()
        )
        assert (job / "model.onnx").is_file() and results["phase_seconds"]["time"] > 0
    # one export and one fp32 evaluation for the sweep; one calibration per operator set
    assert computed == {"export": 1, "original_evaluation": 1, "calibration": 2}
    assert len(seen) == 8
    assert len(originals) == 1  # every job evaluates the same fp32 model on the same data
    # the report callback wrote the card, the CSV and the plots at the end of the sweep
    card = (sweep / "README.md").read_text()
    assert "## Non-time metrics" in card and card.count("Below, time metrics") == 4
    assert (sweep / "results.csv").is_file() and (sweep / "f1_vs_speedup.png").is_file()

    # an interrupted sweep: one job lost its results; rerunning redoes only that one
    lost = jobs[3] / "results.json"
    lost.unlink()
    stamps = {job: (job / "results.json").stat().st_mtime_ns for job in jobs if job != jobs[3]}
    quantsweep(tmp_path, *args)
    assert lost.is_file()
    assert all((job / "results.json").stat().st_mtime_ns == stamp for job, stamp in stamps.items())


def test_config_error_is_one_paragraph_before_any_work(tmp_path):
    result = quantsweep(tmp_path, "aware_training=true", check=False)
    assert result.returncode == 2
    assert "`aware_training` is True" in result.stderr and "not supported" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("results.json"))


def test_input_length_over_the_models_maximum_is_one_paragraph_before_the_export(
    tmp_path, distilbert_dir, conll_dir
):
    job = tmp_path / "job"
    result = quantsweep(
        tmp_path,
        *data_args(distilbert_dir, conll_dir),
        "benchmark.input_lengths=[8,300]",
        "mlflow.enabled=false",
        f"hydra.run.dir={job}",
        check=False,
    )
    assert result.returncode == 2
    message = result.stderr.split("quantsweep: ", 1)[1]
    assert "`benchmark.input_lengths` is [8, 300]" in message and "at most 256 tokens" in message
    assert "benchmark.input_lengths=[8]" in message  # what would be allowed
    assert "Traceback" not in result.stderr
    assert not (job / "model.onnx").exists() and not (job / "results.json").exists()


def test_hub_model_offline_names_the_local_alternative(tmp_path, conll_dir):
    result = quantsweep(tmp_path, f"dataset.path={conll_dir}", check=False)
    assert result.returncode == 2
    assert "Could not load model 'elastic/distilbert-base-uncased-finetuned-conll03-english'" in result.stderr
    assert "local folder written by save_pretrained" in result.stderr


def test_cfg_job_prints_the_composed_config(tmp_path):
    out = quantsweep(tmp_path, "--cfg", "job", "quantization=static", "operators=add").stdout
    composed = yaml.safe_load(out)
    assert composed["quantization"]["approach"] == "static"
    assert composed["operators"]["operators_to_quantize"] == ["Add"]
    assert composed["framework_args"] == {"opset": 11, "optimization_level": 1}
    assert not list(tmp_path.rglob("results.json"))


def test_a_failed_job_is_listed_in_the_card_and_the_others_finish(tmp_path, distilbert_dir, conll_dir):
    sweep = tmp_path / "sweep"
    fast = [a for a in FAST if not a.startswith("benchmark.duration")]
    args = [
        "--multirun",
        *data_args(distilbert_dir, conll_dir),
        *fast,
        "benchmark.duration=-1,0.04",  # the failing job first: the report must still be completed
        f"hydra.sweep.dir={sweep}",
    ]
    result = quantsweep(tmp_path, *args, check=False)
    assert result.returncode != 0  # the sweep reports its failure
    finished = [p for p in sweep.iterdir() if (p / "results.json").is_file()]
    failed = [p for p in sweep.iterdir() if (p / "error.txt").is_file()]
    assert len(finished) == 1 and len(failed) == 1
    assert "benchmark.duration" in (failed[0] / "error.txt").read_text()
    card = (sweep / "README.md").read_text()
    assert "## Failed jobs" in card and failed[0].name in card
    assert "## Non-time metrics" in card
    # Hydra skips on_multirun_end after a failure; the plots were still made after the last job
    assert (sweep / "f1_vs_speedup.png").is_file() and (sweep / "latency_vs_length.png").is_file()
