"""`edgekit deploy`: edgekit, a runtime and a model on a device, over one SSH connection, each
step skipped when it is already done.

Contract of `deploy()`:
1. Read the device in one command (`device_script`, parsed by the pure `parse_device_report`)
   and detect its target; refuse before anything is written there when its Python is older than
   3.10 or lacks venv, when the free disk at the remote folder cannot hold what is missing (model
   files not in the store, the venv, a runtime build), or when the device's RAM cannot hold the
   weights plus the KV cache at `ctx` (`preflight`, pure). Every refusal names the numbers.
2. A venv on the device (`<remote>/venv`) with edgekit installed from a wheel of this machine's
   own copy (built once per source state, cached locally), so versions always match, and only
   the device dependency set (pyproject's `dependencies`: no torch, transformers, optimum,
   safetensors, matplotlib).
3. The runtime, with the target's recipe (edgekit.targets.specs.runtime_install): a llama.cpp
   build streams its log to a local file and is bounded by `build_timeout_s`; the wheel it built
   comes back to a local cache keyed by family, runtime version, machine and flags, and the
   next device of that kind installs it in seconds.
4. Model files go to a content-addressed store, `<remote>/store/sha256/<hex>`: uploaded to
   `<remote>/store/incoming/<hex>.partial` (resumed where a cut left it: rsync
   --partial --append-verify where both ends have an rsync that knows it, else sftp `reput`),
   checked with sha256 on the device against the export manifest's (or this machine's) hash,
   then renamed into the store. `<remote>/models/<key>/` holds the artifact's files by their
   export names as links into the store, so a second deploy, or another artifact sharing a
   file, sends nothing.
5. `edgekit doctor --json` on the device: the runtime must load, and with the backend the target
   needs (a Jetson llama.cpp without CUDA is a failed deploy, with the doctor's reason).
6. `<remote>/deploy.json` (RemoteManifest) records edgekit's wheel, the runtimes with their
   recipes and build, and the models; it is written through the transport's atomic put.

Everything the device says is parsed, never trusted as shell text; remote paths are quoted with
shlex, the remote folder's `~/` spelled "$HOME"/... so it may hold spaces and quotes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

from edgekit.errors import EdgekitError

REMOTE_DIR = "~/.edgekit"
MANIFEST = "deploy.json"
MIN_PYTHON = (3, 10)
PYTHON_CANDIDATES = ("python3", "python3.13", "python3.12", "python3.11", "python3.10")
# what the device needs besides the model, when it is not there yet (measured: the device venv with
# numpy, pydantic, rich, gguf is ~120 MB; a llama.cpp CPU build's tree ~600 MB, CUDA ~1.5 GB)
VENV_BYTES = 300 * 2**20
BUILD_BYTES = 2 * 2**30
WHEEL_BYTES = 100 * 2**20
RAM_OVERHEAD_BYTES = 256 * 2**20   # the runtime's compute buffers and the Python process
OS_RESERVE = 0.10                  # of MemTotal, kept for the OS and everything else running

Stage = Callable[[str, str], None]  # (stage, detail): "connecting", "installing", "uploading 42%", ...


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
    return device


def rsync_can_resume(version_line: str | None) -> bool:
    """Does this `rsync --version` first line name an rsync with --append-verify (3.0 and later)?
    macOS's rsync 2.6.9 and openrsync (macOS 15) have no --append-verify."""
    if not version_line or "openrsync" in version_line.lower():
        return False
    m = re.search(r"rsync\s+version\s+v?(\d+)\.(\d+)", version_line)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (3, 0)


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


@dataclass
class Need:
    """What a deploy adds on the device (bytes), for the preflight."""

    model_bytes: int = 0             # model files not in the store yet
    venv_bytes: int = 0
    runtime_bytes: int = 0
    weights_bytes: int = 0           # the model in RAM
    kv_bytes: int = 0                # the KV cache at ctx
    ctx: int = 0

    @property
    def disk_bytes(self) -> int:
        return self.model_bytes + self.venv_bytes + self.runtime_bytes

    @property
    def ram_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + RAM_OVERHEAD_BYTES


