"""What a device says, checked before it touches this machine.

A device (or a recording of one) can answer anything: a run id of `..`, a wheel named
`../../victim.txt`, a `uname -m` of `x/../../planted`. Every name, id or path part that comes
from a device is checked here against a strict pattern before it becomes part of a local path,
and every local path built from one is resolved and checked to lie inside its root (the results
folder or edgekit's cache). A refusal is one EdgekitError naming the device and what it said.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.terminal import printable

RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")        # edgekit.device.runs.new_run_id
MACHINE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{0,31}")   # uname -m: x86_64, aarch64, armv7l, arm64
WHEEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+!]*-[A-Za-z0-9_.+!-]+\.whl")


def is_run_id(text: object) -> bool:
    """Is `text` a run id as edgekit makes them (edgekit.device.runs.new_run_id)?"""
    return isinstance(text, str) and RUN_ID.fullmatch(text) is not None


def machine_name(text: str, host: str) -> str:
    """A device's `uname -m`, which becomes part of a cache folder's name."""
    if not MACHINE.fullmatch(text or ""):
        raise EdgekitError(f"{printable(host, 100)} reports its machine as {printable(repr(text), 100)}, which is not "
                           "an architecture name", "check `uname -m` on the device; edgekit uses it in local "
                           "folder names and accepts letters, digits and _ only")
    return text


def wheel_name(text: str, stem: str, host: str) -> str:
    """The file name of a wheel a device built (`<stem>-<version>-...whl`), which becomes a local file."""
    if not (WHEEL.fullmatch(text or "") and text.startswith(f"{stem}-")):
        raise EdgekitError(f"{printable(host, 100)} named the wheel it built {printable(repr(text), 100)}, which is "
                           f"not a {stem} wheel file name", "look at the build on the device; nothing was copied")
    return text


def inside(root: Path, *parts: str) -> Path:
    """root/parts..., resolved, and refused unless it lies inside `root` (resolved): a part that is
    absolute, holds `..`, or leads through a link out of `root` never escapes it."""
    root = Path(root).resolve()
    path = root.joinpath(*parts).resolve()
    if path != root and root not in path.parents:
        raise EdgekitError(f"{printable(str(Path(*parts)), 200)} would lie outside {root}",
                           "this is a name a device gave: nothing was written")
    return path
