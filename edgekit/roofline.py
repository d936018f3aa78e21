"""Memory-bandwidth roofline for token generation.

Generating one token reads every weight once (the token embedding excepted: one
row) plus the KV cache up to the current position, so tg tok/s <= bandwidth /
bytes per token. Bandwidth comes from the target's spec sheet or, for the host,
from a multi-threaded copy measured right after the run.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def measure_copy_bandwidth_gb_s(mib: int = 256, threads: int | None = None, repeats: int = 5) -> float:
    """Best-of-N multi-threaded numpy copy: (read + write) bytes / seconds, in GB/s."""
    threads = threads or os.cpu_count() or 1
    n = mib * 2**20 // 8 // threads
    srcs = [np.ones(n) for _ in range(threads)]
    dsts = [np.empty(n) for _ in range(threads)]
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(pool.map(lambda i: np.copyto(dsts[i], srcs[i]), range(threads)))
            best = min(best, time.perf_counter() - t0)
    return 2 * n * 8 * threads / best / 1e9


def host_bandwidth_gb_s() -> tuple[float, str]:
    """This machine's bandwidth, measured now, in the same job as the run it bounds: a shared VM's
    drifts too far for a figure from another time (how far: docs/benchmarks.md)."""
    threads = os.cpu_count() or 1
    return (round(measure_copy_bandwidth_gb_s(threads=threads), 2),
            f"measured after this run's repetitions: {threads}-thread numpy copy of 256 MiB, best of 5")


def last_level_cache_bytes(cpu_cache_dir: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """Size of cpu0's highest-level data or unified cache from sysfs (`indexN/level`, `type`,
    `size` such as "32768K"), or None where sysfs does not say (macOS, containers without it)."""
    best: tuple[int, int] | None = None
    for index in sorted(cpu_cache_dir.glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = int((index / "level").read_text())
            size = _parse_cache_size((index / "size").read_text().strip())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified") and (best is None or level > best[0]):
            best = (level, size)
    return best[1] if best else None


def _parse_cache_size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    if text[-1:].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def above_roofline_warning(efficiency: float, bytes_per_token: int, llc_bytes: int | None,
                           bandwidth_source: str) -> str | None:
    """A run faster than the memory-bandwidth bound did not read all its bytes from memory at the
    bandwidth used: say which of the two reasons can apply, rather than let an efficiency above
    100 % pass for a measurement (the runs that showed it: docs/benchmarks.md)."""
    if efficiency <= 1.0:
        return None
    reasons = []
    if llc_bytes and bytes_per_token <= 4 * llc_bytes:
        reasons.append(f"part of the {bytes_per_token / 1e6:.0f} MB read per token stays in the CPU's "
                       f"{llc_bytes / 2**20:.0f} MiB last-level cache")
    if bandwidth_source.startswith("measured"):
        reasons.append("generation's mostly-read traffic got more out of memory than the copy test's "
                       f"read-and-write ({bandwidth_source}), or the bandwidth moved between the two")
    else:
        reasons.append(f"this device reaches more than the bandwidth used ({bandwidth_source})")
    return f"tg is {efficiency:.0%} of the memory-bandwidth roofline: " + ", or ".join(reasons)
