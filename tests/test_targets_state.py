"""Clock/power-mode/thermal parsers and before/after throttle warnings (hand-written outputs in the real formats)."""

from __future__ import annotations

from edgekit.targets import state
from edgekit.transport import CommandResult


def test_parsers():
    assert state.parse_measure_clock("frequency(0)=2400034816\n") == 2400034816
    assert state.parse_measure_temp("temp=62.1'C\n") == 62.1
    assert state.parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"mode": "MAXN", "id": 0}
    assert state.parse_nvpmodel("NV Power Mode: 30W\n2\n") == {"mode": "30W", "id": 2}
    assert state.parse_nvpmodel("NV Power Mode: MAXN_SUPER\n") == {"mode": "MAXN_SUPER", "id": None}
    assert state.parse_nvpmodel("NVPMWARN: fan mode is not set!\nNVPOWERMODE: 15W\n") == {"mode": "15W", "id": None}
    assert state.parse_thermal("cpu-thermal 61850\nacpitz N/A\ngpu-thermal 47000\n") == {
        "cpu-thermal": 61.85, "gpu-thermal": 47.0}
    assert state.parse_measure_clock("error") is None


class Scripted:
    name = "scripted"

    def __init__(self, outputs):
        self.outputs = outputs

    def run(self, command, timeout_s=30.0):
        for key, text in self.outputs.items():
            if key in command:
                return CommandResult(command, 0, text, "")
        return CommandResult(command, 1, "", "not found")


def test_capture_and_throttle_warnings_on_a_pi():
    before = state.capture(Scripted({"get_throttled": "throttled=0x0\n", "scaling_governor": "ondemand\n",
                                     "measure_clock": "frequency(0)=2400000000\n"}), "rpi5")
    after = state.capture(Scripted({"get_throttled": "throttled=0x60006\n", "scaling_governor": "ondemand\n",
                                    "thermal_zone": "cpu-thermal 86200\n"}), "rpi5")
    assert before["arm_hz"] == 2400000000 and before["throttled"]["raw"] == 0
    warnings = state.throttle_warnings(before, after)
    assert any("throttled during the run" in w and "arm frequency capped" in w for w in warnings)
    assert any("governor is 'ondemand'" in w for w in warnings)
    assert any("cpu-thermal 86 C" in w for w in warnings)
    assert state.throttle_warnings({}, {"governor": "performance"}) == []
