"""`edgekit doctor`: what this install can do, one check per line, with the fix for each problem.

Contract of `run_doctor()`:
- It returns a `Report`: `checks` (each a `Check`: name, status, one-line detail, a fix for
  problems, and structured `data` for --json) and `warnings` (problem, fix) pairs; `ok` is true
  when there are no warnings. Statuses: "ok"; "warn" (a problem: it is also in `warnings`);
  "missing" (not installed or not readable here, with the fix where there is one; not a warning
  unless named below); "info" (a fact, or something optional and absent, e.g. torch on a device).
- Warnings: the llama.cpp build has AMX_INT8 (llama.cpp issue #20824), the build uses an
  instruction set this CPU lacks (SIGILL), llama-cpp-python is missing, a runtime crashed or
  failed when loaded, two onnxruntime distributions are installed over each other, an edge
  device's llama.cpp cannot offload to its GPU.
- Everything that loads a native library (llama.cpp, onnxruntime, the power sensors: NVML) runs
  in a child interpreter through `edgekit.native.call`, so a crash there (SIGILL from a wheel
  built for another CPU, a segfault) is a warning line and never ends the doctor. The children
  run concurrently in threads; every wait has a deadline, so the doctor cannot hang.
- This process imports no runtime: versions come from package metadata (importlib.metadata),
  and torch, transformers, optimum, tensorrt are never imported (they are reported, not used).
- Every text that comes from outside (system info, versions, device names, command output)
  goes through `clean()`: no control characters, no escape sequences, one line.

The pure parts (`parse_system_info`, `parse_cpu_flags`, `build_warnings`, `clean`) are tested on
recorded text.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.device.probe import gather_facts
from edgekit.device.transport import LocalTransport
from edgekit.errors import EdgekitError
from edgekit.native import call
from edgekit.power import SENSORS, device_sensors, open_sensor
from edgekit.runtimes import ONNXRUNTIME, TENSORRT
from edgekit.targets.specs import detect, install_recipes
from edgekit.tensorrt_tools import find_libcudart, find_tool, find_trtexec
from edgekit.terminal import printable as clean  # one sanitiser for all outside text

STATUSES = ("ok", "warn", "missing", "info")

# llama.cpp build feature (as llama_print_system_info names it) -> the CPU flag it needs (as
# /proc/cpuinfo names it), per architecture. Features not named here (LLAMAFILE, OPENMP,
# REPACK, backends) are not instruction sets and are not checked.
X86_FEATURE_FLAGS = {
    "SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "F16C": "f16c", "FMA": "fma", "BMI2": "bmi2",
    "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16",
    "AVX_VNNI": "avx_vnni", "AMX_INT8": "amx_int8",
}
ARM_FEATURE_FLAGS = {
    "DOTPROD": "asimddp", "MATMUL_INT8": "i8mm", "SVE": "sve", "SME": "sme", "FP16_VA": "asimdhp",
}
X86_MACHINES = ("x86_64", "amd64", "i386", "i686", "x86")
ARM_MACHINES = ("aarch64", "arm64")

PORTABLE_FIX = "reinstall llama-cpp-python with portable flags: `make -B install` (see edgekit/llamacpp_build.py)"
REPORT_FIX = "please report this with `edgekit doctor --json`"

# the runtimes' distributions (those that install the same import package) are the runtime
# table's; the first found is reported
GENAI_DISTS = ("onnxruntime-genai", "onnxruntime-genai-cuda", "onnxruntime-genai-directml")
WORKSTATION_DISTS = {  # check name -> (distributions, what it is for); absent is info
    "tensorrt": (TENSORRT.distributions, "TensorRT engines"),
    "torch": (("torch",), "export from checkpoints"),
    "transformers": (("transformers",), "export from checkpoints"),
    "optimum": (("optimum",), "ONNX export"),
    "optimum-onnx": (("optimum-onnx",), "ONNX export"),
}
CLIENTS = {"ssh": ["ssh", "-V"], "scp": None, "sftp": None, "rsync": ["rsync", "--version"]}  # name -> version argv
CLIENT_PACKAGES = {"ssh": "openssh-client", "scp": "openssh-client", "sftp": "openssh-client", "rsync": "rsync"}

LLAMA_PROBE = "edgekit.doctor:probe_llama"
ORT_PROBE = "edgekit.doctor:probe_onnxruntime"
POWER_PROBE = "edgekit.doctor:probe_power"
CHILD_TIMEOUT_S = 30.0  # native.call's timeout for each child
# the doctor's deadline for every job, children included: native.call applies its timeout only once the
# child has closed its stdout, so a hung child is bounded by this (it is reported, and left to end itself)
DEADLINE_S = 35.0


@dataclass
class Check:
    name: str
    status: str                 # one of STATUSES
    detail: str                 # one line, cleaned
    fix: str | None = None      # for warn and missing
    data: dict = field(default_factory=dict)

    def __post_init__(self):
        assert self.status in STATUSES, self.status
        self.detail = clean(self.detail)


@dataclass
class Report:
    checks: list[Check]
    warnings: list[tuple[str, str]]

    @property
    def ok(self) -> bool:
        return not self.warnings

    def to_dict(self) -> dict:
        return {"checks": [asdict(c) for c in self.checks],
                "warnings": [{"problem": p, "fix": f} for p, f in self.warnings], "ok": self.ok}


# ---------------------------------------------------------------- pure parts

def parse_system_info(text: str) -> dict[str, int]:
    """Build features from `llama_print_system_info()`: every `NAME = <integer>` pair, in printed
    order, plus each backend section name (`CPU : ...`, `CUDA : ...`, `Metal : ...`) as NAME = 1.
    Pairs whose value is not one integer (CUDA's `ARCHS = 500,610,...`) are left out; older builds
    that print pairs without sections (`AVX = 1 | AVX2 = 0 | ...`) parse the same way."""
    features: dict[str, int] = {}
    for item in (text or "").split("|"):
        item = item.strip()
        section, sep, rest = item.partition(":")
        if sep and "=" not in section:
            name = section.strip()
            if re.fullmatch(r"[A-Za-z][\w.+-]*", name):
                features[name] = 1
            item = rest.strip()
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if eq and re.fullmatch(r"[A-Za-z][\w]*", key) and re.fullmatch(r"-?\d+", value):
            features[key] = int(value)
    return features


def system_info_sections(text: str) -> list[str]:
    """The backend section names of `llama_print_system_info()`, in printed order (e.g. CUDA, CPU)."""
    return [m.group(1) for m in re.finditer(r"(?:^|\|)\s*([A-Za-z][\w.+-]*)\s*:", text or "")]


def describe_system_info(text: str) -> str:
    """One line of a build's features per backend section: `CPU: AVX AVX2 ...; CUDA: ARCHS=900 USE_GRAPHS`
    (features that are 1 by name, other values as NAME=value, 0 left out); the text itself, folded to
    one line, when it has no sections."""
    parts = []
    for chunk in re.split(r"\|\s*(?=[A-Za-z][\w.+-]*\s*:)", text or ""):
        section, sep, rest = chunk.partition(":")
        if not sep or "=" in section:
            continue
        shown = []
        for pair in rest.split("|"):
            key, eq, value = (x.strip() for x in pair.partition("="))
            if eq and key and value != "0":
                shown.append(key if value == "1" else f"{key}={value}")
        parts.append(f"{section.strip()}: {' '.join(shown) or '-'}")
    return "; ".join(parts) if parts else " ".join((text or "").replace("|", " ").split())


def parse_cpu_flags(cpuinfo_text: str) -> set[str]:
    """The CPU flags every processor of /proc/cpuinfo lists (`flags` lines on x86, `Features` on
    Arm), lowercased: the intersection over processors, since a thread may run on any of them.
    Empty when the text has no such line (macOS, a container without /proc)."""
    line = re.compile(r"^(?:flags|features)[ \t]*:(.*)$", flags=re.MULTILINE | re.IGNORECASE)
    found = [set(m.group(1).lower().split()) for m in line.finditer(cpuinfo_text or "")]
    return set.intersection(*found) if found else set()


def feature_flags(machine: str) -> dict[str, str]:
    """The feature -> CPU flag table of `machine` (platform.machine() spelling); empty when unknown."""
    m = (machine or "").lower()
    if m in X86_MACHINES:
        return X86_FEATURE_FLAGS
    if m in ARM_MACHINES or m.startswith("armv8"):
        return ARM_FEATURE_FLAGS
    return {}


def missing_cpu_features(features: dict[str, int], cpu_flags: set[str], machine: str) -> list[tuple[str, str]]:
    """(feature, flag) for each instruction set the build turned on that the CPU flags lack.
    Empty when the flags are unknown (an empty set): nothing can be said then."""
    if not cpu_flags:
        return []
    table = feature_flags(machine)
    return [(f, table[f]) for f, on in features.items() if on == 1 and f in table and table[f] not in cpu_flags]


def build_warnings(features: dict[str, int], cpu_flags: set[str], machine: str) -> list[tuple[str, str]]:
    """(problem, fix) for a llama.cpp build's features on this CPU: an AMX build (it segfaults in
    ldtilecfg on Intel AMX CPUs, llama.cpp issue #20824), and instruction sets the build uses that
    the CPU lacks (it dies with SIGILL). None for a portable build on a CPU that has its features."""
    out = []
    amx = [f for f, on in features.items() if f.startswith("AMX") and on == 1]
    if amx:
        problem = (f"llama.cpp is built with {', '.join(amx)}: it segfaults in ldtilecfg on Intel CPUs with AMX "
                   "(llama.cpp issue #20824)")
        out.append((problem, PORTABLE_FIX + ", which turns AMX off"))
    missing = missing_cpu_features(features, cpu_flags, machine)
    if missing:
        names = ", ".join(f for f, _ in missing)
        flags = ", ".join(flag for _, flag in missing)
        problem = (f"llama.cpp is built with {names}, which this CPU lacks (no {flags} in /proc/cpuinfo): "
                   "it will die with SIGILL")
        out.append((problem, PORTABLE_FIX + " on a workstation, or the target's recipe from `edgekit targets --json` "
                             "on a device"))
    return out


def first_line(text: str) -> str:
    return next((ln for ln in (text or "").splitlines() if ln.strip()), "")


# ---------------------------------------------------------------- children (run by edgekit.native)


def probe_llama() -> dict:
    """In a child: llama-cpp-python's build (system info, GPU offload) and ggml's backend devices.

    It loads llama-cpp-python's own libllama with ctypes, as `import llama_cpp` does, without the
    package's Python side (numpy, jinja2, its chat formats: most of a second on a small CPU)."""
    lib_dir = llama_lib_dir()
    lib = _cdll(lib_dir, "llama")
    lib.llama_print_system_info.restype = ctypes.c_char_p
    lib.llama_print_system_info.argtypes = []
    lib.llama_supports_gpu_offload.restype = ctypes.c_bool
    lib.llama_supports_gpu_offload.argtypes = []
    info = lib.llama_print_system_info() or b""
    out = {"system_info": info.decode("utf-8", "replace"), "gpu_offload": bool(lib.llama_supports_gpu_offload()),
           "lib_dir": str(lib_dir), "devices": None, "devices_error": None}
    try:
        out["devices"] = ggml_devices(lib_dir)
    except Exception as e:  # noqa: BLE001 -- no libggml beside libllama, a build without these symbols: say so
        out["devices_error"] = f"{type(e).__name__}: {e}"
    return out


def llama_lib_dir():
    """Where llama-cpp-python's native libraries are: LLAMA_CPP_LIB_PATH (which llama_cpp honours
    too), else the `lib` folder of the installed llama_cpp package (found, not imported)."""
    if os.environ.get("LLAMA_CPP_LIB_PATH"):
        return Path(os.environ["LLAMA_CPP_LIB_PATH"])
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise EdgekitError("llama-cpp-python's metadata is installed but its llama_cpp package is not",
                           "reinstall it: `make -B install`")
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


def _cdll(lib_dir, name: str):
    """lib<name> from `lib_dir` (.so, .dylib or .dll, as llama_cpp's loader looks for them)."""
    if sys.platform == "win32":
        os.add_dll_directory(str(lib_dir))
        candidates = [f"{name}.dll", f"lib{name}.dll"]
    else:
        candidates = [f"lib{name}.so", f"lib{name}.dylib"]
    for c in candidates:
        if (lib_dir / c).exists():
            return ctypes.CDLL(str(lib_dir / c))
    raise FileNotFoundError(f"no lib{name} in {lib_dir}")


def ggml_devices(lib_dir) -> list[dict]:
    """ggml's backend devices (name, description) through its C API in the libggml next to
    libllama (already loaded with it, so the same handle comes back)."""
    lib = _cdll(Path(lib_dir), "ggml")
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_count.argtypes = []
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for fn in (lib.ggml_backend_dev_name, lib.ggml_backend_dev_description):
        fn.restype = ctypes.c_char_p
        fn.argtypes = [ctypes.c_void_p]
    devices = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        if not dev:
            continue
        name, desc = lib.ggml_backend_dev_name(dev), lib.ggml_backend_dev_description(dev)
        devices.append({"name": (name or b"").decode("utf-8", "replace"),
                        "description": (desc or b"").decode("utf-8", "replace")})
    return devices


def probe_onnxruntime() -> dict:
    """In a child: onnxruntime's version and execution providers."""
    import onnxruntime as ort

    return {"version": getattr(ort, "__version__", None), "providers": list(ort.get_available_providers())}


def probe_power(keys: list[str]) -> list[dict]:
    """In a child: open each sensor of `keys` (edgekit.power.SENSORS), note its name or why not, close it."""
    out = []
    for key in keys:
        try:
            sensor, why = open_sensor(key)
        except Exception as e:  # noqa: BLE001 -- a sensor's own bug is its line, not the other sensors'
            out.append({"key": key, "name": None, "excludes": None, "why": f"{type(e).__name__}: {e}"})
            continue
        if sensor is None:
            out.append({"key": key, "name": None, "excludes": None, "why": _sensor_reason(key, why or "")})
            continue
        try:
            out.append({"key": key, "name": str(sensor.name), "excludes": str(getattr(sensor, "excludes", "")),
                        "why": None})
        finally:
            with contextlib.suppress(Exception):
                sensor.close()
    return out


def _sensor_reason(key: str, why: str) -> str:
    """open_sensor's 'no power sensor readable here (<key>: <reason>)' -> '<reason>'."""
    inner = re.fullmatch(r"no power sensor readable here \((.*)\)", why, flags=re.DOTALL)
    text = inner.group(1) if inner else why
    return text[len(key) + 2:] if text.startswith(f"{key}: ") else text


# ---------------------------------------------------------------- the checks


def dist_version(*names: str) -> tuple[str, str] | None:
    """(distribution, version) of the first of `names` that is installed, from its metadata only."""
    for name in names:
        try:
            return name, clean(metadata.version(name), 80)
        except (metadata.PackageNotFoundError, OSError, ValueError):  # absent, or metadata unreadable
            continue
    return None


def installed_dists(names) -> list[tuple[str, str]]:
    seen, out = set(), []
    for name in names:
        found = dist_version(name)
        if found and found[0].replace("_", "-").lower() not in seen:
            seen.add(found[0].replace("_", "-").lower())
            out.append(found)
    return out


class _Job:
    """A function run in a daemon thread; `result(deadline)` is (value, None), or (None, the exception
    it raised), or (None, TimeoutError()) at the deadline (a daemon thread never keeps the doctor from
    exiting)."""

    def __init__(self, fn: Callable, *args: Any):
        self._done = threading.Event()
        self.value: Any = None
        self.error: Exception | None = None
        threading.Thread(target=self._run, args=(fn, args), daemon=True, name="edgekit-doctor").start()

    def _run(self, fn, args):
        try:
            self.value = fn(*args)
        except Exception as e:  # noqa: BLE001 -- handed to result(): every failure is a check line
            self.error = e
        finally:
            self._done.set()

    def result(self, deadline: float) -> tuple[Any, Exception | None]:
        if not self._done.wait(max(0.0, deadline - time.monotonic())):
            return None, TimeoutError()
        return self.value, self.error


def _native(target: str, *args: Any, library: str, what: str, fixes: dict[str, str] | None = None) -> Any:
    return call(target, *args, library=library, what=what, timeout_s=CHILD_TIMEOUT_S, fixes=fixes)


LLAMA_CRASH_FIXES = {
    "SIGILL": "this llama-cpp-python was built for another CPU (a native wheel from another machine?): "
              + PORTABLE_FIX,
    "SIGSEGV": PORTABLE_FIX + ", which turns AMX off (llama.cpp issue #20824); if it persists, " + REPORT_FIX,
    **{sig: REPORT_FIX for sig in ("SIGABRT", "SIGBUS", "SIGFPE")},
}


def ort_crash_fixes(dist: str, version: str) -> dict[str, str]:
    """The fix per signal when importing onnxruntime kills its child (SIGKILL keeps native's: OOM)."""
    reinstall = f"reinstall it for this machine: `pip install --force-reinstall --no-deps {dist}=={version}`"
    return {sig: f"{reinstall}; if it persists, {REPORT_FIX}" for sig in ("SIGILL", "SIGSEGV", "SIGABRT", "SIGBUS",
                                                                         "SIGFPE")}


POWER_CRASH_FIXES = {sig: "a power sensor's native library (NVML: nvidia-ml-py and the NVIDIA driver) crashed: "
                          "check the driver with nvidia-smi, or uninstall nvidia-ml-py to measure without it; "
                          + REPORT_FIX for sig in ("SIGILL", "SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE")}


def _target_job() -> tuple[Any, dict, dict[str, str]]:
    facts = gather_facts(LocalTransport())
    spec, seen = detect(facts)
    return spec, seen, facts


def sensor_keys(spec_sensor: str | None) -> list[str]:
    """The power sensors worth trying here: the target's own (and what else reads that device, per
    DEVICE_SENSORS), then RAPL and NVML."""
    keys = device_sensors().get(spec_sensor or "") or ([spec_sensor] if spec_sensor else [])
    return [k for k in dict.fromkeys([*keys, "rapl", "nvml"]) if k in SENSORS]


def _power_job(target: _Job, deadline: float) -> list[dict]:
    found, error = target.result(deadline)
    own = None if error else found[0].power_sensor  # no target: still try the generic sensors
    return _native(POWER_PROBE, sensor_keys(own), library="the power sensors", what="opening the power sensors",
                   fixes=POWER_CRASH_FIXES)


def _client_job() -> dict[str, dict]:
    out = {}
    for name, version_cmd in CLIENTS.items():
        path = shutil.which(name)
        version = None
        if path and version_cmd:
            try:
                p = subprocess.run([path, *version_cmd[1:]], capture_output=True, text=True, timeout=3, check=False,
                                   errors="replace", stdin=subprocess.DEVNULL)
                version = clean(first_line(p.stderr if name == "ssh" else p.stdout) or first_line(p.stderr), 120)
            except (OSError, subprocess.SubprocessError):
                version = None
        out[name] = {"path": path, "version": version}
    return out


def _problem(e: Exception, what: str) -> tuple[str, str]:
    if isinstance(e, TimeoutError):
        return f"{what} did not finish within {DEADLINE_S:g} s", "check the machine's load, or " + REPORT_FIX
    if isinstance(e, EdgekitError):
        return clean(e.problem, 1000), clean(e.fix or REPORT_FIX, 1000)  # the problem quotes the child's stderr
    return clean(f"{what} failed: {type(e).__name__}: {e}", 1000), REPORT_FIX


def tensorrt_tools() -> dict[str, str | None]:
    """What this machine has of TensorRT, by path and metadata: trtexec (PATH or JetPack's),
    Edge-LLM's llm_build and llm_bench, the CUDA runtime library, and the Python bindings
    ("python bindings" "yes" and "tensorrt" its version; a JetPack venv links them on deploy)."""
    found = TENSORRT.installed()
    cudart = find_libcudart()
    return {"trtexec": find_trtexec(), "llm_build": find_tool("llm_build"), "llm_bench": find_tool("llm_bench"),
            "libcudart": cudart, "python bindings": "yes" if found else None,
            "tensorrt": f"{found[1]} ({found[0]})" if found else None}


def run_doctor(llama_probe: str | None = None, ort_probe: str | None = None, llama_args: tuple = ()) -> Report:
    """Every check of this install (see the module docstring). `llama_probe`/`ort_probe` name the
    child functions ("module:function", the llama one called with `llama_args`; by default
    LLAMA_PROBE and ORT_PROBE, read at call time); tests pass ones that really crash."""
    llama_probe, ort_probe = llama_probe or LLAMA_PROBE, ort_probe or ORT_PROBE
    deadline = time.monotonic() + DEADLINE_S
    llama_dist = dist_version("llama-cpp-python", "llama_cpp_python")
    ort_dists = installed_dists(ONNXRUNTIME.distributions)
    # start everything slow at once: two native children, the facts (then the power child), clients
    llama_job = _Job(lambda: _native(llama_probe, *llama_args, library="llama.cpp",
                                     what="loading llama.cpp to read its build (llama_print_system_info)",
                                     fixes=LLAMA_CRASH_FIXES)) if llama_dist else None
    ort_job = _Job(lambda: _native(ort_probe, library="onnxruntime", what="importing onnxruntime",
                                   fixes=ort_crash_fixes(*ort_dists[0]))) if ort_dists else None
    target_job = _Job(_target_job)
    power_job = _Job(_power_job, target_job, deadline)
    client_job = _Job(_client_job)

    checks: list[Check] = []
    warnings: list[tuple[str, str]] = []

    def add(name: str, status: str, detail: str, fix: str | None = None, data: dict | None = None,
            warn: tuple[str, str] | None = None) -> None:
        checks.append(Check(name, status, detail, fix, data or {}))
        if status == "warn" or warn:  # a warning is a problem whatever its status (llama-cpp-python missing)
            problem, why_fix = warn or (f"{name}: {detail}", fix or REPORT_FIX)
            warnings.append((clean(problem, 1000), clean(why_fix, 1000)))

    py_ok = sys.version_info >= (3, 10)
    add("python", "ok" if py_ok else "warn",
        f"{platform.python_version()} {platform.python_implementation()} ({sys.executable})",
        None if py_ok else "edgekit needs Python 3.10 or newer", {"executable": sys.executable})
    add("edgekit", "ok", __version__, data={"version": __version__})

    # the target and this CPU's flags
    spec, facts, cpu_flags = None, {}, set()
    machine = platform.machine()
    found, error = target_job.result(deadline)
    if error is None:
        spec, seen, facts = found
        machine = clean((facts.get("uname_m") or "").strip(), 40) or machine
        bits = [f"{v}" for k, v in seen.items() if v not in (None, "") and k in ("model", "machine", "os")]
        if seen.get("cpus"):
            bits.append(f"{seen['cpus']} CPUs")
        if seen.get("ram_gb"):
            bits.append(f"{seen['ram_gb']} GB")
        add("target", "info", f"{spec.name} ({spec.family})" + (f": {', '.join(map(str, bits))}" if bits else ""),
            data={"name": spec.name, "family": spec.family, "detected": {k: clean(v) if isinstance(v, str) else v
                                                                          for k, v in seen.items()}})
    else:
        problem, fix = _problem(error, "detecting the target")
        add("target", "warn", problem, fix, warn=(problem, fix))
    cpu_flags = parse_cpu_flags(facts.get("cpuinfo") or "")
    table = feature_flags(machine)
    if cpu_flags:
        has = [f for f in dict.fromkeys(table.values()) if f in cpu_flags]
        lacks = [f for f in dict.fromkeys(table.values()) if f not in cpu_flags]
        add("CPU flags", "info",
            f"{len(cpu_flags)} flags in /proc/cpuinfo; has: {' '.join(has) or '-'}; lacks: {' '.join(lacks) or '-'}",
            data={"machine": machine, "flags": sorted(cpu_flags)})
    else:
        add("CPU flags", "info", f"not readable here (no flags in /proc/cpuinfo on {machine}): the llama.cpp "
                                 "build's instruction sets are not checked against this CPU", data={"machine": machine})
    on_device = spec is not None and spec.family != "linux"

    def llama_fix() -> str:
        if on_device:
            return f"install it for {spec.name}: `{install_recipes(spec)['llama.cpp']}`"
        return "`make install` (a portable build, see edgekit/llamacpp_build.py)"

    # llama.cpp
    if not llama_dist:
        fix = llama_fix()
        add("llama-cpp-python", "missing", "not installed: GGUF export, inspect and bench need it", fix,
            warn=("llama-cpp-python is not installed", fix))
    else:
        add("llama-cpp-python", "ok", llama_dist[1], data={"distribution": llama_dist[0], "version": llama_dist[1]})
        built, error = llama_job.result(deadline)
        if error:
            problem, fix = _problem(error, "loading llama.cpp")
            add("llama.cpp build", "warn", problem, fix, warn=(problem, fix))
        else:
            _llama_checks(built, cpu_flags, machine, spec, add, llama_fix)

    # onnxruntime
    if not ort_dists:
        add("onnxruntime", "missing", "not installed: ONNX bench needs it",
            f"install it for {spec.name}: `{_ort_recipe(spec)}`" if on_device else "pip install 'edgekit[onnx]'")
    else:
        name, version = ort_dists[0]
        add("onnxruntime", "ok", f"{version} ({name})", data={"distribution": name, "version": version})
        if len(ort_dists) > 1:
            listed = ", ".join(f"{n} {v}" for n, v in ort_dists)
            add("onnxruntime dists", "warn", f"{listed} are installed over each other (one package, `onnxruntime`)",
                f"keep one: pip uninstall {' '.join(n for n, _ in ort_dists)} and reinstall the one you need",
                data={"distributions": [list(d) for d in ort_dists]})
        got, error = ort_job.result(deadline)
        if error:
            problem, fix = _problem(error, "importing onnxruntime")
            add("onnxruntime providers", "warn", problem, fix, warn=(problem, fix))
        else:
            providers = [clean(p, 80) for p in got.get("providers") or []]
            add("onnxruntime providers", "ok" if providers else "warn", ", ".join(providers) or "none",
                None if providers else REPORT_FIX, data={"providers": providers,
                                                         "version": clean(got.get("version"), 80)})
    genai = dist_version(*GENAI_DISTS)
    if genai:
        add("onnxruntime-genai", "ok", f"{genai[1]} ({genai[0]})", data={"distribution": genai[0], "version": genai[1]})
    else:
        add("onnxruntime-genai", "missing", "not installed (the reference runtime of benchmarks/ort_vs_genai.py)",
            "pip install onnxruntime-genai")

    # workstation-only libraries: metadata only, never imported; absent is info
    for name, (dists, purpose) in WORKSTATION_DISTS.items():
        found = dist_version(*dists)
        if found:
            add(name, "ok", f"{found[1]}" + (f" ({found[0]})" if found[0] != name else ""),
                data={"distribution": found[0], "version": found[1]})
        else:
            add(name, "info", f"not installed (workstation-only: {purpose})")

    # TensorRT: what can build and run engines here (paths and metadata only; nothing is loaded)
    tools = tensorrt_tools()
    names = [n for n, v in tools.items() if v and n != "tensorrt"]
    add(TENSORRT.doctor_check, "ok" if names else "info",
        ", ".join(f"{n} {tools[n]}" if n != "python bindings" else f"python bindings {tools['tensorrt']}"
                  for n in names) or "no trtexec, llm_build, llm_bench or TensorRT Python bindings here",
        data={"tools": names, **tools})

    # power sensors
    sensors, error = power_job.result(deadline)
    if error:
        problem, fix = _problem(error, "opening the power sensors")
        add("power sensors", "warn", problem, fix, warn=(problem, fix))
    for s in sensors or []:
        key = clean(s["key"], 40)
        if s["name"]:
            add(f"power: {key}", "ok", s["name"], data={"sensor": clean(s["name"]), "excludes": clean(s["excludes"])})
        else:
            add(f"power: {key}", "missing", s["why"] or "not readable here")

    # clients for devices over SSH
    clients, error = client_job.result(deadline)
    if error:
        add("ssh clients", "missing", _problem(error, "looking for ssh clients")[0])
    for name, c in (clients or {}).items():

        if c["path"]:
            add(name, "ok", c["version"] or clean(c["path"]), data={"path": clean(c["path"]), "version": c["version"]})
        elif name == "rsync":  # deploy resumes uploads with it where both ends have it, else over sftp
            add(name, "info", "not on PATH: uploads to and from this machine go over sftp (rsync resumes with "
                              "a checksum over the whole file)",
                f"install it for rsync uploads (Debian/Ubuntu: `sudo apt install {CLIENT_PACKAGES[name]}`)")
        else:
            add(name, "missing", "not on PATH: devices over SSH (--host) need it",
                f"install it (Debian/Ubuntu: `sudo apt install {CLIENT_PACKAGES.get(name, name)}`)")
    return Report(checks, warnings)


def _ort_recipe(spec) -> str:
    return install_recipes(spec)["onnxruntime"]


def _llama_checks(built: dict, cpu_flags: set[str], machine: str, spec, add, llama_fix) -> None:
    info = clean(built.get("system_info") or "", 2000)
    features = parse_system_info(info)
    sections = system_info_sections(info)
    add("llama.cpp build", "ok" if features else "warn",
        describe_system_info(info) or "llama_print_system_info() printed nothing",
        None if features else REPORT_FIX,
        data={"system_info": info, "features": features, "backends": sections,
              "lib_dir": clean(built.get("lib_dir") or "")})
    problems = build_warnings(features, cpu_flags, machine)
    if problems:
        for problem, fix in problems:
            add("llama.cpp vs CPU", "warn", problem, fix, warn=(problem, fix))
    elif not cpu_flags:
        add("llama.cpp vs CPU", "info", "not checked: this CPU's flags are not readable here")
    else:
        checked = [f for f, on in features.items() if on == 1 and f in feature_flags(machine)]
        add("llama.cpp vs CPU", "ok", f"this CPU has every instruction set of the build ({' '.join(checked) or '-'})")
    offload = bool(built.get("gpu_offload"))
    gpu_backends = [s for s in sections if s.upper() not in ("CPU", "BLAS", "RPC")]
    wants_gpu = spec is not None and spec.family != "linux" and spec.default_gpu_layers > 0
    if offload:
        add("llama.cpp GPU offload", "ok", f"yes ({', '.join(gpu_backends) or 'GPU'})", data={"gpu_offload": True})
    elif wants_gpu:
        problem = f"llama.cpp is built without GPU offload on {spec.name} ({spec.accelerator}): bench runs on the CPU"
        fix = llama_fix().replace("install it", "reinstall it", 1)
        add("llama.cpp GPU offload", "warn", problem, fix, data={"gpu_offload": False}, warn=(problem, fix))
    else:
        add("llama.cpp GPU offload", "info", "no (a CPU build)", data={"gpu_offload": False})
    devices = built.get("devices")
    if devices is None:
        add("llama.cpp devices", "info", f"not listed: {clean(built.get('devices_error') or 'unknown', 200)}")
    else:
        devices = [{"name": clean(d.get("name"), 80), "description": clean(d.get("description"), 160)}
                   for d in devices]
        add("llama.cpp devices", "info" if devices else "warn",
            "; ".join(f"{d['name']}: {d['description']}" if d["description"] else d["name"] for d in devices)
            or "ggml registered no device", None if devices else REPORT_FIX, data={"devices": devices})
