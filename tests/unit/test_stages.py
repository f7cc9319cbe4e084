"""Every cached stage's key parts, without a model: what must change the key, and what must not.

A key that misses a setting serves a stale result after that setting changes; a key that
holds a setting the output does not depend on recomputes (and re-stores) for nothing.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from hydra import compose, initialize_config_module

from quantsweep.cli import to_run_config
from quantsweep.config import RunConfig
from quantsweep.environment import cpu_flags
from quantsweep.exclusion import ResolvedExclusion
from quantsweep.quantize import QuantizationRequest
from quantsweep.stages import calibrate, evaluate, export, search
from quantsweep.stages.plan import Plan

PACKAGES = {"quantsweep": "0.1.0", "onnxruntime": "1.32.0", "seqeval": "1.2.2"}


def config(*overrides: str) -> RunConfig:
    with initialize_config_module(config_module="quantsweep.conf", version_base="1.3"):
        return to_run_config(compose(config_name="config", overrides=list(overrides)))


def plan(nodes: list[str] | None = None, operators: list[str] | None = None, symmetric: bool = False) -> Plan:
    request = QuantizationRequest(
        is_static=True,
        operators=operators or ["MatMul", "Add"],
        nodes_to_exclude=nodes or [],
        per_channel=False,
        instruction_set="auto",
        reduce_range=None,
    )
    exclusion = ResolvedExclusion(by_pattern={}, explicit=nodes or [])
    return Plan(exclusion, request, SimpleNamespace(activations_symmetric=symmetric), "avx2", True, 128)


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a == b


def test_the_export_key_follows_the_model_and_the_exporter_and_nothing_the_quantization_sets() -> None:
    model = {"local_content": "abc"}
    base = export.key_parts(config(), model, PACKAGES)
    assert same(
        base,
        export.key_parts(
            config("quantization=static", "operators=add", "eval_batch_size=8"), model, PACKAGES
        ),
    )
    assert not same(base, export.key_parts(config("framework_args.opset=14"), model, PACKAGES))
    assert not same(base, export.key_parts(config("framework_args.optimization_level=0"), model, PACKAGES))
    assert not same(base, export.key_parts(config(), {"local_content": "abd"}, PACKAGES))
    assert not same(base, export.key_parts(config(), model, {**PACKAGES, "onnxruntime": "1.33.0"}))


def test_the_export_key_names_a_hub_model_by_its_resolved_commit(tmp_path) -> None:
    hub = export.model_identity("org/model", "0123abc", "main")
    assert hub == {"hub_id": "org/model", "revision": "0123abc"}
    assert export.model_identity("org/model", None, "v1") == {"hub_id": "org/model", "revision": "v1"}
    (tmp_path / "config.json").write_text("{}")
    local = export.model_identity(str(tmp_path), None, None)
    (tmp_path / "config.json").write_text('{"changed": 1}')
    assert local != export.model_identity(str(tmp_path), None, None)  # a local folder by its content


def test_the_calibration_key_follows_export_rows_settings_and_operators_not_exclusions() -> None:
    cfg = config("quantization=static")
    base = calibrate.key_parts(cfg, "export-key", "rows", plan())
    # exclusions and the evaluation do not change the ranges; the operators' order does not either
    assert same(
        base,
        calibrate.key_parts(cfg, "export-key", "rows", plan(nodes=["/a/Add"], operators=["Add", "MatMul"])),
    )
    assert same(
        base,
        calibrate.key_parts(config("quantization=static", "eval_batch_size=8"), "export-key", "rows", plan()),
    )
    for changed in (
        calibrate.key_parts(cfg, "other-export", "rows", plan()),
        calibrate.key_parts(cfg, "export-key", "other-rows", plan()),
        calibrate.key_parts(cfg, "export-key", "rows", replace(plan(), max_length=64)),
        calibrate.key_parts(cfg, "export-key", "rows", plan(operators=["MatMul"])),
        calibrate.key_parts(cfg, "export-key", "rows", plan(symmetric=True)),
        calibrate.key_parts(
            config("quantization=static", "calibration=percentile"), "export-key", "rows", plan()
        ),
        calibrate.key_parts(
            config("quantization=static", "calibration.num_calibration_samples=7"),
            "export-key",
            "rows",
            plan(),
        ),
    ):
        assert not same(base, changed)


def search_parts(
    *overrides: str,
    calibration: str = "calibration-key",
    nodes: tuple[str, ...] = ("/a", "/b"),
    rows: str = "held-out",
    samples: int = 32,
    packages: dict[str, str] = PACKAGES,
) -> dict[str, Any]:
    """The search stage's key parts for ``exclusion=auto`` with ``overrides``, each other input named."""
    cfg = config("quantization=static", "exclusion=auto", *overrides)
    return search.key_parts(cfg, calibration, plan(list(nodes)), rows, samples, packages)


