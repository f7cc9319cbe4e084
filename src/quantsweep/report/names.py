"""The names of the files the report writes into a sweep folder, defined once.

The Hydra callback and MLflow tracking find these files by name (through
:mod:`quantsweep.report`), and the card links the plots by name: all of them read the
names from here.
"""

from __future__ import annotations

CARD_FILE = "README.md"
CSV_FILE = "results.csv"
PARETO_PLOT = "f1_vs_speedup.png"
LATENCY_PLOT = "latency_vs_length.png"
