from __future__ import annotations

import json
import math
import typing
from dataclasses import fields, is_dataclass
from typing import Any

import pytest
from hydra import compose, initialize_config_module

from quantsweep import config
from quantsweep.cli import to_run_config
from quantsweep.config import (
    Approach,
    ConfigError,
    DatasetConfig,
    ExclusionConfig,
    QuantizationConfig,
    RunConfig,
)
from quantsweep.data import DataError
from quantsweep.tasks.token_classification.rows import TaggedSentences, load_split


def composed(*overrides: str) -> Any:
    with initialize_config_module(config_module="quantsweep.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def refused(*overrides: str) -> str:
    with pytest.raises(ConfigError) as error:
        to_run_config(composed(*overrides))
    message = str(error.value)
    assert "\n" not in message
    return message


def _float_keys(schema: type, prefix: str = "") -> list[str]:
    """Every key of the schema typed float (or float | None), found from the dataclasses."""
    keys: list[str] = []
    hints = typing.get_type_hints(schema)
    for item in fields(schema):
        hint = hints[item.name]
        if is_dataclass(hint):
            keys += _float_keys(hint, f"{prefix}{item.name}.")  # type: ignore[arg-type]
        elif hint is float or float in typing.get_args(hint):
            keys.append(f"{prefix}{item.name}")
    return keys


FLOAT_KEYS = _float_keys(RunConfig)


def test_the_float_keys_are_found():
    # the cases among them, so that the parametrized test below covers them
    assert {"benchmark.duration", "exclusion.speed_seconds", "exclusion.max_minutes"} <= set(FLOAT_KEYS)
    assert len(FLOAT_KEYS) >= 8


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_every_float_key_refuses_nan_and_inf(key, value):
    # whether or not the key's group uses it (exclusion=none's max_minutes too): generic, not per key
    message = refused(f"{key}={value}")
    assert f"`{key}` is {value}" in message and "finite number" in message


def test_nan_is_refused_by_the_dataclasses_themselves():
    # a config built without Hydra (quantsweep-reproduce, launchers, tests) is checked the same way
    from quantsweep.config import BenchmarkConfig, CalibrationConfig

    for build, key in (
        (lambda: BenchmarkConfig(duration=math.nan), "benchmark.duration"),
        (lambda: CalibrationConfig(percentile=math.inf), "calibration.percentile"),
        (lambda: ExclusionConfig(auto=True, max_minutes=math.nan), "exclusion.max_minutes"),
    ):
        with pytest.raises(ConfigError, match=f"`{key}`"):
            build()


@pytest.mark.parametrize("side", ["negative", "too large"])
def test_a_seed_outside_numpys_range_is_refused(side):
    seed = -1 if side == "negative" else config.MAX_SEED + 1
    assert f"`seed` is {seed}" in refused(f"seed={seed}")


def test_the_seeds_at_the_ends_of_the_range_are_accepted():
    assert to_run_config(composed("seed=0")).seed == 0
    assert to_run_config(composed(f"seed={config.MAX_SEED}")).seed == config.MAX_SEED


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["benchmark.batch_sizes=[1,4,1]"], "`benchmark.batch_sizes` is [1, 4, 1]"),
        (["benchmark.input_lengths=[32,32]"], "`benchmark.input_lengths` is [32, 32]"),
        (["exclusion.nodes=[gelu,/a/Add,gelu]"], "`exclusion.nodes` is ['gelu', '/a/Add', 'gelu']"),
        (
            ["quantization=static", "exclusion=auto", "exclusion.start_from=[/a/Add,/a/Add]"],
            "`exclusion.start_from` is ['/a/Add', '/a/Add']",
        ),
    ],
)
def test_repeated_entries_are_refused(overrides, named):
    message = refused(*overrides)
    assert named in message and "appear once" in message


def test_the_evaluation_split_calibrates_only_when_allowed():
    message = refused("quantization=static", "dataset.calibration_split=validation")
    assert "`dataset.calibration_split` is 'validation'" in message
    assert "dataset.calibrate_on_eval_split=true" in message
    allowed = to_run_config(
        composed(
            "quantization=static",
            "dataset.calibration_split=validation",
            "dataset.calibrate_on_eval_split=true",
        )
    )
    assert allowed.dataset.calibrate_on_eval_split
    # dynamic quantization calibrates on nothing: the split is not read
    assert to_run_config(composed("dataset.calibration_split=validation")).dataset.calibration_split
    # the held-out rows of exclusion=auto never come from the evaluation split, even then
    held_out = refused(
        "quantization=static",
        "exclusion=auto",
        "dataset.calibration_split=validation",
        "dataset.calibrate_on_eval_split=true",
    )
    assert "`exclusion.holdout_split` is 'validation'" in held_out and "name another split" in held_out


def test_the_new_key_is_in_the_root_config():
    assert composed().dataset.calibrate_on_eval_split is False


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.25, 0.4, 0.5, 0.75, 0.9])
def test_the_rows_needed_are_the_fewest_that_leave_both_sides_the_minimum(fraction):
    needed = config.held_out_rows_needed(fraction)

    def enough(rows: int) -> bool:
        search, confirm = config.split_held_out(rows, fraction)
        return search >= config.MIN_BOOTSTRAP_ROWS and (fraction == 0 or confirm >= config.MIN_BOOTSTRAP_ROWS)

    assert enough(needed) and not enough(needed - 1)
    ExclusionConfig(auto=True, holdout_samples=needed, confirm_fraction=fraction)
    with pytest.raises(ConfigError, match=rf"exclusion.holdout_samples={needed} or more"):
        ExclusionConfig(auto=True, holdout_samples=needed - 1, confirm_fraction=fraction)


