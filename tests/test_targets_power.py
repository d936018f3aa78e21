"""Device power parsers on recorded real output (tests/fixtures/power, from ../shared) and fake sysfs trees."""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest

from edgekit.targets import apple_m, jetson, rpi5

FIXTURES = Path(__file__).parent / "fixtures" / "power"


def test_pmic_read_adc_pairs_rails_by_stem():
    rails = rpi5.parse_pmic_read_adc((FIXTURES / "pmic_read_adc-rpi5.txt").read_text())
    assert len(rails) == 12  # EXT5V_V and BATT_V have no current line
    assert "EXT5V" not in rails and "BATT" not in rails
    assert rails["VDD_CORE"] == pytest.approx(10.87674 * 0.8974594)
    assert sum(rails.values()) == pytest.approx(10.8, abs=0.1)


def test_pmic_line_without_a_pair_is_ignored():
    text = "  VDD_CORE_A current(7)=2.00000000A\n  VDD_CORE_V volt(15)=0.90000000V\n  HDMI_A current(22)=0.5A\n"
    assert rpi5.parse_pmic_read_adc(text) == {"VDD_CORE": pytest.approx(1.8)}


def test_throttled_bits():
    t = rpi5.parse_throttled("throttled=0x50005")
    assert t["raw"] == 0x50005 and t["throttled_now"] and t["throttled_since_boot"]
    assert t["flags"] == ["under-voltage detected", "currently throttled", "under-voltage has occurred",
                          "throttling has occurred"]
    assert rpi5.parse_throttled("throttled=0x0") == {"raw": 0, "flags": [], "throttled_now": False,
                                                     "throttled_since_boot": False}
    with pytest.raises(ValueError):
        rpi5.parse_throttled("error=1")


def test_tegrastats_agx_orin_line_and_rail_sum():
    rails = jetson.parse_tegrastats((FIXTURES / "tegrastats-agx-orin-64gb.txt").read_text())
    assert rails == {"VDD_GPU_SOC": 4.94, "VDD_CPU_CV": 0.988, "VIN_SYS_5V0": 4.442}
    watts, what = jetson.total_power(rails)
    assert watts == pytest.approx(10.37) and "rail sum" in what and "no VDD_IN" in what


def test_tegrastats_three_values_and_vdd_in():
    line = "RAM 1/2MB VDD_IN 5123mW/5000mW/6100mW VDD_CPU_GPU_CV 800mW/790mW/900mW VDD_SOC 1200mW/1190mW/1300mW"
    rails = jetson.parse_tegrastats(line)
    assert rails == {"VDD_IN": 5.123, "VDD_CPU_GPU_CV": 0.8, "VDD_SOC": 1.2}
    assert jetson.total_power(rails) == (5.123, "VDD_IN (module input)")
    assert jetson.total_power({}) is None


def _hwmon(root: Path, addr: str, n: int, channels: dict[int, tuple[str, int, int]]) -> None:
    d = root / "sys/bus/i2c/drivers/ina3221" / addr / "hwmon" / f"hwmon{n}"
    d.mkdir(parents=True)
    for k, (label, mv, ma) in channels.items():
        (d / f"in{k}_label").write_text(label + "\n")
        (d / f"in{k}_input").write_text(f"{mv}\n")
        (d / f"curr{k}_input").write_text(f"{ma}\n")


def test_ina3221_hwmon_fake_tree_agx_orin(tmp_path):
    _hwmon(tmp_path, "1-0040", 3, {1: ("VDD_GPU_SOC", 5000, 1000), 2: ("VDD_CPU_CV", 5000, 200),
                                   3: ("VIN_SYS_5V0", 5000, 900), 7: ("sum of shunt voltages", 5000, 2100)})
    _hwmon(tmp_path, "1-0041", 5, {1: ("NC", 0, 0), 2: ("VDDQ_VDD2_1V8AO", 5000, 100), 3: ("NC", 0, 0)})
    rails = jetson.read_rails(tmp_path)
    assert rails == {"VDD_GPU_SOC": 5.0, "VDD_CPU_CV": 1.0, "VIN_SYS_5V0": 4.5, "VDDQ_VDD2_1V8AO": 0.5}
    watts, what = jetson.total_power(rails)
    assert watts == pytest.approx(11.0) and "VDDQ_VDD2_1V8AO" in what


