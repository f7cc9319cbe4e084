"""Compare two sweeps of the same configs: what they measured must match, timings aside.

Why it exists: a refactor of the job (its stages, its task interface) must change nothing a
user reads. Run the demo sweep before and after, then

    .venv/bin/python scripts/compare_sweeps.py BEFORE_SWEEP_DIR AFTER_SWEEP_DIR

It matches jobs by folder name and compares, in each ``results.json``, everything but what
measures time or describes the machine and the code (``timing``, ``environment``,
``phase_seconds``, ``cache`` keys, every ``seconds`` field): the config, the evaluation
scores of both models, the graph and quantization facts, the data and the exclusion
search. In the sweep cards (``README.md``) it compares every table whose columns are not
timings. It prints each difference and exits 1 if there is any, else 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# What measures time, or names the machine and the code that ran: allowed to differ
VOLATILE = {"timing", "environment", "phase_seconds", "cache", "wall_seconds", "seconds", "search_seconds"}
# Card tables with any of these in a column name hold timings
TIMED_COLUMNS = ("ms", "speed-up", "speedup", "throughput", "latency", "seconds", "spread")


def differences(before: Any, after: Any, where: str = "") -> list[str]:
    """Every place where two results differ, VOLATILE keys left out, floats compared exactly."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after), key=str):
            if key in VOLATILE:
                continue
            path = f"{where}.{key}" if where else str(key)
            if key not in before or key not in after:
                found.append(f"{path}: only in {'after' if key not in before else 'before'}")
            else:
                found += differences(before[key], after[key], path)
        return found
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{where}: {len(before)} items before, {len(after)} after"]
        return [
            d
            for n, (b, a) in enumerate(zip(before, after, strict=True))
            for d in differences(b, a, f"{where}[{n}]")
        ]
    return [] if before == after else [f"{where}: {before!r} before, {after!r} after"]


def card_tables(card: str) -> list[list[str]]:
    """The card's markdown tables without timing columns, as lists of lines (header first)."""
    tables: list[list[str]] = []
    current: list[str] = []
    for line in [*card.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line.strip())
            continue
        if current:
            header = current[0].lower()
            if not any(word in header for word in TIMED_COLUMNS):
                tables.append([row for row in current if not set(row) <= set("|:- ")])
            current = []
    return tables


def compare(before: Path, after: Path) -> list[str]:
    found: list[str] = []
    jobs = {p.name for p in before.iterdir() if (p / "results.json").is_file()}
    others = {p.name for p in after.iterdir() if (p / "results.json").is_file()}
    found += [f"{name}: only before" for name in sorted(jobs - others)]
    found += [f"{name}: only after" for name in sorted(others - jobs)]
    for name in sorted(jobs & others):
        old = json.loads((before / name / "results.json").read_text(encoding="utf-8"))
        new = json.loads((after / name / "results.json").read_text(encoding="utf-8"))
        found += [f"{name}/results.json {d}" for d in differences(old, new)]
    old_tables = card_tables((before / "README.md").read_text(encoding="utf-8"))
    new_tables = card_tables((after / "README.md").read_text(encoding="utf-8"))
    if len(old_tables) != len(new_tables):
        found.append(f"README.md: {len(old_tables)} tables before, {len(new_tables)} after")
    for number, (old_table, new_table) in enumerate(zip(old_tables, new_tables, strict=False)):
        if old_table != new_table:
            found.append(f"README.md table {number + 1}:\n  before " + "\n  before ".join(old_table)
                         + "\n  after  " + "\n  after  ".join(new_table))  # fmt: skip
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    found = compare(args.before, args.after)
    for line in found:
        print(line)
    jobs = len([p for p in args.before.iterdir() if (p / "results.json").is_file()])
    print(f"{len(found)} difference(s) in {jobs} job(s) and the card, timings aside.", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
