"""`edgekit doctor`: the parsers and the build-vs-CPU warnings on recorded text, and the whole doctor on
this machine (real llama.cpp and onnxruntime children, real crashes of a child)."""

from __future__ import annotations

import json
import platform
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit import doctor as doctor_lib
from edgekit.cli import cli
from edgekit.doctor import (
    build_warnings,
    clean,
    describe_system_info,
    parse_cpu_flags,
    parse_system_info,
    run_doctor,
    system_info_sections,
)

FIXTURES = Path(__file__).parent / "fixtures"
EDGEKIT = Path(sys.executable).parent / "edgekit"

# llama_print_system_info() of the portable x86-64 wheel (edgekit/llamacpp_build.py) on this machine
THIS_BUILD = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 | "
              "OPENMP = 1 | REPACK = 1 | ")
# a -march=native build on a Sapphire Rapids Xeon
AMX_BUILD = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
             "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | "
             "OPENMP = 1 | REPACK = 1 | ")
ARM64_BUILD = "CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
# a CUDA build: the CUDA registry's features come first (ggml-cuda's get_features: ARCHS is
# __CUDA_ARCH_LIST__, one number or a comma-separated list)
CUDA_BUILD = ("CUDA : ARCHS = 900 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | CPU : SSE3 = 1 | SSSE3 = 1 | "
              "AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
CUDA_MULTI_ARCH = ("CUDA : ARCHS = 500,610,700,750,800,860,890 | FA_ALL_QUANTS = 1 | USE_GRAPHS = 1 | "
                   "PEER_MAX_BATCH_SIZE = 128 | CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | ")
# llama.cpp before backend sections (2024): every flag, 0 or 1
OLD_BUILD = ("AVX = 1 | AVX_VNNI = 0 | AVX2 = 1 | AVX512 = 0 | FMA = 1 | NEON = 0 | F16C = 1 | SSE3 = 1 | "
             "MATMUL_INT8 = 0 | ")

# the `flags` line of /proc/cpuinfo on this machine (AMD EPYC, Zen 4: AVX-512, no AMX), both processors
EPYC_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall "
    "nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid extd_apicid "
    "tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes "
    "xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw "
    "topoext vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq adx smap avx512ifma "
    "clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 clzero "
    "xsaveerptr arat avx512vbmi umip avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq "
    "rdpid fsrm avx512_vp2intersect")


def cpuinfo(flags: str, n: int = 2, key: str = "flags") -> str:
    return "".join(f"processor\t: {i}\nmodel name\t: AMD EPYC\n{key}\t\t: {flags}\n\n" for i in range(n))


EPYC = cpuinfo(EPYC_FLAGS)
# hand: the same CPU with AMX (as a Sapphire Rapids lists it), and one before AVX2 (Sandy Bridge-like)
AMX_CPU = cpuinfo(EPYC_FLAGS + " amx_bf16 amx_tile amx_int8")
PRE_AVX2_CPU = cpuinfo(" ".join(f for f in EPYC_FLAGS.split() if f not in ("avx2", "fma", "bmi2", "f16c")
                                and not f.startswith(("avx512", "avx_vnni"))))
RPI5 = (FIXTURES / "targets" / "rpi5-8gb" / "cpuinfo.txt").read_text()


# ---------------------------------------------------------------- parse_system_info


def test_parse_system_info_of_this_machines_build():
    assert parse_system_info(THIS_BUILD) == {"CPU": 1, "SSE3": 1, "SSSE3": 1, "AVX": 1, "AVX2": 1, "F16C": 1,
                                             "FMA": 1, "BMI2": 1, "LLAMAFILE": 1, "OPENMP": 1, "REPACK": 1}
    assert system_info_sections(THIS_BUILD) == ["CPU"]
    assert describe_system_info(THIS_BUILD) == "CPU: SSE3 SSSE3 AVX AVX2 F16C FMA BMI2 LLAMAFILE OPENMP REPACK"


