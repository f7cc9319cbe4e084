from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

import quantsweep.testing as tiny
from quantsweep.config import (
    Approach,
    ConfigError,
    DatasetConfig,
    ExclusionConfig,
    QuantizationConfig,
    RunConfig,
    SearchObjective,
    SearchStrategy,
)
from quantsweep.exclusion_search.search import (
    Scored,
    SearchBudget,
    SearchOutcome,
    confirm,
    search,
)
from quantsweep.exclusion_search.sensitivity import channel_sqnr, rank_nodes
from quantsweep.exclusion_search.speed import Speed, kept_nodes, mark_kept, node_groups, pattern_of, verdict
from quantsweep.exclusion_search.statistics import MAX_CONFIRMATIONS, drop_bound, resolution
from quantsweep.records import NodeGroup, NodeSensitivity

# ---------------------------------------------------------------- the search alone
# A model of damage: each node quantized costs this much F1; the search sees only F1.
DAMAGE = {"a": 0.30, "b": 0.004, "c": 0.002, "d": 0.001, "e": 0.0, "f": 0.08}


def _ranking(order: list[str]) -> list[NodeSensitivity]:
    return [
        NodeSensitivity(node=n, op_type="Add", sqnr_db=float(i), tensor=n, rank=i + 1)
        for i, n in enumerate(order)
    ]


def _score(calls: list[list[str]]) -> Any:
    def score(kept: list[str]) -> Scored:
        calls.append(kept)
        lost = sum(cost for node, cost in DAMAGE.items() if node not in kept)
        return Scored(f1=1.0 - lost, drop_bound=lost)

    return score


BUDGET = SearchBudget(max_f1_drop=0.01, max_evaluations=None, max_minutes=None)


@pytest.mark.parametrize("strategy", list(SearchStrategy))
def test_search_finds_the_smallest_set_within_the_budget(strategy):
    calls: list[list[str]] = []
    outcome = search(_ranking(["a", "f", "b", "c", "d", "e"]), [], strategy, BUDGET, 1.0, _score(calls))
    # a and f cost 0.38; b+c+d+e cost 0.007 <= 0.01, so {a, f} is the smallest set
    assert outcome.chosen == ["a", "f"]
    assert outcome.meets_budget and outcome.stopped_by == "done"
    assert outcome.chosen_f1 == pytest.approx(0.993)
    assert [s.step for s in outcome.steps] == list(range(len(calls)))  # every evaluation is a step
    assert len({frozenset(s.nodes) for s in outcome.steps}) == len(outcome.steps)  # none twice
    assert outcome.steps[0].phase == "start" and outcome.steps[0].nodes == []


def test_a_misleading_ranking_costs_steps_not_the_result():
    # the worst node ranked last: the bisection keeps everything, and pruning gives back the rest
    calls: list[list[str]] = []
    outcome = search(
        _ranking(["e", "d", "c", "b", "f", "a"]), [], SearchStrategy.bisect, BUDGET, 1.0, _score(calls)
    )
    assert outcome.chosen == ["a", "f"]
    assert any(s.phase == "prune" and s.meets_budget for s in outcome.steps)


def test_search_prunes_a_starting_set():
    calls: list[list[str]] = []
    outcome = search(
        _ranking(["a", "f", "b", "c", "d", "e"]),
        ["a", "b", "e", "f"],
        SearchStrategy.bisect,
        BUDGET,
        1.0,
        _score(calls),
    )
    assert outcome.steps[0].nodes == ["a", "b", "e", "f"] and outcome.steps[0].meets_budget
    assert outcome.chosen == ["a", "f"]
    # least sensitive (highest SQNR) half first: e and b go back in one step
    prunes = [s for s in outcome.steps if s.phase == "prune"]
    assert prunes[0].changed == ["b", "e"] and prunes[0].meets_budget
    assert not any(s.phase == "grow" and s.changed for s in outcome.steps)


def test_an_exhausted_budget_ends_with_the_best_set_marked_as_missing_it():
    calls: list[list[str]] = []
    budget = replace(BUDGET, max_evaluations=2)
    outcome = search(
        _ranking(["e", "d", "c", "b", "f", "a"]), [], SearchStrategy.greedy, budget, 1.0, _score(calls)
    )
    assert len(outcome.steps) == 2 == len(calls)
    assert outcome.stopped_by == "evaluations"
    assert not outcome.meets_budget
    # of the two sets evaluated ([] and [e]) both miss; e costs nothing, so they tie on F1: the smaller wins
    assert outcome.chosen == []


