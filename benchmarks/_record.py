"""Shared by the benchmarks: the machine they ran on, and appending to RESULTS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

from quantsweep.environment import cpu_flags, cpu_model, physical_cores

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    flags = " ".join(sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "vnni"))))
    return (
        f"{cpu_model()}, {physical_cores()} physical / {os.cpu_count()} logical cores, flags: {flags or 'none'}, "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
    )


def append(title: str, command: str, table: str) -> None:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    entry = f"\n## {title} ({stamp})\n\nMachine: {machine()}\n\nCommand: `{command}`\n\n{table}\n"
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(entry)
