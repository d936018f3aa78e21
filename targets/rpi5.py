"""Raspberry Pi 5 family (BCM2712: Pi 5, Pi 500, Compute Module 5): specs, detection,
runtime recipes, clocks and throttling, and PMIC rail power (`vcgencmd pmic_read_adc`).

The PMIC reports currents (`X_A current(n)=...A`) and voltages (`X_V volt(m)=...V`)
on separate lines whose numbers in parentheses differ: pair them by the name stem X.
EXT5V_V and BATT_V have no current. The PMIC does not see loads on the 5 V rail
(USB devices, HATs, an NVMe drive), so their power is outside this figure.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess

from edgekit.power import SensorUnavailable
from edgekit.targets.linux import LINUX_STATE_COMMANDS, LINUX_STATE_PARSERS
from edgekit.targets.specs import TargetSpec, clean, parse_compatible, ram_gb

FAMILY = "rpi5"

_BRIEF = "Raspberry Pi 5 product brief: BCM2712, 4x Cortex-A76 @ 2.4 GHz, LPDDR4X-4267 SDRAM"
_BANDWIDTH = "bandwidth: 32-bit LPDDR4X-4267 bus = 4267 MT/s x 4 B = 17.1 GB/s"
SPECS = [TargetSpec(f"rpi5-{gb}gb", FAMILY, gb, 17.1, "4x Cortex-A76 @ 2.4 GHz", 4,
                    "VideoCore VII GPU (no LLM runtime uses it)",
                    llama_cpp_cmake_args="-DGGML_NATIVE=ON", power_sensor="rpi5",
                    sources=(_BRIEF, _BANDWIDTH, f"{gb} GB variant: Raspberry Pi 5 product brief / launch posts"))
         for gb in (1, 2, 4, 8, 16)]

# new-style revision code (/proc/cpuinfo `Revision`): bits 20-22 memory size, bits 4-11 board type
REVISION_MEMORY_GB = {0: 0.25, 1: 0.5, 2: 1, 3: 2, 4: 4, 5: 8, 6: 16}
REVISION_TYPES = {0x17: "Pi 5", 0x18: "Compute Module 5", 0x19: "Pi 500", 0x1A: "Compute Module 5 Lite"}


def parse_revision(cpuinfo: str | None) -> dict | None:
    """Board type and RAM size from the `Revision : d04170` line (new-style codes, bit 23 set)."""
    m = re.search(r"^Revision\s*:\s*([0-9a-fA-F]+)\s*$", cpuinfo or "", flags=re.M)
    if not m:
        return None
    code = int(m.group(1), 16)
    if not code >> 23 & 1:
        return None  # old-style code: boards before the Pi 2
    return {"code": m.group(1).lower(), "type": REVISION_TYPES.get(code >> 4 & 0xFF, hex(code >> 4 & 0xFF)),
            "ram_gb": REVISION_MEMORY_GB.get(code >> 20 & 0b111)}


def detect(facts: dict[str, str]) -> tuple[TargetSpec, dict] | None:
    model = clean(facts.get("device_tree_model"))
    compatible = parse_compatible(facts.get("device_tree_compatible"))
    revision = parse_revision(facts.get("cpuinfo"))
    if not ("brcm,bcm2712" in compatible or re.match(r"Raspberry Pi (5|500|Compute Module 5)\b", model)
            or (revision and revision["type"] in REVISION_TYPES.values())):
        return None
    seen: dict = {"model": model or None, "ram_gb": ram_gb(facts)}
    if revision:
        seen["revision"] = revision["code"]
    # the revision code names the installed RAM; MemTotal is what is left after the firmware's share
    installed = revision["ram_gb"] if revision and revision["ram_gb"] else None
    if installed is None and seen["ram_gb"]:
        installed = min((s.ram_gb for s in SPECS if s.ram_gb >= seen["ram_gb"]), default=None)
    by_ram = {s.ram_gb: s for s in SPECS}
    if installed not in by_ram:  # a size this table does not have (or none known): say so, assume nothing
        seen["unknown_ram"] = True
        return dataclasses.replace(by_ram[8], name="rpi5", ram_gb=installed), seen
    return by_ram[installed], seen


LLAMA_CPP_ENV = ""  # CMAKE_ARGS (the spec's) is all pip needs here


def onnxruntime_install(spec: TargetSpec) -> str:
    return "pip install onnxruntime  # PyPI's aarch64 wheel; CPU execution provider (Pi OS: inside a venv)"


STATE_COMMANDS = {**LINUX_STATE_COMMANDS, "arm_hz": "vcgencmd measure_clock arm",
                  "throttled": "vcgencmd get_throttled", "soc_temp": "vcgencmd measure_temp"}


def parse_measure_clock(text: str) -> int | None:
    """`frequency(0)=2400034816` (Pi 5; the Pi 4 prints frequency(48)=...) -> Hz."""
    m = re.search(r"frequency\(\d+\)=(\d+)", text)
    return int(m.group(1)) if m else None


def parse_measure_temp(text: str) -> float | None:
    m = re.search(r"temp=([\d.]+)'C", text)
    return float(m.group(1)) if m else None


PMIC_COMMAND = "vcgencmd pmic_read_adc"
PMIC_EXCLUDES = "5 V loads the PMIC does not see: USB devices, HATs, NVMe, fan; and power-supply losses"

_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)([AV])\s*$")

THROTTLE_BITS = {
    0: "under-voltage detected",
    1: "arm frequency capped",
    2: "currently throttled",
    3: "soft temperature limit active",
    16: "under-voltage has occurred",
    17: "arm frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}


def parse_pmic_read_adc(text: str) -> dict[str, float]:
    """Watts per rail that has both a current and a voltage line."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        stem, kind, value, unit = m.group(1), m.group(2), float(m.group(3)), m.group(4)
        if kind != unit:
            continue
        (amps if kind == "A" else volts)[stem] = value
    return {stem: amps[stem] * volts[stem] for stem in amps if stem in volts}


