"""Quantization pay-off on a real-sized model, through quantsweep and through plain ONNX Runtime.

A DistilBERT-base-sized token classifier (random weights, built locally) is run by
quantsweep twice: dynamic ``add_matmul`` and static ``add_matmul`` + ``sensitive``, at
batch 1 and 8, length 128; each job times its models itself (its ``results.json``).

For reference, the dynamic job's fp32 export is quantized with plain
``onnxruntime.quantization.quantize_dynamic`` (its defaults, int8 weights). Then, in this
one process, the three models are timed exactly as quantsweep times a job's models:
quantsweep's own ``time_models`` (warm-up, alternating windows, the job's seed and
synthetic inputs) and session settings (read back from the job's ``results.json`` and
checked against ``SessionSettings.for_threads``), one shape at a time, three pairs per
shape: fp32 against quantsweep's quantized model, the same fp32 session against plain
ONNX Runtime's, and plain ONNX Runtime's against quantsweep's head to head. The two
speed-ups then share the fp32 session, the inputs, the shapes and the settings, and the
head-to-head ratio compares the two quantized models directly.
Goal: dynamic speed-up >= 2.5x at batch 1, length 128 (the figure quoted in the issue,
seen on an AVX-512 VNNI machine); the entry names the instruction sets of this one.

Run: python benchmarks/quantization_payoff.py [--duration 10] [--demo-root outputs/demo]
     [--note "..."] [--keep]
Scratch files (exports, quantized models, the jobs' cache) go to a temporary folder,
removed at the end unless --keep; the model is built once under outputs/benchmarks/.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from _models import distilbert_base
from _record import append

GOAL = 2.5
BATCH_SIZES = (1, 8)
INPUT_LENGTH = 128
DYNAMIC = "dynamic add_matmul"
RUNS = {
    DYNAMIC: ["quantization=dynamic", "operators=add_matmul", "exclusion=none"],
    "static add_matmul + sensitive": ["quantization=static", "operators=add_matmul", "exclusion=sensitive"],
}
# the like-for-like pairs timed per shape: (label, first model, second model); the ratio
# is first / second, so above 1 means the second model is faster
PAIRS = (
    ("fp32 vs quantsweep dynamic add_matmul", "fp32", "quantsweep"),
    ("fp32 vs plain ORT quantize_dynamic", "fp32", "plain"),
    ("plain ORT vs quantsweep (head to head)", "plain", "quantsweep"),
)


def run_jobs(model: Path, demo: Path, work: Path, duration: float) -> dict[str, Any]:
    """Each configuration as a quantsweep job in its own process; their results.json."""
    common = [
        f"model_name_or_path={model}",
        f"dataset.path={demo / 'corpus'}",
        "dataset.max_eval_samples=100",
        "calibration.num_calibration_samples=100",
        f"benchmark.batch_sizes=[{','.join(map(str, BATCH_SIZES))}]",
        f"benchmark.input_lengths=[{INPUT_LENGTH}]",
        f"benchmark.duration={duration}",
        "benchmark.windows=5",
        "mlflow.enabled=false",
        f"cache_dir={work / 'cache'}",
    ]
    results = {}
    for label, overrides in RUNS.items():
        job = work / label.replace(" ", "_").replace("+", "")
        print(f"quantsweep job: {label}", file=sys.stderr, flush=True)
        subprocess.run(
            [sys.executable, "-m", "quantsweep.cli", *common, *overrides, f"hydra.run.dir={job}"],
            cwd=work,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        results[label] = json.loads((job / "results.json").read_text(encoding="utf-8"))
        results[label]["job_dir"] = str(job)
    return results


def op_changes(fp32: Path, quantized: Path) -> str:
    """How the quantized graph's node count per op type differs from the fp32 graph's."""
    import onnx

    def ops(path: Path) -> Counter[str]:
        return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)

    before, after = ops(fp32), ops(quantized)
    diff = {op: after[op] - before[op] for op in before | after if after[op] != before[op]}
    return ", ".join(f"{op} {n:+d}" for op, n in sorted(diff.items())) or "no change"


def like_for_like(model: Path, models: dict[str, Path], job: dict[str, Any]) -> dict[str, Any]:
    """Every pair of PAIRS timed by quantsweep's time_models, as the job timed its own models.

    Returns {(pair label, batch size): ShapeTiming}. The session settings, warm-up,
    windows, duration and seed are the job's, read back from its results.json.
    """
    from transformers import AutoTokenizer

    from quantsweep.config import BenchmarkConfig
    from quantsweep.sessions import SessionSettings, create_session
    from quantsweep.timing import time_models

    timing = job["timing"]
    settings = SessionSettings(
        intra_op_threads=timing["intra_op_threads"],
        inter_op_threads=timing["inter_op_threads"],
        execution_mode=timing["execution_mode"],
        graph_optimization_level=timing["graph_optimization_level"],
        allow_spinning=timing["allow_spinning"],
    )
    threads = job["config"]["benchmark"]["threads"]
    if settings != SessionSettings.for_threads(threads):
        raise SystemExit(f"the job's sessions {settings} are not what quantsweep makes: {threads}")
    tokenizer = AutoTokenizer.from_pretrained(model)  # what the job's own timing read
    sessions = {name: create_session(path, settings) for name, path in models.items()}
    timed: dict[Any, Any] = {}
    for batch in BATCH_SIZES:
        bench = BenchmarkConfig(
            batch_sizes=[batch],
            input_lengths=[INPUT_LENGTH],
            duration=timing["duration_s"],
            warmup=timing["warmup"],
            windows=timing["windows"],
            threads=threads,
        )
        for label, first, second in PAIRS:
            print(f"timing {label} at {batch} x {INPUT_LENGTH}", file=sys.stderr, flush=True)
            result = time_models(
                sessions[first],
                sessions[second],
                bench,
                settings,
                vocab_size=len(tokenizer),
                special_ids=list(tokenizer.all_special_ids),
                seed=job["config"]["seed"],
                show_progress=False,
            )
            timed[label, batch] = result.shapes[0]
    return timed


def spread(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{ordered[0]:.2f} / {ordered[len(ordered) // 2]:.2f} / {ordered[-1]:.2f}"


def verdict(values: list[float]) -> str:
    if min(values) > 1:
        return "quantsweep's model faster in every window"
    if max(values) < 1:
        return "plain ONNX Runtime's model faster in every window"
    return "the windows straddle 1: no difference resolved"


def report(results: dict[str, Any], timed: dict[Any, Any], models: dict[str, Path], duration: float) -> str:
    job = results[DYNAMIC]
    timing = job["timing"]
    lines = [
        "Like for like: one process, quantsweep's `time_models` and session settings, the same fp32 session "
        "and inputs for every pair, pairs timed one after the other per shape. Ratio = first / second "
        "model's mean latency (above 1: the second is faster).",
        "",
        "| pair (first vs second) | batch x length | first ms | second ms | ratio | per window (min / median / max) |",
        "|---|---|---|---|---|---|",
    ]
    for batch in BATCH_SIZES:
        for label, _, _ in PAIRS:
            s = timed[label, batch]
            lines.append(
                f"| {label} | {batch} x {INPUT_LENGTH} | {s.original.mean_ms:.1f} | {s.quantized.mean_ms:.1f} | "
                f"**{s.speedup:.2f}x** | {spread(s.window_speedups)} |"
            )
    lines += [
        "",
        "quantsweep's own jobs, as each reports it in results.json (each job its own process, minutes apart):",
        "",
        "| quantsweep job | batch x length | fp32 ms | quantized ms | speed-up | per window (min / median / max) |",
        "|---|---|---|---|---|---|",
    ]
    for label, result in results.items():
        for s in result["timing"]["shapes"]:
            lines.append(
                f"| {label} | {s['batch_size']} x {s['input_length']} | {s['original']['mean_ms']:.1f} | "
                f"{s['quantized']['mean_ms']:.1f} | {s['speedup']:.2f}x | {spread(s['window_speedups'])} |"
            )
    lines.append("")
    for batch in BATCH_SIZES:
        ours = timed[PAIRS[0][0], batch]
        plain = timed[PAIRS[1][0], batch]
        head = timed[PAIRS[2][0], batch]
        lines.append(
            f"- {batch} x {INPUT_LENGTH}: speed-up over the same fp32 session, quantsweep {ours.speedup:.2f}x "
            f"vs plain ONNX Runtime {plain.speedup:.2f}x (ratio {ours.speedup / plain.speedup:.2f}); "
            f"head to head, plain / quantsweep latency {head.speedup:.2f} (windows "
            f"{min(head.window_speedups):.2f} to {max(head.window_speedups):.2f}): {verdict(head.window_speedups)}."
        )
    first = next(s for s in job["timing"]["shapes"] if s["batch_size"] == 1)
    q = job["quantization"]
    lines += [
        f"- Goal: dynamic speed-up >= {GOAL:g}x at 1 x {INPUT_LENGTH}: the dynamic job measured "
        f"**{first['speedup']:.2f}x**, the like-for-like run **{timed[PAIRS[0][0], 1].speedup:.2f}x**: "
        f"{'met' if min(first['speedup'], timed[PAIRS[0][0], 1].speedup) >= GOAL else 'missed'}.",
        f"- Model: DistilBERT-base sizes (6 layers, hidden 768), random weights; fp32 "
        f"{models['fp32'].stat().st_size / 1e6:.0f} MB, quantsweep dynamic "
        f"{models['quantsweep'].stat().st_size / 1e6:.0f} MB, plain "
        f"{models['plain'].stat().st_size / 1e6:.0f} MB.",
        f"- quantsweep dynamic: optimum preset `{q.get('instruction_set')}`, activations "
        f"{q.get('activations_dtype')}, weights {q.get('weights_dtype')}, per_channel {q.get('per_channel')}, "
        f"reduce_range {q.get('reduce_range')}; graph: {op_changes(models['fp32'], models['quantsweep'])}.",
        "- plain ONNX Runtime: `quantize_dynamic(fp32, out, weight_type=QuantType.QInt8)`, its other defaults "
        f"(every op type it supports, per-tensor, no reduce_range); graph: "
        f"{op_changes(models['fp32'], models['plain'])}.",
        f"- Timing (both tables): {timing['intra_op_threads']} intra-op / {timing['inter_op_threads']} inter-op "
        f"threads, {timing['execution_mode']}, {timing['graph_optimization_level']}, spinning "
        f"{'on' if timing['allow_spinning'] else 'off'}; warm-up {timing['warmup']} passes, {timing['windows']} "
        f"alternating windows, {duration:g} s per model, pair and shape; seed {job['config']['seed']}; inputs: "
        f"{timing['input_description']}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--demo-root", type=Path, default=Path("outputs/demo"))
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds of timing per model, pair and shape (default 10)",
    )
    parser.add_argument(
        "--note", help="a sentence to record with the entry, e.g. what else ran on the machine"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary work folder and print its path"
    )
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/quantization_payoff.py", *sys.argv[1:]])

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from quantsweep.demo.assets import prepare

    demo = args.demo_root.resolve()
    prepare(demo)
    model = distilbert_base(demo)
    work = Path(tempfile.mkdtemp(prefix="quantsweep-payoff-"))
    try:
        results = run_jobs(model, demo, work, args.duration)
        job_dir = Path(results[DYNAMIC]["job_dir"])
        models = {
            "fp32": job_dir / "model.onnx",
            "quantsweep": job_dir / "model_quantized.onnx",
            "plain": work / "plain_dynamic.onnx",
        }
        quantize_dynamic(str(models["fp32"]), str(models["plain"]), weight_type=QuantType.QInt8)
        timed = like_for_like(model, models, results[DYNAMIC])
        table = report(results, timed, models, args.duration)
    finally:
        if args.keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(table)
    append("Quantization pay-off, DistilBERT-base-sized model", command, table, args.note)


if __name__ == "__main__":
    main()
