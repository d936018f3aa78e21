"""Before anything is written on a device: does the deploy fit its disk and RAM, can it build
llama.cpp there. Pure functions of a parsed Device and what the deploy needs; RAM is judged by
the one fit rule plan uses (edgekit.plan: usable_memory, memory_need), so plan and deploy give
the same answer for the same device."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.device.facts import Device
from edgekit.errors import EdgekitError
from edgekit.plan import memory_need, overhead_bytes, usable_memory

# the device venv with numpy, pydantic, rich, gguf (~120 MB), when it is not there yet; a runtime's
# install is the runtime table's install_bytes
VENV_BYTES = 300 * 2**20


@dataclass
class Need:
    """What a deploy adds on the device (bytes), for the preflight."""

    model_bytes: int = 0             # model files not in the store yet
    venv_bytes: int = 0
    runtime_bytes: int = 0
    weights_bytes: int = 0           # the model in RAM
    kv_bytes: int = 0                # the KV cache at ctx
    ctx: int = 0
    n_vocab: int | None = None       # for the logits (plan's default when unknown)

    @property
    def disk_bytes(self) -> int:
        return self.model_bytes + self.venv_bytes + self.runtime_bytes

    @property
    def ram_bytes(self) -> int:
        return memory_need(self.weights_bytes, self.kv_bytes, self.n_vocab)

    @property
    def overhead_bytes(self) -> int:
        return overhead_bytes(self.n_vocab)


def gib(n: int | None) -> str:
    """Bytes for people: GiB from 1 GiB up, MiB below."""
    if n is None:
        return "?"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def preflight(device: Device, need: Need, host: str, family: str = "linux") -> list[str]:
    """Refuse (EdgekitError) a deploy the device cannot hold, with the numbers; the warnings of one
    that fits but is tight. RAM: plan's rule for the target `family` (usable_memory). Pure."""
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
        usable, why = usable_memory(family, total)
        if need.ram_bytes > usable:
            raise EdgekitError(
                f"the model does not fit in {host}'s RAM: weights {gib(need.weights_bytes)} + KV cache at ctx "
                f"{need.ctx} {gib(need.kv_bytes)} + runtime {gib(need.overhead_bytes)} = {gib(need.ram_bytes)}, "
                f"usable {gib(usable)} of {gib(total)} ({why})",
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
