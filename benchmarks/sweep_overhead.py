"""Sweep overhead: how much of a sweep's wall time is the measuring it exists for.

Runs the offline demo sweep (the seed card's 8 configs on the demo model) with a cold
cache and a fresh MLflow store in a temporary folder, then reads every job's
``results.json``: wall time against the time spent inside the timing windows and inside
evaluation inference. Goal on a 2-core machine: wall / (timing + evaluation) <= 1.3.
The entry also carries, read from the sweep's card (its README.md), the non-time table
and the time table at batch 1 x length 128, so the README can quote the demo card.

Run: python benchmarks/sweep_overhead.py [--demo-root outputs/demo] [--no-mlflow] [--note TEXT] [-- extra overrides]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _record import append

GOAL = 1.3
CARD_SHAPE = "Below, time metrics for batch size = 1, input length = 128."


def card_tables(card: str) -> str:
    """The card's timing settings, non-time table (and truncation lines) and 1 x 128 time table."""
    non_time = card.split("## Non-time metrics", 1)[1].split("## Time metrics", 1)[0].strip()
    time_part = card.split("## Time metrics", 1)[1].split("## Quantized graphs", 1)[0]
    settings = time_part.strip().split("\n\n", 1)[0].strip()
    shape = time_part.split(CARD_SHAPE, 1)[1].strip().split("\n\n", 1)[0].strip()
    rows = [line.split("|")[1:-1] for line in shape.splitlines()[2:]]
    original = [float(cells[-6]) for cells in rows]
    speedups = [float(cells[-2]) for cells in rows]
    summary = (
        f"At 1 x 128 the original (fp32) latency ranges {min(original):.2f} to {max(original):.2f} ms "
        f"across the jobs (each job times its own fp32 session) and the speed-ups {min(speedups):.2f} "
        f"to {max(speedups):.2f}."
    )
    return (
        "From the sweep's card (README.md), non-time metrics:\n\n"
        f"{non_time}\n\nTime metrics. {settings}\n\n{CARD_SHAPE}\n\n{shape}\n\n{summary}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--demo-root", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--no-mlflow", action="store_true", help="leave MLflow logging out of the sweep")
    parser.add_argument("--keep", action="store_true", help="keep the temporary sweep folder")
    parser.add_argument("--note", help="a note recorded with the entry (e.g. other work sharing the cores)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the sweep")
    args = parser.parse_args()

    from quantsweep.demo.assets import prepare

    root = args.demo_root.resolve()
    prepare(root)  # the demo model's fine-tune is cached; it is not part of the sweep's time
    work = Path(tempfile.mkdtemp(prefix="quantsweep-overhead-"))
    sweep = work / "sweep"
    command = [
        sys.executable,
        "-m",
        "quantsweep.cli",
        "--multirun",
        "+experiment=demo",
        f"model_name_or_path={root / 'model'}",
        f"dataset.path={root / 'corpus'}",
        f"hydra.callbacks.prepare_demo.root={root}",
        f"hydra.sweep.dir={sweep}",
        f"mlflow.enabled={'false' if args.no_mlflow else 'true'}",
        *args.overrides,
    ]
    start = time.perf_counter()
    # cwd=work: the cache, the MLflow store and its artifacts start empty and stay out of the repo
    subprocess.run(command, cwd=work, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start

    jobs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    phases: dict[str, float] = {}
    for job in jobs:
        for phase, seconds in job["phase_seconds"].items():
            phases[phase] = phases.get(phase, 0.0) + seconds
    timing = phases.get("time", 0.0)
    # the evaluate stage (both sessions opened, both models scored); older jobs split it in three
    evaluation = (
        phases.get("evaluate", 0.0)
        + phases.get("evaluate_original", 0.0)
        + phases.get("evaluate_quantized", 0.0)
    )
    inside_jobs = sum(job["wall_seconds"] for job in jobs)
    ratio = wall / (timing + evaluation)
    rows = [
        ("jobs", f"{len(jobs)}"),
        ("sweep wall time", f"{wall:.1f} s"),
        ("inside timing windows (incl. warm-up)", f"{timing:.1f} s"),
        ("inside evaluation inference (fp32 once, quantized per job)", f"{evaluation:.1f} s"),
        ("**wall / (timing + evaluation)**", f"**{ratio:.2f}** (goal <= {GOAL})"),
        *[
            (f"phase: {phase}", f"{phases[phase]:.1f} s")
            for phase in ("load", "export", "plan", "calibrate", "quantize", "sessions")
            if phase in phases
        ],
        ("outside jobs: start-up, Hydra, MLflow logging, report", f"{wall - inside_jobs:.1f} s"),
    ]
    computed = {
        kind: sum(1 for job in jobs if kind in job["cache"] and not job["cache"][kind]["hit"])
        for kind in ("export", "original_evaluation", "calibration")
    }
    rows.append(("computed (not from cache)", ", ".join(f"{k} {v}" for k, v in computed.items())))
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    print(table)
    shown = "python benchmarks/sweep_overhead.py" + (" --no-mlflow" if args.no_mlflow else "")
    if args.overrides:
        shown += " " + " ".join(args.overrides)
    card = card_tables((sweep / "README.md").read_text(encoding="utf-8"))
    print(card)
    append("Sweep overhead (demo sweep, cold cache)", shown, f"{table}\n\n{card}", note=args.note)
    if args.keep:
        print(f"kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
