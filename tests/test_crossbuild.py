"""edgekit.crossbuild: toolchain detection, the cross CMake arguments, the ELF check, retagging and
the cache record, without a compiler; one real cross build behind the slow marker."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgekit import crossbuild
from edgekit.crossbuild import (
    ORIGIN,
    Toolchain,
    check_wheel_machine,
    cross_cmake_args,
    cross_toolchain,
    cross_wheel,
    cross_wheel_dir,
    cross_wheel_key,
    elf_machine,
    libc_problem,
    retag_wheel,
    verify_cross_wheel,
    wheel_elf_machines,
    wheel_symbol_needs,
    wheel_tags,
)
from edgekit.errors import EdgekitError
from edgekit.targets.specs import all_specs

TC = Toolchain("aarch64", "aarch64-linux-gnu", "/usr/bin/aarch64-linux-gnu-gcc", "/usr/bin/aarch64-linux-gnu-g++",
               "12.2.0")


def elf_header(machine: int, little: bool = True) -> bytes:
    """A 64-byte ELF64 header of a shared object (ET_DYN) for `machine`."""
    order = "<" if little else ">"
    ident = b"\x7fELF" + bytes([2, 1 if little else 2, 1, 0]) + bytes(8)
    return ident + struct.pack(order + "HHIQQQIHHHHHH", 3, machine, 1, 0, 64, 0, 0, 64, 56, 0, 64, 0, 0)


def defines(args: str) -> dict[str, str]:
    out = {}
    for w in shlex.split(args):
        assert w.startswith("-D"), w
        name, _, value = w[2:].partition("=")
        out[name] = value
    return out


# ---------------------------------------------------------------- toolchain detection


def fake_compiler(folder: Path, name: str, version: str = "12.2.0", rc: int = 0) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n[ \"$1\" = -dumpfullversion ] && echo {version}\nexit {rc}\n")
    path.chmod(0o755)


def test_toolchain_found_on_path(tmp_path, monkeypatch):
    fake_compiler(tmp_path, "aarch64-linux-gnu-gcc", "12.2.0")
    fake_compiler(tmp_path, "aarch64-linux-gnu-g++", "12.2.0")
    monkeypatch.setenv("PATH", str(tmp_path))
    tc = cross_toolchain("aarch64")
    assert tc == Toolchain("aarch64", "aarch64-linux-gnu", str(tmp_path / "aarch64-linux-gnu-gcc"),
                           str(tmp_path / "aarch64-linux-gnu-g++"), "12.2.0")
    assert tc.sysroot == "/usr/aarch64-linux-gnu"
    assert cross_toolchain("arm64") == tc  # macOS/BSD spelling of the same machine


def test_toolchain_missing_or_broken(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cross_toolchain("aarch64") is None  # nothing on PATH
    fake_compiler(tmp_path, "aarch64-linux-gnu-gcc")
    assert cross_toolchain("aarch64") is None  # no g++
    fake_compiler(tmp_path, "aarch64-linux-gnu-g++")
    assert cross_toolchain("aarch64") is not None
    fake_compiler(tmp_path, "aarch64-linux-gnu-gcc", rc=1)
    assert cross_toolchain("aarch64") is None  # the compiler does not answer -dumpfullversion
    for machine in ("x86_64", "armv7l", "riscv64"):
        assert cross_toolchain(machine) is None


# ---------------------------------------------------------------- CMake arguments


def test_cmake_args_rpi5():
    spec = all_specs()["rpi5-8gb"]
    assert "GGML_NATIVE=ON" in spec.llama_cpp_cmake_args  # the device build: the Pi's own CPU
    d = defines(cross_cmake_args(spec, "aarch64", TC))
    assert d["CMAKE_SYSTEM_NAME"] == "Linux" and d["CMAKE_SYSTEM_PROCESSOR"] == "aarch64"
    assert d["CMAKE_C_COMPILER"] == TC.cc and d["CMAKE_CXX_COMPILER"] == TC.cxx
    assert d["GGML_NATIVE"] == "OFF"
    assert d["GGML_CPU_ARM_ARCH"] == "armv8.2-a+dotprod+fp16"
    assert d["CMAKE_C_FLAGS"] == d["CMAKE_CXX_FLAGS"] == "-mtune=cortex-a76"
    for off in ("GGML_CPU_ALL_VARIANTS", "GGML_BACKEND_DL", "GGML_OPENMP", "LLAMA_OPENSSL", "LLAVA_BUILD",
                "LLAMA_BUILD_TESTS", "LLAMA_BUILD_TOOLS", "LLAMA_BUILD_EXAMPLES", "LLAMA_BUILD_SERVER"):
        assert d[off] == "OFF", off
    assert d["CMAKE_FIND_ROOT_PATH"] == "/usr/aarch64-linux-gnu"
    assert cross_cmake_args(all_specs()["rpi5-4gb"], "arm64", TC) == cross_cmake_args(spec, "aarch64", TC)


def test_cmake_args_generic_aarch64():
    d = defines(cross_cmake_args(all_specs()["linux"], "aarch64", TC))
    assert d["GGML_CPU_ARM_ARCH"] == "armv8-a" and d["GGML_NATIVE"] == "OFF"
    assert "CMAKE_C_FLAGS" not in d
    assert defines(cross_cmake_args("", "aarch64", TC))["GGML_CPU_ARM_ARCH"] == "armv8-a"


def test_cmake_args_strings():
    # a target's own arguments are kept; the cross ones come last, so a native request never wins
    args = cross_cmake_args("-DGGML_CPU_ARM_ARCH=armv8.6-a+i8mm -DGGML_LLAMAFILE=OFF -DGGML_NATIVE=ON", "aarch64", TC)
    words = shlex.split(args)
    d = defines(args)
    assert d["GGML_CPU_ARM_ARCH"] == "armv8.6-a+i8mm" and d["GGML_LLAMAFILE"] == "OFF"
    assert words.count("-DGGML_NATIVE=OFF") == 1 and "-DGGML_NATIVE=ON" not in words
    with pytest.raises(EdgekitError, match="GGML_NATIVE=ON names the device's own CPU"):
        cross_cmake_args("-DGGML_NATIVE=ON", "aarch64", TC)
    # compiler paths with spaces survive as one word each
    tc = Toolchain("aarch64", "aarch64-linux-gnu", "/opt/my tools/gcc", "/opt/my tools/g++", "13.1.0")
    assert defines(cross_cmake_args("", "aarch64", tc))["CMAKE_C_COMPILER"] == "/opt/my tools/gcc"


def test_cmake_args_refused():
    specs = all_specs()
    with pytest.raises(EdgekitError, match="GGML_CUDA.*CPU-only"):
        cross_cmake_args(specs["linux-nvidia"], "aarch64", TC)
    jetson = next(s for s in specs.values() if s.family == "jetson")
    with pytest.raises(EdgekitError, match="CPU-only|knows no arm64 CPU"):
        cross_cmake_args(jetson, "aarch64", TC)
    apple = next(s for s in specs.values() if s.family == "apple-m")
    with pytest.raises(EdgekitError):
        cross_cmake_args(apple, "arm64", TC)
    with pytest.raises(EdgekitError, match="not x86_64"):
        cross_cmake_args(specs["linux"], "x86_64", TC)
    with pytest.raises(EdgekitError, match="GGML_VULKAN"):
        cross_cmake_args("-DGGML_VULKAN=ON", "aarch64", TC)


# ---------------------------------------------------------------- ELF and wheels


def test_elf_machine_on_real_headers():
    assert elf_machine(elf_header(0xB7)) == 0xB7
    assert elf_machine(elf_header(0x3E)) == 0x3E
    assert elf_machine(elf_header(0xB7, little=False)) == 0xB7
    assert elf_machine(b"PK\x03\x04" + bytes(60)) is None
    assert elf_machine(b"\x7fELF") is None  # too short
    if Path(sys.executable).resolve().read_bytes()[:4] == b"\x7fELF":  # this interpreter, a real ELF
        import platform
        want = {"x86_64": 0x3E, "aarch64": 0xB7, "arm64": 0xB7}.get(platform.machine().lower())
        if want:
            assert elf_machine(Path(sys.executable).resolve().read_bytes()[:20]) == want


def make_wheel(folder: Path, libs: dict[str, bytes], tag: str = "py3-none-linux_x86_64") -> Path:
    """A tiny llama_cpp_python wheel packed by the wheel package (`wheel pack`)."""
    root = folder / "unpacked"
    pkg = root / "llama_cpp"
    (pkg / "lib").mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "0.3.36"\n')
    for name, data in libs.items():
        (pkg / "lib" / name).write_bytes(data)
    info = root / "llama_cpp_python-0.3.36.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: 0.3.36\n")
    (info / "WHEEL").write_text(f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n")
    dist = folder / "dist"
    dist.mkdir()
    subprocess.run([sys.executable, "-m", "wheel", "pack", "-d", str(dist), str(root)], check=True,
                   capture_output=True)
    return next(dist.glob("*.whl"))


def test_retag_and_machine_check(tmp_path):
    aarch64 = elf_header(0xB7) + b"\0" * 100
    w = make_wheel(tmp_path, {"libllama.so": aarch64, "libggml.so.0": aarch64, "README.txt": b"hi"})
    assert w.name == "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    new = retag_wheel(w, "linux_aarch64")
    assert new.name == "llama_cpp_python-0.3.36-py3-none-linux_aarch64.whl" and not w.exists()
    assert wheel_tags(new) == ["py3-none-linux_aarch64"]
    with zipfile.ZipFile(new) as z:  # RECORD rewritten by the wheel package, the libraries untouched
        assert z.read("llama_cpp/lib/libllama.so") == aarch64
        assert any(n.endswith(".dist-info/RECORD") for n in z.namelist())
    assert wheel_elf_machines(new) == {"llama_cpp/lib/libllama.so": 0xB7, "llama_cpp/lib/libggml.so.0": 0xB7}
    assert check_wheel_machine(new, "aarch64") == ["llama_cpp/lib/libggml.so.0", "llama_cpp/lib/libllama.so"]
    with pytest.raises(EdgekitError, match="not x86_64 ELF"):
        check_wheel_machine(new, "x86_64")


def test_machine_check_refuses_host_libraries(tmp_path):
    w = make_wheel(tmp_path, {"libllama.so": elf_header(0xB7), "libggml-cpu.so": elf_header(0x3E),
                              "libggml.so": b"not an elf at all..."})
    with pytest.raises(EdgekitError) as e:
        check_wheel_machine(w, "aarch64")
    assert "libggml-cpu.so (x86_64)" in str(e.value) and "libggml.so (not ELF)" in str(e.value)
    no_llama = make_wheel(tmp_path / "b", {"libggml.so": elf_header(0xB7)})
    with pytest.raises(EdgekitError, match="no llama_cpp/lib/libllama.so"):
        check_wheel_machine(no_llama, "aarch64")


def test_retag_without_wheel_package_is_one_error(tmp_path):
    w = make_wheel(tmp_path, {"libllama.so": elf_header(0xB7)})
    with pytest.raises(EdgekitError, match="install the wheel package"):
        retag_wheel(w, "linux_aarch64", python=str(tmp_path / "no-such-python"))  # not an OSError either


# ---------------------------------------------------------------- the build and the cache (no compiler)


def fake_pip_wheel(tmp_path, monkeypatch, libs: dict[str, bytes], rc: int = 0):
    """Replace the `pip wheel` run with one that writes a tiny wheel (or fails with `rc`)."""
    real_run = subprocess.run
    calls = []

    def run(argv, *a, **kw):
        if argv[1:4] == ["-m", "pip", "wheel"]:
            calls.append((argv, kw["env"]["CMAKE_ARGS"], kw["env"]["CC"]))
            kw["stdout"].write("fake build output\n")
            if rc:
                return subprocess.CompletedProcess(argv, rc)
            built = make_wheel(tmp_path / f"build{len(calls)}", libs)
            out = Path(argv[argv.index("-w") + 1])
            out.mkdir(parents=True, exist_ok=True)
            built.rename(out / built.name)
            return subprocess.CompletedProcess(argv, 0)
        return real_run(argv, *a, **kw)

    monkeypatch.setattr(crossbuild.subprocess, "run", run)
    return calls


def test_build_retags_checks_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    calls = fake_pip_wheel(tmp_path, monkeypatch, {"libllama.so": elf_header(0xB7)})
    sdist = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    sdist.write_bytes(b"")
    monkeypatch.setattr(crossbuild, "fetch_sdist", lambda python=None: sdist)
    args = cross_cmake_args(all_specs()["rpi5-8gb"], "aarch64", TC)
    log = tmp_path / "logs" / "cross.log"
    w = cross_wheel("aarch64", args, log, toolchain=TC)
    assert w.parent == cross_wheel_dir("aarch64", args, TC) == tmp_path / "cache" / "cross-wheels" / \
        cross_wheel_key("aarch64", args, TC)
    assert w.name.endswith("-py3-none-linux_aarch64.whl")
    assert not [p for p in w.parent.iterdir() if ".partial-" in p.name]
    assert calls[0][1] == args and calls[0][2] == TC.cc and "--no-deps" in calls[0][0]
    assert "fake build output" in log.read_text() and "CMAKE_ARGS=" in log.read_text()
    record = json.loads((w.parent / "origin.json").read_text())
    assert record["origin"] == ORIGIN == "cross-built on this workstation"
    assert record["wheel"] == w.name and record["toolchain"]["version"] == "12.2.0"
    assert record["sha256"] == hashlib.sha256(w.read_bytes()).hexdigest()
    # cached: no second build; a changed wheel is not trusted and is built again
    assert cross_wheel("aarch64", args, log, toolchain=TC) == w and len(calls) == 1
    w.write_bytes(w.read_bytes() + b"tampered")
    assert verify_cross_wheel(w.parent) is None
    cross_wheel("aarch64", args, log, toolchain=TC)
    assert len(calls) == 2 and verify_cross_wheel(w.parent)[0] == w


def test_symbol_needs_are_the_newest_versions_the_libraries_name(tmp_path):
    """The version-needed strings of each library (NUL-terminated in its string table), the newest
    of each kind over all of them; a file that is not a library (a text naming GLIBC_9.9) counts not."""
    lib = elf_header(0xB7) + b"\0libc.so.6\0GLIBC_2.17\0GLIBC_2.34\0GLIBC_2.2.5\0GLIBCXX_3.4.29\0CXXABI_1.3.13\0"
    other = elf_header(0xB7) + b"\0GLIBCXX_3.4.30\0GLIBC_2.28\0"
    w = make_wheel(tmp_path, {"libllama.so": lib, "libggml.so.0": other})
    with zipfile.ZipFile(w, "a") as z:
        z.writestr("llama_cpp/README.txt", "needs GLIBC_9.9\0")
    needs = wheel_symbol_needs(w)
    assert needs == {"GLIBC": (2, 34), "GLIBCXX": (3, 4, 30), "CXXABI": (1, 3, 13)}
    # Debian 12 / Pi OS Bookworm (glibc 2.36, GCC 12's libstdc++) loads it; Ubuntu 20.04 / JetPack 5
    # (glibc 2.31) and Debian 11's libstdc++ (GCC 10: GLIBCXX_3.4.28) do not
    assert libc_problem(needs, (2, 36), (3, 4, 30)) is None
    assert libc_problem(needs, (2, 31), (3, 4, 30)) == "it needs glibc 2.34 and the device has 2.31"
    assert "GLIBCXX_3.4.30 and the device's stops at GLIBCXX_3.4.28" in libc_problem(needs, (2, 36), (3, 4, 28))
    assert libc_problem(needs, None, None) is None  # not reported (musl, macOS): the device's import decides
    assert libc_problem({}, (2, 17), (3, 4, 19)) is None


def test_key_follows_flags_and_toolchain():
    a = cross_cmake_args(all_specs()["rpi5-8gb"], "aarch64", TC)
    b = cross_cmake_args(all_specs()["linux"], "aarch64", TC)
    newer = dataclasses.replace(TC, version="13.2.0")
    keys = {cross_wheel_key("aarch64", a, TC), cross_wheel_key("aarch64", b, TC), cross_wheel_key("aarch64", a, newer)}
    assert len(keys) == 3 and all(k.startswith("llama-cpp-python-0.3.36-aarch64-") for k in keys)
    assert cross_wheel_key("arm64", a, TC) == cross_wheel_key("aarch64", a, TC)


def test_build_failures_name_the_log(tmp_path, monkeypatch):
    sdist = tmp_path / "sdist.tar.gz"
    sdist.write_bytes(b"")
    log = tmp_path / "cross.log"
    fake_pip_wheel(tmp_path, monkeypatch, {}, rc=1)
    with pytest.raises(EdgekitError, match=f"pip exit 1.*{log}"):
        crossbuild.cross_build_wheel("aarch64", "", tmp_path / "out", log, toolchain=TC, sdist=sdist)
    fake_pip_wheel(tmp_path, monkeypatch, {"libllama.so": elf_header(0x3E)})  # a host build, not a cross one
    with pytest.raises(EdgekitError, match=f"not aarch64 ELF.*build log: {log}"):
        crossbuild.cross_build_wheel("aarch64", "", tmp_path / "out", log, toolchain=TC, sdist=sdist)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(EdgekitError, match="apt-get install g\\+\\+-aarch64-linux-gnu"):
        crossbuild.cross_build_wheel("aarch64", "", tmp_path / "out", log, sdist=sdist)


# ---------------------------------------------------------------- a real cross build (minutes)


@pytest.mark.slow
@pytest.mark.skipif(cross_toolchain("aarch64") is None, reason="no aarch64-linux-gnu cross compiler installed")
def test_real_cross_build_generic_aarch64(tmp_path):
    from edgekit.llamacpp_build import sdist_path
    if not sdist_path().exists():
        pytest.skip(f"no cached sdist at {sdist_path()} (python edgekit/llamacpp_build.py sdist)")
    tc = cross_toolchain("aarch64")
    args = cross_cmake_args(all_specs()["linux"], "aarch64", tc)
    w = crossbuild.cross_build_wheel("aarch64", args, tmp_path / "out", tmp_path / "cross.log", toolchain=tc)
    assert w.name == "llama_cpp_python-0.3.36-py3-none-linux_aarch64.whl"
    libs = check_wheel_machine(w, "aarch64")
    assert any(n.endswith("llama_cpp/lib/libggml-cpu.so") for n in libs)
    assert not any("mtmd" in n for n in libs)  # LLAVA_BUILD=OFF
