"""Clocks, power mode, temperatures and throttling, captured before and after a run.

Each reading is a command string and a pure parser; `capture` runs the family's commands
through a transport and keeps both the raw text and the parsed values.
"""

from __future__ import annotations

import re

from edgekit.targets.rpi5 import parse_throttled

LINUX = {
    "governor": "cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
    "cpu0_khz": "cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
    "thermal": "for z in /sys/class/thermal/thermal_zone*; do echo \"$(cat $z/type) $(cat $z/temp)\"; done",
}
STATE_COMMANDS: dict[str, dict[str, str]] = {
    "linux": LINUX,
    "rpi5": {**LINUX, "arm_hz": "vcgencmd measure_clock arm", "throttled": "vcgencmd get_throttled",
             "soc_temp": "vcgencmd measure_temp"},
    "jetson": {**LINUX, "nvpmodel": "nvpmodel -q", "jetson_clocks": "jetson_clocks --show"},
    "apple-m": {"therm": "pmset -g therm"},
}


def parse_measure_clock(text: str) -> int | None:
    m = re.search(r"frequency\(\d+\)=(\d+)", text)
    return int(m.group(1)) if m else None


def parse_measure_temp(text: str) -> float | None:
    m = re.search(r"temp=([\d.]+)'C", text)
    return float(m.group(1)) if m else None


def parse_nvpmodel(text: str) -> dict | None:
    """`NV Power Mode: MAXN` with the mode id on the next line; some JetPacks print no id line,
    others `NVPOWERMODE: 15W` after NVPMWARN lines."""
    m = re.search(r"(?:NV Power Mode|NVPOWERMODE):\s*(\S+)(?:\s*\n\s*(\d+)\s*(?:\n|$))?", text)
    if not m:
        return None
    return {"mode": m.group(1), "id": int(m.group(2)) if m.group(2) else None}


def parse_thermal(text: str) -> dict[str, float]:
    """`<type> <millidegrees>` lines -> degrees C per zone (zones without a number skipped)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1]) / 1000
    return out


PARSERS = {
    "governor": lambda t: t.strip() or None,
    "cpu0_khz": lambda t: int(t.strip()) if t.strip().isdigit() else None,
    "thermal": parse_thermal,
    "arm_hz": parse_measure_clock,
    "throttled": parse_throttled,
    "soc_temp": parse_measure_temp,
    "nvpmodel": parse_nvpmodel,
}


def capture(transport, family: str) -> dict:
    state: dict = {}
    for name, command in STATE_COMMANDS.get(family, {}).items():
        result = transport.run(command, timeout_s=10)
        if result.returncode != 0 or not result.stdout.strip():
            continue
        parser = PARSERS.get(name)
        try:
            state[name] = parser(result.stdout) if parser else result.stdout.strip()
        except ValueError:
            state[name] = result.stdout.strip()
    return state


def throttle_warnings(before: dict, after: dict) -> list[str]:
    """What the before/after states say about throttling during the run."""
    out = []
    thr = after.get("throttled")
    if isinstance(thr, dict):
        new = set(thr["flags"]) - set((before.get("throttled") or {}).get("flags", []))
        if thr["throttled_now"] or new:
            out.append("the device throttled during the run: " + ", ".join(sorted(new or thr["flags"])))
    if after.get("governor") not in (None, "performance"):
        out.append(f"CPU frequency governor is '{after['governor']}', not 'performance': clocks may vary")
    hot = {z: t for z, t in (after.get("thermal") or {}).items() if t >= 85}
    if hot:
        out.append("hot after the run: " + ", ".join(f"{z} {t:.0f} C" for z, t in hot.items()))
    return out