def test_too_few_search_rows_are_refused_naming_holdout_samples():
    with pytest.raises(ConfigError, match=r"`exclusion.holdout_samples` is 29.*leaves the search 29 rows"):
        ExclusionConfig(auto=True, holdout_samples=29, confirm_fraction=0.0)


def test_the_search_splits_its_rows_as_the_check_counted_them():
    from quantsweep.exclusion_search.candidates import HeldOutRows

    for rows, fraction in ((200, 0.4), (75, 0.4), (61, 0.5), (30, 0.0)):
        data = TaggedSentences([["a"]] * rows, [["O"]] * rows, ["O"], "data", "train")
        held_out = HeldOutRows(data, [object()] * rows, {0: "O"}, 8, 0, ["input_ids"])  # type: ignore[list-item]
        search, confirm = held_out.split(fraction)
        counted = config.split_held_out(rows, fraction)
        assert (len(search.encoded), len(confirm.encoded) if confirm else 0) == counted


def test_a_split_too_small_for_the_held_out_rows_names_the_rows_the_bootstrap_needs():
    from quantsweep.stages.load import check_holdout

    cfg = RunConfig(
        quantization=QuantizationConfig(approach=Approach.static),
        exclusion=ExclusionConfig(auto=True, holdout_samples=100),
    )
    with pytest.raises(ConfigError) as error:
        check_holdout(cfg, split_rows=60, calibration_rows=16, holdout_rows=44)
    message = str(error.value)
    assert "has 60 rows of which calibration takes 16, leaving 44" in message
    needed = config.held_out_rows_needed(0.4)
    assert f"needs at least {needed} held-out rows at confirm_fraction=0.4" in message


@pytest.mark.parametrize("entry", ["layernrom", "LayerNorm", "layer_norm", "Gelu", "residuals", "softmx"])
def test_misspelt_patterns_are_refused_at_config_time(entry):
    message = refused("quantization=static", "exclusion=auto", f"exclusion.start_from=[{entry}]")
    assert f"`exclusion.start_from` is [{entry!r}]" in message and "Pattern names are exact" in message
    assert f"`exclusion.nodes` is [{entry!r}]" in refused(f"exclusion.nodes=[{entry}]")


@pytest.mark.parametrize("entry", ["/distilbert/embeddings/Add", "Add_12", "/classifier/MatMul", "Mul"])
def test_entries_that_can_be_node_names_wait_for_the_graph(entry):
    assert ExclusionConfig(nodes=[entry]).nodes == [entry]


def test_entropy_calibration_needs_no_more_quantized_bins_than_bins():
    # ONNX Runtime's entropy calibrator has no threshold to try then (a numpy error after the export)
    message = refused("calibration=entropy", "calibration.num_bins=128", "calibration.num_quantized_bins=256")
    assert "`calibration.num_quantized_bins` is 256" in message and "at most 128" in message
    assert to_run_config(composed("calibration=entropy")).calibration.num_quantized_bins == 128


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("dataset.label_names=[]", "`dataset.label_names` is []"),
        ("dataset.name=''", "`dataset.name` is ''"),
        ("dataset.revision=''", "`dataset.revision` is ''"),
        ("dataset.eval_split=''", "`dataset.eval_split` is ''"),
        ("revision=''", "`revision` is ''"),
        ("exclusion.holdout_split=''", "`exclusion.holdout_split` is ''"),
    ],
)
def test_empty_values_that_would_silently_mean_the_default_are_refused(override, named):
    # an empty list or string reads as "not given" (label_names=[] was the CoNLL order, an empty
    # holdout_split the calibration split): null says that, an empty value is a mistake
    assert named in refused(override)


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (-1, r"Row 1 \(word 2\) of the tag column 'ner_tags' .* holds the id -1: tag ids run from 0 to 8"),
        (-100, r"Row 1 \(word 2\) of .* holds the id -100: .*-100 for sub-tokens"),
        (9, r"Row 1 \(word 2\) of .* holds the id 9, but only 9 tag names are known"),
    ],
)
@pytest.mark.usefixtures("datasets_cache_in_tmp")
def test_token_tag_ids_outside_the_names_are_refused_with_row_and_value(tmp_path, bad, expected):
    rows = [
        {"tokens": ["Anna", "visited", "Oslo"], "ner_tags": [1, 0, 5]},
        {"tokens": ["Tom", "met", "Li"], "ner_tags": [1, 0, bad]},
    ]
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=expected):
        load_split(DatasetConfig(path=str(tmp_path)), "validation")


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([0, 1, -1], r"Row 2 of the label column 'label' .* holds the id -1: label ids run from 0 to 1"),
        ([0, 5, 1], r"Row 1 of the label column 'label' .* holds the id 5, but only 2 label names are known"),
    ],
)
@pytest.mark.usefixtures("datasets_cache_in_tmp")
def test_text_label_ids_outside_the_names_are_refused_with_row_and_value(tmp_path, labels, expected):
    from datasets import Dataset

    from quantsweep.tasks import text_classification

    Dataset.from_dict({"sentence": ["a b", "c", "d e"], "label": labels}).to_parquet(
        str(tmp_path / "validation.parquet")
    )
    cfg = DatasetConfig(
        path=str(tmp_path),
        name=None,
        revision=None,
        data_keys={"primary": "sentence"},
        ref_keys=["label"],
        label_names=["no", "yes"],
    )
    with pytest.raises(DataError, match=expected):
        text_classification.load(cfg, "validation")