def gib(n: int | None) -> str:
    """Bytes for people: GiB from 1 GiB up, MiB below."""
    if n is None:
        return "?"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def preflight(device: Device, need: Need, host: str) -> list[str]:
    """Refuse (EdgekitError) a deploy the device cannot hold, with the numbers; the warnings of one
    that fits but is tight. Pure."""
    warnings = []
    if device.free_bytes is not None and need.disk_bytes > device.free_bytes:
        parts = [f"model {gib(need.model_bytes)}"] + ([f"venv {gib(need.venv_bytes)}"] if need.venv_bytes else []) \
            + ([f"runtime {gib(need.runtime_bytes)}"] if need.runtime_bytes else [])
        raise EdgekitError(f"not enough disk on {host}: {gib(device.free_bytes)} free at {device.free_dir}, the deploy "
                           f"needs {gib(need.disk_bytes)} ({', '.join(parts)})",
                           "free space there, or pass --remote-dir on a bigger disk")
    if device.free_bytes is None:
        warnings.append(f"free disk on {host} not readable (df): not checked")
    total = device.mem_total_bytes
    if total:
        usable = int(total * (1 - OS_RESERVE))
        if need.ram_bytes > usable:
            raise EdgekitError(
                f"the model does not fit in {host}'s RAM: weights {gib(need.weights_bytes)} + KV cache at ctx "
                f"{need.ctx} {gib(need.kv_bytes)} + runtime {gib(RAM_OVERHEAD_BYTES)} = {gib(need.ram_bytes)}, "
                f"usable {gib(usable)} of {gib(total)}",
                "pick a smaller quantization or model, or a smaller --ctx")
        available = device.mem_available_bytes
        if available is not None and need.ram_bytes > available:
            warnings.append(f"{host} has {gib(available)} available now and the run needs {gib(need.ram_bytes)}: "
                            "other processes may be swapped out, or the run killed")
    else:
        warnings.append(f"RAM of {host} not readable: not checked")
    return warnings


BUILD_TOOLS_FIX = {
    "jetson": "sudo apt install build-essential (JetPack has CUDA's nvcc in /usr/local/cuda/bin already)",
    "apple-m": "xcode-select --install (the Command Line Tools: clang, clang++)",
    "rpi5": "sudo apt install build-essential",
    "linux": "install a C/C++ compiler (Debian/Ubuntu: sudo apt install build-essential)",
}


def build_tools_problem(device: Device, family: str, host: str) -> EdgekitError | None:
    """llama-cpp-python compiles llama.cpp on the device: without a C and a C++ compiler there, the
    build fails minutes in; say so before anything is written (cmake comes from PyPI as a build
    dependency when the device has none). Pure."""
    missing = [t for t in ("cc", "c++") if t not in device.tools]
    if not missing:
        return None
    return EdgekitError(f"{host} has no {' or '.join(missing)} to build llama.cpp (no wheel for it is cached here or "
                        "given with --wheels)", f"{BUILD_TOOLS_FIX.get(family, BUILD_TOOLS_FIX['linux'])}; or pass "
                        "--wheels with a llama-cpp-python wheel built for the device")


# ---------------------------------------------------------------- the artifact


@dataclass
class ArtifactFiles:
    """An artifact as deploy sends it: `files` (name in the export folder -> local path) with their
    sha256 and sizes, `main` the file a runner loads, `key` its folder under <remote>/models/."""

    key: str
    format: str
    main: str
    files: dict[str, Path]
    sha256: dict[str, str]
    sizes: dict[str, int]
    facts: object  # ModelFacts

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())


