"""The installed llama.cpp is the portable build: it cannot take the AMX path (llama.cpp #20824)
on any machine, and on x86-64 it holds no AVX-512 instruction, so its wheel runs on every
AVX2 host it is copied to. These fail on an AMD host too, where AMX could never run, because
they read the machine code, not the CPU."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgekit import llamacpp_build as build

ROOT = Path(__file__).resolve().parents[1]


def _installed_libraries() -> list[Path]:
    import importlib.util

    lib = Path(importlib.util.find_spec("llama_cpp").origin).parent / "lib"
    libs = sorted(p for p in lib.glob("lib*.so") if "ggml" in p.name or "llama" in p.name) or \
        sorted(lib.glob("lib*.dylib"))
    assert libs, f"no llama.cpp libraries in {lib}"
    return libs


def _disassemble(path: Path) -> str:
    objdump = shutil.which("objdump")
    assert objdump, "objdump (binutils, which compiled llama.cpp) is needed to read the machine code"
    return subprocess.run([objdump, "-d", "--no-show-raw-insn", str(path)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.skipif(platform.system() != "Linux", reason="reads ELF libraries with objdump")
def test_installed_llama_cpp_has_no_amx_and_no_avx512_instruction():
    found = {p.name: build.forbidden_instructions(_disassemble(p)) for p in _installed_libraries()}
    assert any("ggml-cpu" in name for name in found)  # the library that holds the kernels was read
    amx = {name: {k: v for k, v in c.items() if k != "zmm"} for name, c in found.items()}
    assert not any(amx.values()), f"AMX instructions in the installed llama.cpp: {amx}; rebuild: make -B install"
    if build.machine() == "x86_64":
        zmm = {name: c["zmm"] for name, c in found.items() if c.get("zmm")}
        assert not zmm, f"AVX-512 in the installed llama.cpp (not portable): {zmm}; rebuild: make -B install"


def test_installed_llama_cpp_reports_no_amx_feature():
    """The same promise as llama.cpp states it (llama_print_system_info)."""
    from edgekit import native

    info = native.call("edgekit.runners.llamacpp:system_info_here", library="llama.cpp", what="system info")
    assert "AMX_INT8 = 1" not in info and "AVX512 = 1" not in info
    if build.machine() == "x86_64":
        assert re.search(r"\bAVX2 = 1\b", info) and re.search(r"\bFMA = 1\b", info), info  # the baseline is in


@pytest.mark.skipif(platform.system() != "Linux", reason="compiles and reads an ELF object")
def test_the_scan_finds_amx_and_avx512_when_they_are_there(tmp_path):
    """Break it on purpose: an object compiled with AMX and AVX-512 is caught."""
    gcc = shutil.which("gcc")
    if not gcc or build.machine() != "x86_64":
        pytest.skip("needs gcc for x86-64")
    src = tmp_path / "amx.c"
    src.write_text("#include <immintrin.h>\n"
                   "void cfg(const void *c) { _tile_loadconfig(c); _tile_zero(0); _tile_release(); }\n"
                   "__m512 add(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }\n")
    subprocess.run([gcc, "-O2", "-mamx-tile", "-mavx512f", "-c", str(src), "-o", str(tmp_path / "amx.o")],
                   check=True)
    counts = build.forbidden_instructions(_disassemble(tmp_path / "amx.o"))
    assert counts.get("ldtilecfg") == 1 and counts.get("tilezero") == 1 and counts.get("zmm", 0) >= 1


def test_recorded_objdump_lines_are_parsed():
    text = ("0000000000013020 <f>:\n"
            "   13126:\tpush   $0xf\n"
            "   1312b:\tldtilecfg (%rdi)\n"
            "   13130:\ttdpbssd %tmm2,%tmm1,%tmm0\n"
            "   13135:\tvaddps %zmm1,%zmm0,%zmm0\n"
            "   1313b:\tvaddps %ymm1,%ymm0,%ymm0\n")
    assert build.forbidden_instructions(text) == {"ldtilecfg": 1, "tdpbssd": 1, "zmm": 1}


def test_flags_per_architecture_and_override(monkeypatch):
    monkeypatch.delenv("LLAMA_CMAKE_ARGS", raising=False)
    x86 = build.portable_cmake_args("x86_64").split()
    assert "-DGGML_NATIVE=OFF" in x86 and "-DGGML_AVX2=ON" in x86 and "-DGGML_FMA=ON" in x86
    assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AVX512=OFF"} <= set(x86)
    assert build.portable_cmake_args("aarch64") == "-DGGML_NATIVE=OFF"
    default_key = build.wheel_key()
    monkeypatch.setenv("LLAMA_CMAKE_ARGS", "-DGGML_CUDA=ON")
    assert build.portable_cmake_args() == "-DGGML_CUDA=ON"
    # a differently built wheel never shares the portable one's cache folder
    assert build.wheel_key() != default_key and build.wheel_key().startswith(
        f"llama-cpp-python-{build.LLAMA_CPP_PYTHON_VERSION}-")


def test_wheel_comes_from_the_keyed_cache_without_building(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("LLAMA_CMAKE_ARGS", raising=False)
    dest = build.wheel_dir()
    assert dest.parent == tmp_path / "wheels"
    dest.mkdir(parents=True)
    whl = dest / f"llama_cpp_python-{build.LLAMA_CPP_PYTHON_VERSION}-py3-none-linux_x86_64.whl"
    whl.write_bytes(b"")
    monkeypatch.setattr(build, "fetch_sdist", lambda *a: pytest.fail("a cached wheel must not be rebuilt"))
    assert build.wheel() == whl


def test_building_prints_only_the_wheel_path_on_stdout(tmp_path, monkeypatch, capfd):
    """The Makefile reads the script's stdout as the wheel's path: pip's own output must go to stderr."""
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("LLAMA_CMAKE_ARGS", raising=False)
    fake_pip = tmp_path / "fakepip.py"  # prints as pip does, and makes the files pip would
    fake_pip.write_text(
        "import sys, pathlib\n"
        "print('Collecting llama-cpp-python ... Successfully built')\n"
        "args = sys.argv[1:]\n"
        "out = pathlib.Path(args[args.index('-d' if 'download' in args else '-w') + 1])\n"
        "name = 'llama_cpp_python-0.3.36.tar.gz' if 'download' in args else "
        "'llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl'\n"
        "(out / name).write_bytes(b'')\n")
    real_run = subprocess.run

    def run(argv, **kwargs):  # `python -m pip ...` -> the fake, with the same stdout handling
        if argv[1:3] == ["-m", "pip"]:
            argv = [argv[0], str(fake_pip), *argv[3:]]
        return real_run(argv, **kwargs)

    monkeypatch.setattr(build.subprocess, "run", run)
    assert build.main(["wheel"]) == 0
    out, err = capfd.readouterr()
    assert out.strip().splitlines() == [str(build.wheel_dir() / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl")]
    assert "Successfully built" in err and (build.wheel_dir() / "cmake_args.txt").is_file()


def test_one_version_everywhere():
    constraints = (ROOT / "constraints.txt").read_text()
    assert f"llama-cpp-python=={build.LLAMA_CPP_PYTHON_VERSION}\n" in constraints
    from edgekit.targets.specs import LLAMA_CPP_PYTHON

    assert LLAMA_CPP_PYTHON == f"llama-cpp-python=={build.LLAMA_CPP_PYTHON_VERSION}"
    makefile = (ROOT / "Makefile").read_text()
    assert "edgekit/llamacpp_build.py wheel" in makefile  # the install takes the portable wheel


def test_script_runs_without_edgekit_installed():
    """The Makefile runs it before edgekit is installed: standard library only."""
    import sys

    run = subprocess.run([sys.executable, "-I", "-S", str(ROOT / "edgekit" / "llamacpp_build.py"), "cmake-args"],
                         capture_output=True, text=True)  # -S: no site-packages, so no edgekit and no third party
    assert run.returncode == 0 and "-DGGML_NATIVE=OFF" in run.stdout, run.stderr
