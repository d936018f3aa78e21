"""Cross-building llama-cpp-python for CPU-only arm64 devices on the workstation.

Why: a device that builds its own runtime hands back a wheel this machine then caches and
installs on the rest of the fleet; a hostile device could hand back anything. Built here with
Debian's aarch64 cross compilers, the wheel comes from this machine's own sources and tools, and
a device only ever receives it.

Contract:
- `cross_toolchain(machine)`: the Debian cross compilers for a `uname -m` (aarch64/arm64:
  aarch64-linux-gnu-gcc and -g++ on PATH) with the compiler's `-dumpfullversion`, else None.
- `cross_cmake_args(spec_or_cmake_args, machine, toolchain)`: the CMake arguments of a cross
  build for a target (a TargetSpec, or a target's CMAKE_ARGS string). Pure: no compiler runs.
  Raises EdgekitError for what cannot be cross-built here (a GPU backend, a family whose CPU
  edgekit does not know, a non-arm64 machine).
- `cross_build_wheel(machine, cmake_args, out_dir, log)`: builds the wheel from the cached sdist
  with those arguments, retags it `py3-none-linux_aarch64` (`wheel tags`), checks that every
  shared library in it is an AArch64 ELF and moves it into `out_dir` (temporary name, then
  rename). Every failure is one EdgekitError naming `log`, which holds the build's output.
- `cross_wheel(machine, cmake_args, log)`: the same through a cache,
  cache_root()/cross-wheels/<key>/ (`cross_wheel_key`: version, machine, flags, toolchain
  version), with origin.json beside the wheel: its sha256 and "origin": "cross-built on this
  workstation". A cached wheel is returned only when its sha256 still matches the record
  (`verify_cross_wheel`).
- `wheel_symbol_needs(wheel)` / `libc_problem(needs, glibc, glibcxx)`: the newest glibc and
  libstdc++ symbol versions the wheel's libraries need, against what a device has (deploy reads
  both off the device and builds there instead when they fall short: Debian 11, Ubuntu 20.04).

The CMake arguments, and why (read in llama-cpp-python 0.3.36's vendored llama.cpp):
- CMAKE_SYSTEM_NAME=Linux, CMAKE_SYSTEM_PROCESSOR=aarch64 and the cross compilers make CMake
  cross compile (CMAKE_CROSSCOMPILING); ggml picks its ARM sources from CMAKE_SYSTEM_PROCESSOR.
  CC/CXX are set too: scikit-build-core otherwise sets them to this Python's own (x86-64) gcc.
  The find root is the toolchain's /usr/<triplet> so no host (x86-64) library is ever linked.
- GGML_NATIVE=OFF: native means the build host's CPU (ggml runs `$CC -mcpu=native` and
  check_cxx_source_runs probes for dotprod/i8mm/SVE/SME, which cannot run when cross
  compiling). The target's instruction set comes from GGML_CPU_ARM_ARCH (ggml adds
  `-march=<value>`): Pi 5 (Cortex-A76, Armv8.2-A with the dot product and FP16 extensions)
  gets armv8.2-a+dotprod+fp16 and `-mtune=cortex-a76`; any other Linux arm64 gets armv8-a,
  as edgekit.llamacpp_build's portable arm64 flags.
- GGML_CPU_ALL_VARIANTS=OFF, GGML_BACKEND_DL=OFF: one CPU backend for one known CPU.
- GGML_OPENMP=OFF: with OpenMP the libraries need libgomp.so.1 on the device, which a minimal
  Debian or Pi OS Lite install lacks; ggml's own thread pool needs nothing beyond libc and
  libstdc++.
- LLAMA_OPENSSL=OFF: otherwise cpp-httplib's find_package(OpenSSL) may find the host's; the
  Python package never fetches over HTTPS in C++. LLAVA_BUILD=OFF: the multimodal library
  (libmtmd) is loaded only by llama_cpp.mtmd_cpp, which edgekit never imports. Tests, tools,
  examples and server off (already off for a llama.cpp built as a subproject; said anyway).

The platform tag is `linux_aarch64`, which pip on any Linux aarch64 accepts (Debian 12's pip
with Python 3.11 lists py3-none-linux_aarch64 among its tags). A manylinux tag is a promise
that auditwheel checks (bundled libraries, symbol versions within a policy); this wheel links
the toolchain's glibc 2.36 and libstdc++ (GCC 12) and nobody audits it, so it does not claim one.

This module imports only the standard library and edgekit's light modules.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.atomic import write_text_atomic
from edgekit.errors import EdgekitError
from edgekit.llamacpp_build import LLAMA_CPP_PYTHON_VERSION, cache_root, fetch_sdist

if TYPE_CHECKING:
    from edgekit.targets.specs import TargetSpec

# uname -m -> the Debian cross toolchain's triplet
CROSS_TRIPLETS = {"aarch64": "aarch64-linux-gnu"}
# uname -m -> the wheel platform tag (see the module's doc)
PLATFORM_TAGS = {"aarch64": "linux_aarch64"}
# uname -m -> ELF e_machine
ELF_MACHINES = {"aarch64": 0xB7, "x86_64": 0x3E}

# family -> the target CPU's -march (GGML_CPU_ARM_ARCH) and -mtune; families absent here (Jetson:
# CUDA; Apple: macOS) are not cross-built
PI5_SOURCE = ("Raspberry Pi 5 product brief: 4x Cortex-A76; Arm Cortex-A76 TRM: Armv8.2-A with the "
              "dot product (FEAT_DotProd) and half-precision (FEAT_FP16) extensions, no SVE, no I8MM")
FAMILY_CPU = {
    "rpi5": {"arch": "armv8.2-a+dotprod+fp16", "tune": "cortex-a76", "source": PI5_SOURCE},
    "linux": {"arch": "armv8-a", "tune": None,
              "source": "any arm64 CPU: edgekit.llamacpp_build's portable arm64 baseline"},
}
GENERIC_ARCH = "armv8-a"

# ggml backends that need a GPU and its SDK on the device: never cross-built here
GPU_BACKENDS = ("GGML_CUDA", "GGML_METAL", "GGML_VULKAN", "GGML_HIP", "GGML_SYCL", "GGML_MUSA", "GGML_OPENCL",
                "GGML_KOMPUTE", "GGML_CANN", "GGML_WEBGPU", "GGML_ZDNN", "GGML_OPENVINO", "LLAMA_CUDA",
                "LLAMA_CUBLAS", "LLAMA_METAL")

ORIGIN = "cross-built on this workstation"
ORIGIN_FILE = "origin.json"


@dataclass(frozen=True)
class Toolchain:
    """A cross toolchain: its target `machine` (uname -m), `triplet`, the C and C++ compilers'
    paths and `version` (the C compiler's -dumpfullversion)."""

    machine: str
    triplet: str
    cc: str
    cxx: str
    version: str

    @property
    def sysroot(self) -> str:
        """Where Debian's cross packages (libc6-dev-arm64-cross, ...) put the target's files."""
        return f"/usr/{self.triplet}"


def normalise_machine(machine: str) -> str:
    m = machine.strip().lower()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(m, m)


def cross_toolchain(machine: str) -> Toolchain | None:
    """The Debian cross compilers for `machine` (aarch64: aarch64-linux-gnu-gcc and -g++, found
    on PATH), or None when the machine has none here, either compiler is missing or it does not
    answer `-dumpfullversion`."""
    machine = normalise_machine(machine)
    triplet = CROSS_TRIPLETS.get(machine)
    if triplet is None:
        return None
    cc, cxx = shutil.which(f"{triplet}-gcc"), shutil.which(f"{triplet}-g++")
    if not cc or not cxx:
        return None
    try:
        p = subprocess.run([cc, "-dumpfullversion"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    version = p.stdout.strip()
    if p.returncode != 0 or not version:
        return None
    return Toolchain(machine, triplet, cc, cxx, version)


def _defines(words: list[str]) -> dict[str, str]:
    """NAME -> VALUE of the `-DNAME[:TYPE]=VALUE` words (the last one of a name wins, as in CMake)."""
    out = {}
    for w in words:
        if w.startswith("-D") and "=" in w:
            name, _, value = w[2:].partition("=")
            out[name.partition(":")[0].strip()] = value
    return out


def _on(value: str | None) -> bool:
    return (value or "").strip().upper() in ("ON", "1", "TRUE", "YES", "Y")


# the defines cross_cmake_args sets itself: a target's own value for one of these is dropped
_OWN = ("CMAKE_SYSTEM_NAME", "CMAKE_SYSTEM_PROCESSOR", "CMAKE_C_COMPILER", "CMAKE_CXX_COMPILER",
        "CMAKE_FIND_ROOT_PATH", "CMAKE_FIND_ROOT_PATH_MODE_PROGRAM", "CMAKE_FIND_ROOT_PATH_MODE_LIBRARY",
        "CMAKE_FIND_ROOT_PATH_MODE_INCLUDE", "CMAKE_FIND_ROOT_PATH_MODE_PACKAGE", "GGML_NATIVE",
        "GGML_CPU_ARM_ARCH", "GGML_CPU_ALL_VARIANTS", "GGML_BACKEND_DL", "GGML_OPENMP", "LLAMA_OPENSSL",
        "LLAVA_BUILD", "LLAMA_BUILD_TESTS", "LLAMA_BUILD_TOOLS", "LLAMA_BUILD_EXAMPLES", "LLAMA_BUILD_SERVER")


def cross_cmake_args(spec_or_cmake_args: TargetSpec | str, machine: str, toolchain: Toolchain) -> str:
    """The CMake arguments (one shell-quoted string, as CMAKE_ARGS) that cross-build llama.cpp for
    a target: a TargetSpec (its family names the CPU, see FAMILY_CPU) or a target's CMAKE_ARGS
    string (its -DGGML_CPU_ARM_ARCH, else armv8-a; -DGGML_NATIVE=ON alone names no CPU and is
    refused). The target's other arguments are kept; the cross-build ones come last and win."""
    machine = normalise_machine(machine)
    if machine not in CROSS_TRIPLETS:
        raise EdgekitError(f"edgekit cross-builds llama.cpp for {', '.join(CROSS_TRIPLETS)} only, not {machine}",
                           "build on the device (deploy without cross building)")
    if normalise_machine(toolchain.machine) != machine:
        raise EdgekitError(f"the {toolchain.triplet} toolchain builds for {toolchain.machine}, not {machine}",
                           f"pass cross_toolchain({machine!r})")
    if isinstance(spec_or_cmake_args, str):
        family, target_args, what = None, spec_or_cmake_args, "these CMake arguments"
    else:
        family, target_args = spec_or_cmake_args.family, spec_or_cmake_args.llama_cpp_cmake_args
        what = f"the target {spec_or_cmake_args.name}"
    words = shlex.split(target_args or "")
    defines = _defines(words)
    gpu = [name for name in GPU_BACKENDS if _on(defines.get(name))]
    if gpu:
        raise EdgekitError(f"{what} need {', '.join(gpu)}: edgekit cross-builds CPU-only llama.cpp",
                           "build on the device, which has the GPU's SDK")
    cpu = FAMILY_CPU.get(family) if family else None
    arch = defines.get("GGML_CPU_ARM_ARCH") or (cpu or {}).get("arch")
    tune = (cpu or {}).get("tune")
    if not arch:
        if family is not None:
            raise EdgekitError(f"edgekit knows no arm64 CPU for the family '{family}' of {what}",
                               f"cross-build only {', '.join(FAMILY_CPU)} targets, or build on the device")
        if _on(defines.get("GGML_NATIVE")):
            raise EdgekitError("-DGGML_NATIVE=ON names the device's own CPU, which a cross build cannot ask",
                               "name the CPU with -DGGML_CPU_ARM_ARCH=... (e.g. armv8.2-a+dotprod+fp16)")
        arch = GENERIC_ARCH
    kept = [w for w in words if not (w.startswith("-D") and "=" in w and
                                     w[2:].partition("=")[0].partition(":")[0].strip() in _OWN)]
    tune_args = [f"-DCMAKE_C_FLAGS=-mtune={tune}", f"-DCMAKE_CXX_FLAGS=-mtune={tune}"] if tune else []
    own = [
        "-DCMAKE_SYSTEM_NAME=Linux", f"-DCMAKE_SYSTEM_PROCESSOR={machine}",
        f"-DCMAKE_C_COMPILER={toolchain.cc}", f"-DCMAKE_CXX_COMPILER={toolchain.cxx}",
        f"-DCMAKE_FIND_ROOT_PATH={toolchain.sysroot}", "-DCMAKE_FIND_ROOT_PATH_MODE_PROGRAM=NEVER",
        "-DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY", "-DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY",
        "-DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=ONLY",
        "-DGGML_NATIVE=OFF", f"-DGGML_CPU_ARM_ARCH={arch}", "-DGGML_CPU_ALL_VARIANTS=OFF", "-DGGML_BACKEND_DL=OFF",
        "-DGGML_OPENMP=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAVA_BUILD=OFF", "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
    ]
    return shlex.join([*tune_args, *kept, *own])


# ---------------------------------------------------------------- ELF and wheel checks


def elf_machine(header: bytes) -> int | None:
    """The e_machine of an ELF file from its first 20 bytes (byte order from EI_DATA), or None
    when the bytes are not an ELF header."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    order = {1: "little", 2: "big"}.get(header[5])
    if order is None:
        return None
    return int.from_bytes(header[18:20], order)


def _is_shared_library(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.endswith(".so") or ".so." in base


def wheel_elf_machines(wheel: Path) -> dict[str, int | None]:
    """Member name -> e_machine for every member of a wheel that is named like a shared library
    (libx.so, libx.so.0) or starts like an ELF file; None for a library name that is not ELF."""
    out: dict[str, int | None] = {}
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            if info.is_dir():
                continue
            with z.open(info) as f:
                head = f.read(20)
            if _is_shared_library(info.filename) or head[:4] == b"\x7fELF":
                out[info.filename] = elf_machine(head)
    return out


def check_wheel_machine(wheel: Path, machine: str) -> list[str]:
    """The shared libraries of `wheel` (names), after checking each is an ELF for `machine`;
    EdgekitError naming the first ones that are not, or when it holds no libllama.so."""
    machine = normalise_machine(machine)
    want = ELF_MACHINES[machine]
    found = wheel_elf_machines(wheel)
    names = {v: k for k, v in ELF_MACHINES.items()}
    bad = [f"{name} ({'not ELF' if m is None else names.get(m, hex(m))})" for name, m in found.items() if m != want]
    if bad:
        raise EdgekitError(f"{Path(wheel).name} holds libraries that are not {machine} ELF: {', '.join(bad[:5])}"
                           f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}",
                           "the build did not cross compile: check the CMake arguments (cross_cmake_args)")
    if not any(n.endswith("/libllama.so") for n in found):
        raise EdgekitError(f"{Path(wheel).name} holds no llama_cpp/lib/libllama.so", "the build is incomplete")
    return sorted(found)


def wheel_tags(wheel: Path) -> list[str]:
    """The `Tag:` lines of a wheel's .dist-info/WHEEL file."""
    with zipfile.ZipFile(wheel) as z:
        name = next((n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/WHEEL")), None)
        if name is None:
            raise EdgekitError(f"{Path(wheel).name} has no .dist-info/WHEEL", "it is not a wheel")
        text = z.read(name).decode("utf-8")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]


def retag_wheel(wheel: Path, platform_tag: str, python: str = sys.executable) -> Path:
    """`wheel` with its platform tag replaced (file name and WHEEL file), by the wheel package's
    `wheel tags --remove`; the original file is removed. Returns the new path."""
    wheel = Path(wheel)
    try:
        p = subprocess.run([python, "-m", "wheel", "tags", "--remove", f"--platform-tag={platform_tag}", str(wheel)],
                           capture_output=True, text=True, cwd=wheel.parent, check=False)
    except OSError as e:
        p = subprocess.CompletedProcess([], 127, "", str(e))
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgekitError(f"could not retag {wheel.name} to {platform_tag} ({last})",
                           f"install the wheel package (>=0.40) for {python}: pip install wheel")
    new = wheel.parent / p.stdout.strip().splitlines()[-1]
    if not new.is_file():
        raise EdgekitError(f"`wheel tags` printed {new.name}, which does not exist", "check the wheel package")
    return new


# the version-needed strings of an ELF's dynamic string table: GLIBC_2.34, GLIBCXX_3.4.30, CXXABI_1.3.13
SYMBOL_VERSION = re.compile(rb"(GLIBCXX|GLIBC|CXXABI)_(\d+(?:\.\d+)+)\x00")


def wheel_symbol_needs(wheel: Path) -> dict[str, tuple[int, ...]]:
    """The newest GLIBC_, GLIBCXX_ and CXXABI_ symbol version of each kind the wheel's shared
    libraries name (their version-needed strings, as `objdump -p` lists them). libc_problem
    judges GLIBC_ and GLIBCXX_ (the libstdc++ release); CXXABI_ moves with GLIBCXX_ in every GCC
    release, so it is reported, not judged."""
    needs: dict[str, tuple[int, ...]] = {}
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            if info.is_dir() or not _is_shared_library(info.filename):
                continue
            for kind, version in SYMBOL_VERSION.findall(z.read(info)):
                v = tuple(int(x) for x in version.split(b"."))
                k = kind.decode()
                needs[k] = max(needs.get(k, v), v)
    return needs


def _dotted(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def libc_problem(needs: dict[str, tuple[int, ...]], glibc: tuple[int, ...] | None,
                 glibcxx: tuple[int, ...] | None) -> str | None:
    """Why libraries with these symbol `needs` (wheel_symbol_needs) cannot load on a device whose
    glibc is `glibc` and whose libstdc++ defines up to `glibcxx`, or None. A fact the device did not
    report (None) is no problem claimed: the device's own import of the runtime is the last word."""
    if "GLIBC" in needs and glibc is not None and glibc < needs["GLIBC"]:
        return f"it needs glibc {_dotted(needs['GLIBC'])} and the device has {_dotted(glibc)}"
    if "GLIBCXX" in needs and glibcxx is not None and glibcxx < needs["GLIBCXX"]:
        return (f"it needs libstdc++ with GLIBCXX_{_dotted(needs['GLIBCXX'])} and the device's stops at "
                f"GLIBCXX_{_dotted(glibcxx)}")
    return None


# ---------------------------------------------------------------- the build


def cross_build_wheel(machine: str, cmake_args: str, out_dir: Path, log: Path, *,
                      toolchain: Toolchain | None = None, python: str = sys.executable,
                      sdist: Path | None = None) -> Path:
    """Cross-build llama-cpp-python (the pinned version, from the cached sdist) with `cmake_args`
    (from cross_cmake_args) into `out_dir`; returns the wheel's path there.

    `python -m pip wheel --no-deps --no-cache-dir` with build isolation (scikit-build-core from
    the index, as edgekit.llamacpp_build builds the workstation's wheel), CMAKE_ARGS and the cross
    compilers as CC/CXX, into a temporary folder; then the wheel is retagged for `machine`, every
    ELF in it is checked to be one for `machine`, and it is copied into `out_dir` under a
    temporary name and renamed. The build's whole output goes to `log` (replaced)."""
    machine = normalise_machine(machine)
    if machine not in PLATFORM_TAGS:
        raise EdgekitError(f"edgekit cross-builds llama.cpp for {', '.join(PLATFORM_TAGS)} only, not {machine}",
                           "build on the device")
    toolchain = toolchain or cross_toolchain(machine)
    if toolchain is None:
        raise EdgekitError(f"no {CROSS_TRIPLETS[machine]} cross compiler on PATH",
                           f"apt-get install g++-{CROSS_TRIPLETS[machine]} (Debian/Ubuntu)")
    log, out_dir = Path(log), Path(out_dir)
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        sdist = Path(sdist) if sdist else fetch_sdist(python)
    except subprocess.CalledProcessError as e:
        raise EdgekitError(f"could not download the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist "
                           f"(pip exit {e.returncode})", "check the package index is reachable") from None
    env = {**os.environ, "CMAKE_ARGS": cmake_args, "FORCE_CMAKE": "1", "CC": toolchain.cc, "CXX": toolchain.cxx}
    env.pop("_PYTHON_HOST_PLATFORM", None)  # the tag is set afterwards, in one place
    with tempfile.TemporaryDirectory(prefix="edgekit-cross-") as tmp:
        dist = Path(tmp) / "dist"
        argv = [python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-v", "-w", str(dist), str(sdist)]
        with open(log, "w", encoding="utf-8") as f:
            f.write(f"# {shlex.join(argv)}\n# CMAKE_ARGS={cmake_args}\n# CC={toolchain.cc} CXX={toolchain.cxx} "
                    f"(gcc {toolchain.version})\n")
            f.flush()
            try:
                p = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                                   check=False)
            except OSError as e:
                raise EdgekitError(f"could not run {python} -m pip ({e}); log: {log}", "check the Python") from None
        built = sorted(dist.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}-*.whl"))
        if p.returncode != 0 or not built:
            raise EdgekitError(f"cross-building llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} for {machine} failed "
                               f"(pip exit {p.returncode}); the build's output is in {log}",
                               "read the end of that log; a missing cross compiler or a CMake error shows there")
        try:
            wheel = retag_wheel(built[0], PLATFORM_TAGS[machine], python)
            tags = wheel_tags(wheel)
            if not tags or any(not t.endswith(f"-{PLATFORM_TAGS[machine]}") for t in tags):
                raise EdgekitError(f"{wheel.name} is tagged {', '.join(tags) or 'nothing'} after retagging",
                                   "check the wheel package")
            libraries = check_wheel_machine(wheel, machine)
        except EdgekitError as e:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"\n# edgekit: {e}\n")
            raise EdgekitError(f"{e.problem} (build log: {log})", e.fix) from None
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"\n# edgekit: {wheel.name}: tags {', '.join(tags)}; {len(libraries)} {machine} ELF "
                    f"libraries: {', '.join(libraries)}\n")
        out_dir.mkdir(parents=True, exist_ok=True)
        final = out_dir / wheel.name
        partial = out_dir / f".{wheel.name}.partial-{os.getpid()}-{threading.get_ident()}"
        try:
            shutil.copyfile(wheel, partial)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
    return final


# ---------------------------------------------------------------- the cache


def cross_wheel_key(machine: str, cmake_args: str, toolchain: Toolchain) -> str:
    """llama-cpp-python-<version>-<machine>-<digest of version, machine, flags, toolchain and its version>."""
    machine = normalise_machine(machine)
    text = f"{LLAMA_CPP_PYTHON_VERSION}|{machine}|{cmake_args}|{toolchain.triplet}|{toolchain.version}"
    return f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}-{machine}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def cross_wheel_dir(machine: str, cmake_args: str, toolchain: Toolchain) -> Path:
    return cache_root() / "cross-wheels" / cross_wheel_key(machine, cmake_args, toolchain)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def verify_cross_wheel(folder: Path) -> tuple[Path, dict] | None:
    """(wheel, its origin record) of a cross-wheels/<key>/ folder when origin.json names a wheel
    there whose sha256 matches the record; None when there is none or it does not match."""
    folder = Path(folder)
    try:
        record = json.loads((folder / ORIGIN_FILE).read_text(encoding="utf-8"))
        wheel = folder / record["wheel"]
        ok = record.get("origin") == ORIGIN and Path(record["wheel"]).name == record["wheel"] and \
            wheel.is_file() and _sha256(wheel) == record["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (wheel, record) if ok else None


def cross_wheel(machine: str, cmake_args: str, log: Path, *, toolchain: Toolchain | None = None,
                python: str = sys.executable) -> Path:
    """The cross-built wheel for (machine, cmake_args, toolchain) from edgekit's cache, built once
    (minutes) when missing or when the cached one no longer matches its recorded sha256."""
    machine = normalise_machine(machine)
    toolchain = toolchain or cross_toolchain(machine)
    if toolchain is None:
        raise EdgekitError(f"no {CROSS_TRIPLETS.get(machine, machine)} cross compiler on PATH",
                           f"apt-get install g++-{CROSS_TRIPLETS.get(machine, 'aarch64-linux-gnu')} (Debian/Ubuntu)")
    folder = cross_wheel_dir(machine, cmake_args, toolchain)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # one build per key at a time: a fleet deploys to several devices of a kind on threads, and
    # every deploy of this machine shares the cache; the second waits, then finds the first's wheel
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _cross_wheel_locked(machine, cmake_args, log, toolchain, python, folder)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _cross_wheel_locked(machine: str, cmake_args: str, log: Path, toolchain: Toolchain, python: str,
                        folder: Path) -> Path:
    found = verify_cross_wheel(folder)
    if found:
        return found[0]
    start = time.monotonic()
    wheel = cross_build_wheel(machine, cmake_args, folder, log, toolchain=toolchain, python=python)
    record = {"wheel": wheel.name, "sha256": _sha256(wheel), "size": wheel.stat().st_size, "origin": ORIGIN,
              "version": LLAMA_CPP_PYTHON_VERSION, "machine": machine, "platform_tag": PLATFORM_TAGS[machine],
              "cmake_args": cmake_args, "toolchain": asdict(toolchain),
              "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_seconds": round(time.monotonic() - start, 1)}
    write_text_atomic(folder / ORIGIN_FILE, json.dumps(record, indent=2) + "\n")
    return wheel
