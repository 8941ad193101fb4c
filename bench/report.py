"""What every benchmark prints besides its numbers: a Markdown table, and the machine it ran on."""

import os
import platform
from datetime import datetime
from pathlib import Path

import psutil


def table(rows: list[dict]) -> str:
    """Rows of equal keys as a Markdown table, the keys as its header."""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(row[k]) for k in header) + " |" for row in rows])


def machine() -> str:
    """One line: time, CPU count and model, RAM (GB) and load averages (times vary with the load)."""
    names = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
    model = names[0].split(":", 1)[1].strip() if names else platform.processor()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"{datetime.now().isoformat(timespec='minutes')}; nproc {os.cpu_count()} ({model}); "
        f"RAM {psutil.virtual_memory().total / (1 << 30):.0f} GB; load average (1, 5, 15 min) {load}"
    )
