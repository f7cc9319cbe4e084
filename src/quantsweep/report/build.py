"""Writing a sweep's report into its folder, and the ``quantsweep-report`` command that does it.

The only part of the report that touches files: the card and the CSV are rendered as text
(:mod:`quantsweep.report.card`, :mod:`quantsweep.report.results_csv`) and written here, beside
the plots.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from quantsweep.files import CARD_FILE, CSV_FILE, LATENCY_PLOT, PARETO_PLOT, atomic_write_text
from quantsweep.plots import plot_latency, plot_pareto
from quantsweep.report.card import render_card
from quantsweep.report.results_csv import render_csv
from quantsweep.sweep import load_sweep

# the package's name, as before the report became a package: console lines read the same
log = logging.getLogger("quantsweep.report")


@dataclass
class ReportFiles:
    card: Path
    csv: Path
    plots: list[Path]


def build_report(sweep_dir: Path, plots: bool = True) -> ReportFiles:
    """Write the card and the CSV, and (``plots``) the plots, from the sweep's job folders."""
    sweep = load_sweep(sweep_dir)
    card = sweep_dir / CARD_FILE
    atomic_write_text(card, render_card(sweep))
    table = sweep_dir / CSV_FILE
    atomic_write_text(table, render_csv(sweep))
    written: list[Path] = []
    if plots and sweep.finished:
        plot_pareto(sweep, sweep_dir / PARETO_PLOT, sweep.task.BUDGET_METRIC)
        plot_latency(sweep, sweep_dir / LATENCY_PLOT)
        written = [sweep_dir / PARETO_PLOT, sweep_dir / LATENCY_PLOT]
    log.info("Sweep report: %s (%d jobs, %d failed)", card, len(sweep.jobs), len(sweep.failed))
    return ReportFiles(card, table, written)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(
        prog="quantsweep-report",
        description="Write README.md (the card), results.csv and plots into a sweep folder.",
    )
    parser.add_argument("sweep", type=Path, help="a sweep folder (one subfolder per job)")
    args = parser.parse_args(argv)
    files = build_report(args.sweep)
    print(files.card)
