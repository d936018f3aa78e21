"""The SSH transport against a real OpenSSH server started for the test on 127.0.0.1 with
throwaway keys (install openssh-server to run these; .ci/run does)."""

from __future__ import annotations

import json
import os
import platform
import shlex

import pytest
from click.testing import CliRunner
from devices import free_port, serve
from helpers import assert_one_line_error, streaming_gate

from edgekit.cli import cli
from edgekit.device.transport import SSHTransport


def _serve(d, sftp: bool):
    yield from serve(d, sftp=sftp)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    yield from _serve(tmp_path_factory.mktemp("sshd"), sftp=True)


@pytest.fixture(scope="module")
def sshd_without_sftp(tmp_path_factory):
    """A device whose sshd has no SFTP subsystem (scp's default protocol since OpenSSH 9.0)."""
    yield from _serve(tmp_path_factory.mktemp("sshd-nosftp"), sftp=False)


def test_commands_run_through_the_remote_shell_with_their_exit_codes(sshd):
    dest, options, _port = sshd
    with SSHTransport(dest, options) as t:
        r = t.run("""printf 'a\\0b'; echo " $((1+2))" 'x  y' "$(printf %s "it's")"; exit 3""")
        assert r.returncode == 3 and r.stdout == "a\0b 3 x  y it's\n"
        assert t.run("cat /nonexistent").returncode != 0
        assert t.run("exit 255").returncode == 255  # the remote command's own 255, not an ssh failure
        assert len(t._control_dir) + 1 + 40 < 100  # control socket path (+ %C) fits macOS's 104 bytes
        assert t.run("sleep 5", timeout_s=0.5).returncode == 124
        assert t._connected()  # every command went through the one master connection, still up
    assert not t._connected()  # close() ended it


def test_probe_over_ssh_matches_the_local_probe_and_records(sshd, tmp_path):
    dest, options, _port = sshd
    flags = [arg for o in options for arg in ("--ssh-option", o)]
    local = json.loads(CliRunner().invoke(cli, ["probe", "--json"]).output)
    r = CliRunner().invoke(cli, ["probe", "--host", dest, *flags, "--record", str(tmp_path / "rec"), "--json"])
    assert r.exit_code == 0, r.output
    remote = json.loads(r.output)
    assert remote["transport"] == f"ssh:{dest}"
    assert remote["target"] == local["target"] and remote["detected"] == local["detected"]
    assert (tmp_path / "rec" / "uname_m.txt").read_text().strip() == platform.machine()
    assert (tmp_path / "rec" / "commands.txt").is_file()


def test_unreachable_host_is_one_line(sshd):
    dest, options, port = sshd
    closed = free_port()
    options = [o if not o.startswith("Port=") else f"Port={closed}" for o in options]
    r = CliRunner().invoke(cli, ["probe", "--host", dest, *[a for o in options for a in ("--ssh-option", o)]])
    assert_one_line_error(r, "cannot reach", "without a password prompt")
    assert_one_line_error(CliRunner().invoke(cli, ["probe", "--host", "-oProxyCommand=x"]), "not an SSH destination")


# ---------------------------------------------------------------- streaming and files


AWKWARD = "dir with space/it's \"quoted\" $(x) [1]*?.bin"


def _leftovers(folder) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".partial-" in p.name]


def _one_line(e) -> str:
    from edgekit.errors import EdgekitError

    assert isinstance(e.value, EdgekitError) and "\n" not in str(e.value) and "; " in str(e.value), str(e.value)
    return str(e.value)


def test_on_output_streams_over_ssh(sshd, tmp_path):
    """The remote command waits for a file that on_output creates on seeing the first line (the
    device is this machine): lines held back until the end would leave it waiting until the timeout."""
    dest, options, _port = sshd
    gate, seen, on_output = streaming_gate(tmp_path)

    with SSHTransport(dest, options) as t:
        r = t.run(f"echo first; while [ ! -e '{gate}' ]; do sleep 0.02; done; echo second", timeout_s=20,
                  on_output=on_output)
        assert r.returncode == 0 and seen == ["first", "second"] and r.stdout == "first\nsecond\n"
        seen.clear()
        assert t.run("echo started; sleep 30", timeout_s=1, on_output=seen.append).returncode == 124
        assert seen == ["started"]
    t.close()  # a second close does nothing
    assert not t._connected()