def test_a_time_budget_still_evaluates_the_starting_set():
    calls: list[list[str]] = []
    budget = replace(BUDGET, max_minutes=1e-9)
    outcome = search(_ranking(["a", "f"]), ["a"], SearchStrategy.bisect, budget, 1.0, _score(calls))
    assert len(outcome.steps) == 1 and outcome.stopped_by == "minutes"
    assert outcome.chosen == ["a"] and not outcome.meets_budget


def test_unranked_nodes_are_never_kept():
    ranking = [
        *_ranking(["a", "f"]),
        NodeSensitivity(node="z", op_type="Add", sqnr_db=None, tensor=None, rank=None),
    ]
    outcome = search(ranking, ["z", "a"], SearchStrategy.bisect, BUDGET, 1.0, _score([]))
    assert outcome.steps[0].nodes == ["a"]
    assert "z" not in outcome.chosen


# ---------------------------------------------------------------- the speed objective alone
# A model of latency: fp32 takes 10 ms; quantizing "b" or "c" saves 2 ms each, quantizing
# "d" or "e" costs 1.5 ms each (a QDQ Add on a CPU whose int8 Add does not pay).
LATENCY = {"a": -0.5, "b": -2.0, "c": -2.0, "d": 1.5, "e": 1.5, "f": -0.5}


def _timer(kept: list[str]) -> Speed:
    ms = 10.0 + sum(cost for node, cost in LATENCY.items() if node not in kept)
    return Speed(speedup=10.0 / ms, window_min=10.0 / ms - 0.01, window_max=10.0 / ms + 0.01)


def _speed_search(
    ranking: list[NodeSensitivity], timer: Callable[[list[str]], Speed] = _timer, fixed: Sequence[str] = ()
) -> SearchOutcome:
    """Bisection for the speed objective from the empty set, each set's F1 from :func:`_score`."""
    return search(
        ranking,
        [],
        SearchStrategy.bisect,
        BUDGET,
        1.0,
        _score([]),
        objective=SearchObjective.speed,
        timer=timer,
        fixed=fixed,
    )


def test_the_speed_objective_ranks_the_sets_within_the_budget_by_measured_speed():
    # bisecting this ranking visits {a, f, d} (within the budget, d slower quantized) and {a, f}
    ranking = _ranking(["a", "f", "d", "e", "b", "c"])
    fewest = search(ranking, [], SearchStrategy.bisect, BUDGET, 1.0, _score([]), timer=_timer)
    fastest = _speed_search(ranking)
    # the same steps (the order of evaluation does not depend on the objective), every one timed
    assert [s.nodes for s in fewest.steps] == [s.nodes for s in fastest.steps]
    assert all(s.speedup is not None and s.speedup_min is not None for s in fastest.steps)
    assert fewest.chosen == ["a", "f"]
    meeting = [s for s in fastest.steps if s.meets_budget]
    assert fastest.best.speedup == max(s.speedup or 0.0 for s in meeting)

    # within the fastest set's window spread, a set keeping fewer nodes is not slower: it goes first
    def wide(kept: list[str]) -> Speed:
        speed = _timer(kept)
        return Speed(speed.speedup, speed.speedup - 0.3, speed.speedup + 0.3)

    tied = _speed_search(ranking, timer=wide)
    assert tied.chosen == ["a", "f"] and [s.nodes for s in tied.choices] == [["a", "f"], ["a", "d", "f"]]

    # {a, f} (1.25x) reaches the fastest's slowest window (1.33 - 0.15) but not its mean: still a tie
    def medium(kept: list[str]) -> Speed:
        speed = _timer(kept)
        return Speed(speed.speedup, speed.speedup - 0.15, speed.speedup + 0.15)

    assert _speed_search(ranking, timer=medium).chosen == ["a", "f"]
    # d is slower quantized: the set within the budget that keeps it beats the smallest, {a, f}
    assert fastest.chosen == ["a", "d", "f"]
    assert fastest.best.speedup == pytest.approx(10.0 / 7.5)
    assert [s.nodes for s in fastest.choices] == [["a", "d", "f"], ["a", "f"]]


def test_pinned_slow_nodes_are_kept_from_the_start_and_never_given_back():
    outcome = _speed_search(_ranking(["a", "f", "b", "c", "d", "e"]), fixed=["d", "e"])
    assert outcome.steps[0].nodes == ["d", "e"]
    assert all({"d", "e"} <= set(s.nodes) for s in outcome.steps)
    assert outcome.chosen == ["a", "d", "e", "f"]
    assert outcome.best.speedup == pytest.approx(10.0 / 6.0)


