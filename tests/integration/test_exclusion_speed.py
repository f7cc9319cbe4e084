"""The speed objective on a model with planted latency: real quantization, real timing.

``latency_fixture`` builds a graph whose 12 Adds are about twice as slow quantized (each
becomes QuantizeLinear -> QLinearAdd -> DequantizeLinear on a million floats) and whose 3
MatMuls are not. The error is planted in the score: one MatMul costs 0.3 F1 when
quantized, everything else nothing, so the accuracy search's answer is known and the test
is about what timing adds to it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from latency_fixture import SHAPE, VOCAB_SIZE, PlantedLatency, write_planted_latency_model

from quantsweep.config import SearchObjective, SearchStrategy
from quantsweep.exclusion_search.candidates import CandidateModels, candidate_nodes
from quantsweep.exclusion_search.search import Scored, SearchBudget, search
from quantsweep.exclusion_search.speed import SpeedProbe, kept_nodes
from quantsweep.quantize import QuantizationRequest
from quantsweep.records import NodeSensitivity
from quantsweep.sessions import SessionSettings
from quantsweep.timing import synthetic_inputs

BUDGET = SearchBudget(max_f1_drop=0.01, max_evaluations=None, max_minutes=None)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> PlantedLatency:
    return write_planted_latency_model(tmp_path_factory.mktemp("latency"))


def _models(planted: PlantedLatency, folder: Path) -> tuple[CandidateModels, SpeedProbe]:
    # one thread: CI runs two test workers on two cores, and two-thread sessions beside another
    # busy worker time the scheduler more than the model (the planted Add effect stays ~1.5x)
    settings = SessionSettings.for_threads(1)
    request = QuantizationRequest(
        is_static=True,
        operators=planted.operators,
        nodes_to_exclude=[],
        per_channel=False,
        instruction_set="avx2",
        reduce_range=None,
    )
    models = CandidateModels(planted.model, request, planted.ranges, None, settings, None, folder)  # type: ignore[arg-type]
    inputs = synthetic_inputs(["input_ids"], SHAPE[0], SHAPE[1], VOCAB_SIZE, [], seed=0)
    return models, SpeedProbe(inputs, seconds=0.6, settings=settings)


def _ranking(planted: PlantedLatency) -> list[NodeSensitivity]:
    # graph order stands in for SQNR: the search's answer does not depend on the ranking
    nodes = candidate_nodes(planted.model, planted.operators)
    return [
        NodeSensitivity(node=name, op_type=op, sqnr_db=float(i), tensor=name, rank=i + 1)
        for i, (name, op, _) in enumerate(nodes)
    ]


def test_the_speed_objective_keeps_a_group_that_is_slower_quantized_and_fewest_fp32_does_not(
    planted: PlantedLatency, tmp_path: Path
) -> None:
    fragile = planted.fast[1]

    def score(kept: list[str]) -> Scored:
        lost = 0.0 if fragile in kept else 0.3
        return Scored(f1=0.9 - lost, drop_bound=lost)

    models, probe = _models(planted, tmp_path)
    ranking = _ranking(planted)
    groups = models.time_groups(probe, ranking, [])
    by_name = {g.name: g for g in groups}
    # measured: keeping the Adds in fp32 is faster in every window. The MatMuls cost about
    # the same either way, so their verdict is the noise's to decide and is not asserted;
    # what follows holds for whichever verdict they got.
    assert by_name["Add"].verdict == "slower" and by_name["Add"].speedup_min > 1.0
    slow = kept_nodes(groups)
    assert set(planted.slow) <= set(slow)

    timer = models.timer(probe)
    fastest = search(
        ranking,
        [],
        SearchStrategy.bisect,
        BUDGET,
        0.9,
        score,
        objective=SearchObjective.speed,
        timer=timer,
        fixed=slow,
    )
    fewest = search(ranking, [], SearchStrategy.bisect, BUDGET, 0.9, score, timer=timer)
    # the planted sensitive node is kept by both; only the speed objective keeps the Adds
    assert fewest.chosen == [fragile]
    assert fastest.chosen == sorted({*slow, fragile})
    assert fastest.meets_budget and fewest.meets_budget
    # and its model is the faster one, in every window, timed head to head
    (tmp_path / "speed").mkdir()
    (tmp_path / "fewest").mkdir()
    with_adds = models.quantized_with(fastest.chosen, tmp_path / "speed")
    without = models.quantized_with(fewest.chosen, tmp_path / "fewest")
    head_to_head = probe.compare(without, with_adds)
    assert head_to_head.window_min > 1.0, head_to_head
    assert fastest.best.speedup is not None and fewest.best.speedup is not None
    assert fastest.best.speedup > fewest.best.speedup


def test_groups_not_started_before_max_minutes_run_out_are_not_timed(
    planted: PlantedLatency, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models, probe = _models(planted, tmp_path)
    with caplog.at_level("WARNING"):
        groups = models.time_groups(probe, _ranking(planted), [], deadline=time.perf_counter())
    # nothing timed, so nothing starts kept: the nodes are quantized as without the speed objective
    assert groups == [] and kept_nodes(groups) == []
    assert re.search(r"exclusion.max_minutes ran out after timing 0 of [1-9]\d* node groups", caplog.text)