def test_ina3221_missing_rail_files_are_skipped(tmp_path):
    _hwmon(tmp_path, "1-0040", 0, {1: ("VDD_IN", 5000, 1000)})
    (next((tmp_path / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon").iterdir()) / "in2_label").write_text("VDD_SOC\n")
    assert jetson.read_rails(tmp_path) == {"VDD_IN": 5.0}


def test_ina3221_jetpack4_iio(tmp_path):
    d = tmp_path / "sys/bus/i2c/drivers/ina3221x/0-0040/iio:device0"
    d.mkdir(parents=True)
    for k, (label, mw) in enumerate([("VDD_IN", 4100), ("VDD_CPU", 900), ("NC", 0)]):
        (d / f"rail_name_{k}").write_text(label)
        (d / f"in_power{k}_input").write_text(str(mw))
    assert jetson.read_rails(tmp_path) == {"VDD_IN": 4.1, "VDD_CPU": 0.9}


def _frame(**processor):
    # hand-built in powermetrics' layout (no verbatim capture is at hand; see fixtures/power/README.md)
    return plistlib.dumps({"elapsed_ns": 500_000_000, "timestamp": 0, "thermal_pressure": "Nominal",
                           "hw_model": "Mac14,2", "processor": processor})


def test_powermetrics_stream_power_and_energy_frames():
    stream = _frame(cpu_power=1500.0, gpu_power=500.0, ane_power=0.0, combined_power=2000.0) + b"\0" + \
        _frame(cpu_energy=1000, gpu_energy=250) + b"\0"
    frames, leftover = apple_m.split_frames(stream)
    assert leftover == 0 and len(frames) == 2
    assert apple_m.frame_power_w(frames[0]) == {"cpu": 1.5, "gpu": 0.5, "ane": 0.0, "combined": 2.0}
    assert apple_m.frame_power_w(frames[1]) == {"cpu": 2.0, "gpu": 0.5, "combined": 2.5}


def test_powermetrics_truncated_stream_keeps_complete_frames():
    whole = _frame(combined_power=3000.0)
    frames, leftover = apple_m.split_frames(whole + b"\0" + whole[:40])
    assert len(frames) == 1 and leftover == 40
    assert "sudoers" in apple_m.sudo_failure_message("sudo: a password is required")


def _stub(tmp_path, body: str) -> list[str]:
    import sys

    script = tmp_path / "stub.py"
    script.write_text("import sys, time\n" + body)
    return [sys.executable, str(script)]


def test_tegrastats_sensor_streams_from_the_command(tmp_path):
    line = (FIXTURES / "tegrastats-agx-orin-64gb.txt").read_text().strip()
    cmd = _stub(tmp_path, f"for _ in range(200):\n    print({line!r}, flush=True)\n    time.sleep(0.01)\n")
    sensor = jetson.open_tegrastats(command=cmd)
    try:
        assert sensor.kind == "power" and sensor.read() == pytest.approx(10.37)
        assert sensor.raw_log and b"VDD_GPU_SOC" in sensor.raw_log[0]
    finally:
        sensor.close()


def test_stream_sensor_that_prints_nothing_is_unavailable(tmp_path):
    from edgekit.power import SensorUnavailable

    cmd = _stub(tmp_path, "sys.stderr.write('tegrastats: permission denied\\n'); sys.exit(1)\n")
    with pytest.raises(SensorUnavailable, match="permission denied"):
        jetson.open_tegrastats(command=cmd)


def test_powermetrics_sensor_reads_nul_separated_frames(tmp_path):
    frame = _frame(combined_power=4200.0)
    cmd = _stub(tmp_path, f"for _ in range(100):\n    sys.stdout.buffer.write({frame!r} + b'\\0')\n"
                          "    sys.stdout.flush()\n    time.sleep(0.01)\n")
    sensor = apple_m.open_sensor(command=cmd)
    try:
        assert sensor.read() == pytest.approx(4.2)
    finally:
        sensor.close()


def test_powermetrics_without_sudo_names_the_sudoers_fix(tmp_path):
    from edgekit.power import SensorUnavailable

    cmd = _stub(tmp_path, "sys.stderr.write('sudo: a password is required\\n'); sys.exit(1)\n")
    with pytest.raises(SensorUnavailable, match="NOPASSWD: /usr/bin/powermetrics"):
        apple_m.open_sensor(command=cmd)


def test_pmic_and_jetson_sysfs_sensors(tmp_path):
    text = (FIXTURES / "pmic_read_adc-rpi5.txt").read_text()
    sensor = rpi5.PmicSensor(run=lambda: text)
    assert sensor.read() == pytest.approx(10.8, abs=0.1) and "USB" in sensor.excludes
    _hwmon(tmp_path, "1-0040", 1, {1: ("VDD_IN", 5000, 2000), 2: ("NC", 0, 0)})
    js = jetson.JetsonRailSensor(tmp_path)
    assert js.read() == pytest.approx(10.0) and js.name.startswith("jetson-ina3221:VDD_IN")


def test_power_parse_cli_on_recorded_logs(tmp_path):
    import json

    from click.testing import CliRunner
    from helpers import assert_one_line_error

    from edgekit.cli import cli

    pmic = (FIXTURES / "pmic_read_adc-rpi5.txt").read_text()
    log = tmp_path / "pmic.log"
    log.write_text(pmic + pmic.replace("10.87674000A", "5.00000000A"))  # two readings back to back
    r = CliRunner().invoke(cli, ["power", "parse", "rpi5", str(log), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["readings"] == 2 and data["watts"][0] == pytest.approx(10.8, abs=0.1)
    assert data["watts"][1] == pytest.approx(data["watts"][0] - (10.87674 - 5.0) * 0.8974594)
    r = CliRunner().invoke(cli, ["power", "parse", "tegrastats", str(FIXTURES / "tegrastats-agx-orin-64gb.txt")])
    assert r.exit_code == 0 and "mean 10.370 W" in r.output
    assert_one_line_error(CliRunner().invoke(cli, ["power", "parse", "ina", str(log)]), "no log parser", "rpi5")
    assert_one_line_error(CliRunner().invoke(cli, ["power", "parse", "tegrastats", str(log)]),
                          "no tegrastats readings")


def test_powermetrics_text_output_published_on_m1_max_and_m2(tmp_path):
    from click.testing import CliRunner

    from edgekit.cli import cli

    m1 = apple_m.parse_powermetrics_text((FIXTURES / "powermetrics-text-m1-max.txt").read_text())
    assert m1 == [{"cpu": 0.211, "gpu": 0.147, "ane": 0.0, "combined": 0.359, "elapsed_s": 1.01207}]
    # Monterey: Package Power and no Combined line; combined is CPU + GPU + ANE as for plist frames
    m2 = apple_m.parse_powermetrics_text((FIXTURES / "powermetrics-text-m2-air.txt").read_text())
    assert m2 == [{"ane": 0.0, "cpu": 0.010, "gpu": 0.0, "package": 0.025, "combined": 0.010,
                   "elapsed_s": 1.0028}]
    # two samples back to back (powermetrics -n 2): each its own reading
    log = tmp_path / "pm.txt"
    sample = (FIXTURES / "powermetrics-text-m1-max.txt").read_text()
    log.write_text(sample + "\n\n" + sample[sample.index("*** Sampled"):].replace(": 359 mW", ": 1359 mW"))
    r = CliRunner().invoke(cli, ["power", "parse", "powermetrics", str(log)])
    assert r.exit_code == 0 and "2 reading(s), mean 0.859 W" in r.output, r.output