def test_the_search_key_follows_calibration_rows_settings_and_start_and_a_time_budget_is_never_reused() -> (
    None
):
    cfg = config("quantization=static", "exclusion=auto")
    base = search_parts(nodes=("/b", "/a"))
    assert same(base, search_parts())
    assert same(base, search_parts("benchmark.batch_sizes=[2]"))
    for changed in (
        search_parts(calibration="other-calibration"),
        search_parts(nodes=("/a",)),
        search_parts(rows="other-rows"),
        search_parts(samples=16),
        search_parts("exclusion.max_f1_drop=0.01"),
        search_parts("seed=1"),
        search_parts(packages={**PACKAGES, "seqeval": "1.3"}),
    ):
        assert not same(base, changed)
    # the speed objective times candidates on this machine: its key names the machine and
    # the timing shape; fewest_fp32 does not time, so its key does not
    fewest_parts = search_parts("exclusion.objective=fewest_fp32")
    assert not same(base, fewest_parts) and "machine" not in fewest_parts
    assert base["machine"]["timing_shape"] == [1, max(cfg.benchmark.input_lengths)]
    assert base["machine"]["threads"] >= 1 and base["machine"]["cpu"]
    assert base["machine"]["flags"] == sorted(cpu_flags())
    assert search_parts("benchmark.threads=2", nodes=())["machine"]["threads"] == 2
    assert search_parts("exclusion.timing_shape=[8,128]", nodes=())["machine"]["timing_shape"] == [8, 128]
    first = search_parts("exclusion.max_minutes=5", nodes=())
    assert not same(first, search_parts("exclusion.max_minutes=5", nodes=()))


def test_the_fp32_evaluation_key_follows_export_rows_length_and_batch_not_the_quantization() -> None:
    base = evaluate.key_parts(config(), "export-key", "rows", 128, PACKAGES)
    assert same(
        base,
        evaluate.key_parts(
            config("quantization=static", "operators=add", "exclusion=sensitive"),
            "export-key",
            "rows",
            128,
            PACKAGES,
        ),
    )
    for changed in (
        evaluate.key_parts(config(), "other-export", "rows", 128, PACKAGES),
        evaluate.key_parts(config(), "export-key", "other-rows", 128, PACKAGES),
        evaluate.key_parts(config(), "export-key", "rows", 64, PACKAGES),
        evaluate.key_parts(config("eval_batch_size=8"), "export-key", "rows", 128, PACKAGES),
        evaluate.key_parts(config(), "export-key", "rows", 128, {**PACKAGES, "seqeval": "1.3"}),
    ):
        assert not same(base, changed)


def test_every_cached_stage_names_its_kind_and_its_own_code_once() -> None:
    stages = (export, calibrate, search, evaluate)
    kinds = [stage.CACHE_KIND for stage in stages]
    assert len(set(kinds)) == len(kinds)
    for stage in stages:
        assert stage.__name__ in stage.CODE  # a change to the stage itself misses the cache
