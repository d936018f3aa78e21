"""Target detection, specs and the probe, run on device recordings (tests/fixtures/targets, see its
README for which files are published captures and which are hand-written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.device.probe import probe
from edgekit.device.transport import RecordedTransport
from edgekit.targets.specs import FACT_COMMANDS, SPECS, detect

RECORDINGS = Path(__file__).parent / "fixtures" / "targets"
SAMPLES = Path(__file__).parent / "fixtures" / "samples"


def facts_of(name: str) -> dict[str, str]:
    return {p.stem: p.read_text() for p in (RECORDINGS / name).glob("*.txt")}


@pytest.mark.parametrize("folder,expected", [
    ("rpi5-8gb", "rpi5-8gb"), ("jetson-agx-orin-64gb", "jetson-agx-orin-64gb"),
    ("jetson-orin-nx-16gb", "jetson-orin-nx-16gb"), ("jetson-orin-nano-super", "jetson-orin-nano-8gb-super"),
    ("apple-m2-pro", "apple-m2-pro"), ("apple-m1-pro", "apple-m1-pro"), ("apple-m3", "apple-m3"), ("x86-server", "linux"),
    ("linux-nvidia-h100", "linux-nvidia")])
def test_probe_on_each_recording(folder, expected):
    """The whole probe (facts, detection, family state commands) through the recorded transport."""
    result = probe(RecordedTransport(RECORDINGS / folder))
    assert result["target"] == expected
    assert set(result["state_recorded"]) == {p.stem for p in (RECORDINGS / folder / "state").glob("*.txt")}


def test_raspberry_pi_5_from_its_published_cpuinfo():
    spec, seen = detect(facts_of("rpi5-8gb"))
    assert seen["model"] == "Raspberry Pi 5 Model B Rev 1.0"  # NUL byte stripped
    assert seen["revision"] == "d04170" and spec.ram_gb == 8
    # the revision code alone (no device-tree model, no meminfo) names the board and its RAM
    only_cpuinfo = {"cpuinfo": facts_of("rpi5-8gb")["cpuinfo"].replace("d04170", "c04170")}
    assert detect(only_cpuinfo)[0].name == "rpi5-4gb"
    bookworm = (SAMPLES / "cpuinfo-rpi5-bookworm.txt").read_text()
    assert detect({"cpuinfo": bookworm})[0].family == "rpi5"
    # without a revision code, MemTotal (what is left after the firmware's share) rounds up to a variant
    facts = {"device_tree_model": "Raspberry Pi 5 Model B Rev 1.1\0", "meminfo": "MemTotal: 16608124 kB\n"}
    assert detect(facts)[0].name == "rpi5-16gb"


def test_pi_5_ram_the_table_does_not_have_is_not_guessed():
    spec, seen = detect({"cpuinfo": "Revision\t: e04170\n"})  # memory code 6 = 16 GB; code 2 = 1 GB
    assert spec.name == "rpi5-16gb"
    spec, seen = detect({"cpuinfo": "Revision\t: a04170\n"})
    assert spec.name == "rpi5-1gb" and spec.ram_gb == 1
    spec, seen = detect({"device_tree_model": "Raspberry Pi 5 Model B Rev 1.0\0", "meminfo": "MemTotal: 40000000 kB\n"})
    assert spec.ram_gb is None and seen["unknown_ram"] and spec.family == "rpi5"


def test_pi_4_is_not_a_pi_5():
    facts = {"device_tree_model": "Raspberry Pi 4 Model B Rev 1.4\0",
             "cpuinfo": "processor\t: 0\nRevision\t: d03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"}
    assert detect(facts)[0].name == "linux"


def test_jetson_variants():
    spec, seen = detect(facts_of("jetson-agx-orin-64gb"))
    assert seen["l4t"] == "R35.4.1" and seen["module"] == "p3701-0005" and seen["ram_gb"] == pytest.approx(61.4, 0.01)
    assert spec.power_sensor == "jetson" and spec.big_cores == 12
    facts = facts_of("jetson-agx-orin-64gb")
    # the SKU in the compatible string decides, whatever MemTotal says
    facts["device_tree_compatible"] = "nvidia,p3737-0000+p3701-0004\0nvidia,p3701-0004\0nvidia,tegra234\0"
    assert detect(facts)[0].name == "jetson-agx-orin-32gb"
    # without it: a 32 GB developer kit has the 12-core module (P3701-0000), a 32 GB module 8 cores
    del facts["device_tree_compatible"]
    facts["meminfo"] = "MemTotal:       31960012 kB\n"
    assert detect(facts)[0].name == "jetson-agx-orin-devkit-32gb"
    facts["device_tree_model"] = "NVIDIA Jetson AGX Orin\0"
    assert detect(facts)[0].name == "jetson-agx-orin-32gb"
    spec, seen = detect(facts_of("jetson-orin-nano-super"))
    assert seen["l4t"] == "R39.2.1" and spec.bandwidth_gb_s == 102.4
    r39 = (SAMPLES / "nv_tegra_release-agx-orin-r39.txt").read_text()
    assert detect({"nv_tegra_release": r39})[0].name == "jetson-other"  # an L4T release alone: no Orin claimed


@pytest.mark.parametrize("model,compatible", [
    ("NVIDIA Jetson Nano Developer Kit", "nvidia,p3449-0000-b00+p3448-0000-b00\0nvidia,jetson-nano\0nvidia,tegra210\0"),
    ("NVIDIA Jetson Xavier NX Developer Kit", "nvidia,p3509-0000+p3668-0001\0nvidia,tegra194\0"),
    ("NVIDIA Jetson AGX Thor Developer Kit", "nvidia,p3971-0080+p3834-0008\0nvidia,tegra264\0"),
    ("NVIDIA Jetson Xavier NX Developer Kit", None)])
def test_jetsons_that_are_not_orin_get_no_orin_figures(model, compatible):
    facts = {"device_tree_model": model + "\0", "meminfo": "MemTotal: 3964464 kB\n"}
    if compatible:
        facts["device_tree_compatible"] = compatible
    spec, seen = detect(facts)
    assert spec.name == "jetson-other" and spec.bandwidth_gb_s is None and seen["not_orin"]
    assert "CUDA_ARCHITECTURES" not in spec.llama_cpp_cmake_args and spec.power_sensor == "jetson"


def test_apple_detection_uses_this_machines_cores_and_memory():
    spec, seen = detect(facts_of("apple-m1-pro"))
    assert seen["performance_cores"] == 8 and spec.big_cores == 8 and spec.ram_gb == 16
    facts = facts_of("apple-m1-pro")
    facts["sysctl"] = "Apple M3 Max\n38654705664\nMac15,8\n"
    facts["sysctl_perflevels"] = "10\n4\n"  # the binned M3 Max: 10 P-cores, 300 GB/s
    spec, _ = detect(facts)
    assert spec.name == "apple-m3-max" and spec.bandwidth_gb_s == 300 and spec.big_cores == 10
    spec, seen = detect(facts_of("apple-m2-pro"))
    assert seen["hw_model"] == "Mac14,12" and spec.bandwidth_gb_s == 200 and spec.power_sensor == "powermetrics"
    facts["sysctl"] = "Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz\n17179869184\nMacBookPro16,1\n"
    assert detect(facts)[0].name == "linux"
    # a chip newer than the table: still a Mac (Metal, powermetrics), no bandwidth assumed, not an M1
    for brand, chip in (("Apple M5 Pro", "M5 Pro"), ("Apple M10", "M10")):
        facts["sysctl"] = f"{brand}\n25769803776\nMac17,1\n"
        spec, seen = detect(facts)
        assert spec.name == "apple-m-other" and seen["unknown_chip"] == chip and spec.bandwidth_gb_s is None
        assert spec.power_sensor == "powermetrics" and spec.ram_gb == 24


def test_linux_with_and_without_nvidia():
    spec, seen = detect(facts_of("linux-nvidia-h100"))
    assert seen["gpus"] == [{"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "compute_cap": "9.0"}]
    assert spec.default_gpu_layers == 99 and spec.onnxruntime_providers[1] == "CUDAExecutionProvider"
    from edgekit.targets.linux import parse_nvidia_smi

    # a published 19-field line: the first two fields must be name and memory.total, so it is refused
    assert parse_nvidia_smi((SAMPLES / "nvidia-smi-rtx2080-19-fields.txt").read_text()) == []
    assert parse_nvidia_smi("No devices were found\n") == []
    spec, seen = detect(facts_of("x86-server"))
    assert spec.name == "linux" and seen["machine"] == "x86_64" and "gpus" not in seen


def test_every_spec_names_its_sources_and_a_known_sensor():
    from edgekit.power import SENSORS
    from edgekit.targets.specs import FAMILIES

    assert set(FAMILIES) == {s.family for s in SPECS.values()}
    for spec in SPECS.values():
        # every spec-sheet figure appears in the spec's sources
        sources = " ".join(spec.sources)
        for figure in [f for f in (spec.bandwidth_gb_s, spec.ram_gb) if f]:
            assert f"{figure:g}" in sources.replace(" GB/s", ""), (spec.name, figure, sources)
        assert spec.power_sensor is None or spec.power_sensor in SENSORS


def test_targets_cli_and_local_probe_record_and_replay(tmp_path):
    r = CliRunner().invoke(cli, ["targets", "--json"])
    assert r.exit_code == 0 and {"rpi5-8gb", "jetson-agx-orin-64gb", "apple-m4-max"} <= {
        s["name"] for s in json.loads(r.output)}
    rec = tmp_path / "rec"
    r = CliRunner().invoke(cli, ["probe", "--record", str(rec), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    from edgekit.device.probe import gather_facts
    from edgekit.device.transport import LocalTransport

    assert result["transport"] == "local" and result["target"] == detect(gather_facts(LocalTransport()))[0].name
    assert {"uname_m", "cpuinfo", "meminfo"} <= {p.stem for p in rec.glob("*.txt")}
    listed = dict(line.split("\t") for line in (rec / "commands.txt").read_text().splitlines())
    assert listed["uname_m"] == FACT_COMMANDS["uname_m"]
    # a recording replays to the same answer, and a second --record needs --force
    r = CliRunner().invoke(cli, ["probe", "--replay", str(rec), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["detected"] == result["detected"]
    r = CliRunner().invoke(cli, ["probe", "--record", str(rec)])
    assert r.exit_code == 1 and "already exists" in r.output and "--force" in r.output
    r = CliRunner().invoke(cli, ["probe", "--replay", str(RECORDINGS / "jetson-agx-orin-64gb")])
    assert r.exit_code == 0 and "jetson-agx-orin-64gb" in r.output and "MAXN" in r.output
    assert "warning: Jetson clocks were not locked" in r.output


def test_install_recipes_and_runner_defaults():
    jet = SPECS["jetson-agx-orin-64gb"].to_dict()
    assert jet["install"]["llama.cpp"].startswith(
        'CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=87" CUDACXX=/usr/local/cuda/bin/nvcc pip')
    assert "jetson-ai-lab" in jet["install"]["onnxruntime"]
    assert "CoreML" in SPECS["apple-m3-max"].to_dict()["install"]["onnxruntime"]
    assert SPECS["rpi5-8gb"].to_dict()["install"]["llama.cpp"].startswith('CMAKE_ARGS="-DGGML_NATIVE=ON" pip')
    assert SPECS["linux"].to_dict()["install"]["llama.cpp"].startswith("pip install")
    assert SPECS["jetson-agx-orin-64gb"].default_gpu_layers == 99 and SPECS["rpi5-8gb"].big_cores == 4
