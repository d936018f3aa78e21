"""Device specs and detection from facts (command outputs), one entry per device variant.

Every figure names its source. Detection is a pure function of recorded facts, so it is
tested on fixture files; `edgekit probe` gathers the facts through a Transport.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class TargetSpec:
    name: str
    family: str                    # rpi5, jetson, apple-m, linux
    ram_gb: float | None
    bandwidth_gb_s: float | None   # peak DRAM bandwidth
    cpu: str
    big_cores: int | None          # runner default threads
    accelerator: str
    power_modes: tuple[str, ...] = ()
    llama_cpp_cmake_args: str = ""  # CMAKE_ARGS for pip install llama-cpp-python on the device
    onnxruntime_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    power_sensor: str | None = None  # key of edgekit.power.SENSORS
    default_gpu_layers: int = 0
    sources: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        return {**asdict(self), "install": install_recipes(self)}


LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"


def install_recipes(spec: "TargetSpec") -> dict[str, str]:
    """Shell commands that install each runtime on the device."""
    cmake = f'CMAKE_ARGS="{spec.llama_cpp_cmake_args}" ' if spec.llama_cpp_cmake_args.startswith("-D") else ""
    ort = {"jetson": "pip install onnxruntime-gpu  # JetPack wheel from NVIDIA's Jetson index for your JetPack",
           "apple-m": "pip install onnxruntime  # includes CoreMLExecutionProvider"}.get(spec.family,
                                                                                          "pip install onnxruntime")
    return {"llama.cpp": f"{cmake}pip install --no-cache-dir {LLAMA_CPP_PYTHON}", "onnxruntime": ort}


JETSON_CUDA = "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=87"  # Orin: Ampere sm_87, JetPack's CUDA
JETSON_ORT = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
APPLE_ORT = ("CoreMLExecutionProvider", "CPUExecutionProvider")

SPECS: dict[str, TargetSpec] = {s.name: s for s in [
    TargetSpec("rpi5-8gb", "rpi5", 8, 17.1, "4x Cortex-A76 @ 2.4 GHz", 4, "none usable by LLM runtimes",
               llama_cpp_cmake_args="-DGGML_NATIVE=ON", power_sensor="rpi5",
               sources=("Raspberry Pi 5 product brief: BCM2712, 4x A76 2.4 GHz, LPDDR4X-4267",
                        "bandwidth: 32-bit LPDDR4X-4267 = 4267 MT/s x 4 B = 17.1 GB/s")),
    TargetSpec("rpi5-4gb", "rpi5", 4, 17.1, "4x Cortex-A76 @ 2.4 GHz", 4, "none usable by LLM runtimes",
               llama_cpp_cmake_args="-DGGML_NATIVE=ON", power_sensor="rpi5",
               sources=("Raspberry Pi 5 product brief",)),
    TargetSpec("jetson-agx-orin-64gb", "jetson", 64, 204.8, "12x Cortex-A78AE", 12,
               "Ampere GPU, 2048 CUDA cores, 64 Tensor Cores", ("MAXN", "15W", "30W", "50W"),
               JETSON_CUDA, JETSON_ORT, "jetson", 99,
               ("NVIDIA Jetson AGX Orin series data sheet: 256-bit LPDDR5 204.8 GB/s, 12-core A78AE, 2048-core GPU",)),
    TargetSpec("jetson-agx-orin-32gb", "jetson", 32, 204.8, "8x Cortex-A78AE", 8,
               "Ampere GPU, 1792 CUDA cores, 56 Tensor Cores", ("MAXN", "15W", "30W", "40W"),
               JETSON_CUDA, JETSON_ORT, "jetson", 99,
               ("NVIDIA Jetson AGX Orin series data sheet: 256-bit LPDDR5 204.8 GB/s, 8-core A78AE",)),
    TargetSpec("jetson-orin-nx-16gb", "jetson", 16, 102.4, "8x Cortex-A78AE", 8,
               "Ampere GPU, 1024 CUDA cores", ("MAXN", "10W", "15W", "25W"), JETSON_CUDA, JETSON_ORT, "jetson", 99,
               ("NVIDIA Jetson Orin NX series data sheet: 128-bit LPDDR5 102.4 GB/s; module exposes VDD_IN",)),
    TargetSpec("jetson-orin-nano-8gb", "jetson", 8, 68.0, "6x Cortex-A78AE", 6,
               "Ampere GPU, 1024 CUDA cores", ("MAXN", "7W", "15W"), JETSON_CUDA, JETSON_ORT, "jetson", 99,
               ("NVIDIA Jetson Orin Nano series data sheet: 128-bit LPDDR5 68 GB/s (102 GB/s in Super mode)",)),
    *[TargetSpec(f"apple-{chip.lower().replace(' ', '-')}", "apple-m", None, bw, cpu, big, "Apple GPU (Metal)",
                 (), "-DGGML_METAL=on", APPLE_ORT, "powermetrics", 99,
                 (f"Apple {chip} specifications (newsroom / support pages): unified memory bandwidth {bw} GB/s",))
      for chip, bw, cpu, big in [
          ("M1", 68.25, "4P+4E", 4), ("M1 Pro", 200, "8P+2E", 8), ("M1 Max", 400, "8P+2E", 8),
          ("M1 Ultra", 800, "16P+4E", 16), ("M2", 100, "4P+4E", 4), ("M2 Pro", 200, "8P+4E", 8),
          ("M2 Max", 400, "8P+4E", 8), ("M2 Ultra", 800, "16P+8E", 16), ("M3", 100, "4P+4E", 4),
          ("M3 Pro", 150, "6P+6E", 6), ("M3 Max", 400, "12P+4E", 12), ("M4", 120, "4P+6E", 4),
          ("M4 Pro", 273, "10P+4E", 10), ("M4 Max", 546, "12P+4E", 12)]],
    TargetSpec("linux", "linux", None, None, "any x86-64 or arm64 CPU", None, "NVIDIA dGPU when present",
               (), "-DGGML_CUDA=on (with an NVIDIA GPU)", ("CUDAExecutionProvider", "CPUExecutionProvider"),
               "rapl", 0, ("bandwidth measured on the host (edgekit.roofline)",)),
]}

# name -> (command, what it reads); `edgekit probe --record` stores each output under this name
FACT_COMMANDS: dict[str, str] = {
    "uname_m": "uname -m",
    "uname_s": "uname -s",
    "device_tree_model": "cat /proc/device-tree/model",
    "nv_tegra_release": "cat /etc/nv_tegra_release",
    "cpuinfo": "cat /proc/cpuinfo",
    "meminfo": "cat /proc/meminfo",
    "sysctl": "sysctl -n machdep.cpu.brand_string hw.memsize hw.model",
}


def _clean(text: str | None) -> str:
    return (text or "").replace("\x00", "").strip()


def detect(facts: dict[str, str]) -> tuple[TargetSpec, dict]:
    """The target a set of facts describes, and what was read off them."""
    model = _clean(facts.get("device_tree_model"))
    seen: dict = {"model": model or None}
    if model.startswith("Raspberry Pi 5"):
        ram = _ram_gb(facts)
        seen["ram_gb"] = ram
        return SPECS["rpi5-4gb" if ram and ram < 6 else "rpi5-8gb"], seen
    if "Jetson" in model or _clean(facts.get("nv_tegra_release")):
        ram = _ram_gb(facts)
        seen.update(ram_gb=ram, l4t=_l4t(facts.get("nv_tegra_release")))
        m = model.lower()
        if "orin nx" in m:
            return SPECS["jetson-orin-nx-16gb"], seen
        if "orin nano" in m:
            return SPECS["jetson-orin-nano-8gb"], seen
        return SPECS["jetson-agx-orin-32gb" if ram and ram < 48 else "jetson-agx-orin-64gb"], seen
    if _clean(facts.get("uname_s")) == "Darwin":
        lines = _clean(facts.get("sysctl")).splitlines()
        brand = lines[0].strip() if lines else ""
        seen.update(cpu=brand, ram_gb=round(int(lines[1]) / 2**30) if len(lines) > 1 and lines[1].isdigit() else None,
                    hw_model=lines[2].strip() if len(lines) > 2 else None)
        m = re.search(r"Apple (M\d)(?: (Pro|Max|Ultra))?", brand)
        if m:
            key = f"apple-{m.group(1).lower()}" + (f"-{m.group(2).lower()}" if m.group(2) else "")
            if key in SPECS:
                return SPECS[key], seen
    seen["machine"] = _clean(facts.get("uname_m")) or None
    return SPECS["linux"], seen


def _ram_gb(facts: dict[str, str]) -> float | None:
    from edgekit.targets.host import parse_meminfo_total_bytes

    total = parse_meminfo_total_bytes(facts.get("meminfo") or "")
    return round(total / 2**30, 1) if total else None


def _l4t(text: str | None) -> str | None:
    m = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", text or "")
    return f"R{m.group(1)}.{m.group(2)}" if m else None
