"""Thread spinning: the demo model's fp32 export timed against itself, spinning on and off.

Two ONNX Runtime sessions of the same fp32 model are timed against each other with
quantsweep's own ``time_models`` and session settings (``SessionSettings.for_threads``),
once with ``session.intra_op.allow_spinning`` (and inter_op) on and once off; nothing
else differs. The two models are identical, so every "speed-up" away from 1.00 is what
the timing set-up itself adds: with spinning on, the idle session's worker threads may
keep spinning on the cores the running one needs. The modes take turns, ``--rounds``
times each, over the demo's timing grid and window settings (conf/experiment/demo.yaml).

Run: python benchmarks/thread_spinning.py [--demo-root outputs/demo] [--rounds 3] [--duration 0.5]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _record import append

# the demo experiment's timing (conf/experiment/demo.yaml) and the job's default seed
BATCH_SIZES = [1, 4, 8]
INPUT_LENGTHS = [32, 64, 128]
WINDOWS = 2
WARMUP = 3
SEED = 42


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--demo-root", type=Path, default=Path("outputs/demo"))
    parser.add_argument(
        "--rounds", type=int, default=3, help="each mode is timed this often, modes alternating"
    )
    parser.add_argument(
        "--duration", type=float, default=0.5, help="seconds per model and shape (the demo's)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads; default one per physical core"
    )
    parser.add_argument("--note", help="a note recorded with the entry (e.g. other work sharing the cores)")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from quantsweep.config import BenchmarkConfig
    from quantsweep.demo.assets import prepare
    from quantsweep.export import export_model
    from quantsweep.sessions import SessionSettings, create_session
    from quantsweep.timing import time_models

    root = args.demo_root.resolve()
    prepare(root)
    model_dir = root / "model"
    work = Path(tempfile.mkdtemp(prefix="quantsweep-spinning-"))
    try:
        # the job's export: opset 11, graph optimization level 1 (the config's defaults)
        exported = export_model(str(model_dir), None, "token-classification", 11, 1, work)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        bench = BenchmarkConfig(
            batch_sizes=BATCH_SIZES,
            input_lengths=INPUT_LENGTHS,
            duration=args.duration,
            warmup=WARMUP,
            windows=WINDOWS,
            threads=args.threads,
        )
        base = SessionSettings.for_threads(args.threads)
        speedups: dict[bool, list[float]] = {False: [], True: []}
        windows: dict[bool, list[float]] = {False: [], True: []}
        for round_ in range(args.rounds):
            for spinning in (False, True):
                settings = dataclasses.replace(base, allow_spinning=spinning)
                first = create_session(exported.onnx_path, settings)
                second = create_session(exported.onnx_path, settings)
                print(
                    f"round {round_ + 1}: spinning {'on' if spinning else 'off'}", file=sys.stderr, flush=True
                )
                result = time_models(
                    first,
                    second,
                    bench,
                    settings,
                    vocab_size=len(tokenizer),
                    special_ids=list(tokenizer.all_special_ids),
                    seed=SEED,
                    show_progress=False,
                )
                assert result.allow_spinning == spinning
                for shape in result.shapes:
                    speedups[spinning].append(shape.speedup)
                    windows[spinning].extend(shape.window_speedups)
                del first, second
    finally:
        shutil.rmtree(work, ignore_errors=True)

    shapes = len(BATCH_SIZES) * len(INPUT_LENGTHS)
    rows = []
    for spinning in (True, False):
        values = speedups[spinning]
        off_by = max(abs(v - 1.0) for v in values)
        rows.append(
            f"| {'on' if spinning else 'off'} | {len(values)} | **{min(values):.2f} to {max(values):.2f}** "
            f"(median {statistics.median(values):.2f}) | {off_by:.2f} | {spread(windows[spinning])} |"
        )
    table = (
        "The demo model's fp32 export (opset 11, optimization level 1) timed against itself: two sessions "
        "of the same file, quantsweep's `time_models` and `SessionSettings.for_threads` "
        f"({base.intra_op_threads} intra-op / {base.inter_op_threads} inter-op threads, {base.execution_mode}, "
        f"{base.graph_optimization_level}), only `allow_spinning` (intra- and inter-op) differing. "
        f"Timing as the demo's: {args.duration:g} s per model and shape in {WINDOWS} alternating windows, "
        f"warm-up {WARMUP} passes, batch sizes {BATCH_SIZES} x input lengths {INPUT_LENGTHS}, seed {SEED}; "
        f'{args.rounds} rounds, the two modes taking turns. "Speed-up" = first session\'s mean latency / '
        "second's (1.00 is the truth).\n\n"
        '| spinning | shapes timed | "speed-up" of a model over itself, min to max | largest distance '
        "from 1.00 | per window (min / median / max) |\n|---|---|---|---|---|\n" + "\n".join(rows)
    )
    table += f"\n\n{shapes} shapes per round."
    print(table)
    command = f"python benchmarks/thread_spinning.py --rounds {args.rounds} --duration {args.duration:g}"
    if args.threads:
        command += f" --threads {args.threads}"
    append("Thread spinning, demo model against itself", command, table, note=args.note)


if __name__ == "__main__":
    main()
