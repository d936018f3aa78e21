"""What a TensorRT engine build needs, one rule for `edgekit plan` (its TRT rows) and for the builds
on a device (`export tensorrt --on` refuses a device that cannot hold the build before sending
anything). Pure.

- Edge-LLM's builder: its documentation asks for about 3-4x the parameter count in bytes of RAM;
  edgekit refuses below the lower end, 3 bytes a parameter (so the 1.5B distill, 5.3 GB, is planned
  to build on an 8 GB Orin Nano, the 7B, 23 GB, only on a 32/64 GB AGX Orin); a build between 3x and
  4x may still run out of memory.
- TensorRT's own builder (trtexec, the Python API): it reads the graph and holds the engine it
  writes, so at least the graph's bytes plus the engine's; measured with TensorRT-RTX on this
  workstation it took more (77M parameters, FP16: 1.39 GB RSS for a 154 MB graph and a 346 MB
  engine, the library's ~0.6 GB included: docs/tensorrt.md), so this is a lower bound.
"""

from __future__ import annotations

EDGELLM_BUILD_BYTES_PER_PARAM = 3


def build_peak_bytes(engine: str, n_params: int, graph_bytes: int, engine_bytes: int) -> int:
    """The build's peak memory: `engine` "generic" (TensorRT's builder) or "edgellm" (llm_build)."""
    if engine == "edgellm":  # its documented rule, whatever the precision (the builder streams the graph)
        return EDGELLM_BUILD_BYTES_PER_PARAM * n_params
    return graph_bytes + engine_bytes


def build_rule(engine: str) -> str:
    """The rule's words, for a refusal or a plan row."""
    return ("Edge-LLM's builder: 3-4 bytes a parameter" if engine == "edgellm"
            else "TensorRT's builder: at least the graph and the engine")


def device_build_problem(engine: str, peak_bytes: int, device_ram_bytes: int | None) -> str | None:
    """Why a device of `device_ram_bytes` cannot build it (None: it can, or its RAM is unknown).
    A Jetson's RAM is shared with its GPU: 90 % of MemTotal is what a build may use."""
    if not device_ram_bytes or peak_bytes <= 0.9 * device_ram_bytes:
        return None
    return (f"the engine build needs about {peak_bytes / 2**30:.1f} GiB ({build_rule(engine)}) and the device has "
            f"{device_ram_bytes / 2**30:.1f} GiB")
