"""Power sensors and the sampler that turns them into per-phase watts and joules.

A sensor is two things: a reader (files, a library call, a command) and a pure
parser, so every parser is tested on recorded output. A sensor reports either a
cumulative energy counter in joules (`kind = "energy"`: RAPL, NVML total energy)
or instantaneous power in watts (`kind = "power"`). The sampler polls it in a
background thread and keeps (t, W) samples; phase energy is the integral of
those samples over the phase's time window. No sensor means no power figure,
with the reason, never an estimate.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol


class Sensor(Protocol):
    name: str            # recorded as PowerInfo.source
    excludes: str        # what it cannot see
    kind: str            # "energy" (joules, cumulative) or "power" (watts)

    def read(self) -> float: ...

    def close(self) -> None: ...


class SensorUnavailable(Exception):
    """The sensor cannot be used here; the message says why and how to fix it."""


@dataclass
class Sampler:
    sensor: Sensor
    interval_s: float = 0.1
    samples: list[tuple[float, float]] = field(default_factory=list)  # (monotonic t, W) over (t_prev, t]
    t0: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    errors: list[str] = field(default_factory=list)
    gauge: object = None                 # optional callable polled with each sample (e.g. GPU memory used)
    gauge_max: float | None = None

    def start(self) -> "Sampler":
        self.t0 = time.perf_counter()
        self._prev = (self.t0, self.sensor.read())
        self._thread = threading.Thread(target=self._loop, name="edgekit-power", daemon=True)
        self._thread.start()
        return self

    def _take(self) -> None:
        if self.gauge is not None:
            g = self.gauge()
            self.gauge_max = g if self.gauge_max is None else max(self.gauge_max, g)
        t, v = time.perf_counter(), self.sensor.read()
        tp, vp = self._prev
        if self.sensor.kind == "energy":
            if t > tp:
                self.samples.append((t, (v - vp) / (t - tp)))
        else:
            self.samples.append((t, v))
        self._prev = (t, v)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._take()
            except Exception as e:  # a sensor that fails mid-run ends sampling, not the benchmark
                self.errors.append(f"{type(e).__name__}: {e}")
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        try:
            self._take()
        except Exception as e:
            self.errors.append(f"{type(e).__name__}: {e}")

    def energy_j(self, t_start: float, t_end: float) -> float:
        return energy_between(self.samples, t_start, t_end, self.t0)

    def mean_w(self, windows: list[tuple[float, float]]) -> float | None:
        total_t = sum(b - a for a, b in windows)
        if total_t <= 0:
            return None
        return sum(self.energy_j(a, b) for a, b in windows) / total_t


def energy_between(samples: list[tuple[float, float]], t_start: float, t_end: float, t0: float) -> float:
    """Integrate piecewise-constant power: sample (t_i, W_i) holds over (t_{i-1}, t_i]."""
    energy, prev_t = 0.0, t0
    for t, w in samples:
        lo, hi = max(prev_t, t_start), min(t, t_end)
        if hi > lo:
            energy += w * (hi - lo)
        prev_t = t
        if prev_t >= t_end:
            break
    return energy


SENSORS = {
    "rapl": "edgekit.power.rapl:open_rapl",
    "nvml": "edgekit.power.nvml:open_nvml",
    "jetson": "edgekit.targets.jetson:open_sensor",          # INA3221 rails via sysfs
    "tegrastats": "edgekit.targets.jetson:open_tegrastats",
    "rpi5": "edgekit.targets.rpi5:open_sensor",              # vcgencmd pmic_read_adc
    "powermetrics": "edgekit.targets.apple_m:open_sensor",   # macOS, passwordless sudo
}


# a device family's own sensor, then what else reads the same device
DEVICE_SENSORS = {"jetson": ["jetson", "tegrastats"], "rpi5": ["rpi5"], "powermetrics": ["powermetrics"]}


def open_sensor(name: str, on_gpu: bool = False, target_sensor: str | None = None
                ) -> tuple[Sensor | None, str | None]:
    """A sensor by name ('auto', 'none', or a key of SENSORS); returns (sensor, why-not). 'auto' takes
    the target's own sensor on an edge device (it sees the SoC: CPU and GPU alike), else NVML when the
    work runs on an NVIDIA GPU and RAPL when it runs on the CPU."""
    import importlib

    if name == "none":
        return None, "power measurement disabled (--power none)"
    if name == "auto":  # the device doing the work, never a fallback to another device's sensor
        order = DEVICE_SENSORS.get(target_sensor or "") or (["nvml"] if on_gpu else ["rapl"])
    elif name in SENSORS:
        order = [name]
    else:
        from edgekit.errors import EdgekitError

        raise EdgekitError(f"unknown power sensor '{name}'", f"choose auto, none or one of: {', '.join(SENSORS)}")
    reasons = []
    for key in order:
        module, attr = SENSORS[key].split(":")
        try:
            return getattr(importlib.import_module(module), attr)(), None
        except SensorUnavailable as e:
            reasons.append(f"{key}: {e}")
    return None, "no power sensor readable here (" + "; ".join(reasons) + ")"
