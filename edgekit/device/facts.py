"""What deploy reads off a device: one sh command (`device_script`) and the pure parser of what
it prints (`parse_device_report`), the remote folder as a shell word, the device Python chosen.
Everything the device says is parsed, never trusted as shell text."""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field

from edgekit.errors import EdgekitError
from edgekit.terminal import printable

REMOTE_DIR = "~/.edgekit"
MIN_PYTHON = (3, 10)
PYTHON_CANDIDATES = ("python3", "python3.13", "python3.12", "python3.11", "python3.10")


# ---------------------------------------------------------------- remote paths


def remote_dir_expr(path: str) -> str:
    """`path` as a POSIX sh word: `~` and `~/x` through "$HOME" (any characters after it quoted),
    anything else quoted whole."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        rest = path[2:].strip("/")
        return '"$HOME"' + (f"/{shlex.quote(rest)}" if rest else "")
    if path.startswith("~"):
        raise EdgekitError(f"--remote-dir {path}: ~user paths are not supported",
                           "pass an absolute path, or one starting with ~/")
    if not path:
        raise EdgekitError("--remote-dir is empty", f"pass a folder on the device, e.g. {REMOTE_DIR}")
    return shlex.quote(path)


def check_remote_dir(path: str) -> str:
    """`path` (--remote-dir) if the device's pip can take paths under it: a `;` (pip reads what
    follows as an environment marker), a `#` (a URL fragment) or a control character there would
    fail a deploy minutes in, after the venv was made. Refused before anything is written."""
    bad = sorted({c for c in path if c in ";#" or ord(c) < 32 or ord(c) == 127})
    if bad:
        raise EdgekitError(f"--remote-dir {printable(repr(path), 200)} holds {', '.join(map(repr, bad))}, which pip "
                           "cannot take in the paths deploy installs from", "pass a folder without ; # or control "
                           f"characters, e.g. {REMOTE_DIR}")
    return path


def resolve_remote_dir(transport, remote_dir: str) -> str:
    """The remote folder as an absolute path (`~/` resolved by the device's shell)."""
    r = transport.run(f"R={remote_dir_expr(remote_dir)}; echo \"$R\"", timeout_s=30)
    return r.stdout.strip() or remote_dir


# ---------------------------------------------------------------- reading the device


@dataclass
class PythonFound:
    path: str
    version: tuple[int, int, int]
    has_venv: bool

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


@dataclass
class Device:
    """What `device_script` read off the device."""

    remote_dir: str                       # absolute
    system: str = ""
    machine: str = ""
    pythons: list[PythonFound] = field(default_factory=list)
    missing_pythons: list[str] = field(default_factory=list)
    free_bytes: int | None = None         # at the remote folder (or its nearest existing parent)
    free_dir: str | None = None
    mem_total_bytes: int | None = None
    mem_available_bytes: int | None = None
    rsync: str | None = None              # `rsync --version`'s first line
    sha256_tool: str | None = None        # sha256sum or shasum
    tools: set[str] = field(default_factory=set)  # build tools on PATH: cc, c++, cmake
    glibc: tuple[int, ...] | None = None  # `getconf GNU_LIBC_VERSION` (glibc 2.36 -> (2, 36)); None: not glibc
    glibcxx: tuple[int, ...] | None = None  # the newest GLIBCXX_ symbol version its libstdc++.so.6 defines


def device_script(remote_dir: str, pythons: tuple[str, ...] = PYTHON_CANDIDATES) -> str:
    """One sh command that prints `key=value` lines about the device (parse_device_report reads
    them). It writes nothing."""
    names = " ".join(shlex.quote(p) for p in pythons)
    return f"""R={remote_dir_expr(remote_dir)}
echo "dir=$R"
echo "system=$(uname -s)"
echo "machine=$(uname -m)"
for p in {names}; do
  path=$(command -v "$p" 2>/dev/null) || {{ echo "nopython=$p"; continue; }}
  v=$("$path" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) || {{ echo "nopython=$p"; continue; }}
  if "$path" -c 'import venv, ensurepip' >/dev/null 2>&1; then venv=yes; else venv=no; fi
  echo "python=$v $venv $path"
done
d="$R"; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "free_dir=$d"
df -Pk "$d" 2>/dev/null | tail -n 1 | sed 's/^/df=/'
if [ -r /proc/meminfo ]; then cat /proc/meminfo | grep -E '^(MemTotal|MemAvailable):' | sed 's/^/meminfo=/'; fi
sysctl -n hw.memsize 2>/dev/null | sed 's/^/memsize=/'
command -v rsync >/dev/null 2>&1 && rsync --version 2>&1 | head -n 1 | sed 's/^/rsync=/'
if command -v sha256sum >/dev/null 2>&1; then echo sha256=sha256sum; elif command -v shasum >/dev/null 2>&1; then echo sha256=shasum; fi
getconf GNU_LIBC_VERSION 2>/dev/null | sed 's/^/libc=/'
m=$(uname -m)
for f in /usr/lib/$m-linux-gnu/libstdc++.so.6 /lib/$m-linux-gnu/libstdc++.so.6 /usr/lib64/libstdc++.so.6 /usr/lib/libstdc++.so.6; do
  if [ -r "$f" ]; then grep -ao 'GLIBCXX_3\\.4\\.[0-9]*' "$f" 2>/dev/null | sort -u -t. -k3,3n | tail -n 1 | sed 's/^/libstdcxx=/'; break; fi
done
for t in cc c++ cmake; do command -v "$t" >/dev/null 2>&1 && echo "tool=$t"; done
true"""


def parse_device_report(text: str) -> Device:
    """The `key=value` lines device_script prints, as a Device. Pure; unknown lines are ignored."""
    device = Device(remote_dir="")
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "dir":
            device.remote_dir = value
        elif key == "system":
            device.system = value.strip()
        elif key == "machine":
            device.machine = value.strip()
        elif key == "python":
            parts = value.split(" ", 2)
            m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", parts[0]) if len(parts) == 3 else None
            if m:
                version = tuple(int(x) for x in m.groups())
                if all(p.path != parts[2] for p in device.pythons):
                    device.pythons.append(PythonFound(parts[2], version, parts[1] == "yes"))
        elif key == "nopython":
            device.missing_pythons.append(value)
        elif key == "free_dir":
            device.free_dir = value
        elif key == "df":  # POSIX df -Pk: Filesystem 1024-blocks Used Available Capacity Mounted-on
            fields = value.split()
            if len(fields) >= 4 and fields[3].isdigit():
                device.free_bytes = int(fields[3]) * 1024
        elif key == "meminfo":
            m = re.match(r"(MemTotal|MemAvailable):\s+(\d+)\s*kB", value)
            if m:
                setattr(device, "mem_total_bytes" if m.group(1) == "MemTotal" else "mem_available_bytes",
                        int(m.group(2)) * 1024)
        elif key == "memsize" and value.strip().isdigit() and device.mem_total_bytes is None:
            device.mem_total_bytes = int(value.strip())
        elif key == "rsync":
            device.rsync = value.strip()
        elif key == "sha256":
            device.sha256_tool = value.strip()
        elif key == "tool":
            device.tools.add(value.strip())
        elif key == "libc":
            m = re.fullmatch(r"glibc\s+(\d+)\.(\d+)(?:\.\d+)?", value.strip())
            device.glibc = (int(m.group(1)), int(m.group(2))) if m else None
        elif key == "libstdcxx":
            m = re.fullmatch(r"GLIBCXX_(\d+)\.(\d+)\.(\d+)", value.strip())
            device.glibcxx = tuple(int(x) for x in m.groups()) if m else None
    return device


def rsync_can_resume(version_line: str | None) -> bool:
    """Does this `rsync --version` first line name an rsync with --append-verify (3.0 and later)?
    macOS's rsync 2.6.9 and openrsync (macOS 15) have no --append-verify."""
    if not version_line or "openrsync" in version_line.lower():
        return False
    m = re.search(r"rsync\s+version\s+v?(\d+)\.(\d+)", version_line)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (3, 0)


def local_rsync_version(rsync: str) -> str | None:
    try:
        out = subprocess.run([rsync, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.splitlines() or [None])[0]


def choose_python(device: Device, wanted: str | None, family: str) -> PythonFound:
    """The device Python the venv is made from: `wanted` (a path or name, as --python gives it)
    or the first of PYTHON_CANDIDATES that is 3.10 or newer and has venv."""
    found = device.pythons
    if wanted:
        found = [p for p in found if p.path == wanted or p.path.rsplit("/", 1)[-1] == wanted.rsplit("/", 1)[-1]]
        if not found:
            raise EdgekitError(f"the device has no Python '{wanted}'", "pass --python with a path or name that "
                               "the device's PATH finds, e.g. --python /usr/bin/python3.11")
    new = [p for p in found if p.version[:2] >= MIN_PYTHON]
    with_venv = [p for p in new if p.has_venv]
    if with_venv:
        return with_venv[0]
    if new:
        p = new[0]
        major_minor = f"{p.version[0]}.{p.version[1]}"
        raise EdgekitError(f"the device's Python {p.version_text} ({p.path}) has no venv module",
                           f"install it on the device (Debian/Ubuntu: sudo apt install python{major_minor}-venv)")
    seen = ", ".join(f"{p.version_text} ({p.path})" for p in found) or "none"
    raise EdgekitError(f"the device's Python is too old for edgekit: found {seen}, needs 3.10 or newer",
                       PYTHON_FIX.get(family, PYTHON_FIX["linux"]))


PYTHON_FIX = {
    "jetson": "JetPack 5 ships Python 3.8: install 3.10 (sudo apt install python3.10 python3.10-venv, from the "
              "deadsnakes PPA on Ubuntu 20.04) and pass --python python3.10; JetPack 6 has 3.10",
    "apple-m": "macOS's /usr/bin/python3 is 3.9: install Python 3.10+ (brew install python@3.12, or python.org) and "
               "pass --python python3.12",
    "rpi5": "Raspberry Pi OS Bookworm has 3.11: sudo apt install python3 python3-venv (or pass --python)",
    "linux": "install Python 3.10 or newer with its venv module on the device and pass --python NAME if it is not "
             "python3",
}