METADATA_FILES = ("manifest.json", "config.json", "genai_config.json", "generation_config.json",
                  "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def artifact_files(artifact: Path, hash_progress: Callable[[str, float, float], None] | None = None) -> ArtifactFiles:
    """The files of `artifact` (a model file or an export folder holding one) that a run on the
    device reads: the model file, its external data, and the small metadata files beside it in an
    export folder. sha256 of each, checked against the export manifest's where it has one (a
    mismatch means the file changed since its export: refused)."""
    from edgekit.formats import resolve_artifact
    from edgekit.manifest import MANIFEST_NAME, ExportManifest

    artifact = Path(artifact)
    model, fmt = resolve_artifact(artifact)
    fmt.check(model)
    facts = fmt.facts(model)
    folder = model.parent
    names = [model.name, *facts.external_data]
    if artifact.is_dir() or (folder / MANIFEST_NAME).is_file():
        names += [n for n in METADATA_FILES if (folder / n).is_file() and n not in names]
    files = {n: folder / n for n in names}
    expected: dict[str, str] = {}
    if (folder / MANIFEST_NAME).is_file():
        try:
            manifest = ExportManifest.read(folder)
            expected = {f.file: f.sha256 for f in manifest.files if not facts.external_data}
        except EdgekitError:
            expected = {}
    sha, sizes = {}, {}
    for n, p in files.items():
        sizes[n] = p.stat().st_size
        if hash_progress:
            hash_progress(f"sha256 {n}", 0, 1)
        sha[n] = cached_sha256(p)
        if n in expected and expected[n] != sha[n]:
            raise EdgekitError(f"{p} does not match its export manifest (sha256 {sha[n][:12]}..., the manifest says "
                               f"{expected[n][:12]}...): it changed after the export",
                               "re-export it, or deploy the file itself rather than the export folder")
    digest = hashlib.sha256("".join(f"{n}\0{sha[n]}\0" for n in sorted(sha)).encode()).hexdigest()[:10]
    stem = artifact.name if artifact.is_dir() else model.stem
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "model"
    return ArtifactFiles(f"{key}-{digest}", fmt.name, model.name, files, sha, sizes, facts)


def cached_sha256(path: Path) -> str:
    """sha256 of `path`, remembered in edgekit's cache (sha256.json) under its real path, size and
    modification time, so that deploying a multi-GB model again does not read it again."""
    import os

    from edgekit.llamacpp_build import cache_root
    from edgekit.manifest import sha256_of

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
        from edgekit.atomic import atomic_file

        store.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(store) as tmp:
            tmp.write_text(json.dumps(dict(list(known.items())[-2000:])), encoding="utf-8")
    except OSError:  # a read-only cache costs a re-read next time, nothing else
        pass
    return digest


# ---------------------------------------------------------------- the remote manifest


class RuntimeRecord(BaseModel):
    name: str                        # llama.cpp, onnxruntime
    distribution: str                # llama-cpp-python, onnxruntime-gpu, ...
    version: str
    recipe: str                      # the install line it came from (its env and pip arguments)
    wheel: str | None = None         # the wheel installed, when one was
    backends: list[str] = []         # as the device's doctor reads them (CPU, CUDA, Metal, ...)
    build: str | None = None         # llama.cpp's system info


class ModelRecord(BaseModel):
    size_bytes: int
    names: list[str] = []            # the names it was deployed under


class ArtifactRecord(BaseModel):
    format: str
    main: str                        # the file a runner loads, in models/<key>/
    files: dict[str, str]            # name -> sha256
    source: str                      # where it came from on the workstation
    deployed_utc: str


class RemoteManifest(BaseModel):
    schema_version: int = 1
    edgekit_version: str | None = None
    edgekit_wheel_sha256: str | None = None
    python: str | None = None
    target: str | None = None
    runtimes: dict[str, RuntimeRecord] = {}
    models: dict[str, ModelRecord] = {}      # sha256 -> record
    artifacts: dict[str, ArtifactRecord] = {}
    updated_utc: str | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- the edgekit wheel


def source_tree() -> Path | None:
    """The folder edgekit was installed from when it is an editable install of a source tree
    (pyproject.toml naming the project edgekit beside the package), else None."""
    import edgekit

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
    import os
    import shutil
    import subprocess
    import tempfile

    from edgekit.llamacpp_build import cache_root

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
        import importlib.util

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
    """Where runtime wheels built on a device are kept on this machine: one folder per target
    family, runtime version, CPU architecture and recipe (its flags), so that the next device of
    the same kind installs in seconds. `--wheels` accepts it."""
    from edgekit.llamacpp_build import cache_root

    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    return cache_root() / "device-wheels" / f"{family}-{runtime}-{version}-{machine}-{digest}"


# ---------------------------------------------------------------- deploy


@dataclass
class DeployResult:
    host: str
    remote_dir: str
    target: str
    family: str
    artifact_key: str
    model_path: str                  # the file a remote run loads
    format: str
    python: str
    sent_bytes: int = 0              # model bytes sent this time
    resumed_bytes: int = 0           # bytes an earlier, cut upload had left there
    steps: list[tuple[str, str]] = field(default_factory=list)  # (step, what happened)
    warnings: list[str] = field(default_factory=list)
    runtime: dict | None = None
    log: Path | None = None

    @property
    def changed(self) -> bool:
        return any(not what.startswith("already") for _, what in self.steps)

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


@dataclass
class DeployOptions:
    remote_dir: str = REMOTE_DIR
    target: str = "auto"
    runtime: str | None = None          # default: the artifact's
    python: str | None = None
    wheels: Path | None = None          # offline device: pip --no-index --find-links these
    ctx: int = 4096
    bwlimit_kib_s: int | None = None
    build_timeout_s: float = 3 * 3600
    install_timeout_s: float = 1800


RUNTIME_OF_FORMAT = {"gguf": "llama.cpp", "onnx": "onnxruntime"}
RUNTIME_DISTS = {"llama.cpp": ("llama-cpp-python", "llama_cpp_python"),
                 "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-silicon")}
# what a runtime needs beside itself on the device: the ONNX format reads its graph with onnx, and
# edgekit eval tokenizes an ONNX export's text with tokenizers (its tokenizer.json)
RUNTIME_EXTRAS = {"onnxruntime": ("onnx", "tokenizers")}  # onnx: the format's facts; tokenizers: eval --host


