"""Shared by the benchmarks: the machine they ran on, its load, and appending to RESULTS.md.

Every entry names the CPU, its vector/matrix flags, and says for each instruction set
that decides which integer kernels ONNX Runtime can use (AVX2, AVX-512, VNNI, AMX; on
Arm dot-product, i8mm, SVE) whether this CPU has it, so no speed-up is ever read
without the instruction sets it was measured on. It also gives the load average when
the benchmark started (this module's import), the highest 1-minute load seen while it
ran (sampled every few seconds by a daemon thread) and the load at the end: the
benchmarks' own threads count in it, so a load well above the threads they use means
other work shared the cores.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import threading
from importlib import metadata
from pathlib import Path

from quantsweep.environment import (
    INT8_INSTRUCTION_SETS,
    cpu_flags,
    cpu_model,
    int8_instruction_sets,
    physical_cores,
)

RESULTS = Path(__file__).with_name("RESULTS.md")

# The flags listed with every entry: the vector and matrix extensions.
_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4", "asimd", "dotprod", "i8mm", "sve")
_LOAD_SAMPLE_SECONDS = 5.0


def _load() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:  # not available on this platform
        return (float("nan"),) * 3


class _LoadMonitor:
    """The load average at import, and the highest 1-minute load sampled since."""

    def __init__(self) -> None:
        self.start = _load()
        self.peak = self.start[0]
        self._stop = threading.Event()
        threading.Thread(target=self._sample, name="load-monitor", daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(_LOAD_SAMPLE_SECONDS):
            self.peak = max(self.peak, _load()[0])

    def summary(self) -> str:
        end = _load()
        self.peak = max(self.peak, end[0])

        def show(load: tuple[float, float, float]) -> str:
            return " / ".join(f"{x:.2f}" for x in load)

        return (
            f"load average (1 / 5 / 15 min) {show(self.start)} at the start, {show(end)} at the end; "
            f"highest 1-minute load sampled during the run {self.peak:.2f}; "
            f"{os.cpu_count()} logical cores (the benchmark's own threads count in the load)"
        )


_MONITOR = _LoadMonitor()


def instruction_sets() -> str:
    """Which int8-relevant instruction sets this CPU has and has not, named one by one."""
    arm = platform.machine().lower() in ("arm64", "aarch64")
    # the same names quantsweep records with every job, of this CPU family only
    family = ("asimd", "asimddp", "i8mm", "sve")
    names = [name for flag, name in INT8_INSTRUCTION_SETS.items() if (flag in family) == arm]
    have = [name for name in int8_instruction_sets() if name in names]
    lack = [name for name in names if name not in have]
    return f"has {', '.join(have) or 'none of them'}; lacks {', '.join(lack) or 'none of them'}"


def machine() -> str:
    flags = " ".join(sorted(f for f in cpu_flags() if f.startswith(_FLAG_PREFIXES)))
    try:
        ort = f", onnxruntime {metadata.version('onnxruntime')}"
    except metadata.PackageNotFoundError:
        ort = ""
    return (
        f"{cpu_model()}, {physical_cores()} physical / {os.cpu_count()} logical cores, "
        f"instruction sets: {instruction_sets()}; flags: {flags or 'none'}; "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}{ort}"
    )


def append(title: str, command: str, table: str, note: str | None = None) -> None:
    """Append an entry: title and date, machine, load, command, the table, an optional note."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = _MONITOR.summary()
    extra = f"\nNote: {note}\n" if note else ""
    entry = (
        f"\n## {title} ({stamp})\n\nMachine: {machine()}\n\nLoad: {load}.\n{extra}\n"
        f"Command: `{command}`\n\n{table}\n"
    )
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(entry)
