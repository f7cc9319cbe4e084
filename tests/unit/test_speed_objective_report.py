"""exclusion.objective=speed in the job's plot, the sweep card and MLflow, from hand-made results (no timing)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
import yaml

from quantsweep.plots import plot_sensitivity, sensitivity_figure, speed_front
from quantsweep.records import (
    Confirmation,
    Environment,
    EvaluationDrop,
    ExclusionSearchResult,
    ExportFacts,
    GraphFacts,
    LatencyStats,
    NodeGroup,
    NodeSensitivity,
    QuantizationFacts,
    RowsResolution,
    SearchStep,
    ShapeTiming,
    TimingResult,
)
from quantsweep.report.exclusion_search import search_section as _search_section
from quantsweep.results import JobResults
from quantsweep.sweep import Sweep, load_sweep
from quantsweep.tasks.token_classification.scores import EvaluationResult
from quantsweep.tracking import metrics_of, step_metrics

NODES = [
    f"/encoder/layer.{i}/{op}" for i in range(4) for op in ("attention/Add", "output/MatMul", "gelu/Mul")
]
BUDGET = 0.005
FP32_F1 = 0.9


def step(
    index: int, phase: str, kept: int, drop: float, bound: float, speed: tuple[float, float, float] | None
) -> SearchStep:
    return SearchStep(
        step=index,
        phase=phase,
        nodes=NODES[:kept],
        f1=round(FP32_F1 - drop, 6),
        f1_drop=drop,
        f1_drop_bound=bound,
        meets_budget=bound <= BUDGET,
        seconds=2.0,
        changed=NODES[:1],
        speedup=speed[0] if speed else None,
        speedup_min=speed[1] if speed else None,
        speedup_max=speed[2] if speed else None,
    )


def ranking() -> list[NodeSensitivity]:
    return [
        NodeSensitivity(
            node=n, op_type=n.rsplit("/", 1)[-1], sqnr_db=5.0 + i, tensor=f"{n}_output_0", rank=i + 1
        )
        for i, n in enumerate(NODES)
    ]


def searched(steps: list[SearchStep], chosen: SearchStep, **fields: Any) -> ExclusionSearchResult:
    """A search over ``ranking()`` that chose ``chosen``, within the budget; ``fields`` add the rest."""
    return ExclusionSearchResult(
        strategy="bisect",
        max_f1_drop=BUDGET,
        confidence=fields.pop("confidence", 0.95),
        start_from=[],
        start_nodes=[],
        holdout_samples=200,
        holdout_fingerprint="abc",
        sensitivity_samples=32,
        fp32_f1=FP32_F1,
        ranking=ranking(),
        steps=steps,
        chosen=chosen.nodes,
        chosen_f1=chosen.f1,
        meets_budget=True,
        stopped_by="done",
        evaluations=len(steps),
        **fields,
    )


def speed_search() -> ExclusionSearchResult:
    """A speed search: a collapsed start, a dominated step, a first choice the confirmation rows reject."""
    steps = [
        step(0, "start", 0, 0.8, 0.81, (1.9, 1.8, 2.0)),
        step(1, "grow", 10, 0.001, 0.003, (1.40, 1.31, 1.47)),
        step(2, "grow", 5, 0.003, 0.009, (1.55, 1.50, 1.61)),
        step(3, "prune", 8, 0.002, 0.004, (1.50, 1.42, 1.58)),
        step(4, "prune", 9, 0.002, 0.002, (1.30, 1.22, 1.36)),  # beaten by step 3 on both axes
    ]
    return searched(
        steps,
        steps[1],
        seconds=95.0,
        sensitivity_seconds=10.0,
        objective="speed",
        search_rows=120,
        confirm_rows=80,
        chosen_step=1,
        timing_shape=[1, 128],
        speed_seconds=1.0,
        groups=[
            NodeGroup("Mul", "op_type", NODES[2::3], 1.08, 1.02, 1.12, kept=True),
            NodeGroup("attention_add", "pattern", NODES[0::3], 0.97, 0.93, 1.01, kept=False),
        ],
        group_seconds=12.0,
        confirmations=[
            Confirmation(3, 8, 0.894, 0.9, 0.006, 0.009, 0.983, meets_budget=False),
            Confirmation(1, 10, 0.899, 0.9, 0.001, 0.004, 0.983, meets_budget=True),
        ],
        resolution=RowsResolution(
            step=2, rows=120, margin=0.006, resolved=False, rows_needed=1729, holdout_samples_needed=2882
        ),
    )


def old_search() -> ExclusionSearchResult:
    """A search as results.json files before the speed objective hold it: none of the new fields."""
    steps = [step(0, "start", 0, 0.8, 0.8, None), step(1, "grow", 6, 0.002, 0.002, None)]
    return searched(steps, steps[1], confidence=None, seconds=30.0, sensitivity_seconds=5.0)


def scores(f1: float) -> EvaluationResult:
    return EvaluationResult(
        precision=f1,
        recall=f1,
        f1=f1,
        accuracy=f1,
        per_entity={},
        num_samples=300,
        num_truncated=0,
        seconds=1.0,
    )


def latency(ms: float) -> LatencyStats:
    return LatencyStats(ms, 0.1, ms, ms, ms, ms, 100, 1.0, 1000 / ms, 1000 / ms)


def timing(speedup: float) -> TimingResult:
    shape = ShapeTiming(
        1, 128, latency(10.0), latency(10.0 / speedup), speedup, [speedup - 0.1, speedup + 0.1]
    )
    return TimingResult(1.0, 2, 0, 1, 1, "sequential", "all", False, "random tokens", [shape])


def job_results(
    exclusion: str,
    operators: str,
    f1: float,
    speedup: float,
    kept: int,
    search: ExclusionSearchResult | None,
    eval_split: str = "validation",
) -> JobResults:
    objective = search.objective if search else "speed"
    config = {
        "task": "token-classification",
        "model_name_or_path": "tiny",
        "quantization": {"approach": "static"},
        "operators": {"operators_to_quantize": operators.split("_")},
        "exclusion": {"nodes": ["gelu"] if exclusion == "sensitive" else [], "auto": search is not None}
        | ({"objective": objective} if search else {}),
        "dataset": {"eval_split": eval_split},
    }
    return JobResults(
        config=config,
        choices={"quantization": "static", "operators": operators, "exclusion": exclusion},
        environment=Environment("cpu", [], 2, 2, "linux", "3.11", {}, None, "host"),
        export=ExportFacts(17, 0, "none", "eager", "bert", 1.0),
        quantization=QuantizationFacts(
            "static", "QDQ", "static", "QInt8", "QInt8", False, False, "avx2", True, "minmax", 100
        ),
        graph=GraphFacts(
            operators.split("_"), {"MatMul": 40 - kept}, 40 - kept, 40, NODES[:kept], {}, 10.0, 3.0, False, ""
        ),
        original=scores(0.91),
        quantized=scores(f1),
        timing=timing(speedup),
        wall_seconds=60.0,
        dataset={"eval_split": "validation", "eval_samples": 300},
        exclusion_search=search,
        # the speed job's evaluation split: its drop, bounded as the search bounds its rows
        eval_drop=(
            EvaluationDrop("f1", 300, round(0.91 - f1, 6), 0.0071, 0.95, False)
            if search and search.objective == "speed"
            else None
        ),
    )


def write_sweep(root: Path, jobs: dict[str, JobResults]) -> Sweep:
    for name, results in jobs.items():
        (root / name / ".hydra").mkdir(parents=True)
        (root / name / ".hydra" / "config.yaml").write_text(yaml.safe_dump(results.config))
        results.write(root / name)
    return load_sweep(root)


@pytest.fixture
def sweep(tmp_path: Path) -> Sweep:
    return write_sweep(
        tmp_path,
        {
            "static-add_matmul-auto": job_results("auto", "add_matmul", 0.906, 1.45, 10, speed_search()),
            "static-add_matmul-auto-fewest": job_results("auto", "add_matmul", 0.905, 1.35, 6, old_search()),
            "static-add_matmul-none": job_results("none", "add_matmul", 0.20, 1.90, 0, None),
            "static-add_matmul-sensitive": job_results("sensitive", "add_matmul", 0.908, 1.20, 14, None),
            # not compared: other operators, or the same choices evaluated on another split
            "static-matmul-sensitive": job_results("sensitive", "matmul", 0.909, 1.10, 12, None),
            "static-add_matmul-sensitive-test": job_results(
                "sensitive", "add_matmul", 0.8, 1.21, 14, None, eval_split="test"
            ),
        },
    )


def tables(text: str) -> dict[str, list[list[str]]]:
    """Every markdown table, by its header line, as rows of cells (the alignment row dropped)."""
    found: dict[str, list[list[str]]] = {}
    header = ""
    for line in [*text.splitlines(), ""]:
        if not line.startswith("|"):
            header = ""
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not header:
            header = " | ".join(cells)
            found.setdefault(header, [])
        elif not all(set(c) <= set(":- ") for c in cells):
            found[header].append(cells)
    return found


def subsection(sweep: Sweep, job: str) -> str:
    text = "\n".join(_search_section(sweep))
    return text.split(f"### `{job}`")[1].split("\n### ")[0]


def test_speed_panel_plots_speed_against_drop_with_the_front_and_the_choice(tmp_path: Path) -> None:
    search = speed_search()
    fig = sensitivity_figure(search)
    try:
        assert len(fig.axes) == 3
        speed = fig.axes[2]
        # the collapsed start (a drop of 0.8) is clipped to the axis' edge, not stretching it
        assert speed.get_xlim()[1] < 0.04
        labels = speed.get_legend_handles_labels()[1]
        assert "chosen (step 1, 1.40x)" in labels
        [front] = [line for line in speed.get_lines() if line.get_label() == "Pareto front"]
        # step 4 (drop 0.002, 1.30x) is beaten by step 3 (0.002, 1.50x); the clipped start ends the front
        assert np.asarray(front.get_ydata()).tolist() == [1.40, 1.50, 1.55, 1.9]
        assert np.asarray(front.get_xdata())[-1] == pytest.approx(0.03)
        [fp32] = [line for line in speed.get_lines() if line.get_label() == "fp32 speed"]
        assert np.asarray(fp32.get_ydata()).tolist() == [1.0, 1.0]
    finally:
        plt.close(fig)
    old = sensitivity_figure(old_search())
    assert len(old.axes) == 2
    plt.close(old)
    with_speed, without = tmp_path / "speed.png", tmp_path / "old.png"
    plot_sensitivity(search, with_speed)
    plot_sensitivity(old_search(), without)
    assert with_speed.stat().st_size > without.stat().st_size > 10_000


def test_speed_front_keeps_what_nothing_beats_on_both_drop_and_speed() -> None:
    points = [(0.001, 1.4), (0.002, 1.5), (0.002, 1.3), (0.003, 1.5), (0.0, 1.2)]
    assert speed_front(points) == [0, 1, 4]


def test_card_says_the_objective_and_the_rows_that_chose_confirmed_and_report(sweep: Sweep) -> None:
    text = "\n".join(_search_section(sweep))
    summary = tables(text)[
        "job | objective | strategy | start nodes | kept in fp32 | held-out F1 fp32 | held-out F1 chosen | "
        "max F1 drop (confidence) | within budget | steps (ended by) | seconds"
    ]
    assert [row[:2] for row in summary] == [
        ["`static-add_matmul-auto`", "speed"],
        ["`static-add_matmul-auto-fewest`", "fewest_fp32"],
    ]
    mine = subsection(sweep, "static-add_matmul-auto")
    assert "Objective `speed`: of the sets within the budget, the fastest" in mine
    assert "the chosen set ran at 1.40x fp32" in mine
    assert tables(mine)["rows | count | F1 drop | bound"] == [
        ["chose the set (search rows)", "120", "+0.0010", "+0.0030 (confidence 0.95)"],
        ["confirmed it", "80", "+0.0010", "+0.0040 (confidence 0.983)"],
        ["reports it (evaluation split)", "300", "+0.0040", "+0.0071 (confidence 0.95) **over the budget**"],
    ]
    tried = tables(mine)["step | kept in fp32 | fp32 F1 | F1 | drop | bound | confidence | confirmed"]
    assert [[row[0], row[-1]] for row in tried] == [["3", "**no**"], ["1", "yes"]]
    assert (
        "Step 3's set, the search's first choice, did not hold on the confirmation rows; the search fell back "
        "to step 1's set (10 nodes kept), which held." in mine
    )
    assert "Objective `fewest_fp32`: of the sets within the budget, the one keeping the fewest" in subsection(
        sweep, "static-add_matmul-auto-fewest"
    )


def test_card_warns_when_the_held_out_rows_cannot_resolve_the_budget(sweep: Sweep) -> None:
    mine = subsection(sweep, "static-add_matmul-auto")
    first = mine.strip().split("\n\n")[0]
    assert first.startswith("**120 search rows cannot resolve a budget of 0.005: the bootstrap adds 0.0060")
    # 1729 search rows at the search's share (120 of 200 held-out rows)
    assert "about 1729 search rows would, i.e. exclusion.holdout_samples of about 2882" in first
    assert first.endswith("**")
    assert "cannot resolve" not in subsection(sweep, "static-add_matmul-auto-fewest")


def test_the_confirmation_rows_are_warned_about_after_the_search_rows() -> None:
    found = replace(speed_search(), confirm_resolution=RowsResolution(3, 80, 0.007, False, 1568))
    warnings = found.resolution_warnings()
    assert [w.split(" cannot")[0] for w in warnings] == ["120 search rows", "80 confirmation rows"]
    assert warnings[1].endswith("about 1568 confirmation rows would (or a larger exclusion.holdout_split).")


def test_card_lists_the_speed_groups_and_the_timed_steps(sweep: Sweep) -> None:
    mine = subsection(sweep, "static-add_matmul-auto")
    assert "every candidate set at batch size 1, input length 128, 1 s per model and candidate" in mine
    assert "2 groups of nodes were timed kept in fp32 against the starting set (12 s)" in mine
    groups = tables(mine)[
        "group | kind | nodes | speed-up in fp32 (windows) | kept in fp32 (slower quantized)"
    ]
    assert groups == [
        ["`Mul`", "op_type", "4", "1.08x (1.02-1.12)", "yes"],
        ["`attention_add`", "pattern", "4", "0.97x (0.93-1.01)", ""],
    ]
    steps = tables(mine)[
        "step | phase | kept | changed | held-out F1 | drop | drop charged | within budget | "
        "speed-up (windows) | seconds"
    ]
    assert [row[0] for row in steps] == ["0", "1 **chosen**", "2", "3", "4"]
    assert steps[3][8] == "1.50x (1.42-1.58)"


def test_card_compares_the_jobs_that_differ_in_the_exclusion_only(sweep: Sweep) -> None:
    mine = subsection(sweep, "static-add_matmul-auto")
    compared = tables(mine)[
        "exclusion | job | candidates kept in fp32 | f1 change (evaluation split) | speed-up (windows)"
    ]
    assert compared == [
        ["`none`", "`static-add_matmul-none`", "0 of 40", "-0.7100", "bs1/len128: 1.90x (1.80-2.00)"],
        [
            "`sensitive`",
            "`static-add_matmul-sensitive`",
            "14 of 40",
            "-0.0020",
            "bs1/len128: 1.20x (1.10-1.30)",
        ],
        [
            "`auto (fewest_fp32)`",
            "`static-add_matmul-auto-fewest`",
            "6 of 40",
            "-0.0050",
            "bs1/len128: 1.35x (1.25-1.45)",
        ],
        [
            "`auto (speed)`",
            "`static-add_matmul-auto` (this job)",
            "10 of 40",
            "-0.0040",
            "bs1/len128: 1.45x (1.35-1.55)",
        ],
    ]
    assert "divides by an fp32 timing taken within that job" in mine


def test_an_old_search_renders_without_the_new_parts(sweep: Sweep) -> None:
    old = subsection(sweep, "static-add_matmul-auto-fewest")
    assert list(tables(old)) == [
        "rank | node | op type | SQNR (dB) | worst tensor | kept",
        "step | phase | kept | changed | held-out F1 | drop | drop charged | within budget | seconds",
        "exclusion | job | candidates kept in fp32 | f1 change (evaluation split) | speed-up (windows)",
    ]
    assert "**chosen**" not in old and "Confirmed on" not in old and "groups of nodes" not in old


def test_mlflow_metrics_of_the_speed_objective(sweep: Sweep) -> None:
    by_name = {job.name: job.results for job in sweep.finished}
    results = by_name["static-add_matmul-auto"]
    assert results is not None
    metrics = metrics_of(results)
    assert metrics["search/objective_speed"] == 1.0
    assert metrics["search/chosen_speedup"] == 1.40
    assert metrics["search/confirmed"] == 1.0
    assert (metrics["search/search_rows"], metrics["search/confirm_rows"]) == (120.0, 80.0)
    assert step_metrics(speed_search().steps[2]) == {
        "search/step_f1": pytest.approx(0.897),
        "search/step_nodes_kept": 5.0,
        "search/step_speedup": 1.55,
    }
    old = by_name["static-add_matmul-auto-fewest"]
    assert old is not None
    old_metrics = metrics_of(old)
    assert old_metrics["search/objective_speed"] == 0.0
    assert not {"search/chosen_speedup", "search/confirmed", "search/search_rows"} & set(old_metrics)
    assert "search/step_speedup" not in step_metrics(old_search().steps[1])


def test_when_no_set_holds_the_card_reports_the_one_chosen(tmp_path: Path) -> None:
    search = speed_search()
    # neither holds: the smaller bound, the first tried (step 3's), is chosen, not the last
    search.confirmations[0].f1_drop_bound = 0.0055
    search.confirmations[1] = Confirmation(1, 10, 0.893, 0.9, 0.007, 0.008, 0.983, meets_budget=False)
    search.chosen_step, search.meets_budget = 3, False
    sweep = write_sweep(tmp_path, {"auto": job_results("auto", "add_matmul", 0.9, 1.4, 10, search)})
    mine = subsection(sweep, "auto")
    assert (
        "the search fell back to step 3's set, the smallest bound of the 2 tried, none of which held" in mine
    )
    confirmed = tables(mine)["rows | count | F1 drop | bound"][1]
    assert confirmed == ["confirmed it", "80", "+0.0060", "+0.0055 (confidence 0.983)"]
    results = sweep.finished[0].results
    assert results is not None and metrics_of(results)["search/confirmed"] == 0.0


SCHEMA_6_SEARCH_KEYS = (
    "objective",
    "search_rows",
    "confirm_rows",
    "chosen_step",
    "timing_shape",
    "speed_seconds",
    "groups",
    "group_seconds",
    "confirmations",
    "resolution",
    "confirm_resolution",
)
SCHEMA_6_STEP_KEYS = ("speedup", "speedup_min", "speedup_max")


def test_a_schema_5_search_without_the_new_keys_reads_back_and_renders_as_fewest_fp32(tmp_path: Path) -> None:
    import json
    from dataclasses import asdict

    from quantsweep.report import build_report

    record = job_results("auto", "add_matmul", 0.905, 1.1, 10, speed_search())
    write_sweep(tmp_path / "sweep", {"static-add_matmul-auto": record})
    results = record.to_dict()
    results["schema_version"] = 5
    del results["eval_drop"]
    search = results["exclusion_search"]
    for key in SCHEMA_6_SEARCH_KEYS:
        del search[key]
    for step_ in search["steps"]:
        for key in SCHEMA_6_STEP_KEYS:
            del step_[key]
    job = tmp_path / "sweep" / "static-add_matmul-auto"
    (job / "results.json").write_text(json.dumps(results))
    read = JobResults.from_dict(json.loads((job / "results.json").read_text()))
    assert read.exclusion_search is not None and read.eval_drop is None
    assert read.exclusion_search.objective == "fewest_fp32" and read.exclusion_search.groups == []
    assert read.exclusion_search.chosen_speedup is None
    assert {
        k: v for k, v in asdict(read.exclusion_search.steps[0]).items() if k not in SCHEMA_6_STEP_KEYS
    } == {k: v for k, v in search["steps"][0].items()}
    card = build_report(tmp_path / "sweep", plots=False).card.read_text()
    assert "## Exclusion search" in card and "fewest_fp32" in card
    assert (
        "Confirmed on" not in card
        and "speed-up (windows)" not in card.split("## Exclusion search")[1].split("|---")[0]
    )