def test_parse_system_info_of_an_amx_build():
    features = parse_system_info(AMX_BUILD)
    assert features["AMX_INT8"] == 1 and features["AVX512_BF16"] == 1 and features["AVX_VNNI"] == 1
    assert list(features)[:5] == ["CPU", "SSE3", "SSSE3", "AVX", "AVX_VNNI"]  # printed order kept
    assert len(features) == 17


def test_parse_system_info_of_an_arm64_build_without_trailing_space():
    assert parse_system_info(ARM64_BUILD) == {"CPU": 1, "NEON": 1, "ARM_FMA": 1, "FP16_VA": 1, "DOTPROD": 1,
                                              "LLAMAFILE": 1, "OPENMP": 1, "REPACK": 1}


def test_parse_system_info_of_cuda_builds():
    features = parse_system_info(CUDA_BUILD)
    assert features["CUDA"] == 1 and features["CPU"] == 1
    assert features["ARCHS"] == 900 and features["PEER_MAX_BATCH_SIZE"] == 128 and features["USE_GRAPHS"] == 1
    assert features["AVX2"] == 1
    assert system_info_sections(CUDA_BUILD) == ["CUDA", "CPU"]
    assert describe_system_info(CUDA_BUILD).startswith("CUDA: ARCHS=900 USE_GRAPHS PEER_MAX_BATCH_SIZE=128; CPU: SSE3")

    multi = parse_system_info(CUDA_MULTI_ARCH)
    assert "ARCHS" not in multi  # not one integer: left out of the dict, kept in the description
    assert multi["FA_ALL_QUANTS"] == 1 and multi["DOTPROD"] == 1
    assert "ARCHS=500,610,700,750,800,860,890" in describe_system_info(CUDA_MULTI_ARCH)


def test_parse_system_info_of_an_old_build_keeps_zeros():
    features = parse_system_info(OLD_BUILD)
    assert features["AVX2"] == 1 and features["AVX512"] == 0 and features["MATMUL_INT8"] == 0
    assert "CPU" not in features and system_info_sections(OLD_BUILD) == []
    assert parse_system_info("") == {} and parse_system_info("garbage without pairs") == {}


# ---------------------------------------------------------------- parse_cpu_flags


def test_parse_cpu_flags_x86_and_arm():
    flags = parse_cpu_flags(EPYC)
    assert {"avx2", "fma", "f16c", "bmi2", "avx512f", "avx512_vnni", "avx_vnni"} <= flags
    assert "amx_int8" not in flags and "flags" not in flags

    arm = parse_cpu_flags(RPI5)  # published Pi 5 (Cortex-A76) cpuinfo: dotprod and fp16, no i8mm or SVE
    assert {"asimd", "asimddp", "asimdhp"} <= arm
    assert not {"i8mm", "sve", "sme"} & arm
    assert parse_cpu_flags((FIXTURES / "samples" / "cpuinfo-rpi5-bookworm.txt").read_text()) == arm


def test_parse_cpu_flags_is_what_every_processor_has():
    big_little = cpuinfo("fp asimd asimddp i8mm", 1, "Features") + cpuinfo("fp asimd asimddp", 1, "Features")
    assert parse_cpu_flags(big_little) == {"fp", "asimd", "asimddp"}
    assert parse_cpu_flags("vmx flags\t: vnmi preemption_timer\n") == set()  # Intel's VMX line is not `flags`
    assert parse_cpu_flags((FIXTURES / "targets" / "apple-m3" / "sysctl.txt").read_text()) == set()
    assert parse_cpu_flags("") == set()


# ---------------------------------------------------------------- build_warnings


def test_no_warning_for_this_machines_build_on_an_avx2_cpu():
    assert build_warnings(parse_system_info(THIS_BUILD), parse_cpu_flags(EPYC), "x86_64") == []
    assert build_warnings(parse_system_info(CUDA_BUILD), parse_cpu_flags(EPYC), "x86_64") == []


