"""Where commands run: this machine now; the SSH transport (deploy and remote bench) implements the same run()."""

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
