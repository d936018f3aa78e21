"""How llama-cpp-python is built for the machine that converts and benchmarks (the workstation).

Contract: `portable_cmake_args()` are the CMake flags of every llama.cpp this project
installs on a workstation or CI host; `wheel()` returns a llama-cpp-python wheel built
with them, from a cache keyed by (version, platform, flags), building it once
when missing. `make test`, `make demo` and `.ci/run` install that wheel; the llama-bench
of benchmarks/bench_vs_llamabench.py is built with the same flags.

Why not llama.cpp's default (`GGML_NATIVE=ON`, i.e. `-march=native`):
- On Intel Xeons with AMX (Sapphire Rapids and later) native turns on ggml's AMX
  matmul, which segfaults at `ldtilecfg` (llama.cpp issue #20824: tile permission is
  requested on the main thread only). Both README commands died on such a host.
- pip caches a built wheel by version only, so a native wheel built on one CPU is
  reused on another (a shared home, a copied venv, a Docker layer) and dies with
  SIGILL there. Our wheel lives in a cache keyed by its flags, and the flags name an
  instruction set every supported host has, so reusing it is safe.

The x86-64 baseline is AVX2 + FMA + F16C + BMI2 (x86-64-v3: every x86-64 server and
laptop CPU since 2013-2015, AMD and Intel), with AVX-512 and AMX off. What this costs
against a native build on a host where native is safe is measured by
benchmarks/bench_vs_llamabench.py --compare-native (what it measured, and where: docs/benchmarks.md).
On arm64 the baseline is the compiler's armv8-a, which runs on any arm64 workstation;
devices get their own flags from their target recipe (Pi NEON/dotprod, Jetson CUDA,
Apple Metal) through `edgekit targets`, never these.

`LLAMA_CMAKE_ARGS` in the environment replaces the flags (e.g. `-DGGML_CUDA=ON` on a
workstation with a GPU); the cache key follows, so a differently built wheel is never
mistaken for this one.

This file runs as a script before edgekit is installed (the Makefile calls it), so it
imports nothing but the standard library.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # constraints.txt pins the same (tests/test_packaging.py checks)

_X86_64 = ("-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON "
           "-DGGML_F16C=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF "
           "-DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF")
_ARM64 = "-DGGML_NATIVE=OFF"  # the compiler's default armv8-a (Apple clang: apple-m1, which every M chip runs)

# CPU flags (as /proc/cpuinfo spells them) that a host needs to run the x86-64 baseline
X86_64_REQUIRED_FLAGS = ("avx", "avx2", "fma", "f16c", "bmi2", "sse4_2")


def machine() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def portable_cmake_args(arch: str | None = None) -> str:
    """The CMake flags for this machine's architecture (or LLAMA_CMAKE_ARGS when set)."""
    override = os.environ.get("LLAMA_CMAKE_ARGS")
    if override is not None and override.strip():
        return override.strip()
    return arch_cmake_args(arch or machine())


def arch_cmake_args(arch: str) -> str:
    """The portable flags for a CPU architecture as `uname -m` names it (never the override:
    a device's build is not this machine's)."""
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch.lower(), arch.lower())
    if arch == "x86_64":
        return _X86_64
    if arch == "aarch64":
        return _ARM64
    return "-DGGML_NATIVE=OFF"


