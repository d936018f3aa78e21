"""Facts about the local machine, each read by a small reader and a pure parser."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def parse_cpuinfo_model(text: str) -> str | None:
    """CPU model from /proc/cpuinfo: x86 'model name', or Arm 'Model'/'Hardware'."""
    for key in ("model name", "Model", "Hardware"):
        for line in text.splitlines():
            k, sep, v = line.partition(":")
            if sep and k.strip() == key and v.strip():
                return v.strip()
    return None


def parse_meminfo_total_bytes(text: str) -> int | None:
    return parse_meminfo_bytes(text, "MemTotal")


def parse_meminfo_bytes(text: str, key: str) -> int | None:
    """One /proc/meminfo field (MemTotal, MemAvailable, SwapFree, ...) in bytes."""
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                unit = parts[2].lower() if len(parts) > 2 else "kb"
                return int(parts[1]) * (1024 if unit == "kb" else 1)
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def host_facts() -> dict:
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_model": parse_cpuinfo_model(_read("/proc/cpuinfo")) or platform.processor() or None,
        "cpu_cores": os.cpu_count(),
        "ram_bytes": parse_meminfo_total_bytes(_read("/proc/meminfo")),
        "python": platform.python_version(),
    }