def test_layer_patterns_group_the_same_node_of_every_layer():
    nodes = [
        ("/bert/encoder/layer.0/attention/self/Add", "Add"),
        ("/bert/encoder/layer.1/attention/self/Add", "Add"),
        ("/bert/encoder/layer.0/output/dense/MatMul", "MatMul"),
        ("/bert/encoder/layer.11/output/dense/MatMul", "MatMul"),
        ("/bert/encoder/layer.0/output/LayerNorm/Add_1", "Add"),
        ("/classifier/MatMul", "MatMul"),
    ]
    assert pattern_of(nodes[3][0]) == "/bert/encoder/layer.*/output/dense/MatMul"
    assert pattern_of("/slow/Add_3") == "/slow/Add_3"  # a trailing index is not a layer
    # a pattern holding the same nodes as its op type adds nothing
    pair = [("/l.0/a/Add", "Add"), ("/l.1/a/Add", "Add")]
    assert node_groups(pair) == [("Add", "op_type", ["/l.0/a/Add", "/l.1/a/Add"])]
    # roles: the op type and what feeds it (two bias Adds after their MatMuls, one residual)
    adds = [("/l.0/q/Add", "Add"), ("/l.0/k/Add", "Add"), ("/l.0/res/Add", "Add")]
    made_by = {"/l.0/q/Add": "MatMul", "/l.0/k/Add": "MatMul", "/l.0/res/Add": "Add+Mul"}
    assert node_groups(adds, made_by) == [
        ("Add", "op_type", ["/l.0/q/Add", "/l.0/k/Add", "/l.0/res/Add"]),
        ("Add after MatMul", "role", ["/l.0/q/Add", "/l.0/k/Add"]),
    ]
    groups = {(name, kind): members for name, kind, members in node_groups(nodes)}
    assert set(groups) == {
        ("Add", "op_type"),
        ("MatMul", "op_type"),
        ("/bert/encoder/layer.*/attention/self/Add", "pattern"),
        ("/bert/encoder/layer.*/output/dense/MatMul", "pattern"),
    }


def test_a_clear_pattern_decides_for_its_nodes_and_its_op_type_for_the_rest():
    def group(name: str, kind: str, nodes: list[str], low: float, high: float) -> NodeGroup:
        timed = NodeGroup(name, kind, nodes, (low + high) / 2, low, high)
        timed.verdict = verdict(timed)
        return timed

    groups = [
        group("Add", "op_type", ["mask.0", "mask.1", "res.0", "res.1", "ln.0", "ln.1", "lone"], 1.05, 1.2),
        group("MatMul", "op_type", ["mm.0", "mm.1", "out.0", "out.1"], 0.8, 0.9),
        group("mask.*", "pattern", ["mask.0", "mask.1"], 0.9, 0.98),  # clearly pays quantized
        group("res.*", "pattern", ["res.0", "res.1"], 1.02, 1.1),  # clearly slower quantized
        group("ln.*", "pattern", ["ln.0", "ln.1"], 0.95, 1.1),  # unclear: follows Add
        group("out.*", "pattern", ["out.0", "out.1"], 0.97, 1.3),  # unclear: follows MatMul
    ]
    assert kept_nodes(groups) == ["ln.0", "ln.1", "lone", "res.0", "res.1"]
    mark_kept(groups)
    assert [(g.name, g.verdict, g.kept) for g in groups] == [
        ("Add", "slower", True),
        ("MatMul", "faster", False),
        ("mask.*", "faster", False),
        ("res.*", "slower", True),
        ("ln.*", "unclear", False),  # its nodes follow Add, which is kept
        ("out.*", "unclear", False),
    ]
    # a role between the two: every bias Add clearly pays quantized, though Adds overall do not
    groups.insert(2, group("Add after MatMul", "role", ["res.0", "ln.0", "lone"], 0.85, 0.95))
    assert kept_nodes(groups) == ["ln.1", "res.0", "res.1"]  # res.* is a pattern: it still decides res.0
    mark_kept(groups)
    assert [g.name for g in groups if g.kept] == ["Add", "res.*"]  # Add still decides ln.1
    # once ln.* clearly pays too, Add decides none of its nodes: slower, but not what kept them
    groups[5] = group("ln.*", "pattern", ["ln.0", "ln.1"], 0.9, 0.97)
    assert kept_nodes(groups) == ["res.0", "res.1"]
    mark_kept(groups)
    assert [g.name for g in groups if g.kept] == ["res.*"]


