from __future__ import annotations

import copy
import subprocess
import time
from typing import Any

from test_reproduce import LAPTOP, facts, job_config, refused, results, row, saved_job, started_run

from quantsweep.config import RunConfig
from quantsweep.reproduce import comparison
from quantsweep.reproduce import main as reproduce_main
from quantsweep.testing import run_module

SERVER = {
    "cpu_model": "Server CPU",
    "int8_instruction_sets": ["AVX2", "AVX-512F", "AVX-512BW", "AVX512-VNNI"],
    "cpu_flags": ["avx2", "avx512bw", "avx512f", "avx512_vnni"],
}


def no_subprocess(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"a subprocess ran: {args[0] if args else kwargs}")


def test_speed_ups_agree_only_when_their_window_ranges_overlap():
    saved = results({(1, 32): [1.40, 1.50, 1.62]})
    table, identical = comparison(saved, results({(1, 32): [1.55, 1.70, 1.80]}))
    assert identical and "timing: agrees" in row(table, "speed-up 1x32")
    table, identical = comparison(saved, results({(1, 32): [1.65, 1.70, 1.80]}))
    assert identical  # timing never decides the exit code: the evaluation does
    assert "timing: differs (per window 1.40-1.62 vs 1.65-1.80 do not overlap)" in row(table, "speed-up 1x32")


def test_only_the_same_shapes_are_compared():
    """A new run at 1x128 is never compared with the saved 1x32 (the shapes were overridden)."""
    table, _ = comparison(results({(1, 32): [1.5, 1.52]}), results({(1, 128): [1.7, 1.71]}))
    assert "only the saved run timed this shape, not compared" in row(table, "speed-up 1x32")
    assert "only the new run timed this shape, not compared" in row(table, "speed-up 1x128")
    assert "agrees" not in table and "differs" not in table


def test_a_changed_metric_is_flagged_and_fails():
    saved = results({(1, 32): [1.5, 1.6]})
    new = copy.deepcopy(saved)
    new["quantized"]["f1"] = 0.49
    table, identical = comparison(saved, new)
    assert not identical and "<-- DIFFERS" in row(table, "quantized f1")


def test_another_cpu_is_named_with_both_machines_instruction_sets():
    saved = results({(1, 32): [1.5, 1.6]}) | {"quantization": facts("avx2"), "environment": LAPTOP}
    new = copy.deepcopy(saved) | {"environment": SERVER}
    table, identical = comparison(saved, new)
    assert identical
    assert (
        "Another CPU: the saved run ran on Laptop CPU (AVX2), the new run on Server CPU "
        "(AVX2, AVX-512F, AVX-512BW, AVX512-VNNI). Both quantized with the preset avx2 (weights uint8, "
        "activations uint8), so the quantized models are the same and their evaluation metrics must be too."
    ) in table
    assert "Another quantization preset" not in table
    # a results.json from before int8_instruction_sets was recorded: the sets come from its CPU flags
    older = saved | {"environment": {"cpu_model": "Laptop CPU", "cpu_flags": ["avx2", "fma"]}}
    assert "the saved run ran on Laptop CPU (AVX2), the new run on Server CPU" in comparison(older, new)[0]
    # the same machine: nothing to say
    assert "Another CPU" not in comparison(saved, copy.deepcopy(saved))[0]


def test_another_quantization_preset_is_named_as_the_reason_metrics_may_differ():
    saved = results({(1, 32): [1.5, 1.6]}) | {"quantization": facts("avx512_vnni"), "environment": SERVER}
    new = copy.deepcopy(saved) | {"quantization": facts("avx2"), "environment": LAPTOP}
    new["quantized"]["f1"] = 0.49
    table, identical = comparison(saved, new)
    assert not identical and "<-- DIFFERS" in row(table, "quantized f1")
    assert (
        "Another quantization preset: the saved run used avx512_vnni (weights int8, activations uint8), the new "
        "run avx2 (weights uint8, activations uint8). They quantize to other integer types"
    ) in table
    assert "Another CPU: the saved run ran on Server CPU (AVX2, AVX-512F, AVX-512BW, AVX512-VNNI)" in table
    assert "Both quantized with the preset" not in table


def test_a_hydra_section_in_a_saved_config_is_refused_before_its_callback_runs(tmp_path):
    """A `hydra:` section is Hydra's to act on: the callback here would create a file on this machine."""
    marker = tmp_path / "the-callback-ran"
    callback = {"_target_": "builtins.open", "_args_": [str(marker), "w"]}
    job = saved_job(tmp_path / "job", job_config(tmp_path) | {"hydra": {"callbacks": {"marker": callback}}})
    started, out = time.monotonic(), tmp_path / "new"
    done = run_module("quantsweep.reproduce", str(job), "--out", str(out), cwd=tmp_path, check=False)
    assert not marker.exists(), "Hydra instantiated the saved config's callback"
    message = refused(done, out, started)
    saved_config = job / ".hydra" / "config.yaml"
    assert f"quantsweep-reproduce refuses {saved_config}: it has a `hydra:` section (callbacks)." in message
    assert "callbacks and launchers are Python objects it instantiates" in message
    assert "nothing was run" in message


def test_a_saved_config_is_validated_against_run_config_before_any_subprocess(tmp_path, monkeypatch, capsys):
    config = job_config(tmp_path)
    config["benchmark"]["windows"] = 0
    job = saved_job(tmp_path / "job", config)
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    assert reproduce_main([str(job), "--out", str(tmp_path / "new")]) == 2
    message = capsys.readouterr().err
    saved_config = job / ".hydra" / "config.yaml"
    assert message.startswith(f"quantsweep-reproduce refuses {saved_config}: it is not a quantsweep job")
    assert "`benchmark.windows` is 0; it must be a positive integer." in message
    assert len(message.strip().splitlines()) == 1 and not (tmp_path / "new").exists()


def test_the_new_run_starts_from_a_validated_copy_with_the_saved_run_pinned(tmp_path, monkeypatch):
    """Not the saved file: a config of RunConfig's keys alone, in a folder of its own, with the pins as values."""
    chosen = ["/distilbert/transformer/layer.0/attention/Add", "odd],name=with,signs"]
    job = saved_job(
        tmp_path / "job",
        job_config(tmp_path),
        exclusion_search={"chosen": chosen},
        export={"model_revision": "0123456789abcdef0123456789abcdef01234567"},
    )
    seen = started_run(monkeypatch)
    assert reproduce_main([str(job), "--out", str(tmp_path / "new"), "benchmark.windows=2"]) == 3
    assert job not in seen["folder"].parents and seen["files"] == ["config.yaml"]
    config = seen["config"]
    assert set(config) == set(RunConfig.__dataclass_fields__)  # job keys only: no hydra, no defaults
    assert config["quantization"]["instruction_set"] == "avx2"  # the saved run's preset, not this CPU's
    assert config["exclusion"]["nodes"] == chosen and config["exclusion"]["auto"] is False
    assert config["revision"] == "0123456789abcdef0123456789abcdef01234567"
    # the user's overrides follow on the command line (they win); no pin goes through Hydra's override grammar
    assert seen["command"][-1] == "benchmark.windows=2"
    assert not any(arg.startswith(("exclusion.", "quantization.", "revision=")) for arg in seen["command"])

    # an override of the preset on the command line decides, and nothing is pinned under it
    override = "quantization.instruction_set=avx512"
    assert reproduce_main([str(job), "--out", str(tmp_path / "new"), override]) == 3
    assert seen["config"]["quantization"]["instruction_set"] == "auto"
    assert seen["command"][-1] == "quantization.instruction_set=avx512"
