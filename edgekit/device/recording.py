"""The recording layout, in one place: what `edgekit probe --record DIR` writes and what
RecordedTransport (`--replay DIR`, the fixture folders under tests/fixtures/targets) reads.

    <name>.txt          the stdout of fact command <name> (FACT_COMMANDS)
    state/<name>.txt    the stdout of state command <name> (the family's STATE_COMMANDS)
    commands.txt        one `<file name without .txt><TAB><command>` line per file above
    files/<path>        files a replayed `get(<path>)` returns (optional; never written by probe)

Outputs are stored byte for byte (text that came through errors="replace" decoding is written
back as UTF-8). Without commands.txt, today's command tables name the files, so hand-written
fixture folders need only the output files.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.targets import specs
from edgekit.targets.specs import FACT_COMMANDS
from edgekit.terminal import printable

COMMANDS_FILE = "commands.txt"
STATE_DIR = "state"
FILES_DIR = "files"


def fact_file(name: str) -> str:
    """Where fact `name` is stored, relative to the recording."""
    return f"{name}.txt"


def state_file(name: str) -> str:
    """Where state reading `name` is stored, relative to the recording."""
    return f"{STATE_DIR}/{name}.txt"


def write_recording(folder_tmp: Path, facts: dict[str, str], state: dict[str, str],
                    fact_commands: dict[str, str], state_commands: dict[str, str]) -> None:
    """Write `facts` and `state` (name -> stdout) into `folder_tmp` in the layout above, with
    commands.txt naming the command behind each file (names missing from `facts`/`state` are
    left out). `folder_tmp` is the caller's fresh temporary folder (atomic_dir): this writes into
    it and renames nothing."""
    folder_tmp = Path(folder_tmp)
    (folder_tmp / STATE_DIR).mkdir(exist_ok=True)
    for name, text in facts.items():
        (folder_tmp / fact_file(name)).write_bytes(text.encode("utf-8", "surrogateescape"))
    for name, text in state.items():
        (folder_tmp / state_file(name)).write_bytes(text.encode("utf-8", "surrogateescape"))
    (folder_tmp / COMMANDS_FILE).write_text(
        "".join(f"{n}\t{c}\n" for n, c in fact_commands.items() if n in facts)
        + "".join(f"{STATE_DIR}/{n}\t{c}\n" for n, c in state_commands.items() if n in state))


def _confined(name: str) -> bool:
    """Is a commands.txt file name one inside the recording (`<name>` or `state/<name>`: words, no
    `..`, not absolute)?"""
    parts = name.split("/")
    return (0 < len(parts) <= 2 and (len(parts) == 1 or parts[0] == STATE_DIR)
            and all(p and p not in (".", "..") and "\\" not in p and "\0" not in p for p in parts))


class Recording:
    """The reading side of a recording folder: the recorded stdout of a command, and the file
    recorded for a remote path.

    Raises EdgekitError when `folder` is not a folder or holds none of the fact files (a
    recording without facts would detect nothing and is certainly the wrong folder)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        if not self.folder.is_dir() or not any((self.folder / fact_file(n)).is_file() for n in FACT_COMMANDS):
            names = ", ".join(fact_file(n) for n in FACT_COMMANDS)
            raise EdgekitError(f"{folder} holds no recorded facts (none of {names})",
                               "pass a folder written by `edgekit probe --record`")
        self.files = self._command_files()

    def _command_files(self) -> dict[str, str]:
        """command -> file name relative to the folder, without .txt."""
        listing = self.folder / COMMANDS_FILE
        if listing.is_file():
            pairs = [line.split("\t", 1) for line in listing.read_text(errors="replace").splitlines() if "\t" in line]
            outside = [name for name, _ in pairs if not _confined(name)]
            if outside:
                raise EdgekitError(f"{listing} names {printable(repr(outside[0]), 100)}, a file outside the recording",
                                   "a recording names only files inside its folder (<name> or state/<name>); "
                                   "fix commands.txt or record again")
            return {command: name for name, command in pairs}

        # every family's state commands (plugins' too, where the registry lists them)
        families = specs.family_names() if hasattr(specs, "family_names") else list(specs.FAMILIES)
        files = {c: n for n, c in specs.FACT_COMMANDS.items()}
        for family in families:
            files.update({c: f"{STATE_DIR}/{n}" for n, c in
                          getattr(specs.family_module(family), "STATE_COMMANDS", {}).items()})
        return files

    def output(self, command: str) -> str | None:
        """The recorded stdout of `command` (decoded as UTF-8, bad bytes replaced), or None when
        the recording does not hold it."""
        name = self.files.get(command)
        path = self.folder / f"{name}.txt"
        if name is None or not path.is_file():
            return None
        return path.read_bytes().decode("utf-8", "replace")

    def file(self, remote: str) -> Path | None:
        """The file recorded for the device path `remote` (files/<remote without its leading / or
        ~/>), or None when there is none. A path with `..` in it never leaves files/."""
        rel = remote[2:] if remote.startswith("~/") else remote.lstrip("/")
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            return None
        path = self.folder / FILES_DIR / Path(*parts)
        return path if path.exists() else None
