from __future__ import annotations

import types

import pytest

from edgekit.power import Sampler, energy_between, open_sensor, rapl
from edgekit.power.nvml import open_nvml


def make_zone(root, name, dirname, energy, max_range=262143328850):
    d = root / dirname
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy}\n")
    (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return d


@pytest.fixture
def rapl_tree(tmp_path):
    root = tmp_path / "powercap"
    make_zone(root, "package-0", "intel-rapl:0", 1_000_000)
    make_zone(root, "core", "intel-rapl:0:0", 500_000)
    make_zone(root, "dram", "intel-rapl:0:1", 200_000, max_range=65712999613)
    (root / "intel-rapl").mkdir()  # the control-type folder sits beside the zones
    return root


def test_counter_delta_handles_wrap_around():
    assert rapl.counter_delta_uj(100, 250, 1000) == 150
    assert rapl.counter_delta_uj(900, 50, 1000) == 150  # wrapped once
    assert rapl.counter_delta_uj(5, 5, 1000) == 0


def test_rapl_selects_package_and_dram_not_core(rapl_tree):
    zones = rapl.select(rapl.discover(rapl_tree))
    assert [z.name for z in zones] == ["package-0", "dram"]
    sensor = rapl.open_rapl(rapl_tree)
    assert sensor.name == "rapl:package-0+dram" and sensor.kind == "energy"
    assert "GPU" in sensor.excludes


def test_rapl_reads_joules_across_a_wrap(rapl_tree):
    sensor = rapl.open_rapl(rapl_tree)
    assert sensor.read() == 0.0
    (rapl_tree / "intel-rapl:0" / "energy_uj").write_text("3000000\n")     # +2 J
    (rapl_tree / "intel-rapl:0:1" / "energy_uj").write_text("700000\n")    # +0.5 J
    assert sensor.read() == pytest.approx(2.5)
    # package counter wraps: 262143328850 - 3000000 + 1000000 = +260.1433 J
    (rapl_tree / "intel-rapl:0" / "energy_uj").write_text("1000000\n")
    assert sensor.read() == pytest.approx(2.5 + (262143328850 - 3000000 + 1000000) / 1e6)


def test_rapl_psys_is_used_alone(tmp_path):
    root = tmp_path / "pc"
    make_zone(root, "package-0", "intel-rapl:0", 1)
    make_zone(root, "psys", "intel-rapl:1", 1)
    assert rapl.open_rapl(root).name == "rapl:psys"


def test_rapl_root_only_says_how_to_fix(rapl_tree, monkeypatch):
    from pathlib import Path

    real = Path.read_text

    def denied(self, *a, **kw):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(rapl.SensorUnavailable, match="root only.*chmod"):
        rapl.open_rapl(rapl_tree)


def test_no_rapl_no_sensor(tmp_path):
    with pytest.raises(rapl.SensorUnavailable, match="no RAPL"):
        rapl.open_rapl(tmp_path)


class FakeNvml:
    """The subset of pynvml edgekit calls, driven by a scripted clock."""

    class NVMLError(Exception):
        pass

    def __init__(self, energy_supported=True):
        self.energy_supported = energy_supported
        self.energy_mj = 10_000
        self.power_mw = 250_000
        self.shutdown = False

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("handle", i)

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if not self.energy_supported:
            raise self.NVMLError("Not Supported")
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, h):
        return self.power_mw

    def nvmlDeviceGetMemoryInfo(self, h):
        return types.SimpleNamespace(used=3 * 2**30, total=80 * 2**30)

    def nvmlShutdown(self):
        self.shutdown = True


def test_nvml_energy_counter_in_joules():
    fake = FakeNvml()
    sensor = open_nvml(0, nvml=fake)
    assert sensor.kind == "energy" and "H100" in sensor.name
    fake.energy_mj += 4_500
    assert sensor.read() == pytest.approx(4.5)
    assert sensor.memory_used_bytes() == 3 * 2**30
    sensor.close()
    assert fake.shutdown


def test_nvml_falls_back_to_power_usage():
    fake = FakeNvml(energy_supported=False)
    sensor = open_nvml(0, nvml=fake)
    assert sensor.kind == "power" and sensor.read() == pytest.approx(250.0)


