"""Outputs appear complete or not at all: build under a temporary name, verify, rename."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

from edgekit.errors import EdgekitError

PARTIAL_MARK = ".partial-"


def _protected_folders() -> list[Path]:
    """Folders no command may replace: /, home, the current folder, and every folder above
    the current folder or home (replacing those would delete them)."""
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    return [cwd, home, *cwd.parents, *home.parents]


def check_output_dir(path: Path, force: bool, inputs: tuple[Path, ...] = ()) -> None:
    """The one rule for every command that writes a folder (export, synth, demo, probe --record).

    Refused: a path that is a file; a non-empty folder without `force`; with or without it, /,
    home, the current folder or any folder above them; a folder that is, holds or lies inside one
    of `inputs` (replacing it would delete what the command reads)."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _protected_folders():
        raise EdgekitError(f"output folder {path} is your home, current or root folder, or one above them",
                           "choose a new folder for the output")
    for source in inputs:
        src = Path(source).resolve()
        if resolved == src or resolved in src.parents or src in resolved.parents:
            raise EdgekitError(f"output folder {path} is, holds or lies inside the input {source}",
                               "choose an output folder apart from the inputs")
    if path.exists() and not path.is_dir():
        raise EdgekitError(f"output path {path} exists and is not a folder", "choose another -o path")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise EdgekitError(f"output folder {path} already exists and is not empty",
                           "pass --force to replace it, or choose another output folder")


def check_output_file(path: Path, inputs: tuple[Path, ...] = ()) -> None:
    """For a command that writes one file (bench -o, report -o), before any work: not a folder,
    not one of `inputs` (it would be replaced), and a folder for it can be created."""
    path = Path(path)
    if path.is_dir():
        raise EdgekitError(f"output path {path} is a folder", f"name a file, e.g. {path / 'result.json'}")
    resolved = path.resolve()
    for source in inputs:
        if resolved == Path(source).resolve():
            raise EdgekitError(f"output path {path} is the input {source}; writing it would replace it",
                               "choose an output path apart from the inputs")
    for parent in resolved.parents:
        if parent.exists():
            if not parent.is_dir():
                raise EdgekitError(f"output path {path} needs a folder where {parent} is a file",
                                   "choose another output path")
            if not os.access(parent, os.W_OK):
                raise EdgekitError(f"cannot write under {parent} (permission denied)", "choose another output path")
            break


@contextlib.contextmanager
def atomic_dir(final: Path, force: bool = False, inputs: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `final`; on success it takes `final`'s place.

    On any exception the temporary folder is removed and `final` is left as it
    was, so a crash, a failed verification or a full disk never leaves a
    half-written folder at the final path. Without `force`, a folder that appeared
    at `final` while the work ran (someone else's) is refused, never replaced.
    """
    final = Path(final).absolute()
    check_output_dir(final, force, inputs)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    tmp = final.parent / f".{final.name}{PARTIAL_MARK}{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _normalise_modes(tmp)
    old = None
    try:
        if final.exists() or final.is_symlink():
            if not force and not (final.is_dir() and not final.is_symlink() and not any(final.iterdir())):
                # it appeared (or filled) while the work ran: someone else's, so it is not replaced
                raise EdgekitError(f"output folder {final} appeared while this command ran; it was not replaced",
                                   "nothing was written; choose another output folder, or pass --force")
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
        os.rename(tmp, final)  # a folder created at `final` this instant makes this fail, not vanish
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.exists():
            os.replace(old, final)  # put back what was there
            old = None
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def pid_alive(pid: int) -> bool:
    """Is process `pid` running (a zombie, exited and not yet reaped, is not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS): kill(0) answered
        return True


def remove_stale_partials(final: Path) -> None:
    """Temporary folders of earlier runs that were killed (SIGKILL, OOM) before they could clean up."""
    for p in final.parent.glob(f".{final.name}{PARTIAL_MARK}*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success it is renamed to `final`."""
    final = Path(final)
    tmp = final.parent / f".{final.name}{PARTIAL_MARK}{os.getpid()}"
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _normalise_modes(tmp)
    os.replace(tmp, final)


def _normalise_modes(path: Path) -> None:
    """Give outputs the modes the user's umask asks for.

    Some writers (safetensors, onnx external data) create files with mode 0600,
    which breaks copying a model to a device as another user.
    """
    umask = os.umask(0)
    os.umask(umask)
    if path.is_dir():
        os.chmod(path, 0o777 & ~umask)
        for root, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o777 & ~umask)
            for f in files:
                os.chmod(os.path.join(root, f), 0o666 & ~umask)
    elif path.exists():
        os.chmod(path, 0o666 & ~umask)


_SHORT_WRITE = re.compile(r"\b\d+ requested and \d+ written\b")  # numpy's tofile on a full disk: no errno


def is_disk_full(exc: BaseException) -> bool:
    if not isinstance(exc, OSError):
        return False
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or (exc.errno is None and bool(_SHORT_WRITE.search(str(exc))))


def write_text_atomic(path: Path, text: str) -> None:
    """`text` as the file `path` (UTF-8), whole or not at all; its folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
