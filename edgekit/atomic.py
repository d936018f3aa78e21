"""Outputs appear complete or not at all: build under a temporary name, verify, rename."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator

from edgekit.errors import EdgekitError

PARTIAL_MARK = ".partial-"


def check_output_dir(path: Path, force: bool) -> None:
    """Refuse to replace an existing, non-empty output folder unless forced."""
    if path.exists() and not path.is_dir():
        raise EdgekitError(f"output path {path} exists and is not a folder", "choose another -o path")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise EdgekitError(f"output folder {path} already exists and is not empty",
                           "pass --force to replace it, or choose another output folder")


@contextlib.contextmanager
def atomic_dir(final: Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `final`; on success it replaces `final`.

    On any exception the temporary folder is removed and `final` is left as it
    was, so a crash, a failed verification or a full disk never leaves a
    half-written folder at the final path.
    """
    final = Path(final).absolute()
    check_output_dir(final, force)
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
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(final: Path) -> None:
    """Temporary folders of earlier runs that were killed (SIGKILL, OOM) before they could clean up."""
    for p in final.parent.glob(f".{final.name}{PARTIAL_MARK}*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)) and p.is_dir():
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


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
