"""TensorRT engines built by `edgekit export tensorrt` (the generic path), run with TensorRT's
own Python bindings and the CUDA runtime, with the ONNX runner's method (edgekit.runners).

The engine has two optimisation profiles (converters.tensorrt.derive_profiles): prefill (a prompt
of 1..max_prompt tokens on an empty cache) and decode (one token on a cache of 0..max_context-1).
The runner keeps one execution context per profile, each bound to its profile once, and picks
the context whose profile holds a step's shapes (`choose_profile`, pure). Every input and
output is a named tensor (`set_input_shape`, `set_tensor_address`, `execute_async_v3` on the
runner's stream).

The cache never leaves the GPU: two buffer sets (KVCache, as the ONNX runner's), one bound as
`past_key_values.N.key/value` at the step's past length and the other as `present.N.key/value`
at past + new tokens, swapped after each step; each set is one allocation with a slot per
tensor, grown to twice its size when outgrown. The attention mask (all ones) is uploaded once at
the engine's full length and bound at the step's; only input ids and positions go up per step,
and only the last row of logits comes down, when the runner is asked to pick.

A CUDA graph of decode is not captured: a graph replays fixed shapes and addresses, and the past
length (so the bound shapes of every cache tensor) changes on every step; a graph per length
would be one capture per generated token. `cuda_graph` stays False in results.

Contract: `TensorRTRunner(folder, n_batch, trt=None, cuda=None)`; `trt` is the bindings module
(default: the builder's, `tensorrt` or `tensorrt_rtx`), `cuda` an object with malloc / free /
copy(dst, src, nbytes, kind) / sync / device / close and a `stream` (default
edgekit.runners.cuda.CudaRuntime). Without the bindings, load() is one EdgekitError saying the
device can build engines but not run them, and how to fix that. Never ran on a GPU: the tests
drive it with a host-memory CUDA and an engine stand-in that executes the same ONNX graph.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.manifest import ExportManifest
from edgekit.runners import LoadedInContext, TwoBufferSets
from edgekit.runners.cuda import D2H, H2D, CudaRuntime

BINDINGS = {"tensorrt-rtx": "tensorrt_rtx"}  # the builder's name -> its module; any other builder: tensorrt
ENGINE_FILE = "model.engine"


def choose_profile(profiles: list[dict[str, tuple]], seq: int, past: int) -> int | None:
    """The first profile whose input_ids and past-key ranges hold a step of `seq` new tokens on a
    cache of `past` (each profile: {"input_ids": (min, max) shapes, "past": (min, max) or None});
    None when none does."""
    for i, p in enumerate(profiles):
        lo, hi = p["input_ids"]
        if not lo[1] <= seq <= hi[1]:
            continue
        if p.get("past") is not None:
            plo, phi = p["past"]
            if not plo[2] <= past <= phi[2]:
                continue
        elif past:
            continue
        return i
    return None


def bindings_module(builder: str, trt=None):
    """The TensorRT Python module that runs engines of `builder`, or the EdgekitError of a device
    that has trtexec but not the bindings."""
    if trt is not None:
        return trt
    name = BINDINGS.get(builder.split()[0], "tensorrt")
    try:
        return importlib.import_module(name)
    except ImportError:
        raise EdgekitError(f"this machine can build TensorRT engines (trtexec) but not run them: Python has no "
                           f"`{name}` module (TensorRT's bindings)",
                           "deploy with --runtime tensorrt (it links JetPack's bindings into the venv; they come "
                           "from `sudo apt install python3-libnvinfer`), or make the venv with "
                           "--system-site-packages") from None


def engine_path(folder: Path, manifest: ExportManifest) -> Path:
    """model.engine in the folder, else where the manifest says the device that built it keeps it."""
    local = Path(folder) / ENGINE_FILE
    if local.is_file():
        return local
    if manifest.engine and manifest.engine.location and Path(manifest.engine.location).is_file():
        return Path(manifest.engine.location)
    where = manifest.engine.location if manifest.engine and manifest.engine.location else local
    raise EdgekitError(f"the engine {where} is not on this machine; it runs only where it was built "
                       f"({manifest.engine.built_on if manifest.engine else '?'})",
                       "bench it there: edgekit bench FOLDER --host DEST, or build it here: edgekit export tensorrt")


class TensorRTRunner(LoadedInContext):
    """A generic TensorRT engine folder (the Runner protocol of edgekit.runners)."""

    uses_gpu = True

    def __init__(self, folder: Path, n_batch: int = 2048, trt=None, cuda=None, seed: int = 1234):
        self.folder = Path(folder)
        self.manifest = ExportManifest.read(self.folder)
        if self.manifest.engine is None or self.manifest.engine.engine != "generic":
            raise EdgekitError(f"{self.folder} is not a generic TensorRT engine folder",
                               "pass a folder written by edgekit export tensorrt --engine generic")
        self.record = self.manifest.engine
        self.n_batch = max(1, min(n_batch, self.record.max_prompt))
        self._trt, self._cuda = trt, cuda
        self.rng = np.random.default_rng(seed)
        self.engine = None
        self.contexts: list = []
        self.version = self.record.tensorrt_version

    # ------------------------------------------------------------ lifecycle

    def load(self) -> None:
        trt = self.trt = bindings_module(self.record.builder, self._trt)
        path = engine_path(self.folder, self.manifest)
        self._own_cuda = self._cuda is None
        if self._own_cuda:
            self.cuda = CudaRuntime()
        else:
            self.cuda = self._cuda
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EdgekitError(f"TensorRT {getattr(trt, '__version__', '?')} could not load {path} (built by "
                               f"{self.record.builder} on {self.record.device or self.record.built_on})",
                               "an engine runs only with the TensorRT and GPU that built it: rebuild it here "
                               "(edgekit export tensorrt --on this device)")
        self.version = getattr(trt, "__version__", None) or self.version
        self._describe()
        self.contexts = []
        for index in range(self.engine.num_optimization_profiles):
            context = self.engine.create_execution_context()
            if context is None:
                raise EdgekitError("TensorRT could not make an execution context (GPU memory?)",
                                   "free GPU memory, or rebuild with a smaller --max-context")
            context.set_optimization_profile_async(index, self.cuda.stream)
            self.contexts.append(context)
        self.cuda.sync()
        self._buffers: list[int] = []
        self._mask = self._alloc(self.max_context * self.mask_dtype.itemsize)
        ones = np.ones(self.max_context, dtype=self.mask_dtype)
        self.cuda.copy(self._mask, ones.ctypes.data, ones.nbytes, H2D)
        self._ids = self._alloc(self.max_prompt * np.dtype(self.ids_dtype).itemsize)
        self._positions = self._alloc(self.max_prompt * np.dtype(self.ids_dtype).itemsize) if self.has_positions \
            else None
        self._logits_rows = self._last_rows = 0
        self._logits = 0
        self.cuda.sync()
        self.device_name, self.compute_capability = self.cuda.device()

    def _alloc(self, nbytes: int) -> int:
        ptr = self.cuda.malloc(nbytes)
        self._buffers.append(ptr)
        return ptr

    def _describe(self) -> None:
        trt, e = self.trt, self.engine
        names = [e.get_tensor_name(i) for i in range(e.num_io_tensors)]
        inputs = [n for n in names if e.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if "input_ids" not in inputs or "attention_mask" not in inputs or "logits" not in outputs:
            raise EdgekitError(f"the engine's tensors ({', '.join(names)}) are not a decoder with KV cache",
                               "build it from an edgekit ONNX export (edgekit export tensorrt)")
        self.past_names = sorted((n for n in inputs if n.startswith("past_key_values.")), key=_layer_key)
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]
        if not self.past_names or any(n not in outputs for n in self.present_names):
            raise EdgekitError("the engine has no matching past/present KV tensors",
                               "build it from an edgekit ONNX export (text-generation-with-past)")
        self.has_positions = "position_ids" in inputs
        np_type = trt.nptype
        self.ids_dtype = np.dtype(np_type(e.get_tensor_dtype("input_ids")))
        self.mask_dtype = np.dtype(np_type(e.get_tensor_dtype("attention_mask")))
        self.kv_dtype = np.dtype(np_type(e.get_tensor_dtype(self.past_names[0])))
        self.logits_dtype = np.dtype(np_type(e.get_tensor_dtype("logits")))
        past_shape = tuple(e.get_tensor_shape(self.past_names[0]))
        self.kv_heads, self.head_dim = int(past_shape[1]), int(past_shape[3])
        vocab = tuple(e.get_tensor_shape("logits"))[-1]
        self.n_vocab = int(vocab) if vocab > 0 else int(self.manifest.vocab_size)
        self.profiles = []
        for index in range(e.num_optimization_profiles):
            ids = e.get_tensor_profile_shape("input_ids", index)
            past = e.get_tensor_profile_shape(self.past_names[0], index)
            self.profiles.append({"input_ids": (tuple(ids[0]), tuple(ids[2])),
                                  "past": (tuple(past[0]), tuple(past[2])) if len(past) == 3 else None})
        self.max_prompt = max(p["input_ids"][1][1] for p in self.profiles)
        self.max_context = max((p["past"][1][2] if p["past"] else 0) + p["input_ids"][1][1] for p in self.profiles)
        self.n_batch = max(1, min(self.n_batch, self.max_prompt))
        self.bos = self._bos()

    def _bos(self) -> int | None:
        try:
            bos = json.loads((self.folder / "genai_config.json").read_text(encoding="utf-8"))["model"]["bos_token_id"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return bos if isinstance(bos, int) else None

    def close(self) -> None:
        cuda = getattr(self, "cuda", None)
        if cuda is not None:
            for ptr in getattr(self, "_buffers", []):
                cuda.free(ptr)
            self._buffers = []
            cache = getattr(self, "_cache", None)
            if cache is not None:
                cache.free()
            self._cache = None
        self.contexts, self.engine = [], None
        if cuda is not None and getattr(self, "_own_cuda", False):
            cuda.close()
        self.cuda = None

    # ------------------------------------------------------------ facts

    def backend(self) -> str:
        return "CUDA"

    def system_info(self) -> str:
        device = getattr(self, "device_name", None) or self.record.device or "?"
        return (f"TensorRT {self.version or '?'}; engine built by {self.record.builder} on "
                f"{self.record.built_on}; GPU {device}")

    def result_settings(self) -> dict:
        return {"tensorrt": {"gpu_layers": int(self.record.dims.get("layers", 0)), "n_batch": self.n_batch,
                             "engine": "generic", "precision": self.record.precision,
                             "tensorrt_version": self.version, "tool": "edgekit TensorRT runner",
                             "cuda_graph": False}}

    def runtime_facts(self) -> dict:
        return {"runtime": {"gpu_info": getattr(self, "device_name", None) or self.record.device or ""},
                "artifact": {}}

    # ------------------------------------------------------------ the step

    def forward(self, tokens: np.ndarray, cache: "KVCache", pos: int, rows: str = "last") -> np.ndarray | None:
        """Run `tokens` at positions pos.. on `cache` (advanced in place). rows: "last" brings the
        last row of logits back ([vocab] float32), "all" every row ([n, vocab]), "none" nothing."""
        n = len(tokens)
        end = pos + n
        if pos != cache.tokens:
            raise ValueError(f"the cache holds {cache.tokens} tokens, not {pos}")
        index = choose_profile(self.profiles, n, pos)
        if index is None:
            raise EdgekitError(f"the engine has no profile for {n} tokens on a cache of {pos} (prompts of up to "
                               f"{self.max_prompt} tokens on an empty cache, then one token at a time up to "
                               f"{self.max_context})", "rebuild with a larger --max-prompt / --max-context, or "
                               "lower -p/-n")
        context, cuda = self.contexts[index], self.cuda

        def shape(name: str, dims: tuple) -> None:
            if not context.set_input_shape(name, dims):
                raise EdgekitError(f"TensorRT refused {name} at {dims} in the {index} profile",
                                   "rebuild the engine from this model's ONNX export (edgekit export tensorrt)")

        cache.make_room(end)
        ids = np.ascontiguousarray(tokens, dtype=self.ids_dtype)
        cuda.copy(self._ids, ids.ctypes.data, ids.nbytes, H2D)
        held = [ids]
        shape("input_ids", (1, n))
        context.set_tensor_address("input_ids", self._ids)
        shape("attention_mask", (1, end))
        context.set_tensor_address("attention_mask", self._mask)
        if self.has_positions:
            positions = np.arange(pos, end, dtype=self.ids_dtype)
            cuda.copy(self._positions, positions.ctypes.data, positions.nbytes, H2D)
            held.append(positions)
            shape("position_ids", (1, n))
            context.set_tensor_address("position_ids", self._positions)
        past = (1, self.kv_heads, pos, self.head_dim)
        for name, ptr in zip(self.past_names, cache.front_ptrs):
            shape(name, past)
            context.set_tensor_address(name, ptr)
        for name, ptr in zip(self.present_names, cache.back_ptrs):
            context.set_tensor_address(name, ptr)
        out_rows = tuple(context.get_tensor_shape("logits"))[1]
        row_bytes = self.n_vocab * self.logits_dtype.itemsize
        if out_rows > self._logits_rows:
            if self._logits:
                cuda.free(self._logits)
                self._buffers.remove(self._logits)
            self._logits_rows = max(out_rows, 2 * self._logits_rows, 1)
            self._logits = self._alloc(self._logits_rows * row_bytes)
        context.set_tensor_address("logits", self._logits)
        self._last_rows = out_rows
        if not context.execute_async_v3(cuda.stream):
            raise EdgekitError(f"TensorRT failed running {n} tokens at position {pos}",
                               "lower -p/-n, or free GPU memory")
        out = None
        if rows != "none":
            first = out_rows - 1 if rows == "last" else 0
            host = np.empty((out_rows - first, self.n_vocab), dtype=self.logits_dtype)
            cuda.copy(host.ctypes.data, self._logits + first * row_bytes, host.nbytes, D2H)
            out = host
        cuda.sync()  # the step's host arrays (held) live until here
        del held
        cache.advance(end)
        if out is None:
            return None
        out = out.astype(np.float32)
        return out[-1] if rows == "last" else out

    def run(self, tokens: np.ndarray, cache: "KVCache", pos: int, rows: str = "none"):
        """A prompt in n_batch chunks (each within a profile); returns (the last chunk's logits, next position)."""
        out = None
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            out = self.forward(chunk, cache, pos, rows)
            pos += len(chunk)
        return out, pos

    # ------------------------------------------------------------ uses

    def logits(self, ids) -> np.ndarray:
        cache = KVCache(self, len(ids))
        try:
            return self.forward(np.asarray(ids), cache, 0, rows="all")
        finally:
            cache.free()

    def generate_greedy(self, prompt: list[int], n_new: int) -> list[int]:
        cache = KVCache(self, len(prompt) + n_new)
        try:
            row, pos = self.run(np.asarray(prompt), cache, 0, rows="last")
            out: list[int] = []
            for i in range(n_new):
                token = int(row.argmax())
                out.append(token)
                if i == n_new - 1:
                    break
                row = self.forward(np.array([token]), cache, pos, rows="last")
                pos += 1
            return out
        finally:
            cache.free()

    # ------------------------------------------------------------ the Runner protocol (bench)

    def random_tokens(self, n: int) -> np.ndarray:
        tokens = self.rng.integers(0, self.n_vocab, size=n, dtype=np.int64)
        if self.bos is not None and n:
            tokens[0] = self.bos
        return tokens

    def start(self, capacity: int) -> None:
        if getattr(self, "_cache", None) is not None:
            self._cache.free()
        self._cache, self._pos = KVCache(self, capacity), 0
        self._one = np.zeros(1, dtype=np.int64)

    def prompt(self, tokens: np.ndarray) -> None:
        _, self._pos = self.run(np.asarray(tokens), self._cache, self._pos, rows="none")

    def step(self, token: int) -> None:
        self._one[0] = token
        self.forward(self._one, self._cache, self._pos, rows="none")
        self._pos += 1

    def pick(self) -> int:
        """The greedy token after the last decode: its logits row is still in the engine's output
        buffer, so only that row is copied back."""
        if self._last_rows == 0:
            raise ValueError("nothing decoded yet")
        row_bytes = self.n_vocab * self.logits_dtype.itemsize
        rows = self._last_rows
        host = np.empty(self.n_vocab, dtype=self.logits_dtype)
        self.cuda.copy(host.ctypes.data, self._logits + (rows - 1) * row_bytes, host.nbytes, D2H)
        self.cuda.sync()
        return int(host.astype(np.float32).argmax())


def _layer_key(name: str) -> tuple[int, str]:
    parts = name.split(".")
    return (int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0, parts[-1])


class KVCache(TwoBufferSets):
    """One sequence's cache on the GPU: two buffer sets, used in turns (see the module's doc); each
    set one cudaMalloc with a 64-element-aligned slot per tensor."""

    def __init__(self, runner: TensorRTRunner, capacity: int):
        self.runner = runner
        super().__init__(capacity)

    def _allocate(self, capacity: int) -> tuple[int, list[int]]:
        r = self.runner
        slot = -(-r.kv_heads * capacity * r.head_dim // 64) * 64 * r.kv_dtype.itemsize  # bytes
        base = r.cuda.malloc(slot * len(r.past_names))
        return base, [base + i * slot for i in range(len(r.past_names))]

    def _release(self, handle) -> None:
        if handle:
            self.runner.cuda.free(handle)
