from __future__ import annotations

import types

import pytest

from edgekit.power import Sampler, energy_between, open_sensor
from edgekit.power import rapl
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


def test_sampler_turns_energy_counter_into_watts():
    import time

    s = Sampler(ScriptedEnergy(), interval_s=0.01).start()
    a = time.perf_counter()
    time.sleep(0.2)
    b = time.perf_counter()
    s.stop()
    assert len(s.samples) >= 5
    assert s.mean_w([(a, b)]) == pytest.approx(5.0, rel=0.05)


def test_open_sensor_none_and_unknown():
    from edgekit.errors import EdgekitError

    assert open_sensor("none") == (None, "power measurement disabled (--power none)")
    with pytest.raises(EdgekitError, match="unknown power sensor 'tegra'"):
        open_sensor("tegra")
