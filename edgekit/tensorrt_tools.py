"""Where a machine's TensorRT tools are (reads the file system, runs nothing):
- `find_trtexec()`: trtexec on PATH, else JetPack's /usr/src/tensorrt/bin/trtexec (off PATH by default).
- `find_libcudart()`: EDGEKIT_LIBCUDART, the linker's cudart, or CUDA's own folders.
- `find_tool(name)`: Edge-LLM's llm_build / llm_bench at EDGEKIT_<NAME> (e.g. EDGEKIT_LLM_BENCH), on PATH,
  or in the build trees Edge-LLM's install guide makes (~/TensorRT-Edge-LLM/build/examples/llm/,
  /opt/TensorRT-Edge-LLM/build/examples/llm/).
Each returns a path or None.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
from pathlib import Path

JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
# the CUDA runtime library, as edgekit.runners.cuda loads it (names, then CUDA's own install folders)
LIBCUDART_NAMES = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0",
                   "/usr/local/cuda/lib64/libcudart.so", "/usr/local/cuda/targets/aarch64-linux/lib/libcudart.so")


def find_trtexec(jetpack: str = JETPACK_TRTEXEC) -> str | None:
    """trtexec on PATH, else JetPack's (not on PATH by default), else None."""
    found = shutil.which("trtexec")
    if found:
        return found
    return jetpack if os.path.isfile(jetpack) and os.access(jetpack, os.X_OK) else None


TOOL_DIRS = ("~/TensorRT-Edge-LLM/build/examples/llm", "/opt/TensorRT-Edge-LLM/build/examples/llm")


def find_tool(name: str) -> str | None:
    """Where this machine's `name` (llm_build, llm_bench) is, or None."""
    override = os.environ.get(f"EDGEKIT_{name.upper()}")
    if override:
        return override if os.access(override, os.X_OK) else None
    found = shutil.which(name)
    if found:
        return found
    for folder in TOOL_DIRS:
        path = Path(folder).expanduser() / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def find_libcudart() -> str | None:
    return os.environ.get("EDGEKIT_LIBCUDART") or ctypes.util.find_library("cudart") or next(
        (p for p in LIBCUDART_NAMES if p.startswith("/") and os.path.isfile(p)), None)
