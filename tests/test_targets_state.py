"""Clock/power-mode/thermal parsers on published outputs (tests/fixtures/targets, ../samples) and
the before/after throttle warnings."""

from __future__ import annotations

from pathlib import Path

from edgekit.device.transport import CommandResult, RecordedTransport
from edgekit.targets import apple_m, jetson, linux, rpi5, state

FIXTURES = Path(__file__).parent / "fixtures"
RECORDINGS = FIXTURES / "targets"
SAMPLES = FIXTURES / "samples"


def text(path: str) -> str:
    return (FIXTURES / path).read_text()


def test_pi_parsers():
    assert rpi5.parse_measure_clock(text("targets/rpi5-8gb/state/arm_hz.txt")) == 2400020480
    assert rpi5.parse_measure_clock("frequency(48)=1500398464\n") == 1500398464  # the Pi 4 numbering
    assert rpi5.parse_measure_clock("error") is None
    assert rpi5.parse_measure_temp("temp=62.1'C\n") == 62.1
    assert linux.parse_thermal("cpu-thermal 61850\nacpitz N/A\ngpu-thermal 47000\n") == {
        "cpu-thermal": 61.85, "gpu-thermal": 47.0}


def test_nvpmodel_variants():
    assert jetson.parse_nvpmodel(text("targets/jetson-orin-nano-super/state/nvpmodel.txt")) == {"mode": "25W", "id": 1}
    # run without sudo on a Nano: NVPM ERROR lines follow the answer
    assert jetson.parse_nvpmodel(text("samples/nvpmodel-nano-nonroot.txt")) == {"mode": "5W", "id": 1}
    assert jetson.parse_nvpmodel("NV Power Mode: MAXN_SUPER\n") == {"mode": "MAXN_SUPER", "id": None}
    assert jetson.parse_nvpmodel("NVPM WARN: fan mode is not set!\nNVPOWERMODE: 15W\n") == {"mode": "15W", "id": None}
    assert jetson.parse_nvpmodel("nvpmodel: command not found") is None


def test_jetson_clocks_published_outputs():
    agx = jetson.parse_jetson_clocks(text("targets/jetson-agx-orin-64gb/state/jetson_clocks.txt"))
    assert agx["soc"] == "tegra234" and agx["machine"] == "Jetson AGX Orin" and agx["power_mode"] == "MAXN"
    assert len(agx["cpus"]) == 12 and agx["cpus"]["cpu10"] == {
        "online": True, "governor": "schedutil", "min_khz": 729600, "max_khz": 2201600, "cur_khz": 1113600}
    assert agx["gpu"] == {"min": 306000000, "max": 1300500000, "cur": 306000000}
    assert agx["emc"]["max"] == 3199000000 and agx["locked"] is False  # DVFS: floors below the maxima
    # JetPack 7 prints no Online= field and an 'Offline CPUs' list
    nano = jetson.parse_jetson_clocks(text("targets/jetson-orin-nano-super/state/jetson_clocks.txt"))
    assert len(nano["cpus"]) == 6 and nano["cpus"]["cpu5"]["cur_khz"] == 1267200 and nano["power_mode"] == "25W"
    assert nano["gpu"]["max"] == 918000000 and nano["locked"] is False
    # truncated in the post: the CPUs it has, nothing invented for the rest
    nx = jetson.parse_jetson_clocks(text("targets/jetson-orin-nx-16gb/state/jetson_clocks.txt"))
    assert "gpu" not in nx and "power_mode" not in nx and len(nx["cpus"]) >= 1
    # after `sudo jetson_clocks`: CPU and GPU floors raised to their maxima, EMC pinned by FreqOverride=1
    # (its MinFreq stays at the bottom, as published before/after captures show)
    locked = "\n".join(line.replace("MinFreq=729600", "MinFreq=2201600")
                       .replace("MinFreq=306000000", "MinFreq=1300500000")
                       .replace("CurrentFreq=2133000000 FreqOverride=0", "CurrentFreq=3199000000 FreqOverride=1")
                       for line in text("targets/jetson-agx-orin-64gb/state/jetson_clocks.txt").splitlines())
    parsed = jetson.parse_jetson_clocks(locked)
    assert parsed["locked"] is True and parsed["emc"] == {"min": 204000000, "max": 3199000000,
                                                         "cur": 3199000000, "override": True}
    one_cpu_free = locked.replace("cpu3: Online=1 Governor=schedutil MinFreq=2201600",
                                  "cpu3: Online=1 Governor=schedutil MinFreq=729600")
    assert jetson.parse_jetson_clocks(one_cpu_free)["locked"] is False
    offline = one_cpu_free.replace("cpu3: Online=1", "cpu3: Online=0")  # an offline core does not count
    assert jetson.parse_jetson_clocks(offline)["locked"] is True
    assert jetson.parse_jetson_clocks("NV Power Mode\n") == {"cpus": {}, "locked": None}