class Deployer:
    """One deploy through one transport (see the module docstring). `stage(stage, detail)` is told
    what is happening, for a progress line or a fleet table."""

    def __init__(self, transport, host: str, options: DeployOptions, stage: Stage | None = None):
        self.t = transport
        self.host = host
        self.o = options
        self.stage = stage or (lambda s, d: None)
        self.q = shlex.quote

    # ------------------------------------------------------------ remote commands

    def sh(self, command: str, what: str, timeout_s: float = 120, on_output=None, check: bool = True):
        r = self.t.run(command, timeout_s=timeout_s, on_output=on_output)
        if check and r.returncode != 0:
            from edgekit.terminal import printable

            why = "timed out" if r.returncode == 124 else printable(
                (r.stderr.strip().splitlines() or r.stdout.strip().splitlines() or [f"exit {r.returncode}"])[-1], 300)
            raise EdgekitError(f"{what} failed on {self.host} ({why})",
                               f"see what the device says: ssh {self.host} and run it by hand")
        return r

    def read_manifest(self, R: str) -> RemoteManifest:
        r = self.t.run(f"cat -- {self.q(R + '/' + MANIFEST)} 2>/dev/null", timeout_s=30)
        if r.returncode != 0 or not r.stdout.strip():
            return RemoteManifest()
        try:
            return RemoteManifest.model_validate(json.loads(r.stdout))
        except Exception:
            return RemoteManifest()  # unreadable: everything is checked again and it is rewritten

    def write_manifest(self, R: str, manifest: RemoteManifest) -> None:
        import tempfile

        manifest.updated_utc = _now()
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / MANIFEST
            p.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
            self.t.put(p, f"{R}/{MANIFEST}")

    # ------------------------------------------------------------ the steps

    def run(self, artifact: Path) -> DeployResult:
        from edgekit.probe import gather_facts
        from edgekit.targets.specs import SPECS, detect

        o = self.o
        self.stage("connecting", self.host)
        facts = gather_facts(self.t)
        spec, _seen = detect(facts)
        if o.target != "auto":
            if o.target not in SPECS:
                raise EdgekitError(f"unknown target '{o.target}'", "pass --target auto or a name from `edgekit targets`")
            spec = SPECS[o.target]
        self.stage("reading", "the artifact")
        files = artifact_files(artifact)
        runtime = o.runtime or RUNTIME_OF_FORMAT[files.format]
        if runtime != RUNTIME_OF_FORMAT[files.format]:
            raise EdgekitError(f"--runtime {runtime} does not run {files.format.upper()} files "
                               f"({files.main} runs on {RUNTIME_OF_FORMAT[files.format]})",
                               f"leave --runtime out, or pass --runtime {RUNTIME_OF_FORMAT[files.format]}")
        device = parse_device_report(self.sh(device_script(o.remote_dir, (o.python,) if o.python else
                                                           PYTHON_CANDIDATES), "reading the device").stdout)
        R = device.remote_dir
        python = choose_python(device, o.python, spec.family)
        manifest = self.read_manifest(R) if device.free_dir == R else RemoteManifest()
        have = self._store_sizes(R, files)
        missing = {h for n, h in files.sha256.items() if have.get(h) != files.sizes[n]}
        need = Need(model_bytes=sum(files.sizes[n] for n, h in files.sha256.items() if h in missing),
                    venv_bytes=0 if manifest.python == python.version_text else VENV_BYTES,
                    runtime_bytes=0 if runtime in manifest.runtimes else BUILD_BYTES if runtime == "llama.cpp"
                    else WHEEL_BYTES,
                    weights_bytes=files.facts.size_bytes, kv_bytes=files.facts.kv_bytes_per_position * o.ctx,
                    ctx=o.ctx)
        result = DeployResult(self.host, R, spec.name, spec.family, files.key, f"{R}/models/{files.key}/{files.main}",
                              files.format, python.version_text)
        result.warnings += preflight(device, need, self.host)
        if runtime == "llama.cpp" and runtime not in manifest.runtimes and not self._llama_wheel_at_hand(spec, device):
            problem = build_tools_problem(device, spec.family, self.host)
            if problem:
                raise problem

        self.sh(f"mkdir -p -- {self.q(R)}/store/sha256 {self.q(R)}/store/incoming {self.q(R)}/models "
                f"{self.q(R)}/wheels {self.q(R)}/runs", "creating the remote folder")
        manifest.target = spec.name
        self._venv(R, python, manifest, result)
        self._edgekit(R, manifest, result)
        self._runtime(R, spec, device, runtime, manifest, result)
        self._upload(R, device, files, have, result)
        self._link(R, files, manifest, artifact, result)
        self._doctor(R, spec, runtime, manifest, result)
        if result.changed:
            self.write_manifest(R, manifest)
        self.stage("deployed", "nothing transferred" if not result.changed else f"{result.sent_bytes} bytes sent")
        return result

    def find_deployed(self, artifact: Path) -> DeployResult:
        """The deploy of `artifact` already on the device (bench --no-deploy), or an EdgekitError
        saying to deploy it."""
        from edgekit.remote import resolve_remote_dir

        self.stage("connecting", self.host)
        files = artifact_files(artifact)
        R = resolve_remote_dir(self.t, self.o.remote_dir)
        manifest = self.read_manifest(R)
        if files.key not in manifest.artifacts or not manifest.runtimes:
            raise EdgekitError(f"{Path(artifact).name} is not deployed on {self.host} under {self.o.remote_dir}",
                               f"deploy it first (edgekit deploy {artifact} --host {self.host}) or drop --no-deploy")
        target = manifest.target or "?"
        return DeployResult(self.host, R, target, "", files.key, f"{R}/models/{files.key}/{files.main}",
                            files.format, manifest.python or "?", steps=[("deploy", "already deployed (--no-deploy)")])

    def _venv(self, R: str, python: PythonFound, manifest: RemoteManifest, result: DeployResult) -> None:
        q = self.q
        r = self.t.run(f"{q(R)}/venv/bin/python -c 'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])'",
                       timeout_s=30)
        if r.returncode == 0 and r.stdout.strip() == python.version_text:
            result.steps.append(("venv", f"already there (Python {python.version_text})"))
            manifest.python = python.version_text
            return
        self.stage("installing", f"venv with Python {python.version_text}")
        self.sh(f"rm -rf -- {q(R)}/venv && {q(python.path)} -m venv -- {q(R)}/venv", "creating the venv")
        manifest.python = python.version_text
        manifest.edgekit_wheel_sha256 = None
        manifest.runtimes = {}
        result.steps.append(("venv", f"created with {python.path} {python.version_text}"))

    def _logged(self, cmd: str, stage: str, what: str, log_name: str, timeout_s: float, timeout_fix: str,
                fail_fix: str) -> Path:
        """`cmd` on the device, its output streamed to a local log file (edgekit's cache, logs/) and
        its last line to stage(); a timeout or a failure is one EdgekitError naming the log."""
        from edgekit.llamacpp_build import cache_root
        from edgekit.terminal import printable

        logs = cache_root() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        log = logs / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', self.host)}-{stamp}-{log_name}.log"
        last = [""]
        with open(log, "w", encoding="utf-8") as f:
            f.write(f"# {self.host}: {cmd}\n")

            def on_output(line: str) -> None:
                f.write(line + "\n")
                f.flush()
                if line.strip():
                    last[0] = line.strip()
                    self.stage(stage, f"{what}: {line.strip()[:100]}")

            r = self.t.run(cmd, timeout_s=timeout_s, on_output=on_output)
        if r.returncode == 124:
            raise EdgekitError(f"{what} on {self.host} ran past {timeout_s:g} s and was stopped (log: {log})",
                               timeout_fix)
        if r.returncode != 0:
            raise EdgekitError(f"{what} failed on {self.host}: {printable(last[0], 300)} (log: {log})", fail_fix)
        return log

    def _pip_command(self, R: str, verb: str, args: list[str], env: tuple = ()) -> str:
        """`python -m pip VERB ARGS` in the device venv, from R, with `env`; --wheels: offline."""
        q = self.q
        offline = ["--no-index", "--find-links", f"{R}/wheels"] if self.o.wheels else []
        envs = " ".join(f"{k}={q(v)}" for k, v in env)
        return (f"cd -- {q(R)} && {'env ' + envs + ' ' if envs else ''}{q(R)}/venv/bin/python -m pip {verb} "
                f"--disable-pip-version-check --no-input {' '.join(q(a) for a in offline + args)} 2>&1")

    def _pip(self, R: str, args: list[str], what: str, env: tuple = (), log_name: str = "pip") -> Path:
        return self._logged(self._pip_command(R, "install", args, env), "installing", what.removeprefix("installing "),
                            log_name, self.o.install_timeout_s, "look at the log; a slow device or index may need "
                            "another try", "read the log; an offline device needs every wheel in --wheels")

    def _push_wheels(self, R: str) -> None:
        """--wheels: every wheel (and sdist) of the folder on the device, once."""
        if not self.o.wheels:
            return
        folder = Path(self.o.wheels)
        if not folder.is_dir():
            raise EdgekitError(f"--wheels {folder} is not a folder", "pass a folder of wheels (pip download -d DIR ...)")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".whl", ".tar.gz", ".zip")))
        r = self.t.run(f"cd -- {self.q(R)}/wheels && for f in *; do [ -f \"$f\" ] && printf '%s %s\\n' "
                       "\"$(wc -c < \"$f\" | tr -d ' ')\" \"$f\"; done; true", timeout_s=60)
        there = {}
        for line in r.stdout.splitlines():
            size, _, name = line.partition(" ")
            if size.isdigit():
                there[name] = int(size)
        for p in files:
            if there.get(p.name) != p.stat().st_size:
                self.stage("uploading", f"wheel {p.name}")
                self.t.put(p, f"{R}/wheels/{p.name}")

    def _edgekit(self, R: str, manifest: RemoteManifest, result: DeployResult) -> None:
        from edgekit import __version__
        from edgekit.manifest import sha256_of

        wheel = edgekit_wheel()
        sha = sha256_of(wheel) if wheel else f"edgekit=={__version__}"
        ok = self.t.run(f"{self.q(R)}/venv/bin/python -c 'import edgekit; print(edgekit.__version__)'", timeout_s=60)
        if manifest.edgekit_wheel_sha256 == sha and ok.returncode == 0 and ok.stdout.strip() == __version__:
            result.steps.append(("edgekit", f"already installed ({__version__})"))
            return
        self.stage("installing", f"edgekit {__version__}")
        self._push_wheels(R)
        if wheel:
            self.t.put(wheel, f"{R}/wheels/{wheel.name}")
            target = f"{R}/wheels/{wheel.name}"
            self._pip(R, ["--force-reinstall", "--no-deps", target], "installing edgekit", log_name="edgekit")
            self._pip(R, [target], "installing edgekit's device dependencies", log_name="edgekit-deps")
        else:
            self._pip(R, [f"edgekit=={__version__}"], "installing edgekit", log_name="edgekit")
        manifest.edgekit_version, manifest.edgekit_wheel_sha256 = __version__, sha
        result.steps.append(("edgekit", f"installed {__version__}" + (f" from {wheel.name}" if wheel else "")))

    def _installed_version(self, R: str, dists: tuple[str, ...]) -> tuple[str, str] | None:
        code = ("import importlib.metadata as m\nfor d in %r:\n    try:\n        print(d, m.version(d)); break\n"
                "    except m.PackageNotFoundError: pass" % (dists,))
        r = self.t.run(f"{self.q(R)}/venv/bin/python -c {self.q(code)}", timeout_s=60)
        parts = r.stdout.split()
        return (parts[0], parts[1]) if r.returncode == 0 and len(parts) >= 2 else None

    def _runtime(self, R: str, spec, device: Device, runtime: str, manifest: RemoteManifest,
                 result: DeployResult) -> None:
        from edgekit.targets.specs import runtime_install

        recipe = runtime_install(spec, runtime, device.machine)
        # what is installed beside the runtime is part of what a deploy checks (a newer edgekit may need more)
        recipe_text = recipe.command() + "".join(f" + {e}" for e in RUNTIME_EXTRAS.get(runtime, ()))
        installed = self._installed_version(R, RUNTIME_DISTS[runtime])
        record = manifest.runtimes.get(runtime)
        if installed and record and record.recipe == recipe_text and record.version == installed[1]:
            result.steps.append((runtime, f"already installed ({installed[0]} {installed[1]})"))
            return
        self._push_wheels(R)
        if runtime == "llama.cpp":
            wheel = self._llama_wheel(R, spec, device, recipe, recipe_text, result)
            self._pip(R, [wheel], "installing llama-cpp-python", log_name="llama-cpp-python")
            installed_wheel = wheel.rsplit("/", 1)[-1]
        else:
            self.stage("installing", runtime)
            self._pip(R, [*recipe.args, *RUNTIME_EXTRAS.get(runtime, ())], f"installing {runtime}",
                      env=recipe.env, log_name=runtime)
            installed_wheel = None
        installed = self._installed_version(R, RUNTIME_DISTS[runtime])
        if installed is None:
            raise EdgekitError(f"{runtime} is not installed on {self.host} after its recipe ran",
                               f"run it by hand on the device: {recipe_text}")
        manifest.runtimes[runtime] = RuntimeRecord(name=runtime, distribution=installed[0], version=installed[1],
                                                   recipe=recipe_text, wheel=installed_wheel)
        result.steps.append((runtime, f"installed {installed[0]} {installed[1]}"))

    def _llama_wheel_at_hand(self, spec, device: Device) -> bool:
        """Is a llama-cpp-python wheel for this device in the local cache or in --wheels (no build there)?"""
        from edgekit.llamacpp_build import LLAMA_CPP_PYTHON_VERSION as V
        from edgekit.targets.specs import runtime_install

        recipe = runtime_install(spec, "llama.cpp", device.machine).command()
        if any(device_wheel_dir(spec.family, "llama-cpp-python", V, device.machine, recipe).glob(
                "llama_cpp_python-*.whl")):
            return True
        return bool(self.o.wheels and any(Path(self.o.wheels).glob(f"llama_cpp_python-{V}-*.whl")))

    def _llama_wheel(self, R: str, spec, device: Device, recipe, recipe_text: str, result: DeployResult) -> str:
        """The remote path of a llama-cpp-python wheel for this device: from the local cache of
        wheels built on devices of this kind, from --wheels, or built there now (and brought back)."""
        from edgekit.llamacpp_build import LLAMA_CPP_PYTHON_VERSION

        version = LLAMA_CPP_PYTHON_VERSION
        cache = device_wheel_dir(spec.family, "llama-cpp-python", version, device.machine, recipe_text)
        cached = sorted(cache.glob("llama_cpp_python-*.whl"))
        if cached:
            self.stage("uploading", f"cached wheel {cached[0].name}")
            self.t.put(cached[0], f"{R}/wheels/{cached[0].name}")
            result.steps.append(("llama.cpp wheel", f"from the local cache {cache}"))
            return f"{R}/wheels/{cached[0].name}"
        if self.o.wheels:
            found = sorted(Path(self.o.wheels).glob(f"llama_cpp_python-{version}-*.whl"))
            if found:  # the device's pip checks that it fits the device (platform tags)
                result.steps.append(("llama.cpp wheel", f"from --wheels ({found[0].name})"))
                return f"{R}/wheels/{found[0].name}"
        self.stage("building", f"llama.cpp on the device ({recipe_text})")
        q = self.q
        self.sh(f"rm -rf -- {q(R)}/wheels/built && mkdir -p -- {q(R)}/wheels/built", "preparing the build")
        self._pip_wheel(R, recipe, version)
        r = self.sh(f"cd -- {q(R)}/wheels/built && ls llama_cpp_python-*.whl", "finding the built wheel")
        name = r.stdout.split()[0]
        cache.mkdir(parents=True, exist_ok=True)
        self.stage("downloading", f"built wheel {name}")
        self.t.get(f"{R}/wheels/built/{name}", cache / name)
        result.steps.append(("llama.cpp wheel", f"built on the device, kept in {cache}"))
        return f"{R}/wheels/built/{name}"

    def _pip_wheel(self, R: str, recipe, version: str) -> Path:
        cmd = self._pip_command(R, "wheel", ["--no-deps", "-w", f"{R}/wheels/built", f"llama-cpp-python=={version}"],
                                recipe.env)
        return self._logged(cmd, "building", "the llama.cpp build", "llama-build", self.o.build_timeout_s,
                            "raise --build-timeout for a slow device, or push a wheel built for it with --wheels",
                            "read the log (a compiler, cmake and the Python headers are needed on the device)")

    def _store_sizes(self, R: str, files: ArtifactFiles) -> dict[str, int]:
        """sha256 -> size of the artifact's files already in the store."""
        q = self.q
        hexes = sorted(set(files.sha256.values()))
        cmd = f"cd -- {q(R)}/store/sha256 2>/dev/null || exit 0; for h in {' '.join(hexes)}; do " \
              "[ -f \"$h\" ] && printf '%s %s\\n' \"$h\" \"$(wc -c < \"$h\" | tr -d ' ')\"; done; true"
        out = {}
        for line in self.t.run(cmd, timeout_s=60).stdout.splitlines():
            h, _, size = line.partition(" ")
            if size.strip().isdigit():
                out[h] = int(size)
        return out

    def _upload(self, R: str, device: Device, files: ArtifactFiles, have: dict[str, int],
                result: DeployResult) -> None:
        import shutil

        from edgekit.transport import SSHTransport

        q = self.q
        todo = {}
        for n, h in files.sha256.items():
            if have.get(h) != files.sizes[n] and h not in todo:
                todo[h] = n
        if not todo:
            result.steps.append(("model", f"already there ({len(files.files)} file(s), {files.total_bytes} bytes)"))
            return
        local_rsync = shutil.which("rsync")
        method = "sftp"
        if isinstance(self.t, SSHTransport) and local_rsync and rsync_can_resume(device.rsync) and \
                rsync_can_resume(_local_rsync_version(local_rsync)):
            method = "rsync"
        for h, n in todo.items():
            size = files.sizes[n]
            partial = f"{R}/store/incoming/{h}.partial"
            r = self.t.run(f"[ -f {q(partial)} ] && wc -c < {q(partial)} | tr -d ' '; true", timeout_s=30)
            start = int(r.stdout.strip()) if r.stdout.strip().isdigit() else 0
            if start > size:
                self.sh(f"rm -f -- {q(partial)}", "removing a stale upload")
                start = 0

            def progress(done: int, n=n, size=size) -> None:
                self.stage("uploading", f"{n} {100 * done // max(size, 1)}%")

            self.stage("uploading", f"{n} {100 * start // max(size, 1)}%")
            sent = self.t.put_resumable(files.files[n], partial, method=method, bwlimit_kib_s=self.o.bwlimit_kib_s,
                                        on_progress=progress) if hasattr(self.t, "put_resumable") else None
            if sent is None:  # a transport without resumable copies (local): a whole, atomic copy
                self.t.put(files.files[n], partial)
                sent = size
            self.stage("verifying", f"sha256 of {n}")
            got = self._remote_sha256(partial, device)
            if got != h:
                self.sh(f"rm -f -- {q(partial)}", "removing a corrupt upload")
                raise EdgekitError(f"{n} arrived on {self.host} with sha256 {got[:12]}..., expected {h[:12]}...: "
                                   "the upload was corrupted and was removed", "deploy again")
            self.sh(f"mv -f -- {q(partial)} {q(R)}/store/sha256/{h}", "moving the model into the store")
            result.sent_bytes += sent
            result.resumed_bytes += start
            result.steps.append(("model", f"{n}: sent {sent} of {size} bytes by {method}" +
                                 (f", resumed at {start}" if start else "") + ", sha256 verified on the device"))

    def _remote_sha256(self, path: str, device: Device) -> str:
        q = self.q
        tool = "shasum -a 256" if device.sha256_tool == "shasum" else "sha256sum"
        if device.sha256_tool is None:
            raise EdgekitError(f"{self.host} has neither sha256sum nor shasum to check the upload",
                               "install coreutils (sha256sum) on the device")
        r = self.sh(f"{tool} < {q(path)}", "checking the upload's sha256", timeout_s=3600)
        return r.stdout.split()[0] if r.stdout.split() else ""

    def _link(self, R: str, files: ArtifactFiles, manifest: RemoteManifest, artifact: Path,
              result: DeployResult) -> None:
        q = self.q
        folder = f"{R}/models/{files.key}"
        checks = " && ".join(f"[ \"$(readlink -- {q(folder + '/' + n)})\" = {q('../../store/sha256/' + h)} ]"
                             for n, h in files.sha256.items())
        if self.t.run(checks, timeout_s=30).returncode == 0 and files.key in manifest.artifacts:
            result.steps.append(("links", f"already there (models/{files.key})"))
        else:
            links = " && ".join(f"ln -sfn -- {q('../../store/sha256/' + h)} {q(folder + '/' + n)}"
                                for n, h in files.sha256.items())
            self.sh(f"mkdir -p -- {q(folder)} && {links}", "linking the model files")
            result.steps.append(("links", f"models/{files.key}"))
        for n, h in files.sha256.items():
            record = manifest.models.setdefault(h, ModelRecord(size_bytes=files.sizes[n]))
            if n not in record.names:
                record.names.append(n)
        manifest.artifacts[files.key] = ArtifactRecord(format=files.format, main=files.main, files=files.sha256,
                                                       source=str(Path(artifact).absolute()), deployed_utc=_now())

    def _doctor(self, R: str, spec, runtime: str, manifest: RemoteManifest, result: DeployResult) -> None:
        """The device's own doctor: the runtime loads, with the backend the target needs."""
        record = manifest.runtimes.get(runtime)
        if record and record.backends and not result.changed:
            result.steps.append(("doctor", "already checked"))
            result.runtime = record.model_dump()
            return
        self.stage("checking", "edgekit doctor on the device")
        # `python -m edgekit`, not venv/bin/edgekit: pip's script header cannot hold a path with a `"`
        r = self.t.run(f"{self.q(R)}/venv/bin/python -m edgekit doctor --json", timeout_s=180)
        try:
            report = json.loads(r.stdout)
        except json.JSONDecodeError:
            from edgekit.terminal import printable

            why = printable((r.stderr.strip().splitlines() or ["no output"])[-1], 300)
            raise EdgekitError(f"edgekit doctor did not run on {self.host} ({why})",
                               f"run {R}/venv/bin/python -m edgekit doctor on the device") from None
        problems = runtime_problems(report, runtime, spec)
        if problems:
            problem, fix = problems[0]
            raise EdgekitError(f"deploy to {self.host} failed its check: {problem}", fix)
        if record is not None:
            record.backends, record.build = runtime_backends(report, runtime)
            result.runtime = record.model_dump()
        result.steps.append(("doctor", f"{runtime} loads ({', '.join(record.backends) if record else '?'})"))


