"""A sweep's report: the seed card's structure (README.md), plots and a CSV of every number.

Reads only the job folders (``.hydra/config.yaml``, ``results.json``, ``error.txt``), so
it works the same for local and remote sweeps, at the end of a ``--multirun`` (the
:class:`~quantsweep.callback.ReportCallback`) or later with ``quantsweep-report SWEEP_DIR``.

The card is a list of sections (:mod:`~quantsweep.report.card`, the exclusion search's in
:mod:`~quantsweep.report.exclusion_search`), the CSV has its own module
(:mod:`~quantsweep.report.results_csv`), and :mod:`~quantsweep.report.build` writes them.
"""

from __future__ import annotations

from quantsweep.report.build import ReportFiles, build_report, main
from quantsweep.report.card import render_card
from quantsweep.report.results_csv import csv_columns, render_csv

__all__ = [
    "ReportFiles",
    "build_report",
    "csv_columns",
    "main",
    "render_card",
    "render_csv",
]
