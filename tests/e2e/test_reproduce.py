"""`quantsweep-reproduce`: what it compares, what it pins, what it trusts, and what it says."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from quantsweep.config import RunConfig
from quantsweep.environment import cpu_model, detect_instruction_set, int8_instruction_sets
from quantsweep.reproduce import main as reproduce_main
from quantsweep.testing import FAST_JOB, run_module, run_module_code

METRICS = ("precision", "recall", "f1", "accuracy")


def results(shapes: dict[tuple[int, int], list[float]], cache_hit: bool = False) -> dict[str, Any]:
    """A results.json reduced to what the comparison reads; speed-ups from their windows."""
    scores = dict.fromkeys(METRICS, 0.5)
    return {
        "original": dict(scores),
        "quantized": dict(scores),
        "timing": {
            "shapes": [
                {"batch_size": b, "input_length": n, "speedup": sum(w) / len(w), "window_speedups": w}
                for (b, n), w in shapes.items()
            ]
        },
        "cache": {"original_evaluation": {"hit": cache_hit, "key": "0123456789abcdef"}},
    }


def row(table: str, label: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(label))


def facts(preset: str) -> dict[str, Any]:
    """results.json's quantization facts of a dynamic job under optimum's preset (AVX2: uint8 weights)."""
    return {
        "approach": "dynamic",
        "format": "QOperator",
        "mode": "IntegerOps",
        "activations_dtype": "QUInt8",
        "weights_dtype": "QUInt8" if preset == "avx2" else "QInt8",
        "per_channel": False,
        "reduce_range": False,
        "instruction_set": preset,
        "instruction_set_detected": True,
        "calibration_method": None,
        "calibration_samples": None,
    }


LAPTOP = {"cpu_model": "Laptop CPU", "int8_instruction_sets": ["AVX2"], "cpu_flags": ["avx2", "fma"]}


def job_config(tmp_path: Path) -> dict[str, Any]:
    """A job's saved config as Hydra writes it: every RunConfig key, with a model that is not there.

    A reproduction that got as far as running this job fails at once, loading the model.
    """
    tree = OmegaConf.to_container(OmegaConf.structured(RunConfig), enum_to_str=True)
    assert isinstance(tree, dict)
    config = {str(key): value for key, value in tree.items()}
    config["model_name_or_path"] = str(tmp_path / "no-model")
    config["mlflow"]["enabled"] = False
    return config


def saved_job(folder: Path, config: dict[str, Any], **saved: Any) -> Path:
    """A finished job folder written by hand: the two files reproduce reads before it runs anything."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    record = results({(1, 8): [1.0, 1.1]}) | {
        "config": config,
        "choices": {"quantization": "dynamic", "operators": "add_matmul", "exclusion": "none"},
        "quantization": facts("avx2"),
        "environment": LAPTOP,
    }
    (folder / "results.json").write_text(json.dumps(record | saved), encoding="utf-8")
    return folder


