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


class RecordedTransport:
    """Answers commands from a recording (`edgekit probe --record DIR`, or a fixture folder in the
    same layout): <name>.txt for facts, state/<name>.txt for state, commands.txt mapping names to the
    commands that were run (without it, today's command tables name the files). A command the
    recording does not hold fails as a missing command would on the device."""

    def __init__(self, folder):
        from pathlib import Path

        self.folder = Path(folder)
        self.name = f"recorded:{self.folder.name}"
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
