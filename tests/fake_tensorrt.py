"""A stand-in for TensorRT's Python bindings and the CUDA runtime, for the TensorRT runner's tests
(nothing here has a GPU). It keeps TensorRT's contract where the runner depends on it:
- `HostCuda`: "device" memory is host memory (ctypes buffers); copies are memmove; it counts
  allocations and refuses addresses it never handed out.
- `module(onnx_path)`: a `tensorrt`-like module whose engine executes that ONNX graph with
  onnxruntime on the CPU at the addresses bound to it. Shapes are set per named input and refused
  (False, as TensorRT does) outside the context's optimisation profile; outputs are written
  where their addresses point, at the shapes the graph gives. The engine's profiles are the
  ones derived from the graph (converters.tensorrt.derive_profiles), as a real build gets them.
"""

from __future__ import annotations

import ctypes
from types import SimpleNamespace

import numpy as np


class HostCuda:
    stream = 7

    def __init__(self):
        self.buffers: dict[int, ctypes.Array] = {}
        self.mallocs = 0
        self.copies: list[tuple[int, int]] = []  # (kind, nbytes)

    def malloc(self, nbytes: int) -> int:
        buf = ctypes.create_string_buffer(max(int(nbytes), 1))
        self.buffers[ctypes.addressof(buf)] = buf
        self.mallocs += 1
        return ctypes.addressof(buf)

    def free(self, ptr: int) -> None:
        if ptr:
            self.buffers.pop(ptr)

    def owns(self, ptr: int, nbytes: int) -> bool:
        return any(base <= ptr and ptr + nbytes <= base + len(b) for base, b in self.buffers.items())

    def copy(self, dst: int, src: int, nbytes: int, kind: int) -> None:
        device_side = dst if kind == 1 else src
        assert self.owns(device_side, nbytes), "a copy outside any allocation"
        ctypes.memmove(dst, src, nbytes)
        self.copies.append((kind, nbytes))

    def sync(self) -> None:
        pass

    def device(self) -> tuple[str, str]:
        return "Orin (host stand-in)", "8.7"

    def close(self) -> None:
        pass


ORT_TO_NP = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float16)": np.float16,
             "tensor(float)": np.float32}


def module(onnx_path, profiles, cuda: HostCuda):
    """A `tensorrt`-like module running `onnx_path` (profiles: edgekit.tensorrt_profiles.Profile)."""
    import onnxruntime as ort

    DataType = SimpleNamespace(INT64="INT64", INT32="INT32", HALF="HALF", FLOAT="FLOAT")
    TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    np_of = {"INT64": np.int64, "INT32": np.int32, "HALF": np.float16, "FLOAT": np.float32}
    dt_of = {np.dtype(v): k for k, v in np_of.items()}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ins = {i.name: i for i in session.get_inputs()}
    outs = {o.name: o for o in session.get_outputs()}
    names = [*ins, *outs]

    def static(shape):
        return tuple(d if isinstance(d, int) else -1 for d in shape)

    class Context:
        def __init__(self):
            self.profile, self.shapes, self.addresses = None, {}, {}

        def set_optimization_profile_async(self, index, stream):
            assert stream == cuda.stream
            self.profile = index
            return True

        def set_input_shape(self, name, dims):
            lo, _opt, hi = profiles[self.profile].shapes[name]
            if len(dims) != len(lo) or any(not a <= d <= b for a, d, b in zip(lo, dims, hi)):
                return False
            self.shapes[name] = tuple(dims)
            return True

        def set_tensor_address(self, name, ptr):
            assert name in names
            self.addresses[name] = ptr
            return True

        def get_tensor_shape(self, name):
            if name == "logits":
                vocab = outs["logits"].shape[2]
                rows = 1 if outs["logits"].shape[1] == 1 else self.shapes["input_ids"][1]
                return (1, rows, vocab)
            return self.shapes[name]

        def execute_async_v3(self, stream):
            assert stream == cuda.stream and self.profile is not None
            feed = {}
            for name, i in ins.items():
                dtype = np.dtype(ORT_TO_NP[i.type])
                shape = self.shapes[name]
                n = int(np.prod(shape)) * dtype.itemsize
                assert cuda.owns(self.addresses[name], n), f"{name} bound outside device memory"
                raw = ctypes.string_at(self.addresses[name], n)
                feed[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
            results = session.run(list(outs), feed)
            for name, value in zip(outs, results):
                value = np.ascontiguousarray(value)
                assert cuda.owns(self.addresses[name], value.nbytes), f"{name} written outside device memory"
                ctypes.memmove(self.addresses[name], value.ctypes.data, value.nbytes)
            return True

    class Engine:
        num_io_tensors = len(names)
        num_optimization_profiles = len(profiles)

        def get_tensor_name(self, i):
            return names[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name in ins else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            t = (ins.get(name) or outs[name]).type
            return dt_of[np.dtype(ORT_TO_NP[t])]

        def get_tensor_shape(self, name):
            return static((ins.get(name) or outs[name]).shape)

        def get_tensor_profile_shape(self, name, index):
            return list(profiles[index].shapes[name])

        def create_execution_context(self):
            return Context()

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if data else None

    return SimpleNamespace(__version__="10.3.0", Logger=Logger, Runtime=Runtime, DataType=DataType,
                           TensorIOMode=TensorIOMode, nptype=lambda t: np_of[t])