def test_energy_between_integrates_piecewise_constant_power():
    samples = [(1.0, 10.0), (2.0, 20.0), (3.0, 30.0)]  # W over (0,1], (1,2], (2,3]
    assert energy_between(samples, 0.0, 3.0, t0=0.0) == pytest.approx(60.0)
    assert energy_between(samples, 0.5, 1.5, t0=0.0) == pytest.approx(5.0 + 10.0)
    assert energy_between(samples, 2.5, 9.0, t0=0.0) == pytest.approx(15.0)


class ScriptedEnergy:
    """An energy counter that rises 5 J per second of real time."""

    kind, name, excludes = "energy", "fake", "nothing"

    def __init__(self):
        import time

        self.t0 = time.perf_counter()

    def read(self):
        import time

        return 5.0 * (time.perf_counter() - self.t0)

    def close(self):
        pass


class Ticks:
    """An injected clock: the sampler's time moves only when the test says so."""

    def __init__(self):
        self.t = 10.0

    def __call__(self) -> float:
        return self.t


class EnergyOfClock:
    kind, name, excludes = "energy", "scripted", "nothing"

    def __init__(self, clock, watts=5.0):
        self.clock, self.watts = clock, watts

    def read(self):
        return self.watts * self.clock()

    def close(self):
        pass


def test_sampler_turns_energy_counter_into_watts():
    clock = Ticks()
    s = Sampler(EnergyOfClock(clock), interval_s=3600, clock=clock).start()  # the thread never ticks here
    a = clock()
    for _ in range(4):
        clock.t += 0.05
        s._take()
    b = clock()
    s.stop()  # takes the last sample, with no time passed: skipped (no interval to divide by)
    assert [round(t - s.t0, 6) for t, _ in s.samples] == [0.05, 0.1, 0.15, 0.2]
    assert all(w == pytest.approx(5.0) for _, w in s.samples)
    assert s.mean_w([(a, b)]) == pytest.approx(5.0)
    assert s.mean_w([(a + 0.05, a + 0.15)]) == pytest.approx(5.0) and s.energy_j(a, b) == pytest.approx(1.0)


def test_open_sensor_none_and_unknown():
    from edgekit.errors import EdgekitError

    assert open_sensor("none") == (None, "power measurement disabled (--power none)")
    with pytest.raises(EdgekitError, match="unknown power sensor 'tegra'"):
        open_sensor("tegra")


class FakeSampler:
    """Samples fixed by hand: 10 W idle, 30 W during pp, 20 W during tg."""

    def __init__(self, samples, errors=()):
        self.sensor = types.SimpleNamespace(name="fake", excludes="nothing")
        self.interval_s, self.t0 = 0.1, 0.0
        self.samples, self.errors = samples, list(errors)

    def mean_w(self, windows):
        return Sampler.mean_w(self, windows)

    def energy_j(self, a, b):
        return energy_between(self.samples, a, b, self.t0)


def test_summarise_power_joules_per_token_by_hand():
    from edgekit.power import summarise_power

    samples = [(t / 10, 10.0) for t in range(1, 11)]            # 0-1 s idle at 10 W
    samples += [(1 + t / 10, 30.0) for t in range(1, 21)]      # 1-3 s pp at 30 W
    samples += [(3 + t / 10, 20.0) for t in range(1, 41)]      # 3-7 s tg at 20 W
    warnings = []
    info = summarise_power(FakeSampler(samples), (0.0, 1.0), [(1.0, 2.0), (2.0, 3.0)], [(3.0, 5.0), (5.0, 7.0)],
                           n_prompt=100, n_gen=10, warnings=warnings)
    assert info.idle_w == pytest.approx(10.0)
    assert info.pp_avg_w == pytest.approx(30.0) and info.tg_avg_w == pytest.approx(20.0)
    assert info.pp_j_per_tok == pytest.approx(60.0 / 200)           # 30 W x 2 s over 2 x 100 tokens
    assert info.tg_j_per_tok == pytest.approx(80.0 / 20)            # 20 W x 4 s over 2 x 10 tokens
    assert info.pp_j_per_tok_above_idle == pytest.approx(40.0 / 200)
    assert info.tg_j_per_tok_above_idle == pytest.approx(40.0 / 20)
    assert warnings == []


