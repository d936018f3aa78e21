"""NVIDIA GPU board power through NVML (nvidia-ml-py, imported as pynvml).

Prefers the cumulative energy counter (nvmlDeviceGetTotalEnergyConsumption,
millijoules, Volta and newer); falls back to sampling nvmlDeviceGetPowerUsage
(milliwatts) where the counter is not supported.
"""

from __future__ import annotations

import os

from edgekit.power import SensorUnavailable

EXCLUDES = "GPU board only: not the CPU, host memory, disks or power-supply losses"


def visible_device(env: dict) -> tuple[str, str | int]:
    """The GPU llama.cpp's CUDA backend sees first: CUDA_VISIBLE_DEVICES' first entry (index or UUID)."""
    first = (env.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip()
    return ("index", int(first)) if first.isdigit() else ("uuid", first)


class NvmlSensor:
    def __init__(self, nvml, index: int | None = None):
        self.nvml = nvml
        kind, ref = ("index", index) if index is not None else visible_device(dict(os.environ))
        if kind == "index":
            self.handle = nvml.nvmlDeviceGetHandleByIndex(ref)
        else:
            self.handle = nvml.nvmlDeviceGetHandleByUUID(ref.encode() if isinstance(ref, str) else ref)
        index = ref
        name = nvml.nvmlDeviceGetName(self.handle)
        name = name.decode() if isinstance(name, bytes) else name
        self.excludes = EXCLUDES
        try:
            self._e0 = nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self.kind = "energy"
            self.name = f"nvml:GPU{index} {name} total energy"
        except nvml.NVMLError:
            nvml.nvmlDeviceGetPowerUsage(self.handle)  # raises if power is not readable either
            self.kind = "power"
            self.name = f"nvml:GPU{index} {name} power usage"

    def read(self) -> float:
        if self.kind == "energy":
            return (self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) - self._e0) / 1e3  # mJ -> J
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1e3  # mW -> W

    def memory_used_bytes(self) -> int:
        return int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:
            pass


def load_nvml():
    try:
        import pynvml
    except ImportError:
        raise SensorUnavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from None
    try:
        pynvml.nvmlInit()
    except Exception as e:
        raise SensorUnavailable(f"NVML did not initialise ({e}); no NVIDIA driver here") from None
    return pynvml


def open_nvml(index: int | None = None, nvml=None) -> NvmlSensor:
    nvml = nvml or load_nvml()
    try:
        return NvmlSensor(nvml, index)
    except Exception as e:
        raise SensorUnavailable(f"NVML cannot read power of GPU {index}: {e}") from None