def test_a_set_the_search_rows_rejected_is_not_confirmed_within_the_budget():
    outcome = _speed_search(_ranking(["a", "f", "b", "c", "d", "e"]))
    missed = replace(outcome.choices[0], meets_budget=False)
    _, tried = confirm([missed], lambda kept: Scored(1.0, 0.0), 1.0, 0.01, 0.99)
    assert not tried[0].meets_budget


def test_a_set_that_fails_on_fresh_rows_falls_back_to_the_next_choice():
    steps = _speed_search(_ranking(["a", "f", "b", "c", "d", "e"]))
    first, second = steps.choices[:2]

    def fresh(kept: list[str]) -> Scored:  # the fastest set was lucky on the search's rows
        lost = 0.02 if kept == first.nodes else 0.0
        return Scored(f1=1.0 - lost, drop_bound=lost)

    chosen, tried = confirm(steps.choices, fresh, 1.0, BUDGET.max_f1_drop, 0.99)
    assert chosen == second
    assert [(c.step, c.meets_budget) for c in tried] == [(first.step, False), (second.step, True)]
    assert tried[0].f1_drop_bound == pytest.approx(0.02) and tried[0].confidence == 0.99

    # nothing holds: the try with the smallest bound, marked as missing the budget
    chosen, tried = confirm(steps.choices, lambda kept: Scored(0.9, 0.1 - 0.01 * len(kept)), 1.0, 0.01, 0.99)
    assert len(tried) == min(MAX_CONFIRMATIONS, len(steps.choices)) >= 2
    assert not any(c.meets_budget for c in tried)
    assert chosen.step == min(tried, key=lambda c: c.f1_drop_bound).step


def test_rows_too_few_for_the_budget_are_reported_with_the_rows_that_would_resolve_it(caplog):
    def noisy(kept: list[str]) -> Scored:  # every set loses 0.004 with a bootstrap margin of 0.02
        lost = 0.0 if len(kept) == 6 else 0.004
        return Scored(f1=1.0 - lost, drop_bound=lost + (0.02 if lost else 0.0))

    with caplog.at_level("WARNING"):
        outcome = search(_ranking(list("afbcde")), [], SearchStrategy.bisect, BUDGET, 1.0, noisy, rows=300)
    found = outcome.resolution
    assert found is not None and not found.resolved
    assert (found.step, found.rows, found.margin) == (0, 300, pytest.approx(0.02))
    # the margin shrinks as 1/sqrt(rows): to half the budget (0.005) takes 16x the rows
    assert found.rows_needed == 4800
    assert "300 search rows cannot resolve a budget of 0.01: the bootstrap adds 0.0200" in caplog.text
    # enough rows: resolved, no warning
    fine = search(
        _ranking(list("afbcde")),
        [],
        SearchStrategy.bisect,
        BUDGET,
        1.0,
        lambda kept: Scored(0.996, 0.006),
        rows=300,
    )
    assert fine.resolution is not None and fine.resolution.resolved
    # resolved: a margin within the budget (0.008 of 0.01); rows already enough are not asked for again
    assert resolution(0, 300, 0.004, 0.012, 0.01).resolved
    assert resolution(0, 300, 0.004, 0.006, 0.01).rows_needed == 300


def test_max_minutes_is_a_deadline_in_minutes_from_the_start():
    assert SearchBudget(0.01, None, 2.0).deadline(100.0) == 220.0
    assert BUDGET.deadline(5.0) is None


def test_channel_sqnr_sees_an_outlier_channel_that_the_whole_tensor_figure_hides():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 10, 16))
    x[..., 0] = 1000.0
    # per-tensor 8-bit quantization of that range: every ordinary value rounds to zero
    step = (x.max() - x.min()) / 255
    y = np.round(x / step) * step
    whole = 10 * np.log10(np.square(x).sum() / np.square(x - y).sum())
    assert whole > 40  # what a whole-tensor SQNR would report: looks excellent
    assert channel_sqnr(x, y) < 10
    fine = np.round(x[..., 1:] / 0.01) * 0.01
    assert channel_sqnr(x[..., 1:], fine) > 30