def parse_throttled(text: str) -> dict:
    """`throttled=0x50005` -> the raw value and the names of the bits set."""
    m = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    if not m:
        raise ValueError(f"not get_throttled output: {text!r}")
    value = int(m.group(1), 0)
    return {"raw": value, "flags": [name for bit, name in THROTTLE_BITS.items() if value >> bit & 1],
            "throttled_now": bool(value & 0b1111), "throttled_since_boot": bool(value >> 16 & 0b1111)}


# ---------------------------------------------------------------- sensor


class PmicSensor:
    """Runs `vcgencmd pmic_read_adc` at each sample (about 10 ms) and sums V*A over the paired rails."""

    kind = "power"
    name = "rpi5-pmic:sum of PMIC rails"
    excludes = PMIC_EXCLUDES

    def __init__(self, run=None):
        self._run = run or (lambda: subprocess.run(PMIC_COMMAND.split(), capture_output=True, text=True,
                                                   timeout=5, check=True).stdout)
        try:
            first = parse_pmic_read_adc(self._run())
        except (OSError, subprocess.SubprocessError) as e:
            raise SensorUnavailable(f"`{PMIC_COMMAND}` failed: {e}") from None
        if not first:
            raise SensorUnavailable(f"`{PMIC_COMMAND}` printed no paired rails (not a Raspberry Pi 5?)")

    def read(self) -> float:
        return sum(parse_pmic_read_adc(self._run()).values())

    def close(self) -> None:
        pass


def open_sensor() -> PmicSensor:
    return PmicSensor()


SENSORS_IN_ORDER = ("rpi5",)  # edgekit.power.SENSORS["rpi5"] is open_sensor above


STATE_PARSERS = {**LINUX_STATE_PARSERS, "arm_hz": parse_measure_clock, "throttled": parse_throttled,
                 "soc_temp": parse_measure_temp}


def parse_pmic_log(data: bytes) -> list[float]:
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
