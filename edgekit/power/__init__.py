"""Power sensors and the sampler that turns them into per-phase watts and joules.

A sensor is two things: a reader (files, a library call, a command) and a pure
parser, so every parser is tested on recorded output. A sensor reports either a
cumulative energy counter in joules (`kind = "energy"`: RAPL, NVML total energy)
or instantaneous power in watts (`kind = "power"`). The sampler polls it in a
background thread and keeps (t, W) samples; phase energy is the integral of
those samples over the phase's time window. No sensor means no power figure,
with the reason, never an estimate.

The sensors are a registry (edgekit.registry): SENSORS, edgekit's own, plus the
"edgekit.power_sensors" entry points of installed plugins. Which ones `--power auto`
tries on a device is the device family's Family.SENSORS_IN_ORDER.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from edgekit.errors import EdgekitError
from edgekit.registry import POWER_SENSORS_GROUP, Registry
from edgekit.results import PowerInfo
from edgekit.targets.specs import family_module, family_names


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
    clock: Callable[[], float] = time.perf_counter  # the clock the phases are timed with (a test's, in tests)

    def start(self) -> "Sampler":
        self.t0 = self.clock()
        self._prev = (self.t0, self.sensor.read())
        self._thread = threading.Thread(target=self._loop, name="edgekit-power", daemon=True)
        self._thread.start()
        return self

    def _take(self) -> None:
        if self.gauge is not None:
            g = self.gauge()
            self.gauge_max = g if self.gauge_max is None else max(self.gauge_max, g)
        t, v = self.clock(), self.sensor.read()
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


# key -> "module:attribute" of a function () -> Sensor that raises SensorUnavailable where it cannot read:
# edgekit's own; plugins add "edgekit.power_sensors" entry points. A family names its own in
# Family.SENSORS_IN_ORDER.
SENSORS = {
    "rapl": "edgekit.power.rapl:open_rapl",
    "nvml": "edgekit.power.nvml:open_nvml",
    "jetson": "edgekit.targets.jetson:open_sensor",          # INA3221 rails via sysfs
    "tegrastats": "edgekit.targets.jetson:open_tegrastats",
    "rpi5": "edgekit.targets.rpi5:open_sensor",              # vcgencmd pmic_read_adc
    "powermetrics": "edgekit.targets.apple_m:open_sensor",   # macOS, passwordless sudo
}
SENSOR_REGISTRY = Registry(POWER_SENSORS_GROUP, SENSORS, what="power sensor")


def sensor_registry() -> Registry:
    """SENSOR_REGISTRY, or a registry over SENSORS where the dict was replaced wholesale (a test's fakes)."""
    if SENSOR_REGISTRY.builtins is SENSORS:
        return SENSOR_REGISTRY
    return Registry(POWER_SENSORS_GROUP, SENSORS, what="power sensor")


def device_sensors() -> dict[str, list[str]]:
    """A device family's own sensor -> the sensors `--power auto` tries for it (Family.SENSORS_IN_ORDER,
    whose first is the family's own), across the families that have one."""
    orders = (list(family_module(family).SENSORS_IN_ORDER) for family in family_names())
    return {order[0]: order for order in orders if order}


def __getattr__(name: str):  # DEVICE_SENSORS: the families' SENSORS_IN_ORDER, keyed by their own sensor
    if name == "DEVICE_SENSORS":
        return device_sensors()
    raise AttributeError(name)


def auto_sensors(on_gpu: bool, target_sensor: str | None = None, family: str | None = None) -> list[str]:
    """The keys `--power auto` tries, in order: the family's SENSORS_IN_ORDER on a device that has its
    own sensor (it sees the SoC: CPU and GPU alike), else NVML when the work runs on an NVIDIA GPU and
    RAPL when it runs on the CPU. The family is `family`, else the one whose own sensor (the first of
    its SENSORS_IN_ORDER) is `target_sensor`, a spec's power_sensor."""
    order: tuple[str, ...] | list[str] = ()
    if family is not None:
        order = family_module(family).SENSORS_IN_ORDER
    elif target_sensor:
        for name in family_names():  # stops at the first match: no other family is imported
            candidate = family_module(name).SENSORS_IN_ORDER
            if candidate and candidate[0] == target_sensor:
                order = candidate
                break
    return list(order) or (["nvml"] if on_gpu else ["rapl"])


def open_sensor(name: str, on_gpu: bool = False, target_sensor: str | None = None, family: str | None = None
                ) -> tuple[Sensor | None, str | None]:
    """A sensor by name ('auto', 'none', or a sensor's key: SENSORS or a plugin's); returns (sensor,
    why-not). 'auto' tries auto_sensors(on_gpu, target_sensor, family), the device doing the work, never
    a fallback to another device's sensor. An unknown name raises EdgekitError; a sensor plugin that
    fails to import raises EdgekitError naming it."""
    if name == "none":
        return None, "power measurement disabled (--power none)"
    registry = sensor_registry()
    if name == "auto":
        order = auto_sensors(on_gpu, target_sensor, family)
    elif name in registry:
        order = [name]
    else:
        raise EdgekitError(f"unknown power sensor '{name}'",
                           f"choose auto, none or one of: {', '.join(registry.names())}")
    reasons = []
    for key in order:
        try:
            opener = registry.load(key)
        except KeyError:  # a family naming a sensor that is not installed
            reasons.append(f"{key}: no such power sensor is installed")
            continue
        try:
            return opener(), None
        except SensorUnavailable as e:
            reasons.append(f"{key}: {e}")
    return None, "no power sensor readable here (" + "; ".join(reasons) + ")"


def summarise_power(sampler, idle_window, pp_windows, tg_windows, n_prompt, n_gen, warnings) -> PowerInfo:
    """Watts and joules per phase from the samples (`idle_window`, the pp and tg windows, timed on
    the sampler's clock); none at all when sampling broke off. Warnings go to `warnings`."""
    sensor = sampler.sensor
    if sampler.errors or not sampler.samples:
        reason = sampler.errors[0] if sampler.errors else "no samples were taken"
        return PowerInfo(source=sensor.name, excludes=sensor.excludes, sample_interval_s=sampler.interval_s,
                         unavailable=f"power sampling failed during the run ({reason}); no figures reported")
    idle_w = sampler.mean_w([idle_window]) if idle_window else None
    info = PowerInfo(source=sensor.name, excludes=sensor.excludes, sample_interval_s=sampler.interval_s,
                     idle_w=idle_w,
                     samples=[(round(t - sampler.t0, 4), round(w, 4)) for t, w in sampler.samples])
    for phase, windows, n_tok in (("pp", pp_windows, n_prompt), ("tg", tg_windows, n_gen)):
        if not windows:
            continue
        seconds = sum(b - a for a, b in windows)
        if seconds / len(windows) < 5 * sampler.interval_s:
            warnings.append(f"{phase} phases last {seconds / len(windows):.3f} s each, under 5 power samples: "
                            f"its watts are rough; use more tokens")
        avg_w = sampler.mean_w(windows)
        energy = avg_w * seconds
        tokens = n_tok * len(windows)
        setattr(info, f"{phase}_avg_w", avg_w)
        setattr(info, f"{phase}_j_per_tok", energy / tokens)
        if idle_w is not None:
            setattr(info, f"{phase}_j_per_tok_above_idle", (avg_w - idle_w) * seconds / tokens)
    return info