def test_rank_nodes_orders_by_the_worst_tensor_and_leaves_untouched_nodes_unranked():
    ranking = rank_nodes(
        [("n1", "Add", ["t1", "t2"]), ("n2", "MatMul", ["t3"]), ("n3", "Add", ["t9"])],
        {"t1": 30.0, "t2": 5.0, "t3": 20.0},
    )
    by_node = {r.node: r for r in ranking}
    assert (by_node["n1"].rank, by_node["n1"].sqnr_db, by_node["n1"].tensor) == (1, 5.0, "t2")
    assert by_node["n2"].rank == 2
    assert by_node["n3"].rank is None and by_node["n3"].sqnr_db is None


def test_entity_counts_add_up_to_seqeval_f1():
    import random

    from quantsweep.tasks.token_classification.scoring import entity_counts, f1_from_counts, score

    rng = random.Random(0)
    references = [tags for _, tags in tiny.sentences(60, seed=5)]
    # predictions: each tag kept, or swapped for a random one (broken and shifted entities)
    predictions = [
        [t if rng.random() < 0.8 else rng.choice(tiny.LABELS) for t in tags] for tags in references
    ]
    counts = entity_counts(references, predictions)
    assert counts.shape == (60, 3)
    assert float(f1_from_counts(counts.sum(axis=0))) == pytest.approx(score(references, predictions).f1)


def test_the_bootstrap_bound_charges_more_than_the_measured_drop_and_is_repeatable():
    from quantsweep.tasks.token_classification.scoring import f1_from_counts

    rng = np.random.default_rng(1)
    actual = rng.integers(1, 4, size=200)
    reference = np.stack([actual, actual, actual], axis=1)  # a perfect model
    candidate = reference.copy()
    hurt = rng.choice(200, size=20, replace=False)
    candidate[hurt, 0] -= 1  # one entity wrong in 10% of sentences
    measured = drop_bound(reference, candidate, None, seed=0, metric=f1_from_counts)
    bound = drop_bound(reference, candidate, 0.9, seed=0, metric=f1_from_counts)
    assert measured > 0 and bound > measured
    assert drop_bound(reference, candidate, 0.9, seed=0, metric=f1_from_counts) == bound
    assert drop_bound(reference, reference, 0.9, seed=0, metric=f1_from_counts) == 0.0


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"max_f1_drop": 0.0}, "exclusion.max_f1_drop"),
        ({"max_f1_drop": -0.01}, "exclusion.max_f1_drop"),
        ({"max_evaluations": 0}, "exclusion.max_evaluations"),
        ({"max_minutes": 0.0}, "exclusion.max_minutes"),
        ({"holdout_samples": 0}, "exclusion.holdout_samples"),
        ({"confidence": 1.0}, "exclusion.confidence"),
        ({"confidence": 0.2}, "exclusion.confidence"),
        ({"nodes": ["/a/Add"]}, "exclusion.nodes"),
        ({"confirm_fraction": 1.0}, "exclusion.confirm_fraction"),
        ({"confirm_fraction": -0.1}, "exclusion.confirm_fraction"),
        ({"timing_shape": [1]}, "exclusion.timing_shape"),
        ({"timing_shape": [0, 128]}, "exclusion.timing_shape"),
        ({"timing_shape": [1.5, 128]}, "exclusion.timing_shape"),
        ({"speed_seconds": 0.0}, "exclusion.speed_seconds"),
    ],
)
def test_bad_search_settings_are_refused_by_name(changes, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        ExclusionConfig(auto=True, **changes)


def test_a_confirm_fraction_of_0_is_allowed_and_confirms_on_nothing():
    assert ExclusionConfig(auto=True, confirm_fraction=0.0).confirm_fraction == 0.0


def test_the_search_needs_static_quantization():
    with pytest.raises(ConfigError, match=r"`exclusion.auto`.*quantization=static"):
        RunConfig(exclusion=ExclusionConfig(auto=True))


def test_the_search_never_holds_out_from_the_evaluation_split():
    static = QuantizationConfig(approach=Approach.static)
    with pytest.raises(ConfigError, match=r"`exclusion.holdout_split` is 'validation'"):
        RunConfig(quantization=static, exclusion=ExclusionConfig(auto=True, holdout_split="validation"))
    with pytest.raises(ConfigError, match=r"`exclusion.holdout_split` is 'validation'"):
        RunConfig(
            quantization=static,
            dataset=DatasetConfig(calibration_split="validation"),
            exclusion=ExclusionConfig(auto=True),
        )
