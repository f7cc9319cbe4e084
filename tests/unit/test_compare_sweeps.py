"""scripts/compare_sweeps.py: timings and machine facts may differ, nothing a user reads may."""

from __future__ import annotations

import copy
import json
import runpy
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compare_sweeps.py"
compare = runpy.run_path(str(SCRIPT))["compare"]

RESULTS: dict[str, Any] = {
    "config": {"quantization": {"approach": "static"}},
    "original": {"f1": 0.9149539333805812, "seconds": 3.5},
    "quantized": {"f1": 0.91, "seconds": 3.4, "per_entity": {"LOC": {"f1": 0.85}}},
    "graph": {"nodes_quantized": 12, "nodes_excluded": ["a", "b"]},
    "timing": {"shapes": [{"batch_size": 1, "original": {"mean_ms": 12.9}}]},
    "environment": {"hostname": "vm"},
    "phase_seconds": {"load": 7.0},
    "cache": {"export": {"key": "abc"}},
}
CARD = """# card

| approach | f1 (original) | f1 (optimized) |
| :-: | :-: | :-: |
| `static` | 0.915 | 0.910 |

| batch | length | ms (original) | speed-up |
| :-: | :-: | :-: | :-: |
| 1 | 32 | 12.9 | 1.10 |
"""


def sweep(folder: Path, results: dict[str, Any], card: str) -> Path:
    (folder / "static-add-none").mkdir(parents=True)
    (folder / "static-add-none" / "results.json").write_text(json.dumps(results))
    (folder / "README.md").write_text(card)
    return folder


def test_timings_machine_and_cache_keys_may_differ(tmp_path: Path) -> None:
    after = copy.deepcopy(RESULTS)
    after["timing"]["shapes"][0]["original"]["mean_ms"] = 14.0
    after["original"]["seconds"] = 9.9
    after["environment"]["hostname"] = "other"
    after["phase_seconds"] = {"load_data": 1.0}
    after["cache"]["export"]["key"] = "def"
    card = CARD.replace("| 12.9 | 1.10 |", "| 14.0 | 0.98 |")
    assert compare(sweep(tmp_path / "a", RESULTS, CARD), sweep(tmp_path / "b", after, card)) == []


def test_a_score_a_graph_fact_or_a_card_number_that_differs_is_reported(tmp_path: Path) -> None:
    after = copy.deepcopy(RESULTS)
    after["quantized"]["per_entity"]["LOC"]["f1"] = 0.8500000000000001
    after["graph"]["nodes_excluded"] = ["a"]
    card = CARD.replace("| 0.915 | 0.910 |", "| 0.915 | 0.911 |")
    found = compare(sweep(tmp_path / "a", RESULTS, CARD), sweep(tmp_path / "b", after, card))
    assert any("quantized.per_entity.LOC.f1" in d for d in found), found
    assert any("graph.nodes_excluded: 2 items before, 1 after" in d for d in found), found
    assert any("README.md table 1" in d and "0.911" in d for d in found), found
    assert len(found) == 3, found
