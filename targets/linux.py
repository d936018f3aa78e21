"""Any other Linux host, x86-64 or arm64, with an NVIDIA dGPU when one is present: the
family that answers when no device family claims the facts.

Its specs carry no fixed bandwidth (edgekit measures it on the host, see
edgekit.roofline); the NVIDIA variant comes from `nvidia-smi`'s CSV query. The state
commands here (cpufreq governor and clock, thermal zones) are shared by the Linux-based
device families. It provides edgekit.targets.family.Family, as every family module does.
"""

from __future__ import annotations

from edgekit.targets.specs import TargetSpec, clean, cpu_count, ram_gb

FAMILY = "linux"

SPECS = [
    TargetSpec("linux", FAMILY, None, None, "any x86-64 or arm64 CPU", None, "none",
               (), "", ("CPUExecutionProvider",), "rapl", 0,
               ("bandwidth measured on the host (edgekit.roofline); threads = the host's cores",)),
    TargetSpec("linux-nvidia", FAMILY, None, None, "any x86-64 or arm64 CPU", None, "NVIDIA dGPU (CUDA)",
               (), "-DGGML_CUDA=on", ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
               "nvml", 99, ("GPU name and memory from nvidia-smi; bandwidth measured on the host",)),
]


def parse_nvidia_smi(text: str | None) -> list[dict]:
    """`name, memory.total [MiB], compute_cap` CSV lines (noheader, nounits), one per GPU."""
    gpus = []
    for line in (text or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[0] or not parts[1].isdigit():
            continue  # "No devices were found", driver errors
        gpus.append({"name": parts[0], "memory_mib": int(parts[1]),
                     "compute_cap": parts[2] if len(parts) > 2 and parts[2] not in ("", "[N/A]") else None})
    return gpus


def detect(facts: dict[str, str]) -> tuple[TargetSpec, dict]:
    seen: dict = {"model": clean(facts.get("device_tree_model")) or None,
                  "machine": clean(facts.get("uname_m")) or None,
                  "os": clean(facts.get("uname_s")) or None,
                  "cpus": cpu_count(facts.get("cpuinfo")), "ram_gb": ram_gb(facts)}
    gpus = parse_nvidia_smi(facts.get("nvidia_smi"))
    if gpus:
        seen["gpus"] = gpus
        return SPECS[1], seen
    return SPECS[0], seen


LLAMA_CPP_ENV = ""  # CMAKE_ARGS (the spec's) is all pip needs here


def onnxruntime_install(spec: TargetSpec) -> str:
    if spec.name == "linux-nvidia":
        return "pip install onnxruntime-gpu  # CUDA 12 wheels on PyPI; TensorRT EP needs TensorRT's libraries"
    return "pip install onnxruntime"


LINUX_STATE_COMMANDS = {
    "governor": "cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
    "cpu0_khz": "cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
    "thermal": "for z in /sys/class/thermal/thermal_zone*; do echo \"$(cat $z/type) $(cat $z/temp)\"; done",
}


def parse_thermal(text: str) -> dict[str, float]:
    """`<type> <millidegrees>` lines -> degrees C per zone (zones without a number skipped)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1]) / 1000
    return out


LINUX_STATE_PARSERS = {
    "governor": lambda t: t.strip() or None,
    "cpu0_khz": lambda t: int(t.strip()) if t.strip().isdigit() else None,
    "thermal": parse_thermal,
}
STATE_COMMANDS = LINUX_STATE_COMMANDS
STATE_PARSERS = LINUX_STATE_PARSERS

# no sensor of its own: `--power auto` reads NVML when the work runs on an NVIDIA GPU, else RAPL
SENSORS_IN_ORDER: tuple[str, ...] = ()