def test_summarise_power_reports_nothing_when_sampling_failed():
    from edgekit.power import summarise_power

    info = summarise_power(FakeSampler([(0.1, 5.0)], errors=["OSError: gone"]), (0.0, 0.1), [(0.1, 0.2)], [],
                           n_prompt=8, n_gen=0, warnings=[])
    assert info.pp_avg_w is None and info.idle_w is None and "OSError: gone" in info.unavailable


class Failing:
    kind, name, excludes = "power", "flaky", "nothing"

    def __init__(self):
        self.n = 0

    def read(self):
        self.n += 1
        if self.n > 2:
            raise OSError("sensor vanished")
        return 1.0

    def close(self):
        pass


def test_sampler_records_a_failing_sensor():
    s = Sampler(Failing(), interval_s=3600).start()  # read 1
    s._take()                                         # read 2
    s.stop()                                          # read 3: the sensor is gone
    assert s.errors and "sensor vanished" in s.errors[0] and len(s.samples) == 1


def test_auto_sensor_never_falls_back_to_another_device(monkeypatch):
    import sys

    import edgekit.power as power

    opened = []
    fake = types.ModuleType("fake_sensors")

    def make(name):
        def open_it():
            opened.append(name)
            raise power.SensorUnavailable(f"{name} not here")
        return open_it

    for name in ("rapl", "nvml", "jetson", "tegrastats", "rpi5"):
        setattr(fake, f"open_{name}", make(name))
    monkeypatch.setitem(sys.modules, "fake_sensors", fake)
    monkeypatch.setattr(power, "SENSORS", {n: f"fake_sensors:open_{n}" for n in
                                           ("rapl", "nvml", "jetson", "tegrastats", "rpi5")})
    sensor, why = power.open_sensor("auto", on_gpu=False)
    assert sensor is None and opened == ["rapl"] and "rapl not here" in why
    opened.clear()
    power.open_sensor("auto", on_gpu=True)
    assert opened == ["nvml"]
    # an x86 host with an NVIDIA GPU running on its CPU reads RAPL, not the idle GPU
    opened.clear()
    power.open_sensor("auto", on_gpu=False, target_sensor="nvml")
    assert opened == ["rapl"]
    # an edge device reads its own sensor whatever does the work: sysfs rails first, then tegrastats
    opened.clear()
    sensor, why = power.open_sensor("auto", on_gpu=True, target_sensor="jetson")
    assert opened == ["jetson", "tegrastats"] and "jetson not here" in why and "tegrastats not here" in why
    opened.clear()
    power.open_sensor("auto", target_sensor="rpi5")
    assert opened == ["rpi5"]


def test_llama_log_keeps_errors_and_their_continuations():
    pytest.importorskip("llama_cpp")
    from edgekit import llamacpp_log
    from edgekit.runners import llamacpp

    errors = llamacpp.quiet_llama_logs()
    errors.clear()
    cb = llamacpp_log._LOG["callback"]
    cb(3, b"a warning\n", None)
    cb(4, b"failed to load model\n", None)
    cb(5, b"(file too short)\n", None)
    cb(2, b"some info\n", None)
    cb(5, b"more info\n", None)
    assert errors == ["failed to load model (file too short)"]


def test_nvml_follows_cuda_visible_devices(monkeypatch):
    from edgekit.power.nvml import visible_device

    assert visible_device({}) == ("index", 0)
    assert visible_device({"CUDA_VISIBLE_DEVICES": "2,3"}) == ("index", 2)
    assert visible_device({"CUDA_VISIBLE_DEVICES": "GPU-8f1c"}) == ("uuid", "GPU-8f1c")
    fake = FakeNvml()
    fake.nvmlDeviceGetHandleByUUID = lambda uuid: ("uuid-handle", uuid)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f1c")
    assert open_nvml(nvml=fake).handle == ("uuid-handle", b"GPU-8f1c")


def test_sampler_tracks_a_gauge_maximum():
    clock = Ticks()
    values = iter([1.0, 5.0, 3.0])
    s = Sampler(EnergyOfClock(clock), interval_s=3600, clock=clock)
    s.gauge = lambda: next(values)
    s.start()
    clock.t += 0.1
    s._take()
    clock.t += 0.1
    s._take()
    clock.t += 0.1
    s.stop()
    assert s.gauge_max == 5.0

