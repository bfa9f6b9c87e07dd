"""The machine mcc runs on, described the way device profiles will describe boards: ISA, CPU, cores, memory.

Benchmarks print it so that every ratio they report is tied to the hardware it was measured on.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> dict:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        first = meminfo.read_text().splitlines()[0].split()
        mem = int(first[1]) * 1024
    return {"isa": platform.machine(), "cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem,
            "python": platform.python_version()}
