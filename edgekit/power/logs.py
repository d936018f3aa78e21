"""Recompute power from a raw sensor log kept beside results (`edgekit power parse`)."""

from __future__ import annotations

import re

from edgekit.errors import EdgekitError
from edgekit.targets.apple_m import frame_power_w, parse_powermetrics_text, split_frames
from edgekit.targets.jetson import tegrastats_watts
from edgekit.targets.rpi5 import parse_pmic_read_adc


def _tegrastats(data: bytes) -> list[float]:
    return [w for line in data.splitlines() if (w := tegrastats_watts(line)) is not None]


def _pmic(data: bytes) -> list[float]:
    """pmic_read_adc outputs one after another; a new reading starts at a blank or '#' line,
    or when a rail that was already read appears again."""
    readings, block, seen = [], [], set()
    for line in data.decode(errors="replace").splitlines() + [""]:
        stem = re.match(r"^\s*(\S+_[AV])\s", line)
        if not line.strip() or line.lstrip().startswith("#") or (stem and stem.group(1) in seen):
            if block:
                rails = parse_pmic_read_adc("\n".join(block))
                if rails:
                    readings.append(sum(rails.values()))
            block, seen = [], set()
        if stem:
            block.append(line)
            seen.add(stem.group(1))
    return readings


def _powermetrics(data: bytes) -> list[float]:
    """plist frames (what edgekit's sensor records), or the text format powermetrics prints by default."""
    if b"<plist" not in data[:4096]:
        return [s["combined"] for s in parse_powermetrics_text(data.decode(errors="replace"))]
    frames, _ = split_frames(data)
    return [w["combined"] for f in frames if "combined" in (w := frame_power_w(f))]


PARSERS = {"tegrastats": _tegrastats, "rpi5": _pmic, "powermetrics": _powermetrics}


def parse_log(sensor: str, data: bytes) -> list[float]:
    if sensor not in PARSERS:
        raise EdgekitError(f"no log parser for sensor '{sensor}'", f"choose one of: {', '.join(PARSERS)}")
    watts = PARSERS[sensor](data)
    if not watts:
        raise EdgekitError(f"no {sensor} readings found in the log", f"pass a raw {sensor} log")
    return watts