@pytest.mark.parametrize("mode", ["sftp", "legacy"])
def test_put_and_get_over_ssh_with_awkward_paths(sshd, tmp_path, mode):
    dest, options, _port = sshd
    src = tmp_path / "here" / AWKWARD
    remote = tmp_path / "device" / AWKWARD
    back = tmp_path / "back" / AWKWARD
    for p in (src, remote, back):
        p.parent.mkdir(parents=True)
    src.write_bytes(b"payload \x00 \xff\n" * 5000)
    remote.write_bytes(b"old")  # overwritten
    decoy = remote.with_name(remote.name.replace("[1]*?", "1xy"))  # what [1]*? matches as a glob
    decoy.write_bytes(b"decoy")
    with SSHTransport(dest, options) as t:
        t._scp_mode = mode
        real_scp, uploads = t._scp, []

        def scp(local, path, download):  # the upload lands beside the destination, which stays whole
            p = real_scp(local, path, download)
            uploads.append((path, remote.read_bytes()))
            return p

        t._scp = scp
        t.put(src, str(remote))
        assert uploads == [(f"{remote}.partial-{os.getpid()}", b"old")]
        assert remote.read_bytes() == src.read_bytes()
        back.write_bytes(b"old")
        t.get(str(remote), back)
        assert back.read_bytes() == src.read_bytes()  # the file itself, not a glob match
        assert uploads[1][0] == str(remote)
        assert t._scp_mode == mode and t._connected()  # through the master connection, no fallback
    assert _leftovers(tmp_path) == [] and sorted(p.name for p in remote.parent.iterdir()) == sorted(
        [remote.name, decoy.name])


def test_copy_errors_over_ssh_are_one_line_and_leave_nothing(sshd, tmp_path):
    dest, options, _port = sshd
    (tmp_path / "f").write_bytes(b"x" * 100)
    (tmp_path / "a folder").mkdir()
    with SSHTransport(dest, options) as t:
        with pytest.raises(Exception) as e:
            t.put(tmp_path / "no such file", str(tmp_path / "out"))
        assert str(tmp_path / "no such file") in _one_line(e) and "does not exist" in str(e.value)
        with pytest.raises(Exception) as e:
            t.get(str(tmp_path / "no such 'file'"), tmp_path / "out")
        line = _one_line(e)
        assert f"{dest}:{tmp_path / 'no such' }" in line and "No such file" in line and "ls -l" in line
        with pytest.raises(Exception) as e:
            t.put(tmp_path / "f", str(tmp_path / "missing folder" / "f"))
        assert f"{dest}:{tmp_path / 'missing folder' / 'f'}" in _one_line(e)
        with pytest.raises(Exception) as e:
            t.put(tmp_path / "f", str(tmp_path / "a folder"))
        assert f"{dest}:{tmp_path / 'a folder'} is a folder" in _one_line(e)
        with pytest.raises(Exception) as e:
            t.get(str(tmp_path / "a folder"), tmp_path / "out")
        assert "not a regular file" in _one_line(e)
        with pytest.raises(Exception) as e:
            t.get(str(tmp_path / "f"), tmp_path / "a folder")
        assert f"{tmp_path / 'a folder'} is a folder" in _one_line(e)
    assert _leftovers(tmp_path) == [] and list((tmp_path / "a folder").iterdir()) == []
    assert not (tmp_path / "out").exists()


def test_home_relative_paths_mean_the_same_to_scp_and_the_shell(sshd, tmp_path):
    dest, options, _port = sshd
    name = f".edgekit-test-{os.getpid()} it's.txt"
    (tmp_path / "f").write_text("home\n")
    with SSHTransport(dest, options) as t:
        try:
            t.put(tmp_path / "f", f"~/{name}")
            assert t.run(f"cat {shlex.quote(name)}").stdout == "home\n"  # the shell starts in the home folder
            t.get(name, tmp_path / "back")
            assert (tmp_path / "back").read_text() == "home\n"
        finally:
            t.run(f"rm -f -- {shlex.quote(name)}")


def test_a_device_without_sftp_gets_the_legacy_protocol(sshd_without_sftp, tmp_path):
    dest, options, _port = sshd_without_sftp
    src = tmp_path / AWKWARD.replace("/", " ")
    src.write_text("legacy\n")
    with SSHTransport(dest, options) as t:
        t.put(src, str(tmp_path / "up it's"))
        t.get(str(tmp_path / "up it's"), tmp_path / "down")
        assert t._scp_mode == "legacy"
    assert (tmp_path / "down").read_text() == "legacy\n" and _leftovers(tmp_path) == []


def test_host_facts_over_ssh_describe_this_machine(sshd):
    from edgekit.device.probe import host_facts_of
    from edgekit.targets.host import host_facts

    dest, options, _port = sshd
    with SSHTransport(dest, options) as t:
        remote = host_facts_of(t)
    assert remote == {**host_facts(), "python": None}
