"""Linux RAPL energy counters under /sys/class/powercap (Intel, and AMD since Linux 5.8).

Each zone `intel-rapl:N` (a CPU package) and subzone `intel-rapl:N:M` (core,
uncore, dram) has `name`, `energy_uj` (cumulative microjoules, wraps at
`max_energy_range_uj`). The total here is the package zones plus dram zones
(core and uncore are inside the package); a `psys` zone, where present,
already covers the whole SoC and is used alone. `energy_uj` is root-only since
Linux 5.10 (CVE-2020-8694).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.power import SensorUnavailable

POWERCAP = Path("/sys/class/powercap")


@dataclass
class RaplZone:
    name: str
    energy_path: Path
    max_range_uj: int


def parse_zone(name_text: str, max_range_text: str) -> tuple[str, int]:
    return name_text.strip(), int(max_range_text.strip())


def counter_delta_uj(prev: int, cur: int, max_range_uj: int) -> int:
    """Microjoules between two readings of one counter, across at most one wrap-around."""
    return cur - prev if cur >= prev else cur + max_range_uj - prev


def discover(root: Path = POWERCAP) -> list[RaplZone]:
    zones = []
    for d in sorted(root.glob("intel-rapl:*")):
        try:
            name, max_range = parse_zone((d / "name").read_text(), (d / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            continue
        zones.append(RaplZone(name, d / "energy_uj", max_range))
    return zones


def select(zones: list[RaplZone]) -> list[RaplZone]:
    psys = [z for z in zones if z.name.startswith("psys")]
    if psys:
        return psys
    return [z for z in zones if z.name.startswith("package") or z.name == "dram"]


class RaplSensor:
    kind = "energy"

    def __init__(self, zones: list[RaplZone]):
        self.zones = zones
        self.name = "rapl:" + "+".join(z.name for z in zones)
        self.excludes = ("CPU package and DRAM domains only: not a GPU, disks, fans, board regulators "
                         "or power-supply losses" if not zones[0].name.startswith("psys")
                         else "platform (psys) domain: not power-supply losses or devices on other rails")
        self._last = [self._raw(z) for z in zones]
        self._total_uj = 0

    @staticmethod
    def _raw(zone: RaplZone) -> int:
        return int(zone.energy_path.read_text().strip())

    def read(self) -> float:
        """Cumulative joules since the sensor was opened (wrap-arounds unfolded)."""
        for i, z in enumerate(self.zones):
            cur = self._raw(z)
            self._total_uj += counter_delta_uj(self._last[i], cur, z.max_range_uj)
            self._last[i] = cur
        return self._total_uj / 1e6

    def close(self) -> None:
        pass


def open_rapl(root: Path = POWERCAP) -> RaplSensor:
    zones = select(discover(root))
    if not zones:
        raise SensorUnavailable(f"no RAPL package zones under {root}")
    try:
        return RaplSensor(zones)
    except PermissionError:
        raise SensorUnavailable(
            f"{zones[0].energy_path} is readable by root only (Linux 5.10+); run as root or "
            f"`sudo chmod a+r {root}/intel-rapl:*/energy_uj {root}/intel-rapl:*/*/energy_uj`") from None
    except OSError as e:
        raise SensorUnavailable(f"cannot read {zones[0].energy_path}: {e}") from None
