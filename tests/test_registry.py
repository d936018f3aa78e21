"""The registries (commands, target families, power sensors) with plugins installed as entry points,
the Family protocol of the family modules, and the CLI vocabularies of edgekit.options against the
tables they copy."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

import edgekit.cli as cli_module
import edgekit.power as power
from edgekit import options
from edgekit.cli import cli
from edgekit.errors import EdgekitError
from edgekit.registry import COMMANDS_GROUP, POWER_SENSORS_GROUP, TARGET_FAMILIES_GROUP, Registry
from edgekit.targets import specs
from edgekit.targets.family import FAMILY_MEMBERS, Family, missing_members

PLUGIN = '''
import click

from edgekit.targets.specs import TargetSpec


@click.command()
@click.argument("who", default="world")
def hello(who):
    """Say hello: a plugin's command."""
    click.echo(f"hello {who}")


SPECS = [TargetSpec("fakeboard-2gb", "fakeboard", 2, 8.5, "2x Cortex-A55", 2, "none", power_sensor="fakeboard",
                    sources=("Fakeboard data sheet: 2 GB, 8.5 GB/s",))]
STATE_COMMANDS = {"fake_temp": "cat /sys/fake/temp"}
STATE_PARSERS = {"fake_temp": float}
LLAMA_CPP_ENV = ""
SENSORS_IN_ORDER = ("fakeboard",)


def detect(facts):
    model = facts.get("device_tree_model", "").replace("\\0", "").strip()
    return (SPECS[0], {"model": model}) if model.startswith("Fakeboard") else None


def onnxruntime_install(spec):
    return "pip install onnxruntime"


class FakeboardSensor:
    kind, name, excludes = "power", "fakeboard:board input", "nothing"

    def read(self):
        return 3.5

    def close(self):
        pass


def open_sensor():
    return FakeboardSensor()
