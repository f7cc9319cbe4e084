"""Peak memory (RSS) of one static run on a DistilBERT-base-sized model, 100 calibration samples.

Runs ``quantsweep quantization=static operators=add_matmul exclusion=sensitive`` as a
child process with the cache off (so export and calibration really happen), samples the
child's resident set size every 50 ms to attribute the peak to a phase of the job, and
takes the kernel's own high-water mark (``ru_maxrss``) as the figure.
Goal: under 4 GB.

Run: python benchmarks/peak_memory.py [--samples 100] [--method minmax] [--demo-root outputs/demo]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _models import distilbert_base
from _record import append

GOAL_GB = 4.0


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--demo-root", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--method", default="minmax", choices=["minmax", "percentile", "entropy"])
    args = parser.parse_args()

    from quantsweep.demo.assets import prepare

    demo = args.demo_root.resolve()
    prepare(demo)
    model = distilbert_base(demo)
    work = Path(tempfile.mkdtemp(prefix="quantsweep-memory-"))
    job = work / "job"
    command = [
        sys.executable,
        "-m",
        "quantsweep.cli",
        f"model_name_or_path={model}",
        f"dataset.path={demo / 'corpus'}",
        "quantization=static",
        "operators=add_matmul",
        "exclusion=sensitive",
        f"calibration={args.method}",
        f"calibration.num_calibration_samples={args.samples}",
        "dataset.max_eval_samples=100",
        "benchmark.batch_sizes=[1]",
        "benchmark.input_lengths=[128]",
        "benchmark.duration=1",
        "mlflow.enabled=false",
        "cache=false",
        f"hydra.run.dir={job}",
    ]
    log = job / "quantsweep.log"
    samples: list[tuple[float, int, str]] = []
    process = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def sample() -> None:
        while process.poll() is None:
            phase = ""
            if log.is_file():  # the last log line says which step the job is in
                lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
                phase = lines[-1].split(" - ", 1)[-1].split(" (")[0][:60] if lines else ""
            samples.append((time.perf_counter(), rss_bytes(process.pid), phase))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = process.wait()
    sampler.join()
    if code != 0:
        raise SystemExit(f"the run failed ({code}); see {log}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    results = json.loads((job / "results.json").read_text())
    top = max(samples, key=lambda s: s[1]) if samples else (0.0, 0, "")
    calibrating = [rss for _, rss, phase in samples if phase.startswith("Calibrating")]
    table = "\n".join(
        [
            "| measure | value |",
            "|---|---|",
            f"| peak RSS of the whole run (ru_maxrss) | **{peak / 1e9:.2f} GB** (goal < {GOAL_GB:g} GB) |",
            f"| highest sampled RSS while calibrating | {max(calibrating) / 1e9:.2f} GB |"
            if calibrating
            else "| highest sampled RSS while calibrating | (not sampled) |",
            f"| step at the sampled peak | {top[2] or 'start-up'} |",
            f"| calibration samples, method, batch size | {results['quantization']['calibration_samples']}, "
            f"{args.method}, {results['config']['calibration']['batch_size']} |",
            f"| seconds: export / calibrate / quantize | {results['phase_seconds'].get('export', 0):.1f} / "
            f"{results['phase_seconds'].get('calibrate', 0):.1f} / {results['phase_seconds'].get('quantize', 0):.1f} |",
            f"| fp32 model size | {results['graph']['original_size_mb']:.0f} MB |",
        ]
    )
    print(table)
    shown = f"python benchmarks/peak_memory.py --samples {args.samples} --method {args.method}"
    append("Peak memory, static run on a DistilBERT-base-sized model", shown, table)


if __name__ == "__main__":
    main()
