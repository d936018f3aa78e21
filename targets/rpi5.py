"""Raspberry Pi 5: PMIC rail power (`vcgencmd pmic_read_adc`) and throttling bits.

The PMIC reports currents (`X_A current(n)=...A`) and voltages (`X_V volt(m)=...V`)
on separate lines whose numbers in parentheses differ: pair them by the name stem X.
EXT5V_V and BATT_V have no current. The PMIC does not see loads on the 5 V rail
(USB devices, HATs, an NVMe drive), so their power is outside this figure.
"""

from __future__ import annotations

import re

PMIC_COMMAND = "vcgencmd pmic_read_adc"
PMIC_EXCLUDES = "5 V loads the PMIC does not see: USB devices, HATs, NVMe, fan; and power-supply losses"
THROTTLED_COMMAND = "vcgencmd get_throttled"

_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=([0-9.eE+-]+)([AV])\s*$")

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
        import subprocess

        from edgekit.power import SensorUnavailable

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
