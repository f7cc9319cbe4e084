"""Bad inputs get one paragraph naming the key, the value and what is allowed, before heavy work.

The cases of issue 22 run through the real `quantsweep` command on a tiny model and data, with
a timeout: on code without these checks several of them hang after the export (a timing
window of nan seconds never ends), and the timeout turns that into a failure. The config's
checks are also exercised in-process, key by key, where a subprocess per value would cost
seconds each.
"""

from __future__ import annotations

import json
import math
import subprocess
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module

from quantsweep import config
from quantsweep import testing as tiny
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

# the limits and helpers these checks added are read as config.<name> inside the tests, so
# that this file still collects, test by test, on code without them

# a refusal comes within seconds; code that does not refuse may run to the end of a job or
# hang in its timing, and this bounds how long a test waits for either
TIMEOUT = 120

# settings that let a job on the tiny model finish in seconds when nothing refuses it, so
# that a missing check shows as a finished job (or a hang), not as some other error
QUICK = {
    "benchmark.batch_sizes": "[1]",
    "benchmark.input_lengths": "[8]",
    "benchmark.duration": "0.02",
    "benchmark.windows": "1",
    "benchmark.warmup": "0",
    "benchmark.threads": "1",
    "calibration.num_calibration_samples": "8",
    "dataset.max_eval_samples": "8",
    "mlflow.enabled": "false",
}
# exclusion=auto that the tiny data (40 train rows) can serve: 8 calibrate, 30 held out
AUTO = {
    "quantization": "static",
    "exclusion": "auto",
    "exclusion.holdout_samples": "30",
    "exclusion.confirm_fraction": "0",
    "exclusion.sensitivity_samples": "8",
    "exclusion.speed_seconds": "0.05",
    "exclusion.max_evaluations": "3",
}


