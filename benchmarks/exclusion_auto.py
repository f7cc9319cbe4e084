"""exclusion=auto against none and the seed's hand-written list, on the demo model.

Runs static add_matmul quantization of the demo model three times in one sweep, with
exclusion=none, sensitive and auto, timed at batch 1 x length 128 only (longer windows
than the demo's, since this compares speed-ups across jobs), and reads each job's
results.json. Goal: auto stays within its F1 budget on the evaluation split and is at
least as fast as `sensitive` at 1 x 128.

Run: python benchmarks/exclusion_auto.py [--demo-root outputs/demo] [-- extra overrides]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _record import append


def head_to_head(sweep: Path, model: Path) -> Any:
    """sensitive's quantized model against auto's, timed in alternating windows in one run.

    The jobs' own speed-ups each divide by an fp32 timing taken minutes apart on a shared
    machine; timing the two quantized models against each other compares them directly.
    """
    from transformers import AutoTokenizer

    from quantsweep.config import BenchmarkConfig
    from quantsweep.sessions import SessionSettings, create_session
    from quantsweep.timing import time_models

    [auto] = sweep.glob("*-auto*/model_quantized.onnx")
    [sensitive] = sweep.glob("*-sensitive*/model_quantized.onnx")
    settings = SessionSettings.for_threads(None)
    tokenizer = AutoTokenizer.from_pretrained(model)
    result = time_models(
        create_session(sensitive, settings),
        create_session(auto, settings),
        BenchmarkConfig(batch_sizes=[1], input_lengths=[128], duration=10.0, windows=5, warmup=10),
        settings,
        vocab_size=len(tokenizer),
        special_ids=list(tokenizer.all_special_ids),
        seed=0,
        show_progress=False,
    )
    return result.shapes[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--demo-root", type=Path, default=Path("outputs/demo"))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. exclusion.max_f1_drop=0.01")
    parser.add_argument("--sweep", type=Path, help="read this finished sweep instead of running one")
    args = parser.parse_args()

    from quantsweep.demo.assets import prepare

    root = args.demo_root.resolve()
    prepare(root)
    work = Path(tempfile.mkdtemp(prefix="quantsweep-exclusion-auto-"))
    sweep = args.sweep.resolve() if args.sweep else work / "sweep"
    command = [
        sys.executable,
        "-m",
        "quantsweep.cli",
        "--multirun",
        f"model_name_or_path={root / 'model'}",
        f"dataset.path={root / 'corpus'}",
        # as the demo experiment: the model saw every train row, so hold out from test
        "exclusion.holdout_split=test",
        "exclusion.holdout_samples=500",
        "quantization=static",
        "operators=add_matmul",
        "exclusion=none,sensitive,auto",
        "benchmark.batch_sizes=[1]",
        "benchmark.input_lengths=[128]",
        "benchmark.duration=10",
        "benchmark.windows=5",
        "mlflow.enabled=false",
        f"hydra.sweep.dir={sweep}",
        *args.overrides,
    ]
    start = time.perf_counter()
    if not args.sweep:
        subprocess.run(command, cwd=work, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start

    rows = []
    verdict = []
    by_choice: dict[str, dict] = {}
    for path in sorted(sweep.glob("*/results.json")):
        job = json.loads(path.read_text())
        choice = job["choices"]["exclusion"]
        by_choice[choice] = job
        [shape] = job["timing"]["shapes"]
        windows = sorted(shape["window_speedups"])
        found = job.get("exclusion_search")
        search = (
            f"{len(found['chosen'])} kept; held-out F1 {found['chosen_f1']:.4f} vs {found['fp32_f1']:.4f}, "
            f"{'within' if found['meets_budget'] else 'NOT within'} {found['max_f1_drop']} at confidence "
            f"{found['confidence']}; {found['evaluations']} steps ({found['stopped_by']}), {found['seconds']:.0f} s"
            if found
            else ""
        )
        rows.append(
            f"| {choice} | {job['graph']['candidate_nodes'] - job['graph']['nodes_quantized']} | "
            f"{job['graph']['nodes_quantized']} of "
            f"{job['graph']['candidate_nodes']} | {job['original']['f1']:.4f} | {job['quantized']['f1']:.4f} | "
            f"{job['quantized']['f1'] - job['original']['f1']:+.4f} | {shape['original']['mean_ms']:.1f} | "
            f"{shape['quantized']['mean_ms']:.1f} | **{shape['speedup']:.2f}x** "
            f"({windows[0]:.2f} / {windows[len(windows) // 2]:.2f} / {windows[-1]:.2f}) | {search} |"
        )
    auto, sensitive = by_choice.get("auto"), by_choice.get("sensitive")
    if auto and sensitive:
        budget = auto["exclusion_search"]["max_f1_drop"]
        drop = auto["original"]["f1"] - auto["quantized"]["f1"]
        faster = auto["timing"]["shapes"][0]["speedup"] / sensitive["timing"]["shapes"][0]["speedup"]
        direct = head_to_head(sweep, root / "model")
        verdict = [
            f"- auto's F1 drop on the evaluation split: {drop:.4f} against a budget of {budget}: "
            f"{'met' if drop <= budget else 'missed'}",
            f"- auto's speed-up over sensitive's at 1 x 128, as the ratio of the two jobs' speed-ups: {faster:.2f}",
            f"- the same, timing sensitive's and auto's quantized models against each other in alternating "
            f"windows (10 s each): {direct.speedup:.2f} (windows {min(direct.window_speedups):.2f} to "
            f"{max(direct.window_speedups):.2f}; {'met' if direct.speedup >= 1 else 'missed'}: goal >= 1)",
        ]
    table = "\n".join(
        [
            "| exclusion | candidates kept in fp32 | quantized | F1 fp32 (eval) | F1 quantized | change | "
            "fp32 ms | quantized ms | speed-up 1 x 128 (window min / median / max) | search |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            (f"Sweep read from {sweep}." if args.sweep else f"Sweep wall time: {wall:.0f} s.")
            + " Evaluation split: the demo's 600 validation sentences.",
            "",
            *verdict,
        ]
    )
    print(table)
    append(
        "exclusion=auto against none and sensitive, demo model, static add_matmul",
        "python benchmarks/exclusion_auto.py " + " ".join(sys.argv[1:]),
        table,
    )


if __name__ == "__main__":
    main()