def _local_rsync_version(rsync: str) -> str | None:
    import subprocess

    try:
        out = subprocess.run([rsync, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.splitlines() or [None])[0]


def runtime_problems(report: dict, runtime: str, spec=None) -> list[tuple[str, str]]:
    """The warnings of a device's `edgekit doctor --json` that make `runtime` unusable there:
    (problem, fix) pairs; with `spec`, an onnxruntime without any of the GPU execution providers
    the target lists (a Jetson's CUDA/TensorRT) is one too. Pure, tested on recorded doctor output."""
    prefix = "llama" if runtime == "llama.cpp" else "onnxruntime"
    out = []
    for warning in report.get("warnings") or []:
        # doctor --json writes {"problem", "fix"}; a (problem, fix) pair is read too
        problem, fix = (warning.get("problem", ""), warning.get("fix", "")) if isinstance(warning, dict) else warning
        if problem.lower().startswith(prefix) or (prefix == "llama" and "llama.cpp" in problem.lower()):
            out.append((problem, fix))
    names = {c.get("name"): c for c in report.get("checks") or []}
    key = "llama.cpp build" if runtime == "llama.cpp" else "onnxruntime"
    check = names.get(key) or next((c for n, c in names.items() if n and n.startswith(prefix)), None)
    if check is None or check.get("status") == "missing":
        out.append((f"{runtime} is not installed in the device venv", "deploy again; see the install log"))
    elif runtime == "onnxruntime" and spec is not None:
        wanted = [p for p in spec.onnxruntime_providers if p != "CPUExecutionProvider"]
        have = (names.get("onnxruntime providers") or {}).get("data", {}).get("providers") or []
        if wanted and not set(wanted) & set(have):
            from edgekit.targets.specs import runtime_install

            out.append((f"onnxruntime on {spec.name} has {', '.join(have) or 'no provider'}, none of "
                        f"{', '.join(wanted)}: bench would run on the CPU",
                        f"install the target's build: {runtime_install(spec, 'onnxruntime').command()}"))
    return out


def runtime_backends(report: dict, runtime: str) -> tuple[list[str], str | None]:
    """(backends, build text) of `runtime` as the device's doctor read them."""
    for c in report.get("checks") or []:
        data = c.get("data") or {}
        if runtime == "llama.cpp" and c.get("name") == "llama.cpp build":
            return list(data.get("backends") or ["CPU"]), data.get("system_info")
        if runtime == "onnxruntime" and c.get("name") == "onnxruntime providers":
            return list(data.get("providers") or []), data.get("version") or c.get("detail")
    return [], None
