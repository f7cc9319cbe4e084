"""Bad inputs get one paragraph naming the key, the value and what is allowed, before heavy work.

The cases of issue 22 run through the real `quantsweep` command on a tiny model and data, with
a timeout: on code without these checks several of them hang after the export (a timing
window of nan seconds never ends), and the timeout turns that into a failure. The config's
checks are also exercised in-process, key by key, where a subprocess per value would cost
seconds each.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from quantsweep import config
from quantsweep import testing as tiny

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
