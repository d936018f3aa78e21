"""The target registry: what a target spec holds, the fact commands detection reads, and
detection across the device families.

Each family module (rpi5, jetson, apple_m, linux) holds its own specs (every figure with
its source), `detect(facts)`, runtime install recipes, runner defaults, the state
commands (clocks, power mode, throttling) and its power sensor. `FAMILIES` is a plain
dict of module names, imported on first use, so `edgekit --help` imports none of them
and a plugin could add a family. Detection is a pure function of recorded facts, so it
is tested on fixture files; `edgekit probe` gathers the facts through a Transport.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import asdict, dataclass, field
from types import ModuleType

from edgekit.llamacpp_build import LLAMA_CPP_PYTHON_VERSION


@dataclass(frozen=True)
class TargetSpec:
    name: str
    family: str                    # a key of FAMILIES
    ram_gb: float | None
    bandwidth_gb_s: float | None   # peak DRAM bandwidth
    cpu: str
    big_cores: int | None          # runner default threads
    accelerator: str
    power_modes: tuple[str, ...] = ()
    llama_cpp_cmake_args: str = ""  # CMAKE_ARGS for pip install llama-cpp-python on the device
    onnxruntime_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    power_sensor: str | None = None  # key of edgekit.power.SENSORS
    default_gpu_layers: int = 0
    sources: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        return {**asdict(self), "install": install_recipes(self)}


LLAMA_CPP_PYTHON = f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"

# family -> module; the order is detection order (linux, which matches anything, last)
FAMILIES: dict[str, str] = {
    "rpi5": "edgekit.targets.rpi5",
    "jetson": "edgekit.targets.jetson",
    "apple-m": "edgekit.targets.apple_m",
    "linux": "edgekit.targets.linux",
}

# name -> command; `edgekit probe --record` stores each output as <name>.txt
FACT_COMMANDS: dict[str, str] = {
    "uname_m": "uname -m",
    "uname_s": "uname -s",
    "device_tree_model": "cat /proc/device-tree/model",
    "device_tree_compatible": "cat /proc/device-tree/compatible",
    "nv_tegra_release": "cat /etc/nv_tegra_release",
    "cpuinfo": "cat /proc/cpuinfo",
    "meminfo": "cat /proc/meminfo",
    "nvidia_smi": "nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader,nounits",
    "sysctl": "sysctl -n machdep.cpu.brand_string hw.memsize hw.model",
    "sysctl_perflevels": "sysctl -n hw.perflevel0.physicalcpu hw.perflevel1.physicalcpu",
}


def family_module(family: str) -> ModuleType:
    if family not in FAMILIES:
        raise KeyError(f"unknown target family '{family}' (known: {', '.join(FAMILIES)})")
    return importlib.import_module(FAMILIES[family])


_SPECS: dict[str, TargetSpec] | None = None


def all_specs() -> dict[str, TargetSpec]:
    """Every known target spec by name, across the families."""
    global _SPECS
    if _SPECS is None:
        _SPECS = {s.name: s for family in FAMILIES for s in family_module(family).SPECS}
    return _SPECS


def __getattr__(name: str):  # `SPECS` stays a plain dict for callers, built on first use
    if name == "SPECS":
        return all_specs()
    raise AttributeError(name)


def detect(facts: dict[str, str]) -> tuple[TargetSpec, dict]:
    """The target a set of facts describes, and what was read off them. Families are asked in
    order; `linux` answers for anything the others do not claim."""
    for family in FAMILIES:
        found = family_module(family).detect(facts)
        if found is not None:
            return found
    raise AssertionError("the linux family matches any facts")


def install_recipes(spec: TargetSpec) -> dict[str, str]:
    """Shell commands that install each runtime on the device."""
    module = family_module(spec.family)
    args = spec.llama_cpp_cmake_args
    env = f'CMAKE_ARGS="{args}" ' if args else ""
    env += getattr(module, "LLAMA_CPP_ENV", "")
    return {"llama.cpp": f"{env}pip install --no-cache-dir {LLAMA_CPP_PYTHON}",
            "onnxruntime": module.onnxruntime_install(spec)}


# ---------------------------------------------------------------- parsers several families share


def clean(text: str | None) -> str:
    """A fact's text without device-tree NUL bytes and outer whitespace."""
    return (text or "").replace("\x00", "").strip()


def ram_gb(facts: dict[str, str]) -> float | None:
    """MemTotal in GiB, one decimal (what the kernel sees: a little below the installed RAM)."""
    from edgekit.targets.host import parse_meminfo_total_bytes

    total = parse_meminfo_total_bytes(facts.get("meminfo") or "")
    return round(total / 2**30, 1) if total else None


def parse_compatible(text: str | None) -> list[str]:
    """/proc/device-tree/compatible: NUL-separated strings, most specific first."""
    return [s for s in (text or "").split("\x00") if s.strip()]


def cpu_count(cpuinfo: str | None) -> int | None:
    n = len(re.findall(r"^processor\s*:", cpuinfo or "", flags=re.M))
    return n or None
