"""Target detection on fact files (tests/fixtures/facts), specs, and the local probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.targets.specs import SPECS, detect

FACTS = Path(__file__).parent / "fixtures" / "facts"


def load(name: str) -> dict[str, str]:
    return {p.stem: p.read_text() for p in (FACTS / name).glob("*.txt")}


@pytest.mark.parametrize("folder,expected", [
    ("rpi5-8gb", "rpi5-8gb"), ("jetson-agx-orin-64gb", "jetson-agx-orin-64gb"),
    ("jetson-orin-nx-16gb", "jetson-orin-nx-16gb"), ("apple-m2-pro", "apple-m2-pro"), ("x86-server", "linux")])
def test_detection_from_facts(folder, expected):
    spec, seen = detect(load(folder))
    assert spec.name == expected


def test_detected_details():
    spec, seen = detect(load("jetson-agx-orin-64gb"))
    assert seen["l4t"] == "R36.4.3" and seen["ram_gb"] == pytest.approx(61.4, abs=0.1)
    assert spec.power_sensor == "jetson" and "CUDA_ARCHITECTURES=87" in spec.llama_cpp_cmake_args
    facts = load("jetson-agx-orin-64gb")
    facts["meminfo"] = "MemTotal:       31960012 kB\n"
    assert detect(facts)[0].name == "jetson-agx-orin-32gb"
    spec, seen = detect(load("apple-m2-pro"))
    assert seen == {"model": None, "cpu": "Apple M2 Pro", "ram_gb": 32, "hw_model": "Mac14,12"}
    assert spec.bandwidth_gb_s == 200 and spec.power_sensor == "powermetrics"
    spec, seen = detect(load("rpi5-8gb"))
    assert seen["model"] == "Raspberry Pi 5 Model B Rev 1.0"  # NUL byte stripped


def test_every_spec_names_its_sources_and_a_known_sensor():
    from edgekit.power import SENSORS

    for spec in SPECS.values():
        assert spec.sources, spec.name
        assert spec.power_sensor is None or spec.power_sensor in SENSORS


def test_targets_cli_and_local_probe(tmp_path):
    r = CliRunner().invoke(cli, ["targets", "--json"])
    assert r.exit_code == 0 and {"rpi5-8gb", "jetson-agx-orin-64gb", "apple-m4-max"} <= {
        s["name"] for s in json.loads(r.output)}
    r = CliRunner().invoke(cli, ["probe", "--record", str(tmp_path / "rec"), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert result["transport"] == "local" and result["target"] == "linux"  # this CI machine
    recorded = {p.stem for p in (tmp_path / "rec").iterdir()}
    assert {"uname_m", "cpuinfo", "meminfo"} <= recorded
    # what was recorded detects the same way when read back
    assert detect({p.stem: p.read_text() for p in (tmp_path / "rec").iterdir()})[0].name == "linux"


def test_install_recipes_and_runner_defaults():
    jet = SPECS["jetson-agx-orin-64gb"].to_dict()
    assert jet["install"]["llama.cpp"].startswith('CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=87" pip')
    assert "CoreML" in SPECS["apple-m3-max"].to_dict()["install"]["onnxruntime"]
    assert SPECS["jetson-agx-orin-64gb"].default_gpu_layers == 99 and SPECS["rpi5-8gb"].big_cores == 4
