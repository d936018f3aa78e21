"""NVIDIA Jetson power rails: INA3221 monitors through hwmon or iio, and tegrastats.

Rules (as jetson_stats applies them):
- JetPack 5/6 expose each INA3221 under `/sys/bus/i2c/drivers/ina3221/<addr>/hwmon/hwmonN/`
  (N varies: glob it) with `inK_label`, `inK_input` (mV) and `currK_input` (mA).
  Channels labelled `NC` are not connected, and the "sum of shunt voltages" channel
  is not a rail: both are skipped.
- JetPack 4 used `/sys/bus/i2c/drivers/ina3221x/<addr>/iio:deviceN/` with
  `rail_name_K` and `in_powerK_input` (mW).
- Orin NX/Nano expose a total input rail, VDD_IN: use it. AGX Orin devkits have no
  VDD_IN; their total is the sum of VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 (+
  VDDQ_VDD2_1V8AO on the second monitor at 1-0041), labelled as a rail sum.
- tegrastats prints rails as `NAME <now>mW/<avg>mW`; newer JetPacks add a third value.
"""

from __future__ import annotations

import re
from pathlib import Path

INA3221_HWMON_GLOB = "/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"
INA3221_IIO_GLOB = "/sys/bus/i2c/drivers/ina3221x/*/iio:device*"
AGX_ORIN_SUM = ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO")
NOT_RAILS = ("NC",)


def _is_rail(label: str) -> bool:
    return bool(label) and label not in NOT_RAILS and "sum of shunt" not in label.lower()


def parse_ina3221_hwmon(files: dict[str, str]) -> dict[str, float]:
    """Rail watts from one hwmon folder's files (name -> content): V(mV) * I(mA) / 1e6."""
    rails = {}
    for name, content in files.items():
        m = re.fullmatch(r"in(\d+)_label", name)
        if not m:
            continue
        k, label = m.group(1), content.strip()
        volt, curr = files.get(f"in{k}_input"), files.get(f"curr{k}_input")
        if not _is_rail(label) or volt is None or curr is None:
            continue
        rails[label] = int(volt.strip()) * int(curr.strip()) / 1e6
    return rails


def parse_ina3221_iio(files: dict[str, str]) -> dict[str, float]:
    """Rail watts from one JetPack 4 iio folder: in_powerK_input is mW."""
    rails = {}
    for name, content in files.items():
        m = re.fullmatch(r"rail_name_(\d+)", name)
        if not m:
            continue
        label, power = content.strip(), files.get(f"in_power{m.group(1)}_input")
        if _is_rail(label) and power is not None:
            rails[label] = int(power.strip()) / 1e3
    return rails


TEGRASTATS_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)mW/(\d+)mW(?:/(\d+)mW)?")


def parse_tegrastats(line: str) -> dict[str, float]:
    """Current watts per rail from one tegrastats line (two or three values per rail)."""
    return {m.group(1): int(m.group(2)) / 1e3 for m in TEGRASTATS_RAIL.finditer(line)}


def total_power(rails: dict[str, float]) -> tuple[float, str] | None:
    """(watts, what it is): VDD_IN where present, else the AGX Orin rail sum."""
    if "VDD_IN" in rails:
        return rails["VDD_IN"], "VDD_IN (module input)"
    present = [r for r in AGX_ORIN_SUM if r in rails]
    if not present:
        return None
    return sum(rails[r] for r in present), "rail sum " + "+".join(present) + " (AGX Orin has no VDD_IN)"


def read_folder(folder: Path) -> dict[str, str]:
    out = {}
    for p in folder.iterdir():
        if p.is_file():
            try:
                out[p.name] = p.read_text()
            except OSError:
                continue
    return out


def read_rails(root: Path = Path("/")) -> dict[str, float]:
    """All rails of all INA3221 monitors under `root` (a fake tree in tests)."""
    rails: dict[str, float] = {}
    for folder in sorted(root.glob(INA3221_HWMON_GLOB.lstrip("/"))):
        rails.update(parse_ina3221_hwmon(read_folder(folder)))
    if not rails:
        for folder in sorted(root.glob(INA3221_IIO_GLOB.lstrip("/"))):
            rails.update(parse_ina3221_iio(read_folder(folder)))
    return rails


# ---------------------------------------------------------------- sensors

EXCLUDES_VDD_IN = "module input only: not the carrier board, fan, USB devices or the power supply's losses"
EXCLUDES_RAIL_SUM = ("sum of the module's monitored rails (AGX Orin has no VDD_IN): not the carrier board, "
                     "fan, USB devices, rails without a monitor, or the power supply's losses")


class JetsonRailSensor:
    """INA3221 rails read from sysfs at each sample."""

    kind = "power"

    def __init__(self, root: Path = Path("/")):
        self.root = root
        rails = read_rails(root)
        total = total_power(rails)
        if total is None:
            from edgekit.power import SensorUnavailable

            raise SensorUnavailable(f"no INA3221 rails with VDD_IN or the AGX Orin rails under {root}")
        self.what = total[1]
        self.name = f"jetson-ina3221:{self.what}"
        self.excludes = EXCLUDES_VDD_IN if total[1].startswith("VDD_IN") else EXCLUDES_RAIL_SUM

    def read(self) -> float:
        total = total_power(read_rails(self.root))
        if total is None:
            raise OSError("INA3221 rails disappeared")
        return total[0]

    def close(self) -> None:
        pass


def open_sensor() -> JetsonRailSensor:
    return JetsonRailSensor()


def tegrastats_watts(record: bytes) -> float | None:
    total = total_power(parse_tegrastats(record.decode(errors="replace")))
    return None if total is None else total[0]


def open_tegrastats(interval_ms: int = 100, command: list[str] | None = None):
    from edgekit.power.stream import StreamSensor

    return StreamSensor("tegrastats", EXCLUDES_RAIL_SUM + " (VDD_IN where the module has it)",
                        command or ["tegrastats", "--interval", str(interval_ms)], tegrastats_watts)