def test_pmset_settings_and_low_power_mode():
    settings = state.capture(RecordedTransport(RECORDINGS / "apple-m3"), "apple-m")["power_settings"]
    assert settings["lowpowermode"] == "0" and settings["Sleep On Power Button"] == "1"
    assert settings["sleep"] == "1" and settings["hibernatefile"] == "/var/vm/sleepimage"
    assert state.throttle_warnings({}, {"power_settings": settings}) == []
    low = text("targets/apple-m3/state/power_settings.txt").replace("lowpowermode         0", "lowpowermode         1")
    warnings = state.throttle_warnings({}, {"power_settings": apple_m.parse_pmset_settings(low)})
    assert len(warnings) == 1 and "Low Power Mode was on" in warnings[0]


def test_pmset_therm():
    m1 = apple_m.parse_pmset_therm(text("targets/apple-m1-pro/state/therm.txt"))
    assert m1 == {"thermal_warning": None, "performance_warning": None, "cpu_speed_limit": None}
    intel = apple_m.parse_pmset_therm(text("samples/pmset-therm-intel-speed-limit.txt"))
    assert intel["cpu_speed_limit"] == 35 and intel["thermal_warning"] is None
    assert any("35 %" in w for w in state.throttle_warnings({}, {"therm": intel}))
    assert state.throttle_warnings({}, {"therm": m1}) == []


class Scripted:
    name = "scripted"

    def __init__(self, outputs):
        self.outputs = outputs

    def run(self, command, timeout_s=30.0):
        for key, out in self.outputs.items():
            if key in command:
                return CommandResult(command, 0, out, "")
        return CommandResult(command, 1, "", "not found")


def test_capture_and_throttle_warnings_on_a_pi():
    before = state.capture(RecordedTransport(RECORDINGS / "rpi5-8gb"), "rpi5")
    assert before["arm_hz"] == 2400020480 and before["throttled"]["raw"] == 0 and before["soc_temp"] == 58.2
    after = state.capture(Scripted({"get_throttled": "throttled=0x60006\n", "scaling_governor": "ondemand\n",
                                    "thermal_zone": "cpu-thermal 86200\n"}), "rpi5")
    warnings = state.throttle_warnings(before, after)
    assert any("throttled during the run" in w and "arm frequency capped" in w for w in warnings)
    assert any("governor is 'ondemand'" in w for w in warnings)
    assert any("cpu-thermal 86 C" in w for w in warnings)
    assert state.throttle_warnings({}, {"governor": "performance"}) == []
    # one snapshot (probe) or no usable reading before the run: no claim about "during the run"
    sticky = {"throttled": rpi5.parse_throttled("throttled=0x50000")}
    assert state.throttle_warnings({}, sticky) == [
        "the device reports throttling (now or since boot): under-voltage has occurred, throttling has occurred"]
    assert state.throttle_warnings({"throttled": "VCHI initialization failed"}, sticky)[0].startswith(
        "the device reports throttling")
    assert state.throttle_warnings({"throttled": rpi5.parse_throttled("throttled=0x80000")}, {
        "throttled": rpi5.parse_throttled("throttled=0x80008")}) == [
        "the device throttled during the run: soft temperature limit active"]
    # a parser that meets output it does not know keeps the text instead of failing the run
    assert state.parse_state("rpi5", {"throttled": "VCHI initialization failed\n"}) == {
        "throttled": "VCHI initialization failed"}


def test_jetson_warnings_name_unlocked_clocks_and_a_mode_change():
    before = state.capture(RecordedTransport(RECORDINGS / "jetson-agx-orin-64gb"), "jetson")
    assert before["nvpmodel"]["mode"] == "MAXN" and before["jetson_clocks"]["locked"] is False
    after = {**before, "nvpmodel": {"mode": "30W", "id": 2}}
    warnings = state.throttle_warnings(before, after)
    assert any("sudo jetson_clocks" in w for w in warnings)
    assert any("MAXN -> 30W" in w for w in warnings)
