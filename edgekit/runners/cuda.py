"""The few CUDA runtime calls a TensorRT runner needs (device memory, copies, one stream), through
ctypes on the system's libcudart: JetPack and every CUDA install have it, so a device needs no
Python CUDA package beside TensorRT's own bindings.

Contract: `CudaRuntime()` loads libcudart (EDGEKIT_LIBCUDART, else the names below, else an
EdgekitError naming what is missing); every call checks cudaError_t and raises an EdgekitError
with CUDA's own error string. Addresses are ints. Never ran on a GPU here (this machine has
none); the runner's logic is tested against a host-memory stand-in of the same methods.
"""

from __future__ import annotations

import ctypes
import os

from edgekit.errors import EdgekitError
from edgekit.tensorrt_tools import LIBCUDART_NAMES

H2D, D2H, D2D = 1, 2, 3            # cudaMemcpyKind
ATTR_CC_MAJOR, ATTR_CC_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor / Minor


def load_libcudart():
    names = [os.environ["EDGEKIT_LIBCUDART"]] if os.environ.get("EDGEKIT_LIBCUDART") else LIBCUDART_NAMES
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise EdgekitError("no CUDA runtime (libcudart) on this machine", "install CUDA (JetPack includes it), or point "
                       "EDGEKIT_LIBCUDART at libcudart.so")


class CudaRuntime:
    def __init__(self, lib=None):
        self.lib = lib or load_libcudart()
        self.lib.cudaGetErrorString.restype = ctypes.c_char_p
        self.stream = self._new_stream()

    def _check(self, err: int, what: str) -> None:
        if err:
            text = self.lib.cudaGetErrorString(err).decode(errors="replace")
            raise EdgekitError(f"CUDA failed {what}: {text} (error {err})",
                               "check the GPU is free and the model fits its memory (nvidia-smi / tegrastats)")

    def _new_stream(self) -> int:
        s = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreate(ctypes.byref(s)), "creating a stream")
        return s.value or 0

    def malloc(self, nbytes: int) -> int:
        p = ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(max(int(nbytes), 1))),
                    f"allocating {nbytes} bytes")
        return p.value or 0

    def free(self, ptr: int) -> None:
        if ptr:
            self.lib.cudaFree(ctypes.c_void_p(ptr))

    def copy(self, dst: int, src: int, nbytes: int, kind: int) -> None:
        """cudaMemcpyAsync on the runner's stream (a host side must outlive the next sync)."""
        self._check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes),
                                             ctypes.c_int(kind), ctypes.c_void_p(self.stream)), "copying")

    def sync(self) -> None:
        self._check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(self.stream)), "running the engine")

    def device(self) -> tuple[str, str]:
        """(GPU name, compute capability "8.7") of device 0."""
        dev = ctypes.c_int()
        self._check(self.lib.cudaGetDevice(ctypes.byref(dev)), "reading the device")
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.cudaDeviceGetAttribute(ctypes.byref(major), ATTR_CC_MAJOR, dev), "reading the device")
        self._check(self.lib.cudaDeviceGetAttribute(ctypes.byref(minor), ATTR_CC_MINOR, dev), "reading the device")
        props = ctypes.create_string_buffer(16384)  # cudaDeviceProp begins with char name[256]; it is under 2 KiB
        get = getattr(self.lib, "cudaGetDeviceProperties_v2", None) or self.lib.cudaGetDeviceProperties
        name = props.raw[:256].split(b"\0", 1)[0].decode(errors="replace") if get(props, dev) == 0 else "CUDA GPU"
        return name, f"{major.value}.{minor.value}"

    def close(self) -> None:
        if self.stream:
            self.lib.cudaStreamDestroy(ctypes.c_void_p(self.stream))
            self.stream = 0