def started_run(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stands in for the new run's process: records its command and the config folder it starts from."""
    seen: dict[str, Any] = {}

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        folder = Path(command[command.index("--config-path") + 1])
        seen.update(
            command=command,
            folder=folder,
            files=sorted(p.name for p in folder.iterdir()),
            config=yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")),
        )
        return subprocess.CompletedProcess(command, 3)

    monkeypatch.setattr(subprocess, "run", run)
    return seen


def test_reproduce_says_where_the_fp32_metrics_came_from_and_no_cache_recomputes(
    tmp_path, distilbert_dir, conll_dir
):
    job = tmp_path / "job"
    run_module(
        "quantsweep.cli",
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        "benchmark.duration=0.04",
        "benchmark.batch_sizes=[1]",
        "benchmark.input_lengths=[8,16]",
        "benchmark.warmup=1",
        "benchmark.windows=3",
        "mlflow.enabled=false",
        f"hydra.run.dir={job}",
        cwd=tmp_path,
    )

    def reproduce(out: Path, *args: str) -> tuple[str, dict[str, Any]]:
        done = run_module("quantsweep.reproduce", str(job), "--out", str(out), *args, cwd=tmp_path)
        return done.stdout, json.loads((out / "results.json").read_text())

    cached, new = reproduce(tmp_path / "cached")
    assert "original (fp32) metrics came from the cache" in cached and "--no-cache recomputes" in cached
    assert new["cache"]["original_evaluation"]["hit"]
    assert (
        new["reproduces"] == str(job)
        and new["choices"] == json.loads((job / "results.json").read_text())["choices"]
    )

    fresh, new = reproduce(tmp_path / "fresh", "--no-cache", "benchmark.input_lengths=[16]")
    assert not any(use["hit"] for use in new["cache"].values())
    assert "came from the cache" not in fresh and "DIFFERS" not in fresh
    assert "only the saved run timed this shape" in row(fresh, "speed-up 1x8")
    assert "timing: agrees" in row(fresh, "speed-up 1x16") or "timing: differs" in row(fresh, "speed-up 1x16")


def refused(done: subprocess.CompletedProcess[str], out: Path, started: float) -> str:
    """The one paragraph a refused reproduction prints, checked for what a refusal must not do."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1  # one paragraph
    assert not out.exists()  # no job folder, no results.json
    assert time.monotonic() - started < 30  # refused before any heavy import, let alone a job
    return done.stderr


def _with_defaults(config: dict[str, Any], saved: dict[str, Any]) -> None:
    config["defaults"] = ["_self_", {"override hydra/launcher": "basic"}]


def _with_nested_target(config: dict[str, Any], saved: dict[str, Any]) -> None:
    # dataset.data_keys is typed Any (a mapping of columns): RunConfig alone would let this through
    config["dataset"]["data_keys"]["_target_"] = "builtins.exec"


def _with_interpolation(config: dict[str, Any], saved: dict[str, Any]) -> None:
    config["model_name_or_path"] = "${oc.env:QS_REPRODUCE_SECRET}"


def _with_interpolated_node(config: dict[str, Any], saved: dict[str, Any]) -> None:
    # a pin from results.json lands in the config too: a node name OmegaConf would resolve
    saved["exclusion_search"] = {"chosen": ["/distilbert/Add", "${oc.env:QS_REPRODUCE_SECRET}"]}


@pytest.mark.parametrize(
    ("tamper", "found"),
    [
        (_with_defaults, ": it has a `defaults:` list (['_self_', {'override hydra/launcher': 'basic'}])."),
        (_with_nested_target, ": it has a `_target_`: `dataset.data_keys._target_` is 'builtins.exec'."),
        (
            _with_interpolation,
            ": it has an interpolation: `model_name_or_path` is '${oc.env:QS_REPRODUCE_SECRET}'.",
        ),
        (
            _with_interpolated_node,
            "results.json: a value it pins into the config is an interpolation: `exclusion.nodes.1` is "
            "'${oc.env:QS_REPRODUCE_SECRET}'.",
        ),
    ],
    ids=["defaults", "nested _target_", "interpolation", "interpolation in a pinned node name"],
)
def test_what_hydra_or_omegaconf_would_act_on_is_refused_in_one_paragraph(tmp_path, tamper, found):
    config, saved = job_config(tmp_path), dict[str, Any]()
    tamper(config, saved)
    job = saved_job(tmp_path / "job", config, **saved)
    started = time.monotonic()
    done = run_module(
        "quantsweep.reproduce",
        str(job),
        "--out",
        str(tmp_path / "new"),
        cwd=tmp_path,
        check=False,
        env={"QS_REPRODUCE_SECRET": "hunter2"},
    )
    assert "hunter2" not in done.stdout + done.stderr  # no resolver ran on this machine's environment
    message = refused(done, tmp_path / "new", started)
    assert found in message and "quantsweep-reproduce refuses" in message


# Runs quantsweep as on another machine: the CPU flags (and the preset `auto` picks from them)
# are the given ones, the rest is this machine. Detection reads the flags, except on Arm,
# where it goes by the machine type, so the preset is named as well.
AS_ON_ANOTHER_CPU = """
import sys

import quantsweep.environment as environment
import quantsweep.quantize as quantize

flags, preset = frozenset(sys.argv.pop(1).split(",")), sys.argv.pop(1)
environment.cpu_flags = lambda: flags
environment.cpu_model = lambda: "Another CPU model"
environment.detect_instruction_set = quantize.detect_instruction_set = lambda: preset

from quantsweep.cli import main

main()
"""


def test_reproduce_on_another_cpu_quantizes_with_the_saved_preset_and_says_so(
    tmp_path, distilbert_dir, conll_dir
):
    """A job saved on another CPU (AVX2 if this one has more, VNNI if this one is AVX2) reruns its model here."""
    here = detect_instruction_set()
    vnni = ("avx512_vnni", "avx2,avx512f,avx512bw,avx512_vnni")
    other, flags = vnni if here == "avx2" else ("avx2", "avx2,fma")
    job, out = tmp_path / "job", tmp_path / "reproduced"
    run_module_code(
        AS_ON_ANOTHER_CPU,
        flags,
        other,
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        *FAST_JOB,
        "hydra.job.name=quantsweep",
        f"hydra.run.dir={job}",
        cwd=tmp_path,
    )
    saved = json.loads((job / "results.json").read_text())
    theirs = int8_instruction_sets(frozenset(flags.split(",")))
    assert saved["config"]["quantization"]["instruction_set"] == "auto"
    assert saved["quantization"]["instruction_set"] == other
    assert saved["quantization"]["instruction_set_detected"]
    assert saved["environment"]["int8_instruction_sets"] == theirs

    done = run_module("quantsweep.reproduce", str(job), "--out", str(out), cwd=tmp_path, check=False)
    new = json.loads((out / "results.json").read_text())
    used = new["quantization"]
    assert used["instruction_set"] == other, f"quantized with {used['instruction_set']}"
    assert used["weights_dtype"] == saved["quantization"]["weights_dtype"]
    assert (out / "model_quantized.onnx").read_bytes() == (job / "model_quantized.onnx").read_bytes()
    assert done.returncode == 0 and "DIFFERS" not in done.stdout
    assert f"Quantizing with the saved run's preset {other} " in done.stdout
    assert f"and this CPU would choose {here} " in done.stdout
    assert (
        f"Another CPU: the saved run ran on Another CPU model ({', '.join(theirs)}), the new run on "
        f"{cpu_model()} ({', '.join(int8_instruction_sets())}). Both quantized with the preset {other}"
    ) in done.stdout


@pytest.fixture(scope="module")
def tracking_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str], Path]:
    """An MLflow store holding runs as anyone with write access could log them: (uri, run ids, marker)."""
    import mlflow

    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("shared", artifact_location=str(folder / "artifacts"))
    marker = folder / "the-callback-ran"
    callback = {"_target_": "builtins.open", "_args_": [str(marker), "w"]}
    benign = job_config(folder)
    benign["mlflow"] = {"enabled": True, "tracking_uri": "http://collector.invalid:5000"}
    tampered = benign | {"hydra": {"callbacks": {"marker": callback}}}
    runs = {}
    for name, config in (("hydra", tampered), ("benign", benign)):
        job = saved_job(folder / name, config)
        run = client.create_run(experiment).info.run_id
        client.log_artifact(run, str(job / "results.json"), "job")
        client.log_artifact(run, str(job / ".hydra" / "config.yaml"), "job/.hydra")
        runs[name] = run
    return uri, runs, marker


def test_a_run_on_a_tracking_server_is_refused_before_its_hydra_section_runs(tmp_path, tracking_store):
    uri, runs, marker = tracking_store
    started = time.monotonic()
    done = run_module(
        "quantsweep.reproduce",
        runs["hydra"],
        "--tracking-uri",
        uri,
        "--out",
        str(tmp_path / "new"),
        cwd=tmp_path,
        check=False,
    )
    assert not marker.exists(), "Hydra instantiated the downloaded config's callback"
    message = refused(done, tmp_path / "new", started)
    run = runs["hydra"]
    assert f"refuses the .hydra/config.yaml of MLflow run {run}: it has a `hydra:` section" in message


def test_a_run_from_a_tracking_server_logs_where_it_was_found(tmp_path, tracking_store, monkeypatch):
    """The downloaded config names another server: this machine's MLflow credentials must not go there."""
    uri, runs, _ = tracking_store
    seen = started_run(monkeypatch)
    assert reproduce_main([runs["benign"], "--tracking-uri", uri, "--out", str(tmp_path / "new")]) == 3
    assert seen["config"]["mlflow"]["tracking_uri"] == uri
    assert seen["config"]["quantization"]["instruction_set"] == "avx2" and seen["files"] == ["config.yaml"]
