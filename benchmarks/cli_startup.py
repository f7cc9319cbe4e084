"""How fast `quantsweep --help` answers: the start-up path must not import heavy libraries.

Run: python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

from _record import append


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    exe = shutil.which("quantsweep") or f"{sys.executable} -m quantsweep.cli"
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run([*exe.split(), "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    probe = "import sys, time; t=time.perf_counter(); import torch; print(time.perf_counter()-t)"
    torch_import = float(
        subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    )
    table = (
        "| measure | seconds |\n|---|---|\n"
        f"| `quantsweep --help`, median of {args.repeats} | {statistics.median(times):.2f} |\n"
        f"| `quantsweep --help`, max of {args.repeats} | {max(times):.2f} |\n"
        f"| for scale: `import torch` alone | {torch_import:.2f} |"
    )
    print(table)
    append("CLI start-up", f"python benchmarks/cli_startup.py --repeats {args.repeats}", table)


if __name__ == "__main__":
    main()
