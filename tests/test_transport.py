"""The Transport contract on this machine and on recordings: streamed run(), atomic put/get with
awkward paths, the recording layout written by probe and read back, and host facts derived from
gathered facts (the SSH side is in test_transport_ssh.py)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import streaming_gate

from edgekit.cli import cli
from edgekit.device.probe import gather_facts, host_facts_of, probe
from edgekit.device.recording import write_recording
from edgekit.device.transport import LocalTransport, RecordedTransport
from edgekit.errors import EdgekitError
from edgekit.targets.host import HOST_COMMANDS, host_facts, host_facts_from
from edgekit.targets.specs import FACT_COMMANDS
from edgekit.targets.state import run_commands, state_commands

RECORDINGS = Path(__file__).parent / "fixtures" / "targets"
AWKWARD = "dir with space/it's \"quoted\" [1]*?.bin"


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert isinstance(e.value, EdgekitError) and "\n" not in text and "; " in text, text  # problem; fix
    return text


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".partial-" in p.name]


# ---------------------------------------------------------------- run: streamed, with a timeout


def test_on_output_gets_each_line_while_the_command_still_runs(tmp_path):
    """The command cannot print its second line (nor end) until on_output has seen the first one:
    lines handed over only at the end would leave it waiting until the timeout."""
    gate, seen, on_output = streaming_gate(tmp_path)

    r = LocalTransport().run(f"echo first; while [ ! -e '{gate}' ]; do sleep 0.02; done; printf 'second\\nlast'",
                             timeout_s=20, on_output=on_output)
    assert r.returncode == 0, r
    assert seen == ["first", "second", "last"]  # in order, line endings off, a last unterminated line too
    assert r.stdout == "first\nsecond\nlast"  # the result still holds the whole stdout


def test_the_timeout_holds_when_output_stalls_and_on_output_errors_stop_the_command(tmp_path):
    seen = []
    r = LocalTransport().run("echo started; sleep 30", timeout_s=0.5, on_output=seen.append)
    assert (r.returncode, r.stdout, r.stderr) == (124, "", "timed out after 0.5 s") and seen == ["started"]
    r = LocalTransport().run("echo out; echo err >&2; exit 4")
    assert (r.returncode, r.stdout, r.stderr) == (4, "out\n", "err\n")

    pid_file = tmp_path / "pid"

    def refuse(line):
        raise ValueError(line)

    with pytest.raises(ValueError):
        LocalTransport().run(f"echo $$ > '{pid_file}'; echo go; sleep 30", timeout_s=20, on_output=refuse)
    with pytest.raises(ProcessLookupError):  # the shell was stopped (and reaped), not left running
        os.kill(int(pid_file.read_text()), 0)


# ---------------------------------------------------------------- put/get on this machine


@pytest.mark.parametrize("direction", ["put", "get"])
def test_local_copies_awkward_paths_replace_the_destination_and_leave_no_partial(tmp_path, direction):
    src = tmp_path / "src" / AWKWARD
    dst = tmp_path / "dst" / AWKWARD.replace("[1]", "[2]")
    src.parent.mkdir(parents=True)
    dst.parent.mkdir(parents=True)
    src.write_bytes(b"new \x00 bytes\n" * 1000)
    src.chmod(0o755)
    dst.write_bytes(b"old")
    t = LocalTransport()
    t.put(src, str(dst)) if direction == "put" else t.get(str(src), dst)
    assert dst.read_bytes() == src.read_bytes() and stat.S_IMODE(dst.stat().st_mode) == 0o755
    assert leftovers(tmp_path) == [] and sorted(p.name for p in dst.parent.iterdir()) == [dst.name]
    t.close()
    t.close()


def test_local_copy_errors_are_one_line_naming_the_path(tmp_path):
    t = LocalTransport()
    missing = tmp_path / "no such file.gguf"
    with pytest.raises(EdgekitError) as e:
        t.put(missing, str(tmp_path / "out"))
    assert str(missing) in one_line(e) and "does not exist" in str(e.value)
    with pytest.raises(EdgekitError) as e:
        t.get(str(missing), tmp_path / "out")
    assert str(missing) in one_line(e)
    (tmp_path / "a folder").mkdir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(EdgekitError) as e:
        t.put(tmp_path / "a folder", str(tmp_path / "out"))
    assert "a folder" in one_line(e) and "is a folder, not a file" in str(e.value)
    with pytest.raises(EdgekitError) as e:
        t.put(tmp_path / "f", str(tmp_path / "a folder"))
    assert f"{tmp_path / 'a folder'} is a folder" in one_line(e) and "f" in str(e.value)
    with pytest.raises(EdgekitError) as e:
        t.put(tmp_path / "f", str(tmp_path / "nowhere" / "f"))
    assert f"the folder {tmp_path / 'nowhere'} does not exist" in one_line(e)
    with pytest.raises(EdgekitError) as e:
        t.put(tmp_path / "f", str(tmp_path) + "/")
    assert "does not name a file" in one_line(e)
    assert leftovers(tmp_path) == []


def test_a_failed_copy_leaves_the_destination_as_it_was(tmp_path, monkeypatch):
    """The copy dies half-way (disk full, permission): the old destination stays whole, no partial."""
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(b"n" * 100_000)
    dst.write_bytes(b"old")

    def half_then(error):
        def copyfile(a, b, **kw):
            Path(b).write_bytes(Path(a).read_bytes()[:1000])
            raise error(b)
        return copyfile

    monkeypatch.setattr(shutil, "copyfile", half_then(lambda b: OSError(28, "No space left on device", str(b))))
    with pytest.raises(EdgekitError) as e:
        LocalTransport().put(src, str(dst))
    assert "No space left on device" in one_line(e) and str(dst) in str(e.value)
    assert dst.read_bytes() == b"old" and leftovers(tmp_path) == []
    monkeypatch.setattr(shutil, "copyfile", half_then(lambda b: PermissionError(13, "Permission denied", str(src))))
    with pytest.raises(EdgekitError) as e:
        LocalTransport().get(str(src), dst)
    assert f"cannot read {src} (permission denied)" in one_line(e)
    assert dst.read_bytes() == b"old" and leftovers(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root may write anywhere")
def test_a_folder_without_write_permission_is_named(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "f").write_text("x")
    (tmp_path / "ro").chmod(0o555)
    try:
        with pytest.raises(EdgekitError) as e:
            LocalTransport().put(tmp_path / "f", str(tmp_path / "ro" / "f"))
        assert "permission denied" in one_line(e) and str(tmp_path / "ro") in str(e.value)
    finally:
        (tmp_path / "ro").chmod(0o755)


# ---------------------------------------------------------------- recordings


def recording_copy(tmp_path, name="rpi5-8gb") -> Path:
    return Path(shutil.copytree(RECORDINGS / name, tmp_path / name))


def test_recorded_run_streams_its_lines_put_is_refused_get_reads_files(tmp_path):
    rec = recording_copy(tmp_path)
    t = RecordedTransport(rec)
    seen = []
    r = t.run(FACT_COMMANDS["cpuinfo"], on_output=seen.append)
    assert r.returncode == 0 and seen == r.stdout.split("\n")[:-1] and len(seen) > 10
    assert t.run("no such command").returncode == 127
    (tmp_path / "f").write_text("x")
    with pytest.raises(EdgekitError) as e:
        t.put(tmp_path / "f", "/home/pi/f")
    assert "a recording cannot receive files" in one_line(e)
    (rec / "files" / "etc" / "dir with space").mkdir(parents=True)
    (rec / "files" / "etc" / "dir with space" / "it's.conf").write_text("recorded\n")
    t.get("/etc/dir with space/it's.conf", tmp_path / "got")
    assert (tmp_path / "got").read_text() == "recorded\n"
    for absent in ("/etc/missing.conf", "/etc/../../../f", "~/../f"):
        with pytest.raises(EdgekitError) as e:
            t.get(absent, tmp_path / "got2")
        assert absent in one_line(e) and "not in the recording" in str(e.value)
    with pytest.raises(EdgekitError) as e:
        t.get("/etc", tmp_path / "got2")
    assert "is a folder" in one_line(e)
    assert not (tmp_path / "got2").exists() and leftovers(tmp_path) == []
    t.close()


def test_write_recording_is_read_back_byte_for_byte(tmp_path):
    facts = {"uname_m": "aarch64\n", "device_tree_model": "Raspberry Pi 5 Model B Rev 1.0\x00",
             "cpuinfo": (RECORDINGS / "rpi5-8gb" / "cpuinfo.txt").read_text(), "meminfo": "MemTotal: 8245632 kB\n"}
    commands = state_commands("rpi5")
    state = {"throttled": "throttled=0x0\n", "governor": "ondemand\n"}
    (tmp_path / "rec").mkdir()
    write_recording(tmp_path / "rec", facts, state, FACT_COMMANDS, commands)
    t = RecordedTransport(tmp_path / "rec")
    assert {n: t.run(c).stdout for n, c in FACT_COMMANDS.items() if n in facts} == facts
    assert {n: t.run(c).stdout for n, c in commands.items() if n in state} == state
    assert sorted(p.name for p in (tmp_path / "rec" / "state").iterdir()) == ["governor.txt", "throttled.txt"]
    assert probe(t)["target"] == "rpi5-8gb"


def test_probe_record_then_replay_round_trip(tmp_path):
    rec = tmp_path / "rec"
    r = CliRunner().invoke(cli, ["probe", "--record", str(rec), "--json"])
    assert r.exit_code == 0, r.output
    recorded = json.loads(r.output)
    r = CliRunner().invoke(cli, ["probe", "--replay", str(rec), "--json"])
    assert r.exit_code == 0, r.output
    replayed = json.loads(r.output)
    assert replayed["transport"] == "recorded:rec"
    for key in ("target", "detected", "facts_recorded", "state_recorded"):
        assert replayed[key] == recorded[key], key
    here = host_facts()
    again = host_facts_of(RecordedTransport(rec))
    assert {k: again[k] for k in ("machine", "cpu_model", "ram_bytes")} == {
        k: here[k] for k in ("machine", "cpu_model", "ram_bytes")}


# ---------------------------------------------------------------- host facts from gathered facts


GiB = 2**30


@pytest.mark.parametrize("folder,expected", [
    ("rpi5-8gb", {"machine": "aarch64", "cpu_model": "Raspberry Pi 5 Model B Rev 1.0", "cpu_cores": 4,
                  "ram_bytes": 8245632 * 1024, "os": None}),
    ("x86-server", {"machine": "x86_64", "cpu_model": "AMD EPYC 7763 64-Core Processor", "cpu_cores": 1,
                    "ram_bytes": None, "os": "Linux"}),
    ("apple-m1-pro", {"machine": "arm64", "cpu_model": "Apple M1 Pro", "cpu_cores": 10, "ram_bytes": 16 * GiB,
                      "os": "Darwin"}),
    ("apple-m2-pro", {"machine": "arm64", "cpu_model": "Apple M2 Pro", "cpu_cores": None, "ram_bytes": 32 * GiB,
                      "os": "Darwin"}),
    ("apple-m3", {"machine": None, "cpu_model": "Apple M3", "cpu_cores": 8, "ram_bytes": 16 * GiB, "os": "Darwin"}),
    ("jetson-agx-orin-64gb", {"machine": None, "cpu_model": None, "cpu_cores": None,
                              "ram_bytes": 64335836 * 1024, "os": None}),
    ("linux-nvidia-h100", {"machine": "x86_64", "cpu_model": None, "cpu_cores": None, "ram_bytes": None,
                           "os": "Linux"}),
])
def test_host_facts_from_each_recording(folder, expected):
    facts = {p.stem: p.read_text() for p in (RECORDINGS / folder).glob("*.txt")}
    derived = host_facts_from(facts)
    assert derived == {"hostname": None, "python": None, **expected}
    assert host_facts_of(RecordedTransport(RECORDINGS / folder)) == derived  # the same through the transport
    from edgekit.results import HostInfo

    HostInfo(**derived, accelerators=[])  # the fields a result's host holds


def test_host_facts_from_prefers_the_online_count_and_names_the_release():
    facts = {"uname_s": "Linux\n", "uname_r": "6.8.0-1\n", "hostname": "pi\n", "ncpu": "3\n",
             "cpuinfo": "processor\t: 0\nprocessor\t: 1\nprocessor\t: 2\nprocessor\t: 3\n"}
    derived = host_facts_from(facts)
    assert (derived["os"], derived["hostname"], derived["cpu_cores"]) == ("Linux 6.8.0-1", "pi", 3)
    assert host_facts_from({**facts, "ncpu": "oops"})["cpu_cores"] == 4
    assert host_facts_from({}) == dict.fromkeys(host_facts(), None)


def test_host_facts_is_unchanged_and_matches_this_machine_read_through_a_transport():
    from edgekit.targets.host import _read, parse_cpuinfo_model, parse_meminfo_total_bytes

    before = {  # host_facts() as it was written before host_facts_from existed
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_model": parse_cpuinfo_model(_read("/proc/cpuinfo")) or platform.processor() or None,
        "cpu_cores": os.cpu_count(),
        "ram_bytes": parse_meminfo_total_bytes(_read("/proc/meminfo")),
        "python": platform.python_version(),
    }
    assert host_facts() == before
    assert host_facts_of(LocalTransport()) == before
    if sys.platform.startswith("linux"):  # macOS: sysctl names the CPU and RAM that host_facts() leaves out
        gathered = run_commands(LocalTransport(), {**FACT_COMMANDS, **HOST_COMMANDS})
        assert host_facts_from(gathered) == {**before, "python": None}
        assert host_facts_from(gather_facts(LocalTransport()))["ram_bytes"] == before["ram_bytes"]