'''

ENTRY_POINTS = """
[edgekit.commands]
hello = edgekit_fakeplugin:hello
broken = edgekit_brokenplugin:command
bench = edgekit_brokenplugin:command

[edgekit.target_families]
fakeboard = edgekit_fakeplugin
linux = edgekit_brokenplugin

[edgekit.power_sensors]
fakeboard = edgekit_fakeplugin:open_sensor
broken = edgekit_brokenplugin:open_sensor
rapl = edgekit_brokenplugin:open_sensor
"""


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """An installed distribution, edgekit-fakeplugin 1.2, whose entry points add a command, a target family
    and a power sensor (edgekit_fakeplugin), three that fail to import (edgekit_brokenplugin), and three
    named like builtins. importlib.metadata.entry_points answers with its entry points only, and the three
    registries are made afresh so that they read them."""
    (tmp_path / "edgekit_fakeplugin.py").write_text(PLUGIN)
    (tmp_path / "edgekit_brokenplugin.py").write_text('raise ImportError("needs libfake.so.3")\n')
    info = tmp_path / "edgekit_fakeplugin-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edgekit-fakeplugin\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    from importlib import metadata

    dists = list(metadata.distributions(path=[str(tmp_path)]))
    assert [d.name for d in dists] == ["edgekit-fakeplugin"]

    def entry_points(*, group):
        return [ep for d in dists for ep in d.entry_points if ep.group == group]

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    monkeypatch.setattr(cli_module, "COMMAND_REGISTRY", Registry(COMMANDS_GROUP, cli_module.COMMANDS, "command"))
    monkeypatch.setattr(specs, "FAMILY_REGISTRY", Registry(TARGET_FAMILIES_GROUP, specs.FAMILIES, "target family"))
    monkeypatch.setattr(power, "SENSOR_REGISTRY", Registry(POWER_SENSORS_GROUP, power.SENSORS, "power sensor"))
    for name in ("edgekit_fakeplugin", "edgekit_brokenplugin"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


# ---------------------------------------------------------------- plugins


def test_a_plugin_command_is_listed_and_runs(plugins):
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0, r.output
    assert "hello" in r.output and "Say hello: a plugin's command." in r.output
    assert re.search(r"^ +bench +Measure prompt processing", r.output, flags=re.M)  # the builtin, not the plugin
    r = CliRunner().invoke(cli, ["hello", "device"])
    assert r.exit_code == 0 and r.output == "hello device\n"


def test_a_broken_plugin_command_is_one_error_line_and_the_help_still_works(plugins):
    r = CliRunner().invoke(cli, ["broken"])
    line = assert_one_line_error(r, "command plugin 'broken'", "edgekit-fakeplugin 1.2",
                                 "ImportError: needs libfake.so.3", "pip uninstall edgekit-fakeplugin")
    assert "edgekit_brokenplugin:command" in line
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0 and "Traceback" not in r.output
    assert "broken" in r.output and "unusable" in r.output and "hello" in r.output


def test_a_plugin_that_is_not_a_click_command_is_one_error_line(plugins):
    (plugins / "edgekit_fakeplugin.py").write_text(PLUGIN + "\nhello = 'not a command'\n")
    assert_one_line_error(CliRunner().invoke(cli, ["hello"]), "'hello'", "edgekit-fakeplugin 1.2",
                          "not a click command")


def test_a_plugin_target_family_is_detected_from_recorded_facts_before_linux(plugins, tmp_path):
    from edgekit.device.probe import probe
    from edgekit.device.transport import RecordedTransport

    rec = tmp_path / "rec"
    (rec / "state").mkdir(parents=True)
    (rec / "device_tree_model.txt").write_text("Fakeboard Rev 2\0")
    (rec / "uname_m.txt").write_text("aarch64\n")
    (rec / "state" / "fake_temp.txt").write_text("41.5\n")
    (rec / "commands.txt").write_text("device_tree_model\tcat /proc/device-tree/model\nuname_m\tuname -m\n"
                                      "state/fake_temp\tcat /sys/fake/temp\n")
    result = probe(RecordedTransport(rec))
    assert (result["target"], result["family"]) == ("fakeboard-2gb", "fakeboard")  # linux matches any facts
    assert result["detected"] == {"model": "Fakeboard Rev 2"}
    assert result["state"] == {"fake_temp": 41.5}  # the family's own state command and parser
    assert specs.family_names()[-1] == "linux" and "fakeboard" in specs.family_names()
    assert "fakeboard-2gb" in specs.SPECS
    assert specs.SPECS["fakeboard-2gb"].to_dict()["install"]["onnxruntime"] == "pip install onnxruntime"
    # edgekit's own families answer as before
    assert specs.detect({"device_tree_model": "Raspberry Pi 5 Model B Rev 1.0\0"})[0].family == "rpi5"
    assert specs.detect({"uname_m": "x86_64\n"})[0].name == "linux"


def test_a_plugin_family_missing_a_member_is_one_error(plugins):
    (plugins / "edgekit_fakeplugin.py").write_text(PLUGIN.replace('LLAMA_CPP_ENV = ""\n', ""))
    with pytest.raises(EdgekitError, match=r"target family 'fakeboard' from edgekit-fakeplugin 1.2 lacks "
                                           r"LLAMA_CPP_ENV"):
        specs.detect({"uname_m": "x86_64\n"})


def test_a_plugin_sensor_is_opened_by_name_and_by_its_family(plugins):
    sensor, why = power.open_sensor("fakeboard")
    assert why is None and sensor.name == "fakeboard:board input" and sensor.read() == 3.5
    # auto on the plugin's target: its family's SENSORS_IN_ORDER, found from the spec's sensor or the family
    sensor, why = power.open_sensor("auto", on_gpu=True, target_sensor="fakeboard")
    assert why is None and sensor.name == "fakeboard:board input"
    sensor, why = power.open_sensor("auto", family="fakeboard")
    assert why is None and sensor.name == "fakeboard:board input"
    assert power.DEVICE_SENSORS["fakeboard"] == ["fakeboard"]
    with pytest.raises(EdgekitError, match="choose auto, none or one of: rapl, .*powermetrics, broken, fakeboard"):
        power.open_sensor("nope")


def test_a_broken_plugin_sensor_names_its_distribution(plugins):
    with pytest.raises(EdgekitError) as e:
        power.open_sensor("broken")
    assert str(e.value).startswith("the power sensor plugin 'broken' (edgekit_brokenplugin:open_sensor) from "
                                   "edgekit-fakeplugin 1.2 failed to load: ImportError: needs libfake.so.3; ")
    assert "\n" not in str(e.value)


def test_a_bare_entry_point_without_distribution_metadata(plugins, monkeypatch):
    from importlib import metadata

    bare = [metadata.EntryPoint("hi", "edgekit_fakeplugin:hello", COMMANDS_GROUP),
            metadata.EntryPoint("oops", "edgekit_brokenplugin:command", COMMANDS_GROUP)]
    monkeypatch.setattr(metadata, "entry_points", lambda *, group: [ep for ep in bare if ep.group == group])
    monkeypatch.setattr(cli_module, "COMMAND_REGISTRY", Registry(COMMANDS_GROUP, cli_module.COMMANDS, "command"))
    r = CliRunner().invoke(cli, ["hi"])
    assert r.exit_code == 0 and r.output == "hello world\n"
    assert_one_line_error(CliRunner().invoke(cli, ["oops"]), "from an unknown distribution",
                          "uninstall the package that declares it")


def test_builtins_win_over_a_plugin_of_the_same_name(plugins):
    from edgekit.cli.bench import bench
    from edgekit.power.rapl import open_rapl

    assert cli_module.COMMAND_REGISTRY.load("bench") is bench
    assert cli_module.COMMAND_REGISTRY.names().count("bench") == 1
    assert specs.family_module("linux") is importlib.import_module("edgekit.targets.linux")
    assert power.sensor_registry().load("rapl") is open_rapl
    assert "bench" not in cli_module.COMMAND_REGISTRY.plugins() and "rapl" not in power.SENSOR_REGISTRY.plugins()
    assert "edgekit_brokenplugin" not in sys.modules  # the shadowed plugins were never imported


def test_names_import_nothing_and_unknown_names_list_the_known(plugins):
    registry = Registry(COMMANDS_GROUP, {"synth": "edgekit.cli.synth:synth"}, what="command")
    assert registry.names() == ["synth", "bench", "broken", "hello"]  # builtins, then plugins by name
    assert "edgekit_fakeplugin" not in sys.modules and "edgekit_brokenplugin" not in sys.modules
    with pytest.raises(KeyError, match=r"unknown command 'nope' \(known: synth, bench, broken, hello\)"):
        registry.load("nope")
    assert registry.load("hello") is registry.load("hello") is sys.modules["edgekit_fakeplugin"].hello
    with pytest.raises(KeyError, match="unknown target family 'nope'"):
        specs.family_module("nope")


# ---------------------------------------------------------------- the Family protocol


@pytest.mark.parametrize("family", list(specs.FAMILIES))
def test_every_builtin_family_module_provides_the_family_protocol(family):
    module = importlib.import_module(specs.FAMILIES[family])
    assert isinstance(module, Family) and missing_members(module) == []
    assert callable(module.detect) and callable(module.onnxruntime_install)
    assert isinstance(module.LLAMA_CPP_ENV, str)
    assert module.SPECS and all(s.family == family for s in module.SPECS)
    assert set(module.STATE_PARSERS) <= set(module.STATE_COMMANDS)
    assert isinstance(module.SENSORS_IN_ORDER, tuple) and set(module.SENSORS_IN_ORDER) <= set(power.SENSORS)
    # a family's targets read the family's own sensor first (or, without one, the generic ones)
    own = {s.power_sensor for s in module.SPECS}
    assert own == {module.SENSORS_IN_ORDER[0]} if module.SENSORS_IN_ORDER else own <= {"rapl", "nvml", None}


def test_the_families_own_the_auto_sensor_order_doctor_reads():
    orders = {f: importlib.import_module(m).SENSORS_IN_ORDER for f, m in specs.FAMILIES.items()}
    assert orders == {"jetson": ("jetson", "tegrastats"), "rpi5": ("rpi5",), "apple-m": ("powermetrics",),
                      "linux": ()}
    assert power.DEVICE_SENSORS == {"jetson": ["jetson", "tegrastats"], "rpi5": ["rpi5"],
                                    "powermetrics": ["powermetrics"]}
    assert power.auto_sensors(on_gpu=True, family="linux") == ["nvml"]
    assert power.auto_sensors(on_gpu=False, family="linux") == ["rapl"]
    assert power.auto_sensors(on_gpu=True, family="jetson") == ["jetson", "tegrastats"]
    assert power.auto_sensors(on_gpu=True, target_sensor="rpi5") == ["rpi5"]


def test_a_module_without_a_member_is_not_a_family():
    module = types.ModuleType("half_family")
    for name in FAMILY_MEMBERS:
        setattr(module, name, lambda *a: None)
    assert isinstance(module, Family) and missing_members(module) == []
    del module.SENSORS_IN_ORDER
    assert not isinstance(module, Family) and missing_members(module) == ["SENSORS_IN_ORDER"]


# ---------------------------------------------------------------- options against their tables


def test_power_options_match_the_sensor_tables():
    from edgekit.power.logs import PARSERS

    assert options.POWER_SENSORS == tuple(power.SENSORS)
    assert options.POWER_CHOICES == ("auto", "none", *power.SENSORS)
    assert options.POWER_LOG_SENSORS == tuple(PARSERS)
    r = CliRunner().invoke(cli, ["power", "parse", "--help"])
    assert r.exit_code == 0 and all(s in r.output for s in PARSERS)


def test_runner_options_match_the_runners_tables():
    from edgekit.runners.llamacpp import FLASH_ATTN
    from edgekit.runners.onnxruntime import GRAPH_OPT, PROVIDER_ALIASES

    assert sorted(options.FLASH_ATTN) == sorted(FLASH_ATTN)
    assert options.GRAPH_OPT_LEVELS == tuple(GRAPH_OPT)
    assert sorted(options.PROVIDER_SHORT_NAMES) == sorted(PROVIDER_ALIASES)


def test_export_options_match_the_converters_tables():
    from edgekit.converters.onnx import LOGITS_MODES, METHODS, PRECISIONS

    assert options.ONNX_PRECISIONS == tuple(PRECISIONS) and options.ONNX_LOGITS == tuple(LOGITS_MODES)
    assert options.ONNX_METHODS == tuple(METHODS)
    pytest.importorskip("gguf")
    from edgekit.converters.gguf import ALL_TYPES

    assert options.GGUF_QUANTS == tuple(ALL_TYPES)


def test_synth_presets_match():
    from edgekit.synth import PRESETS

    assert options.SYNTH_PRESETS == tuple(PRESETS)


def test_report_suffixes_are_what_write_report_accepts(tmp_path, monkeypatch):
    import edgekit.report as report

    monkeypatch.setattr(report.BenchResult, "load", staticmethod(lambda path: object()))
    monkeypatch.setattr(report, "to_html", lambda *results: "html")
    monkeypatch.setattr(report, "to_markdown", lambda *results: "md")
    for suffix in options.REPORT_SUFFIXES:
        assert report.write_report([tmp_path / "r.json"], tmp_path / f"report{suffix}").is_file()
    with pytest.raises(EdgekitError, match="unknown report type '.txt'"):
        report.write_report([tmp_path / "r.json"], tmp_path / "report.txt")


def choices(command: click.Command, option: str) -> tuple[str, ...]:
    param = next(p for p in command.params if p.name == option)
    return tuple(param.type.choices)


def test_the_cli_choice_lists_are_the_options():
    from edgekit.cli.bench import bench
    from edgekit.cli.export import export

    assert choices(bench, "flash_attn") == options.FLASH_ATTN
    assert choices(bench, "graph_opt") == options.GRAPH_OPT_LEVELS
    assert choices(bench, "fmt") == options.RESULT_FORMATS
    onnx = export.commands["onnx"]
    assert choices(onnx, "precision") == options.ONNX_PRECISIONS and choices(onnx, "logits") == options.ONNX_LOGITS
    assert choices(onnx, "method") == options.ONNX_METHODS
    r = CliRunner().invoke(cli, ["export", "gguf", "--help"], terminal_width=400)
    assert all(q in r.output for q in options.GGUF_QUANTS)


def test_bench_power_help_names_every_sensor():
    r = CliRunner().invoke(cli, ["bench", "--help"], terminal_width=400)
    assert r.exit_code == 0 and all(s in r.output for s in options.POWER_CHOICES)


def test_options_and_help_import_no_heavy_library():
    code = textwrap.dedent("""
        import sys
        import edgekit.options
        assert sorted(m for m in sys.modules if m.startswith("edgekit")) == ["edgekit", "edgekit.options"]
        from click.testing import CliRunner
        from edgekit.cli import cli
        for args in (["--help"], ["synth", "--help"], ["report", "--help"], ["power", "parse", "--help"],
                     ["targets", "--help"], ["probe", "--help"], ["export", "gguf", "--help"]):
            r = CliRunner().invoke(cli, args)
            assert r.exit_code == 0, (args, r.output)
        heavy = ("torch", "transformers", "llama_cpp", "onnx", "onnxruntime", "gguf", "edgekit.targets.jetson",
                 "edgekit.power.nvml")
        print(",".join(m for m in heavy if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent).stdout.strip()
    assert out == "", f"--help imported {out}"


def test_the_short_help_table_is_each_commands_own():
    """`edgekit --help` lists edgekit's commands from SHORT_HELP without importing them: each entry
    must be the command's own first help line, and every builtin must have one."""
    from edgekit.cli import COMMAND_REGISTRY, COMMANDS, SHORT_HELP

    assert set(SHORT_HELP) == set(COMMANDS)
    for name in COMMANDS:
        assert SHORT_HELP[name] == COMMAND_REGISTRY.load(name).get_short_help_str(10_000), name