def test_amx_build_warns_on_any_cpu_and_names_the_issue():
    only_amx = build_warnings(parse_system_info(AMX_BUILD), parse_cpu_flags(AMX_CPU), "x86_64")
    assert len(only_amx) == 1
    problem, fix = only_amx[0]
    assert "AMX_INT8" in problem and "#20824" in problem and "ldtilecfg" in problem
    assert "make -B install" in fix and "edgekit/llamacpp_build.py" in fix


def test_amx_build_on_a_cpu_without_amx_also_dies_with_sigill():
    warnings = build_warnings(parse_system_info(AMX_BUILD), parse_cpu_flags(EPYC), "x86_64")
    assert len(warnings) == 2
    problem, fix = warnings[1]
    assert "SIGILL" in problem and "AMX_INT8" in problem and "amx_int8" in problem
    assert "AVX512" not in problem  # this EPYC has every AVX-512 extension the build uses
    assert "make -B install" in fix


def test_portable_build_on_a_cpu_before_avx2_dies_with_sigill():
    (problem, _fix), = build_warnings(parse_system_info(THIS_BUILD), parse_cpu_flags(PRE_AVX2_CPU), "x86_64")
    assert "SIGILL" in problem
    for feature in ("AVX2", "F16C", "FMA", "BMI2"):
        assert feature in problem
    assert "no avx2, f16c, fma, bmi2 in /proc/cpuinfo" in problem


def test_arm_builds_on_the_recorded_pi5_cpu():
    flags = parse_cpu_flags(RPI5)
    assert build_warnings(parse_system_info(ARM64_BUILD), flags, "aarch64") == []
    i8mm_sve = ARM64_BUILD + " MATMUL_INT8 = 1 | SVE = 1 |"  # built on a Graviton 3 / Orin-class core
    (problem, fix), = build_warnings(parse_system_info(i8mm_sve), flags, "aarch64")
    assert "MATMUL_INT8, SVE" in problem and "no i8mm, sve" in problem and "SIGILL" in problem
    assert "edgekit targets --json" in fix


def test_unknown_cpu_flags_check_nothing_but_amx():
    assert build_warnings(parse_system_info(THIS_BUILD), set(), "x86_64") == []
    assert build_warnings(parse_system_info(ARM64_BUILD), set(), "arm64") == []  # macOS: no /proc/cpuinfo
    assert len(build_warnings(parse_system_info(AMX_BUILD), set(), "x86_64")) == 1


# ---------------------------------------------------------------- clean


def test_clean_strips_control_and_escape_sequences():
    assert clean("\x1b[31mAMD\x1b[0m EPYC\x00\n  9654\t\x07") == "AMD EPYC 9654"
    assert clean("name\u202egnp.exe") == "namegnp.exe"  # a bidi override cannot reorder the line
    assert clean("\x1b]0;title\x07ok") == "ok"
    assert clean("x" * 500, 10) == "x" * 9 + "…"
    assert clean(None) == ""


# ---------------------------------------------------------------- the doctor on this machine


def _features_from_llama_cpp() -> dict[str, int]:
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    return parse_system_info(out)


