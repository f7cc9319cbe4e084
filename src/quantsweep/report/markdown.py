"""The two markdown pieces the card and its exclusion-search section are built of: tables and code spans.

Kept apart from both so that every table of the card is drawn by the same code, whichever
module's section it is in.
"""

from __future__ import annotations

from typing import Any

from quantsweep.sweep import fmt


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table with centred columns."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" :-: " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def code(value: Any) -> str:
    """A configuration value as a code span, written as the seed card writes values."""
    return f"`{fmt(value)}`"
