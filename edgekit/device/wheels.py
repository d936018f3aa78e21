"""The local caches deploy keeps: edgekit's own wheel (one per source state), runtime wheels
built on devices (one folder per family, version, machine and recipe), and the sha256 of model
files (per real path, size and modification time)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import edgekit
from edgekit.atomic import atomic_dir, atomic_file
from edgekit.errors import EdgekitError
from edgekit.llamacpp_build import cache_root
from edgekit.manifest import sha256_of


def cached_sha256(path: Path) -> str:
    """sha256 of `path`, remembered in edgekit's cache (sha256.json) under its real path, size and
    modification time, so that deploying a multi-GB model again does not read it again."""
    st = Path(path).stat()
    key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"
    store = cache_root() / "sha256.json"
    try:
        known = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    digest = sha256_of(Path(path))
    known = known if isinstance(known, dict) else {}
    known[key] = digest
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(store) as tmp:
            tmp.write_text(json.dumps(dict(list(known.items())[-2000:])), encoding="utf-8")
    except OSError:  # a read-only cache costs a re-read next time, nothing else
        pass
    return digest


# ---------------------------------------------------------------- the edgekit wheel


def source_tree() -> Path | None:
    """The folder edgekit was installed from when it is an editable install of a source tree
    (pyproject.toml naming the project edgekit beside the package), else None."""
    root = Path(edgekit.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and re.search(r'^name\s*=\s*"edgekit"', pyproject.read_text(encoding="utf-8"), re.M):
        return root
    return None


SOURCE_PARTS = ("edgekit", "converters", "targets", "pyproject.toml", "README.md", "LICENSE")


def _source_digest(root: Path) -> str:
    h = hashlib.sha256()
    for sub in ("edgekit", "converters", "targets"):
        for p in sorted((root / sub).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    for name in ("pyproject.toml", "README.md"):
        if (root / name).is_file():
            h.update(name.encode() + b"\0" + (root / name).read_bytes())
    return h.hexdigest()[:16]


def edgekit_wheel() -> Path | None:
    """A wheel of this machine's edgekit, built from its source tree once per source state (cached
    under the edgekit cache, edgekit-wheels/<digest>/), or None when edgekit is not installed from
    a source tree (the device then installs edgekit==<this version> from its index)."""
    root = source_tree()
    if root is None:
        return None
    folder = cache_root() / "edgekit-wheels" / _source_digest(root)
    found = sorted(folder.glob("edgekit-*.whl"))
    if found:
        return found[0]
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".building-"))
    try:
        isolation = [] if importlib.util.find_spec("setuptools") and importlib.util.find_spec("wheel") else None
        # from a copy of the sources alone: an in-tree build would reuse a stale build/ folder (files
        # since deleted or not packaged any more) and write build/ and *.egg-info into the tree
        src = tmp / "src"
        for name in SOURCE_PARTS:
            if (root / name).is_dir():
                shutil.copytree(root / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif (root / name).is_file():
                src.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, src / name)
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp), str(src)]
        p = subprocess.run(argv + (["--no-build-isolation"] if isolation is not None else []),
                           capture_output=True, text=True)
        built = sorted(tmp.glob("edgekit-*.whl"))
        shutil.rmtree(src, ignore_errors=True)
        if p.returncode != 0 or not built:
            last = (p.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise EdgekitError(f"could not build edgekit's wheel from {root} ({last})",
                               "check that `pip wheel --no-deps .` works in the source tree")
        try:
            os.replace(tmp, folder)
        except OSError:  # another deploy built it meanwhile
            pass
        return sorted(folder.glob("edgekit-*.whl"))[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def device_wheel_dir(family: str, runtime: str, version: str, machine: str, recipe: str) -> Path:
    """Where runtime wheels built on devices are kept on this machine: one folder per target
    family, runtime version, CPU architecture and recipe (its flags), and in it one folder per
    device that built one (`built-on/<device>/`: the wheel and its origin.json), since a wheel a
    device built is that device's word: it serves that device again, and another only when the
    user shares it (`deploy --share-device-builds`). `machine` is checked by the caller
    (edgekit.device.untrusted.machine_name)."""
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    return cache_root() / "device-wheels" / f"{family}-{runtime}-{version}-{machine}-{digest}"


ORIGIN_FILE = "origin.json"


def device_key(host: str) -> str:
    """The folder name of a device's own builds: its name as deploy reached it, made safe, and a
    digest of it (two names that clean up alike stay apart)."""
    clean = re.sub(r"[^A-Za-z0-9._@-]+", "_", host).strip("._") or "device"
    return f"{clean[:60]}-{hashlib.sha256(host.encode()).hexdigest()[:10]}"


@dataclass
class BuiltWheel:
    """A wheel a device built, as the cache keeps it: the file, which device built it, its sha256."""

    path: Path
    built_on: str
    sha256: str
    built_utc: str | None = None

    @property
    def origin(self) -> str:
        return f"built on {self.built_on}"


def built_wheels(kind_dir: Path, stem: str, host: str | None = None) -> list[BuiltWheel]:
    """The wheels under `kind_dir` (device_wheel_dir) that `host` built, or every device's (None),
    each whose file still has the sha256 its origin.json recorded; a changed or unrecorded one is
    left out."""
    folders = [kind_dir / "built-on" / device_key(host)] if host else sorted((kind_dir / "built-on").glob("*"))
    out = []
    for folder in folders:
        try:
            origin = json.loads((folder / ORIGIN_FILE).read_text(encoding="utf-8"))
            wheel = folder / origin["wheel"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if wheel.name.startswith(f"{stem}-") and wheel.is_file() and sha256_of(wheel) == origin.get("sha256"):
            out.append(BuiltWheel(wheel, str(origin.get("built_on")), origin["sha256"], origin.get("built_utc")))
    return out


def keep_built_wheel(kind_dir: Path, host: str, wheel: Path) -> BuiltWheel:
    """Move `wheel` (brought back from `host`, which built it) into the cache as that device's
    build, with origin.json beside it; the folder is replaced whole."""
    folder = kind_dir / "built-on" / device_key(host)
    folder.parent.mkdir(parents=True, exist_ok=True)
    built = BuiltWheel(folder / wheel.name, host, sha256_of(wheel),
                       datetime.now(timezone.utc).isoformat(timespec="seconds"))
    with atomic_dir(folder, force=True) as tmp:
        shutil.move(str(wheel), tmp / wheel.name)
        (tmp / ORIGIN_FILE).write_text(json.dumps({"wheel": wheel.name, "built_on": host, "sha256": built.sha256,
                                                   "built_utc": built.built_utc}, indent=2) + "\n", encoding="utf-8")
    return built