def run_cli(tmp_path: Path, model: Path, data: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    """The `quantsweep` command on ``model`` and ``data``, QUICK settings replaced by ``overrides``."""
    settings = {**QUICK, **overrides}
    try:
        return tiny.run_module(
            "quantsweep.cli",
            f"model_name_or_path={model}",
            f"dataset.path={data}",
            f"cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'job'}",
            *(f"{key}={value}" for key, value in settings.items()),
            cwd=tmp_path,
            check=False,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"quantsweep {overrides} was not refused within {TIMEOUT} s (it ran on)")


def refusal(tmp_path: Path, result: subprocess.CompletedProcess[str], *, before_export: bool = True) -> str:
    """The one paragraph a refused run printed, after checking how it ended."""
    assert result.returncode == 2, f"exit code {result.returncode}:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not list(tmp_path.rglob("results.json"))
    if before_export:
        assert not list(tmp_path.rglob("*.onnx")), "refused only after the export"
    message = result.stderr.rsplit("\nquantsweep: ", 1)[1].strip()
    assert "\n" not in message  # one paragraph
    return message


# ---------------------------------------------------------------- the cases of issue 22, by the CLI


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        # nan and inf: a timing window that never ends, a time limit that never fires
        ({"benchmark.duration": "nan"}, "`benchmark.duration` is nan"),
        ({"benchmark.duration": "inf"}, "`benchmark.duration` is inf"),
        ({**AUTO, "exclusion.speed_seconds": "nan"}, "`exclusion.speed_seconds` is nan"),
        ({**AUTO, "exclusion.max_minutes": "nan"}, "`exclusion.max_minutes` is nan"),
        # numpy refuses a negative seed, after the export
        ({"seed": "-1"}, "`seed` is -1"),
        # calibrating on the rows the quantized model is then scored on
        (
            {"quantization": "static", "dataset.calibration_split": "validation"},
            "`dataset.calibration_split` is 'validation'",
        ),
        # (20 held-out rows at confirm_fraction 0.01: test_too_few_confirmation_rows_... below)
        # the same shape timed twice, under one MLflow key
        ({"benchmark.batch_sizes": "[1,1]"}, "`benchmark.batch_sizes` is [1, 1]"),
        ({"benchmark.input_lengths": "[8,8]"}, "`benchmark.input_lengths` is [8, 8]"),
        # a misspelt pattern: no node of any export is named like that
        ({**AUTO, "exclusion.start_from": "[layernrom]"}, "`exclusion.start_from` is ['layernrom']"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_bad_value_is_refused_before_the_export(tmp_path, distilbert_dir, conll_dir, overrides, named):
    message = refusal(tmp_path, run_cli(tmp_path, distilbert_dir, conll_dir, **overrides))
    assert message.startswith("Invalid configuration: ") and named in message


def test_too_few_confirmation_rows_are_refused_with_the_rows_needed(tmp_path, distilbert_dir, conll_dir):
    # 20 held-out rows at 0.01 confirmed on round(0.2) = 0 rows, silently
    result = run_cli(
        tmp_path,
        distilbert_dir,
        conll_dir,
        **{**AUTO, "exclusion.holdout_samples": "20", "exclusion.confirm_fraction": "0.01"},
    )
    message = refusal(tmp_path, result)
    assert "`exclusion.confirm_fraction` is 0.01" in message and "of 20 held-out rows" in message
    needed = config.held_out_rows_needed(0.01)
    assert "keeps back 0 to confirm" in message and f"exclusion.holdout_samples={needed} or more" in message
    assert f"at least {config.MIN_BOOTSTRAP_ROWS} rows" in message and "confirm_fraction=0" in message


def test_a_timing_shape_longer_than_the_model_takes_is_refused_before_the_export(
    tmp_path, distilbert_dir, conll_dir
):
    result = run_cli(tmp_path, distilbert_dir, conll_dir, **AUTO, **{"exclusion.timing_shape": "[1,300]"})
    message = refusal(tmp_path, result)
    assert "`exclusion.timing_shape` is [1, 300]" in message and "at most 256 tokens" in message
    assert "exclusion.timing_shape=[1,256]" in message  # what would be allowed


def test_a_node_name_in_start_from_is_checked_against_the_graph_and_named_by_its_key(
    tmp_path, distilbert_dir, conll_dir
):
    # only the exported graph knows its node names: refused after the export, before calibration
    typo = "/classifier/Matmul"
    result = run_cli(tmp_path, distilbert_dir, conll_dir, **AUTO, **{"exclusion.start_from": f"[{typo}]"})
    message = refusal(tmp_path, result, before_export=False)
    assert f"`exclusion.start_from` contains {typo!r}" in message and "`exclusion.nodes`" not in message
    assert "Closest node names: /classifier/MatMul" in message
    assert not (tmp_path / "cache" / "calibration").exists()


def _integer_tagged(folder: Path, bad: int) -> Path:
    """CoNLL-like data with integer tags (no names: the CoNLL-2003 order), one of them ``bad``."""
    folder.mkdir()
    for split, count, seed in (("train", 40, 1), ("validation", 24, 2)):
        rows = [
            (tokens, [tiny.LABELS.index(tag) for tag in tags]) for tokens, tags in tiny.sentences(count, seed)
        ]
        if split == "validation":
            rows[3][1][1] = bad
        lines = (json.dumps({"tokens": tokens, "ner_tags": ids}) + "\n" for tokens, ids in rows)
        (folder / f"{split}.jsonl").write_text("".join(lines))
    return folder


def test_a_negative_tag_id_is_refused_with_its_row_and_value(tmp_path, distilbert_dir):
    # -100 was an IndexError traceback after the export; -1, which silently became the last
    # tag (I-MISC), takes the same path and is checked in-process below
    data = _integer_tagged(tmp_path / "data", -100)
    message = refusal(tmp_path, run_cli(tmp_path, distilbert_dir, data))
    assert "Row 3 (word 1) of the tag column 'ner_tags'" in message and "holds the id -100" in message
    assert "tag ids run from 0 to 8" in message


@pytest.mark.slow  # a whole job: export, calibration, evaluation and timing
def test_calibrating_on_the_evaluation_split_knowingly_runs_and_results_record_it(
    tmp_path, distilbert_dir, conll_dir
):
    result = run_cli(
        tmp_path,
        distilbert_dir,
        conll_dir,
        **{
            "quantization": "static",
            "dataset.calibration_split": "validation",
            "dataset.calibrate_on_eval_split": "true",
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert results["config"]["dataset"]["calibrate_on_eval_split"] is True
    assert results["dataset"]["calibration_split"] == results["dataset"]["eval_split"] == "validation"
    log = (tmp_path / "job" / "quantsweep.log").read_text()
    assert "Calibrating on the evaluation split validation" in log


# ---------------------------------------------------------------- every key of the schema, in-process


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


# ---------------------------------------------------------------- label ids, where the data is read


@pytest.fixture
def datasets_cache_in_tmp(tmp_path, monkeypatch):
    """datasets writes the Arrow copies of what it loads here, not into the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


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
