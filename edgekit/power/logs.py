"""Recompute power from a raw sensor log kept beside results (`edgekit power parse`).

Each parser lives with its family (a log's format is the family's sensor's) and is named here as
"module:function", imported on use, so that `edgekit power --help` loads no family."""

from __future__ import annotations

import importlib

from edgekit.errors import EdgekitError

# sensor -> "module:function" reading that sensor's raw log (bytes) into watts per reading
PARSERS = {"tegrastats": "edgekit.targets.jetson:parse_tegrastats_log",
           "rpi5": "edgekit.targets.rpi5:parse_pmic_log",
           "powermetrics": "edgekit.targets.apple_m:parse_powermetrics_log"}


def parse_log(sensor: str, data: bytes) -> list[float]:
    if sensor not in PARSERS:
        raise EdgekitError(f"no log parser for sensor '{sensor}'", f"choose one of: {', '.join(PARSERS)}")
    module, _, function = PARSERS[sensor].partition(":")
    watts = getattr(importlib.import_module(module), function)(data)
    if not watts:
        raise EdgekitError(f"no {sensor} readings found in the log", f"pass a raw {sensor} log")
    return watts