def cache_root() -> Path:
    """EDGEKIT_CACHE, else $XDG_CACHE_HOME/edgekit, else ~/.cache/edgekit."""
    if os.environ.get("EDGEKIT_CACHE"):
        return Path(os.environ["EDGEKIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit"


def wheel_key(cmake_args: str | None = None, arch: str | None = None) -> str:
    cmake_args = portable_cmake_args(arch) if cmake_args is None else cmake_args
    tag = sysconfig.get_platform()  # the wheel is py3-none-<platform>: ctypes bindings, any CPython 3
    digest = hashlib.sha256(f"{LLAMA_CPP_PYTHON_VERSION}|{tag}|{cmake_args}".encode()).hexdigest()[:12]
    return f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}-{tag}-{digest}"


def wheel_dir(cmake_args: str | None = None) -> Path:
    return cache_root() / "wheels" / wheel_key(cmake_args)


def sdist_path() -> Path:
    """The llama-cpp-python source package of the pinned version, kept beside the wheels: its
    vendor/llama.cpp has convert_hf_to_gguf.py and llama-bench's source (tests, benchmarks)."""
    return cache_root() / "sdist" / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"


def fetch_sdist(python: str = sys.executable) -> Path:
    path = sdist_path()
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        subprocess.run([python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", tmp,
                        f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"], check=True,
                       stdout=sys.stderr)  # stdout is this script's answer (the Makefile reads it)
        os.replace(next(Path(tmp).glob("llama_cpp_python-*.tar.gz")), path)
    return path


def wheel(python: str = sys.executable, cmake_args: str | None = None) -> Path:
    """The cached wheel for these flags; built (once, minutes) when missing."""
    cmake_args = portable_cmake_args() if cmake_args is None else cmake_args
    dest = wheel_dir(cmake_args)
    found = sorted(dest.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}-*.whl"))
    if found:
        return found[0]
    sdist = fetch_sdist(python)
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"building llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} with CMAKE_ARGS={cmake_args!r} "
          f"(once per flags; minutes) into {dest}", file=sys.stderr, flush=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".build-"))
    try:
        # --no-cache-dir: pip's own wheel cache is keyed by version only and must never hold this wheel
        subprocess.run([python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(tmp), str(sdist)],
                       check=True, env={**os.environ, "CMAKE_ARGS": cmake_args, "FORCE_CMAKE": "1"},
                       stdout=sys.stderr)
        (tmp / "cmake_args.txt").write_text(cmake_args + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return next(dest.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}-*.whl"))


# What the portable build must not contain (tests/test_llamacpp_build.py scans the installed libraries):
# AMX tile instructions (the crash of llama.cpp #20824) and, on x86-64, any AVX-512 register.
AMX_MNEMONICS = ("ldtilecfg", "sttilecfg", "tileloadd", "tileloaddt1", "tilestored", "tilezero", "tilerelease",
                 "tdpbssd", "tdpbsud", "tdpbusd", "tdpbuud", "tdpbf16ps", "tdpfp16ps")


def forbidden_instructions(disassembly: str) -> dict[str, int]:
    """Counts of AMX mnemonics and of AVX-512 (zmm) operands in `objdump -d` output."""
    counts: dict[str, int] = {}
    for line in disassembly.splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].rstrip().endswith(":"):
            continue
        insn = parts[-1].strip()
        mnemonic = insn.split(" ", 1)[0]
        if mnemonic in AMX_MNEMONICS:
            counts[mnemonic] = counts.get(mnemonic, 0) + 1
        if "%zmm" in insn:
            counts["zmm"] = counts.get("zmm", 0) + 1
    return counts


def extract_llama_cpp(dest: Path, parts: tuple[str, ...] = ()) -> Path:
    """vendor/llama.cpp of the sdist under `dest` (whole, or only the top-level `parts`, e.g.
    ("convert_hf_to_gguf.py", "conversion", "gguf-py") for the converter); returns its path."""
    root = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp"
    tree = Path(dest) / root
    with tarfile.open(fetch_sdist()) as tar:
        wanted = [m for m in tar.getmembers() if m.name.startswith(root + "/") and
                  (not parts or m.name[len(root) + 1:].split("/")[0] in parts)]
        tar.extractall(dest, members=wanted, filter="data")
    return tree


# llama.cpp's own HF -> GGUF converter, run from an extracted tree. Its tokenizer check hashes the
# encoding of a fixed string against a list of known models; a synthetic tokenizer is on no list, so
# it is told the pre-tokenizer name (argv[2]) instead: the only change to it.
REFERENCE_CONVERTER = """
import runpy, sys
src, pre = sys.argv[1], sys.argv[2]
sys.path[0:0] = [src, src + "/gguf-py"]
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[3:]
runpy.run_path(src + "/convert_hf_to_gguf.py", run_name="__main__")
"""


def reference_convert_command(tree: Path, checkpoint: Path, outfile: Path, pre: str, outtype: str = "f16",
                              python: str = sys.executable) -> list[str]:
    """argv that runs llama.cpp's convert_hf_to_gguf.py from `tree` (see REFERENCE_CONVERTER)."""
    return [python, "-c", REFERENCE_CONVERTER, str(tree), pre, str(checkpoint), "--outtype", outtype,
            "--outfile", str(outfile)]


def main(argv: list[str]) -> int:
    commands = {"cmake-args": lambda: portable_cmake_args(), "wheel-dir": lambda: wheel_dir(),
                "sdist": lambda: fetch_sdist(), "wheel": lambda: wheel()}
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: python {Path(__file__).name} {{{'|'.join(commands)}}}", file=sys.stderr)
        return 2
    try:
        print(commands[argv[0]]())
    except subprocess.CalledProcessError as e:
        print(f"error: building llama-cpp-python failed (exit {e.returncode}); a C/C++ compiler and cmake's "
              "download from PyPI are needed: install build-essential and retry", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
