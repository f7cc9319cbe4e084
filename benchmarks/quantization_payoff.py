"""Quantization pay-off on a real-sized model, through quantsweep and through plain ONNX Runtime.

A DistilBERT-base-sized token classifier (random weights, built locally) is run by
quantsweep twice: dynamic ``add_matmul`` and static ``add_matmul`` + ``sensitive``, at
batch 1 and 8, length 128. For reference, the same fp32 export is quantized with plain
``onnxruntime.quantization.quantize_dynamic`` and timed in a plain loop with default
session options: the framework must not lose what plain ONNX Runtime gets.
Goal: dynamic speed-up >= 2.5x at batch 1, length 128.

Run: python benchmarks/quantization_payoff.py [--duration 10] [--demo-root outputs/demo]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _models import distilbert_base
from _record import append

GOAL = 2.5
SHAPES = ((1, 128), (8, 128))
RUNS = {
    "dynamic add_matmul": ["quantization=dynamic", "operators=add_matmul", "exclusion=none"],
    "static add_matmul + sensitive": ["quantization=static", "operators=add_matmul", "exclusion=sensitive"],
}


def plain_latency_ms(model: Path, batch: int, length: int, vocab: int, seconds: float) -> float:
    """Mean latency with ONNX Runtime's default session options, in a plain loop."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        i.name: (
            rng.integers(1000, vocab, (batch, length), dtype=np.int64)
            if i.name == "input_ids"
            else np.ones((batch, length), dtype=np.int64)
        )
        for i in session.get_inputs()
    }
    for _ in range(5):
        session.run(None, feeds)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, feeds)
        runs += 1
    return (time.perf_counter() - start) / runs * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--demo-root", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of timing per model and shape")
    args = parser.parse_args()

    from quantsweep.demo.assets import prepare

    demo = args.demo_root.resolve()
    prepare(demo)
    model = distilbert_base(demo)
    work = Path(tempfile.mkdtemp(prefix="quantsweep-payoff-"))
    common = [
        f"model_name_or_path={model}",
        f"dataset.path={demo / 'corpus'}",
        "dataset.max_eval_samples=100",
        "calibration.num_calibration_samples=100",
        "benchmark.batch_sizes=[1,8]",
        "benchmark.input_lengths=[128]",
        f"benchmark.duration={args.duration}",
        "benchmark.windows=5",
        "mlflow.enabled=false",
        f"cache_dir={work / 'cache'}",
    ]
    results = {}
    for label, overrides in RUNS.items():
        job = work / label.replace(" ", "_").replace("+", "")
        subprocess.run(
            [sys.executable, "-m", "quantsweep.cli", *common, *overrides, f"hydra.run.dir={job}"],
            cwd=work,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        results[label] = json.loads((job / "results.json").read_text())

    # plain ONNX Runtime on the very same fp32 export
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = next(iter(results.values()))
    fp32_path = work / "dynamic_add_matmul" / "model.onnx"
    int8_path = work / "plain_dynamic.onnx"
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    from transformers import AutoConfig

    vocab = int(AutoConfig.from_pretrained(model).vocab_size)
    plain = {
        shape: (
            plain_latency_ms(fp32_path, *shape, vocab, args.duration),
            plain_latency_ms(int8_path, *shape, vocab, args.duration),
        )
        for shape in SHAPES
    }

    lines = [
        "| setup | batch x length | fp32 ms | quantized ms | speed-up | per window (min / median / max) |",
        "|---|---|---|---|---|---|",
    ]
    for shape in SHAPES:
        a, b = plain[shape]
        lines.append(
            f"| plain ONNX Runtime, quantize_dynamic | {shape[0]} x {shape[1]} | {a:.1f} | {b:.1f} | {a / b:.2f}x | |"
        )
    for label, result in results.items():
        for s in result["timing"]["shapes"]:
            spread = sorted(s["window_speedups"])
            median = spread[len(spread) // 2]
            lines.append(
                f"| quantsweep, {label} | {s['batch_size']} x {s['input_length']} | {s['original']['mean_ms']:.1f} | "
                f"{s['quantized']['mean_ms']:.1f} | {s['speedup']:.2f}x | "
                f"{spread[0]:.2f} / {median:.2f} / {spread[-1]:.2f} |"
            )
    dynamic = results["dynamic add_matmul"]["timing"]["shapes"][0]["speedup"]
    timing = fp32["timing"]
    lines += [
        "",
        f"Goal: dynamic speed-up >= {GOAL:g}x at 1 x 128; measured **{dynamic:.2f}x**. "
        f"Model: DistilBERT-base sizes (6 layers, hidden 768), random weights, fp32 "
        f"{fp32['graph']['original_size_mb']:.0f} MB; quantsweep sessions: {timing['intra_op_threads']} intra-op "
        f"threads, {timing['windows']} alternating windows, {args.duration:g} s per model and shape; "
        f"instruction set preset: {fp32['quantization']['instruction_set']}.",
    ]
    table = "\n".join(lines)
    print(table)
    append(
        "Quantization pay-off, DistilBERT-base-sized model",
        f"python benchmarks/quantization_payoff.py --duration {args.duration:g}",
        table,
    )


if __name__ == "__main__":
    main()
