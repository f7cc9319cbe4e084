"""The sweep report: the card's numbers, its parameter split, its section order, plots and CSV."""

from __future__ import annotations

import copy
import csv
import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantsweep.files import ERROR_FILE
from quantsweep.plots import drop_axis, pareto_front
from quantsweep.report import build_report
from quantsweep.sweep import load_sweep

SEED_CARD = Path(__file__).resolve().parents[3] / "shared" / "reference" / "seed_model_card.md"
SEED_ORDER = [
    "Fixed parameters:",
    "Benchmarked parameters:",
    "# Evaluation",
    "## Non-time metrics",
    "## Time metrics",
    "Below, time metrics",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def template_job(tmp_path_factory, distilbert_dir, conll_dir) -> Path:
    """One real job folder whose results.json the fixture sweeps are made from."""
    job = tmp_path_factory.mktemp("template") / "job"
    args = [
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        "benchmark.duration=0.02",
        "benchmark.batch_sizes=[1,2]",
        "benchmark.input_lengths=[8,16]",
        "benchmark.warmup=0",
        "benchmark.windows=2",
        "mlflow.enabled=false",
        f"hydra.run.dir={job}",
    ]
    subprocess.run(
        [sys.executable, "-m", "quantsweep.cli", *args], check=True, capture_output=True, cwd=job.parent
    )
    return job


def make_sweep(root: Path, template: Path, variants: list[dict[str, Any]], seed: int = 0) -> Path:
    """Job folders whose configs differ as ``variants`` say and whose numbers are random."""
    rng = random.Random(seed)
    base = json.loads((template / "results.json").read_text())
    for index, variant in enumerate(variants):
        results = copy.deepcopy(base)
        for group, values in variant.items():
            results["config"][group].update(values)
        for side in ("original", "quantized"):
            for metric in ("precision", "recall", "f1", "accuracy"):
                results[side][metric] = rng.random()
        for shape in results["timing"]["shapes"]:
            for side in ("original", "quantized"):
                shape[side]["mean_ms"] = rng.uniform(1, 500)
                shape[side]["throughput_samples_per_s"] = rng.uniform(1, 500)
            shape["speedup"] = shape["original"]["mean_ms"] / shape["quantized"]["mean_ms"]
            shape["window_speedups"] = [shape["speedup"] * 0.9, shape["speedup"] * 1.1]
        job = root / f"job{index}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(results["config"]))
        (job / "results.json").write_text(json.dumps(results))
    return root


def tables(card: str) -> list[list[list[str]]]:
    """Every markdown table of the card as rows of cells (header first, the alignment row dropped)."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*card.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set(":- ") for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def label(results: dict, keys: list[str]) -> list[str]:
    out = []
    for key in keys:
        value: object = results["config"]
        for part in key.split("."):
            value = value[part]  # type: ignore[index]
        text = value if isinstance(value, str) else repr(value)
        out.append(f"`{text}`")
    return out


THREE_GROUPS = [
    {"quantization": {"approach": a}, "operators": {"operators_to_quantize": o}, "exclusion": {"nodes": e}}
    for a in ("dynamic", "static")
    for o in (["Add"], ["Add", "MatMul"])
    for e in ([], ["layernorm", "gelu", "residual", "gather", "softmax"])
]


def test_card_numbers_parse_back_to_the_results(tmp_path, template_job):
    sweep = make_sweep(tmp_path / "sweep", template_job, THREE_GROUPS)
    files = build_report(sweep)
    card = files.card.read_text()
    keys = ["quantization.approach", "operators.operators_to_quantize", "exclusion.nodes"]
    by_label = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        results = json.loads((job / "results.json").read_text())
        by_label[tuple(label(results, keys))] = results
    parsed = tables(card)
    metrics_table = parsed[0]
    assert metrics_table[0][:3] == keys
    assert len(metrics_table) == 1 + 8
    for row in metrics_table[1:]:
        assert tuple(row[:3]) in by_label, (row[:3], list(by_label))
        results = by_label[tuple(row[:3])]
        expected = [
            results[side][m]
            for m in ("precision", "recall", "f1", "accuracy")
            for side in ("original", "quantized")
        ]
        assert [float(c) for c in row[3:]] == pytest.approx(expected, abs=0.0005)
    shapes = json.loads((sweep / "job0" / "results.json").read_text())["timing"]["shapes"]
    time_tables = parsed[1 : 1 + len(shapes)]
    for shape_index, table in enumerate(time_tables):
        for row in table[1:]:
            s = by_label[tuple(row[:3])]["timing"]["shapes"][shape_index]
            expected = [
                s["original"]["mean_ms"],
                s["quantized"]["mean_ms"],
                s["original"]["throughput_samples_per_s"],
                s["quantized"]["throughput_samples_per_s"],
                s["speedup"],
            ]
            assert [float(c) for c in row[3:8]] == pytest.approx(expected, abs=0.005)
    for shape in shapes:
        assert (
            f"Below, time metrics for batch size = {shape['batch_size']}, input length = {shape['input_length']}."
            in card
        )
    assert "samples (sequences) per second" in card


@pytest.mark.parametrize(
    ("variants", "benchmarked"),
    [
        (
            [{"quantization": {"approach": "dynamic"}}, {"quantization": {"approach": "static"}}],
            ["quantization.approach"],
        ),
        (
            [
                {"quantization": {"approach": a}, "operators": {"operators_to_quantize": o}}
                for a in ("dynamic", "static")
                for o in (["Add"], ["MatMul"])
            ],
            ["quantization.approach", "operators.operators_to_quantize"],
        ),
        (THREE_GROUPS, ["quantization.approach", "operators.operators_to_quantize", "exclusion.nodes"]),
    ],
)
def test_fixed_and_benchmarked_parameters_are_computed_from_the_jobs(
    tmp_path, template_job, variants, benchmarked
):
    sweep = load_sweep(make_sweep(tmp_path / "sweep", template_job, variants))
    assert list(sweep.benchmarked) == benchmarked
    assert not set(sweep.fixed) & set(sweep.benchmarked)
    assert sweep.fixed["framework_args.opset"] == 11 and "model_name_or_path" in sweep.fixed
    card = build_report(sweep.path).card.read_text()
    fixed_part = card.split("Fixed parameters:")[1].split("Benchmarked parameters:")[0]
    bench_part = card.split("Benchmarked parameters:")[1].split("# Evaluation")[0]
    for key in benchmarked:
        assert f"**{key}**" in bench_part and key.split(".")[-1] not in fixed_part
    assert "**opset**: `11`" in fixed_part


def test_section_order_follows_the_seed_card(tmp_path, template_job):
    card = build_report(make_sweep(tmp_path / "sweep", template_job, THREE_GROUPS[:2])).card.read_text()
    positions = [card.index(marker) for marker in SEED_ORDER]
    assert positions == sorted(positions)
    assert card.startswith("---\npipeline_tag: token-classification\n")
    for marker in ("**task**:", "**Backend:**", "**Backend args:**", "**Number of evaluation samples:**"):
        assert card.index(marker) < card.index("Fixed parameters:")
    if SEED_CARD.is_file():  # the reference itself, where the shared folder is beside the checkout
        seed = SEED_CARD.read_text()
        assert [seed.index(m) for m in SEED_ORDER] == sorted(seed.index(m) for m in SEED_ORDER)


def test_plots_csv_and_failed_jobs(tmp_path, template_job):
    sweep = make_sweep(tmp_path / "sweep", template_job, THREE_GROUPS[:3])
    failed = sweep / "job-failed"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "config.yaml").write_text(
        (sweep / "job0" / ".hydra" / "config.yaml").read_text().replace("dynamic", "static")
    )
    (failed / ERROR_FILE).write_text("ExclusionError: `exclusion.nodes` contains 'nope'\n")
    files = build_report(sweep)
    for plot in files.plots:
        data = plot.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    card = files.card.read_text()
    assert "## Failed jobs" in card and "`job-failed`: ExclusionError" in card
    rows = list(csv.DictReader(files.csv.open()))
    shapes = len(json.loads((sweep / "job0" / "results.json").read_text())["timing"]["shapes"])
    assert len(rows) == 3 * shapes
    first = json.loads((sweep / "job0" / "results.json").read_text())
    row = next(r for r in rows if r["job"] == "job0" and r["batch_size"] == "1" and r["input_length"] == "8")
    assert float(row["f1_optimized"]) == pytest.approx(first["quantized"]["f1"])
    assert float(row["latency_mean_ms_original"]) == pytest.approx(
        first["timing"]["shapes"][0]["original"]["mean_ms"]
    )


def test_nothing_quantized_is_noted(tmp_path, template_job):
    sweep = make_sweep(tmp_path / "sweep", template_job, THREE_GROUPS[:2])
    results = json.loads((sweep / "job0" / "results.json").read_text())
    results["graph"].update(nothing_quantized=True, note="Nothing was quantized: test.", nodes_quantized=0)
    (sweep / "job0" / "results.json").write_text(json.dumps(results))
    card = build_report(sweep).card.read_text()
    assert "Configurations that quantized nothing" in card and "`job0`: Nothing was quantized: test." in card


def test_pareto_front():
    points = [(1.0, 0.9), (2.0, 0.8), (1.5, 0.7), (2.5, 0.1), (0.5, 0.95)]
    assert pareto_front(points) == [0, 1, 3, 4]


def test_the_drop_axis_zooms_on_the_budget_and_puts_collapsed_configs_off_scale():
    # the demo's shape: six configs within half a point, two collapsed to F1 0.03 (-88 points)
    drops = [0.0, 0.0, -0.2, -0.2, -87.8, -0.1, -88.6, -0.8]
    axis = drop_axis(drops, budget=0.5)
    assert axis.off_scale == [4, 6]
    kept = [d for i, d in enumerate(drops) if i not in axis.off_scale]
    assert all(axis.bottom < d < axis.top for d in [*kept, -0.5])  # every other drop, and the budget
    assert axis.top - axis.bottom < 2.0  # zoomed: the six share under two points, not 90
    # nothing collapsed: nothing off scale, and a wide spread is still shown whole
    wide = drop_axis([-3.0, -0.1, 0.2], budget=0.5)
    assert wide.off_scale == [] and wide.bottom < -3.0 and wide.top > 0.2


def test_the_pareto_plot_draws_collapsed_and_budget_configs(tmp_path, template_job):
    sweep = make_sweep(tmp_path / "sweep", template_job, THREE_GROUPS[:2])
    first = sweep / sorted(p.name for p in sweep.iterdir() if p.is_dir())[0] / "results.json"
    results = json.loads(first.read_text())
    results["quantized"]["f1"] = 0.03  # collapsed
    first.write_text(json.dumps(results))
    files = build_report(sweep)
    assert (sweep / "f1_vs_speedup.png") in files.plots and (sweep / "f1_vs_speedup.png").stat().st_size > 0


def test_report_command(tmp_path, template_job):
    sweep = make_sweep(tmp_path / "sweep", template_job, THREE_GROUPS[:2])
    out = subprocess.run(
        [sys.executable, "-m", "quantsweep.report", str(sweep)], check=True, capture_output=True, text=True
    )
    assert re.search(r"README\.md$", out.stdout.strip())
    assert (sweep / "results.csv").is_file()


def test_shape_tables_match_each_jobs_own_shapes_in_a_benchmark_sweep(tmp_path, template_job):
    """A sweep over benchmark.*: jobs time different shapes, listed in different orders."""
    sweep = make_sweep(tmp_path / "sweep", template_job, THREE_GROUPS[:2])
    second = json.loads((sweep / "job1" / "results.json").read_text())
    # job1 timed only batch size 2, at its lengths in reverse order, with its own duration
    second["timing"]["shapes"] = [s for s in reversed(second["timing"]["shapes"]) if s["batch_size"] == 2]
    second["timing"]["duration_s"] = 7.0
    second["config"]["benchmark"]["batch_sizes"] = [2]
    (sweep / "job1" / "results.json").write_text(json.dumps(second))
    card = build_report(sweep).card.read_text()
    sections = card.split("Below, time metrics for batch size = ")[1:]
    results = {job: json.loads((sweep / job / "results.json").read_text()) for job in ("job0", "job1")}
    keys = list(load_sweep(sweep).benchmarked)
    assert keys == ["exclusion.nodes", "benchmark.batch_sizes"]
    labels = {tuple(label(r, keys)): r for r in results.values()}
    seen: dict[tuple[int, int], int] = {}
    for section in sections:
        batch, length = (int(x) for x in re.match(r"(\d+), input length = (\d+)\.", section).groups())  # type: ignore[union-attr]
        table = tables(section)[0]
        seen[(batch, length)] = len(table) - 1
        for row in table[1:]:
            owner = labels[tuple(row[:2])]
            shape = next(
                s
                for s in owner["timing"]["shapes"]
                if (s["batch_size"], s["input_length"]) == (batch, length)
            )
            assert float(row[2]) == pytest.approx(shape["original"]["mean_ms"], abs=0.005)
            assert float(row[6]) == pytest.approx(shape["speedup"], abs=0.005)
    assert seen == {(1, 8): 1, (1, 16): 1, (2, 8): 2, (2, 16): 2}
    assert "`job1`: 7 s per model and shape" in card


def test_truncation_and_instruction_sets_are_stated(tmp_path, template_job):
    sweep = make_sweep(tmp_path / "sweep", template_job, THREE_GROUPS[:2])
    for job in ("job0", "job1"):
        results = json.loads((sweep / job / "results.json").read_text())
        results["original"].update(num_truncated=3, truncated_words=11, num_samples=40)
        results["dataset"]["eval_max_length"] = 64
        results["environment"]["int8_instruction_sets"] = ["AVX2", "AVX-512F"]
        results["quantization"]["instruction_set"] = "avx512_vnni"
        (sweep / job / "results.json").write_text(json.dumps(results))
    card = build_report(sweep).card.read_text()
    assert "Truncation: 3 of 40 evaluation sentences are longer than 64 tokens: 11 words past the cut" in card
    backend = card.split("**Backend args:** `")[1].split("`")[0]
    assert "'cpu_int8_instruction_sets': ['AVX2', 'AVX-512F']" in backend
    assert "'quantization_preset': 'avx512_vnni'" in backend


def test_results_of_every_schema_version_still_make_a_card(tmp_path, template_job):
    """Files of schema 1 to 4 lack only fields that read back with a default (docs/results_schema.md)."""
    sweep = make_sweep(tmp_path / "sweep", template_job, [{"quantization": {"approach": "dynamic"}}] * 2)
    current = json.loads((sweep / "job0" / "results.json").read_text())
    old = copy.deepcopy(current)
    old["schema_version"] = 1
    for key in ("phase_seconds", "cache", "exclusion_search", "reproduces"):
        del old[key]
    for key in ("int8_instruction_sets", "code_sha256", "installed_from"):
        del old["environment"][key]
    for side in ("original", "quantized"):
        del old[side]["truncated_words"]
    del old["timing"]["allow_spinning"]
    del old["config"]["task"]  # a config from before the task group still reads as token classification
    (sweep / "job1" / "results.json").write_text(json.dumps(old))
    loaded = {job.name: job for job in load_sweep(sweep).jobs}
    assert loaded["job1"].results is not None and loaded["job1"].results.timing.allow_spinning is None
    assert loaded["job1"].results.original.f1 == old["original"]["f1"]
    assert loaded["job0"].results is not None and loaded["job0"].results.to_dict() == current
    card = build_report(sweep, plots=False).card.read_text()
    assert "f1 (original)" in card and "job1" not in card.split("## Failed jobs")[-1]
