"""Where commands run: this machine (LocalTransport), a device over SSH (SSHTransport), or a
recording of one (RecordedTransport). Probe, deploy and remote bench all go through run()."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Protocol


@dataclass
class CommandResult:
    command: str
    returncode: int
    stdout: str
    stderr: str


class Transport(Protocol):
    name: str

    def run(self, command: str, timeout_s: float = 30.0) -> CommandResult: ...


class LocalTransport:
    name = "local"

    def run(self, command: str, timeout_s: float = 30.0) -> CommandResult:
        try:
            p = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout_s,
                               errors="replace")
            return CommandResult(command, p.returncode, p.stdout, p.stderr)
        except subprocess.TimeoutExpired:
            return CommandResult(command, 124, "", f"timed out after {timeout_s} s")


class RecordedTransport:
    """Answers commands from a recording (`edgekit probe --record DIR`, or a fixture folder in the
    same layout): <name>.txt for facts, state/<name>.txt for state, commands.txt mapping names to the
    commands that were run (without it, today's command tables name the files). A command the
    recording does not hold fails as a missing command would on the device."""

    def __init__(self, folder):
        from pathlib import Path

        from edgekit.errors import EdgekitError
        from edgekit.targets.specs import FACT_COMMANDS

        self.folder = Path(folder)
        self.name = f"recorded:{self.folder.name}"
        if not self.folder.is_dir() or not any((self.folder / f"{n}.txt").is_file() for n in FACT_COMMANDS):
            names = ", ".join(f"{n}.txt" for n in FACT_COMMANDS)
            raise EdgekitError(f"{folder} holds no recorded facts (none of {names})",
                               "pass a folder written by `edgekit probe --record`")
        listing = self.folder / "commands.txt"
        if listing.is_file():
            pairs = [line.split("\t", 1) for line in listing.read_text().splitlines() if "\t" in line]
            self.files = {command: name for name, command in pairs}
        else:
            from edgekit.targets.specs import FACT_COMMANDS, FAMILIES, family_module

            self.files = {c: n for n, c in FACT_COMMANDS.items()}
            for family in FAMILIES:
                self.files.update({c: f"state/{n}" for n, c in
                                   getattr(family_module(family), "STATE_COMMANDS", {}).items()})

    def run(self, command: str, timeout_s: float = 30.0) -> CommandResult:
        path = self.folder / f"{self.files.get(command, '?')}.txt"
        if command not in self.files or not path.is_file():
            return CommandResult(command, 127, "", f"not in the recording {self.folder}")
        return CommandResult(command, 0, path.read_bytes().decode("utf-8", "replace"), "")


class SSHTransport:
    """Runs commands on a device with the system's OpenSSH client, so ~/.ssh/config, agents and
    known_hosts apply as they do for `ssh` itself. One master connection is shared by every
    command (ControlMaster; closed by close()), so a probe's dozen commands cost one handshake.
    BatchMode: a host that would ask for a password or a host-key confirmation fails at once
    with ssh's own message instead of hanging."""

    def __init__(self, destination: str, options: list[str] | tuple[str, ...] = ()):
        import os
        import shutil
        import tempfile

        from edgekit.errors import EdgekitError

        if not destination or destination.startswith("-"):
            raise EdgekitError(f"'{destination}' is not an SSH destination",
                               "pass user@host, a Host alias from ~/.ssh/config, or ssh://user@host:port")
        self.ssh = shutil.which("ssh")
        if self.ssh is None:
            raise EdgekitError("the OpenSSH client (ssh) is not installed",
                               "install it (Debian/Ubuntu: apt-get install openssh-client)")
        self.destination = destination
        self.name = f"ssh:{destination}"
        # a short private folder for the control socket: unix socket paths are limited to 104-108 bytes,
        # and macOS's $TMPDIR alone is ~50 (%C adds 40)
        self._control_dir = tempfile.mkdtemp(prefix="ek-", dir="/tmp" if os.path.isdir("/tmp") else None)
        os.chmod(self._control_dir, 0o700)
        # the user's options first: for each option ssh keeps the first value it is given
        self.base = [self.ssh, *[arg for option in options for arg in ("-o", option)],
                     "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                     "-o", "ServerAliveInterval=15", "-o", "ControlMaster=auto",
                     "-o", f"ControlPath={self._control_dir}/%C", "-o", "ControlPersist=120"]

    def run(self, command: str, timeout_s: float = 30.0) -> CommandResult:
        """`command` through the device's POSIX sh (login shells differ: zsh on macOS, fish, ...)."""
        import shlex

        from edgekit.errors import EdgekitError

        argv = [*self.base, self.destination, "--", "sh -c " + shlex.quote(command)]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, errors="replace",
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            if not self._connected():  # no connection came up at all: the host does not answer
                raise EdgekitError(f"cannot reach {self.destination} over SSH (no answer within {timeout_s:g} s)",
                                   f"check that `ssh {shlex.quote(self.destination)} true` answers (host up, port "
                                   "open, sshd running)") from None
            return CommandResult(command, 124, "", f"timed out after {timeout_s} s")
        # 255 is ssh's own failure (no connection, refused key, unknown host key) unless the master
        # connection is up, in which case the remote command itself exited 255
        if p.returncode == 255 and not self._connected():
            why = " ".join((p.stderr.strip().splitlines() or ["ssh failed"])[-1].split())
            raise EdgekitError(f"cannot reach {self.destination} over SSH ({why})",
                               f"check that `ssh {shlex.quote(self.destination)} true` works without a password prompt "
                               "(key in the agent or IdentityFile, host key in known_hosts)")
        return CommandResult(command, p.returncode, p.stdout, p.stderr)

    def _connected(self) -> bool:
        return subprocess.run([*self.base, "-O", "check", self.destination], capture_output=True,
                              timeout=10).returncode == 0

    def close(self) -> None:
        import shutil

        subprocess.run([*self.base, "-O", "exit", self.destination], capture_output=True, timeout=10)
        shutil.rmtree(self._control_dir, ignore_errors=True)

    def __enter__(self) -> "SSHTransport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
