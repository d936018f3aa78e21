"""The SSH transport against a real OpenSSH server started for the test on 127.0.0.1 with
throwaway keys (install openssh-server to run these; .ci/run does)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import time

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.transport import SSHTransport
from helpers import assert_one_line_error

SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.path.exists(p)),
                                    None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if SSHD is None or shutil.which("ssh") is None:
        pytest.skip("OpenSSH server/client not installed (apt-get install openssh-server openssh-client)")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"sshd did not start: {server.stderr.read().decode()[-500:]}")
            time.sleep(0.1)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    options = [f"Port={port}", f"IdentityFile={d / 'client_key'}", "IdentitiesOnly=yes",
               f"UserKnownHostsFile={d / 'known_hosts'}", "StrictHostKeyChecking=accept-new"]
    yield f"{user}@127.0.0.1", options, port
    server.terminate()
    server.wait(timeout=10)


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
