"""NVIDIA Jetson Orin family (AGX Orin 32/64 GB, the devkit module; Orin NX and Orin Nano as
variants): specs, detection, runtime recipes, power mode and clocks, and power rails
(INA3221 monitors through hwmon or iio, and tegrastats).

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

from edgekit.power import SensorUnavailable
from edgekit.power.stream import StreamSensor
from edgekit.targets.linux import LINUX_STATE_COMMANDS, LINUX_STATE_PARSERS
from edgekit.targets.specs import TargetSpec, clean, parse_compatible, ram_gb

FAMILY = "jetson"

# Orin: Ampere sm_87. JetPack puts CUDA in /usr/local/cuda without nvcc on PATH: CUDACXX names it
CUDA_CMAKE = "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=87"
LLAMA_CPP_ENV = "CUDACXX=/usr/local/cuda/bin/nvcc "
ORT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_AGX = "NVIDIA Jetson AGX Orin series data sheet: 256-bit LPDDR5 at 204.8 GB/s"
_NX = "NVIDIA Jetson Orin NX series data sheet: 128-bit LPDDR5 at 102.4 GB/s"
_NANO = "NVIDIA Jetson Orin Nano series data sheet"
_SKUS = "module SKU from /proc/device-tree/compatible (Jetson Linux module table: P3701-000x, P3767-000x)"


def _jetson(name, ram, bw, cores, gpu, modes, *sources):
    return TargetSpec(name, FAMILY, ram, bw, f"{cores}x Cortex-A78AE", cores, gpu, modes, CUDA_CMAKE,
                      ORT_PROVIDERS, "jetson", 99, (f"{ram} GB module: " + sources[0], *sources[1:], _SKUS))


SPECS = [
    _jetson("jetson-agx-orin-64gb", 64, 204.8, 12, "Ampere GPU, 2048 CUDA cores, 64 Tensor Cores",
            ("MAXN", "15W", "30W", "50W"), _AGX + ", 12-core CPU, 2048-core GPU (P3701-0005; Industrial P3701-0008)"),
    _jetson("jetson-agx-orin-devkit-32gb", 32, 204.8, 12, "Ampere GPU, 2048 CUDA cores, 64 Tensor Cores",
            ("MAXN", "15W", "30W", "50W"), _AGX, "first AGX Orin Developer Kit module P3701-0000: 32 GB with the "
            "64 GB module's 12-core CPU and 2048-core GPU (AGX Orin developer kit user guide)"),
    _jetson("jetson-agx-orin-32gb", 32, 204.8, 8, "Ampere GPU, 1792 CUDA cores, 56 Tensor Cores",
            ("MAXN", "15W", "30W", "40W"), _AGX + ", 8-core CPU, 1792-core GPU (P3701-0004)"),
    _jetson("jetson-orin-nx-16gb", 16, 102.4, 8, "Ampere GPU, 1024 CUDA cores, 32 Tensor Cores",
            ("MAXN", "10W", "15W", "25W"), _NX + ", 8-core CPU (P3767-0000); module exposes VDD_IN"),
    _jetson("jetson-orin-nx-8gb", 8, 102.4, 6, "Ampere GPU, 1024 CUDA cores, 32 Tensor Cores",
            ("MAXN", "10W", "15W", "20W"), _NX + ", 6-core CPU (P3767-0001); module exposes VDD_IN"),
    _jetson("jetson-orin-nano-8gb", 8, 68.0, 6, "Ampere GPU, 1024 CUDA cores, 32 Tensor Cores",
            ("15W", "7W"), _NANO + ": 128-bit LPDDR5 at 68 GB/s (102 GB/s in Super mode), 6-core CPU "
            "(P3767-0003, devkit P3767-0005); module exposes VDD_IN"),
    _jetson("jetson-orin-nano-8gb-super", 8, 102.4, 6, "Ampere GPU, 1024 CUDA cores, 32 Tensor Cores",
            ("MAXN_SUPER", "25W", "15W", "7W"), _NANO + " Super: JetPack 6.2+ raises the memory clock to "
            "3199 MHz on the 128-bit bus = 102.4 GB/s (device-tree model ends in 'Super')"),
    _jetson("jetson-orin-nano-4gb", 4, 34.0, 6, "Ampere GPU, 512 CUDA cores, 16 Tensor Cores",
            ("10W", "7W"), _NANO + ": 64-bit LPDDR5 at 34 GB/s, 6-core CPU (P3767-0004)"),
]
# Jetsons that are not Orin (Nano, TX2, Xavier, Thor): the family's tools and sensors, nothing assumed
# about memory, bandwidth or the GPU architecture (llama.cpp then builds for the CUDA it finds)
OTHER = TargetSpec("jetson-other", FAMILY, None, None, "Arm CPU", None, "NVIDIA integrated GPU",
                   (), "-DGGML_CUDA=on", ORT_PROVIDERS, "jetson", 99,
                   ("a Jetson that is not an Orin: no spec sheet figures; bandwidth is not assumed",))
SPECS.append(OTHER)
BY_SKU = {"p3701-0005": "jetson-agx-orin-64gb", "p3701-0008": "jetson-agx-orin-64gb",
          "p3701-0000": "jetson-agx-orin-devkit-32gb", "p3701-0004": "jetson-agx-orin-32gb",
          "p3767-0000": "jetson-orin-nx-16gb", "p3767-0001": "jetson-orin-nx-8gb",
          "p3767-0003": "jetson-orin-nano-8gb", "p3767-0005": "jetson-orin-nano-8gb",
          "p3767-0004": "jetson-orin-nano-4gb"}


def parse_l4t(text: str | None) -> str | None:
    """`# R36 (release), REVISION: 4.3, ...` (/etc/nv_tegra_release) -> 'R36.4.3'."""
    m = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", text or "")
    return f"R{m.group(1)}.{m.group(2)}" if m else None


def detect(facts: dict[str, str]) -> tuple[TargetSpec, dict] | None:
    model = clean(facts.get("device_tree_model"))
    compatible = parse_compatible(facts.get("device_tree_compatible"))
    l4t = parse_l4t(facts.get("nv_tegra_release"))
    if not ("Jetson" in model or l4t or any(c.startswith("nvidia,tegra") for c in compatible)):
        return None
    seen: dict = {"model": model or None, "ram_gb": ram_gb(facts), "l4t": l4t}
    orin = "nvidia,tegra234" in compatible if compatible else "Orin" in model
    if not orin:  # a Nano, TX2, Xavier or Thor, or an L4T release alone: not an Orin spec
        seen["not_orin"] = True
        return OTHER, seen
    specs = {s.name: s for s in SPECS}
    skus = [m.group(0) for c in compatible for m in [re.search(r"p3(?:701|767)-\d{4}$", c)] if m]
    if skus:
        seen["module"] = skus[0]
        if skus[0] in BY_SKU:
            name = BY_SKU[skus[0]]
            if name == "jetson-orin-nano-8gb" and model.endswith("Super"):
                name += "-super"
            return specs[name], seen
    # no (known) SKU: the model string and MemTotal decide
    m, ram = model.lower(), seen["ram_gb"] or 0
    if "orin nx" in m:
        return specs["jetson-orin-nx-16gb" if ram > 10 or not ram else "jetson-orin-nx-8gb"], seen
    if "orin nano" in m:  # the developer kit carries the 8 GB module; 'Super' is its JetPack 6.2 mode
        if "developer kit" in m or ram > 5 or not ram:
            return specs["jetson-orin-nano-8gb-super" if m.endswith("super") else "jetson-orin-nano-8gb"], seen
        return specs["jetson-orin-nano-4gb"], seen
    if ram > 40 or not ram:
        return specs["jetson-agx-orin-64gb"], seen
    return specs["jetson-agx-orin-devkit-32gb" if "developer kit" in m else "jetson-agx-orin-32gb"], seen


def onnxruntime_install(spec: TargetSpec) -> str:
    return ("pip install onnxruntime-gpu --index-url https://pypi.jetson-ai-lab.io/jp6/cu126  "
            "# JetPack 6 (L4T R36); JetPack 5: the Jetson Zoo wheel for your JetPack (PyPI has no Jetson build)")


# ---------------------------------------------------------------- power mode and clocks

# jetson_clocks refuses to run without root, even for --show: fall back to passwordless sudo
STATE_COMMANDS = {**LINUX_STATE_COMMANDS, "nvpmodel": "nvpmodel -q",
                  "jetson_clocks": "jetson_clocks --show 2>/dev/null || sudo -n jetson_clocks --show"}


def parse_nvpmodel(text: str) -> dict | None:
    """`NV Power Mode: MAXN` with the mode id on the next line; some JetPacks print no id line,
    others `NVPOWERMODE: 15W` after NVPM WARN lines."""
    m = re.search(r"(?:NV Power Mode|NVPOWERMODE):\s*(\S+)(?:\s*\n\s*(\d+)\s*(?:\n|$))?", text)
    if not m:
        return None
    return {"mode": m.group(1), "id": int(m.group(2)) if m.group(2) else None}


_FREQ = re.compile(r"MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)")


def parse_jetson_clocks(text: str) -> dict:
    """`jetson_clocks --show`: per-CPU governor and min/max/current kHz, GPU and EMC min/max/current Hz,
    the power mode. `locked` is True when every online CPU and the GPU have their floor raised to their
    maximum (MinFreq == MaxFreq: what `sudo jetson_clocks` does; it pins EMC through FreqOverride=1
    instead, so EMC is reported, not judged), the state benchmarks want; with DVFS the clocks follow
    the load and results vary. JetPack 7 drops the per-CPU `Online=` field."""
    out: dict = {"cpus": {}, "locked": None}
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"(cpu\d+):\s+(?:Online=(\d)\s*)?(?:Governor=(\S+))?", line)
        f = _FREQ.search(line)
        if m:
            cpu = {"online": m.group(2) != "0", "governor": m.group(3)}
            if f:
                cpu.update(min_khz=int(f.group(1)), max_khz=int(f.group(2)), cur_khz=int(f.group(3)))
            out["cpus"][m.group(1)] = cpu
        elif f and re.match(r"(GPU|EMC)\b", line):
            clock = {"min": int(f.group(1)), "max": int(f.group(2)), "cur": int(f.group(3))}
            override = re.search(r"FreqOverride=(\d)", line)
            if override:
                clock["override"] = override.group(1) == "1"
            out[line.split()[0].lower()] = clock
        elif line.startswith("NV Power Mode") and ":" in line:
            out["power_mode"] = line.split(":", 1)[1].strip()
        elif line.startswith("SOC family:"):
            soc, _, machine = line.partition("Machine:")
            out["soc"], out["machine"] = soc.split(":", 1)[1].strip(), machine.strip() or None
    floors = [(c["min_khz"], c["max_khz"]) for c in out["cpus"].values() if c["online"] and "max_khz" in c]
    if "gpu" in out:
        floors.append((out["gpu"]["min"], out["gpu"]["max"]))
    if floors:
        out["locked"] = all(lo >= hi for lo, hi in floors)
    return out


STATE_PARSERS = {**LINUX_STATE_PARSERS, "nvpmodel": parse_nvpmodel, "jetson_clocks": parse_jetson_clocks}


# ---------------------------------------------------------------- power rails

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
        try:
            rails[label] = int(volt.strip()) * int(curr.strip()) / 1e6
        except ValueError:  # a monitor that answered nothing (or a read error) this time
            continue
    return rails


def parse_ina3221_iio(files: dict[str, str]) -> dict[str, float]:
    """Rail watts from one JetPack 4 iio folder: in_powerK_input is mW."""
    rails = {}
    for name, content in files.items():
        m = re.fullmatch(r"rail_name_(\d+)", name)
        if not m:
            continue
        label, power = content.strip(), files.get(f"in_power{m.group(1)}_input")
        if _is_rail(label) and power is not None and power.strip().isdigit():
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
    return StreamSensor("tegrastats", EXCLUDES_RAIL_SUM + " (VDD_IN where the module has it)",
                        command or ["tegrastats", "--interval", str(interval_ms)], tegrastats_watts)


# the INA3221 rails through sysfs first (no child process), then tegrastats, which reads the same rails
SENSORS_IN_ORDER = ("jetson", "tegrastats")


def parse_tegrastats_log(data: bytes) -> list[float]:
    """A tegrastats log (one line a reading) as watts per reading (`edgekit power parse`)."""
    return [w for line in data.splitlines() if (w := tegrastats_watts(line)) is not None]