def test_doctor_json_names_llama_cpps_real_features():
    p = subprocess.run([str(EDGEKIT), "doctor", "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert set(report) == {"checks", "warnings", "ok"}
    assert report["ok"] == (report["warnings"] == [])
    checks = {c["name"]: c for c in report["checks"]}
    assert all(c["status"] in ("ok", "warn", "missing", "info") for c in report["checks"])
    build = checks["llama.cpp build"]
    assert build["status"] == "ok"
    assert build["data"]["features"] == _features_from_llama_cpp()
    if platform.machine() == "x86_64":  # the portable baseline of edgekit/llamacpp_build.py
        assert {"AVX2", "FMA", "F16C", "BMI2"} <= {k for k, v in build["data"]["features"].items() if v == 1}
        assert "AMX_INT8" not in build["data"]["features"]
    assert checks["llama-cpp-python"]["detail"] == doctor_lib.dist_version("llama-cpp-python")[1]
    assert checks["onnxruntime providers"]["status"] == "ok"
    assert "CPUExecutionProvider" in checks["onnxruntime providers"]["data"]["providers"]
    assert checks["target"]["data"]["name"]
    assert checks["llama.cpp devices"]["data"]["devices"][0]["name"] == "CPU"
    assert any(name.startswith("power: ") for name in checks) and "power: rapl" in checks
    assert checks["ssh"]["status"] in ("ok", "missing")


def test_doctor_imports_no_runtime_or_workstation_library():
    code = ("import sys\nfrom edgekit.doctor import run_doctor\nreport = run_doctor()\n"
            "heavy = ('torch', 'transformers', 'optimum', 'tensorrt', 'onnxruntime', 'llama_cpp', 'pynvml', 'numpy')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
            "print(len(report.checks))")
    p = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    imported, n_checks = p.stdout.splitlines()
    assert imported == "[]"
    assert int(n_checks) > 15  # it did run the checks (a child imported llama_cpp and onnxruntime)


def test_a_crashing_child_is_a_warning_not_a_dead_doctor():
    report = run_doctor(llama_probe="signal:raise_signal", llama_args=(int(signal.SIGILL),), ort_probe="os:abort")
    checks = {c.name: c for c in report.checks}
    assert checks["llama.cpp build"].status == "warn"
    assert "SIGILL" in checks["llama.cpp build"].detail and "make -B install" in checks["llama.cpp build"].fix
    assert checks["onnxruntime providers"].status == "warn" and "SIGABRT" in checks["onnxruntime providers"].detail
    assert "pip install --force-reinstall" in checks["onnxruntime providers"].fix
    assert not report.ok and len(report.warnings) == 2
    assert checks["python"].status == "ok" and "target" in checks  # the rest still ran


def test_cli_prints_the_table_and_warning_lines_and_exits_0(monkeypatch):
    monkeypatch.setattr(doctor_lib, "LLAMA_PROBE", "os:abort")  # llama.cpp's child really dies (SIGABRT)
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any("llama.cpp build" in ln and "warn" in ln for ln in lines)
    warnings = [ln for ln in lines if ln.startswith("warning: ")]
    assert len(warnings) == 1 and "llama.cpp crashed (SIGABRT)" in warnings[0]
    assert "; please report this" in warnings[0]


def test_missing_llama_cpp_python_is_a_warning_with_the_install(monkeypatch):
    real = doctor_lib.dist_version
    monkeypatch.setattr(doctor_lib, "dist_version",
                        lambda *names: None if "llama-cpp-python" in names else real(*names))
    report = run_doctor()
    checks = {c.name: c for c in report.checks}
    assert checks["llama-cpp-python"].status == "missing" and "llama.cpp build" not in checks
    assert ("llama-cpp-python is not installed", checks["llama-cpp-python"].fix) in report.warnings
    assert "make install" in checks["llama-cpp-python"].fix


@pytest.mark.parametrize("sensor,expected", [(None, ["rapl", "nvml"]), ("rapl", ["rapl", "nvml"]),
                                             ("jetson", ["jetson", "tegrastats", "rapl", "nvml"]),
                                             ("powermetrics", ["powermetrics", "rapl", "nvml"])])
def test_sensor_keys_take_the_targets_own_first(sensor, expected):
    assert doctor_lib.sensor_keys(sensor) == expected


def test_a_hung_child_is_reported_at_the_deadline(monkeypatch):
    monkeypatch.setattr(doctor_lib, "DEADLINE_S", 1.5)
    report = run_doctor(llama_probe="time:sleep", llama_args=(4,))  # the child ends by itself after 4 s
    build = next(c for c in report.checks if c.name == "llama.cpp build")
    assert build.status == "warn" and "did not finish within 1.5 s" in build.detail
