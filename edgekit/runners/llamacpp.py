"""GGUF through llama.cpp's C API (llama-cpp-python's low-level bindings), llama-bench's method.

pp: one prompt of n_prompt random tokens decoded in n_batch chunks (BOS first when
the vocabulary adds one), synchronised. tg: n_gen single-token decodes from an
empty KV cache, each synchronised. The KV cache is cleared before every
repetition and one warm-up of each test runs first. Token values are random:
speed does not depend on them, and llama-bench does the same.
"""

from __future__ import annotations

import ctypes
import functools
import time
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.llamacpp_log import GGML_LOG_LEVEL_CONT, GGML_LOG_LEVEL_ERROR, route_llama_log
from edgekit.runners import LoadedInContext

FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}

_LOG = {"errors": [], "last": 0}  # llama.cpp's last 20 error lines; the level of the line before


def _keep_errors(level: int, text: bytes) -> None:
    line = text.decode("utf-8", "replace").strip()
    if level == GGML_LOG_LEVEL_CONT:
        level = _LOG["last"]
        if level == GGML_LOG_LEVEL_ERROR and line and _LOG["errors"]:
            _LOG["errors"][-1] += " " + line
            return
    _LOG["last"] = level
    if level == GGML_LOG_LEVEL_ERROR and line:
        _LOG["errors"].append(line)
        del _LOG["errors"][:-20]


def quiet_llama_logs() -> list[str]:
    """Route llama.cpp's log to a list of its error lines (it prints everything by default).

    Returns that list; it is kept for the process (edgekit.llamacpp_log keeps the callback alive).
    """
    route_llama_log(_keep_errors)
    return _LOG["errors"]


def system_info_here() -> str:
    """llama.cpp's own account of its build (`llama_print_system_info`), in this process."""
    import llama_cpp as L

    return L.llama_print_system_info().decode(errors="replace").strip()


# The llama.cpp commit each pinned llama-cpp-python vendors (its CHANGELOG: "update llama.cpp to
# ggml-org/llama.cpp@0c1e57098"; the sdist's vendor/llama.cpp HEAD is 0c1e57098bba43ac...), as
# llama-bench spells build_commit (`git rev-parse --short HEAD`). Used only where the build itself
# does not know (ggml_commit() "unknown": built from a tree without git).
VENDORED_COMMIT = {"0.3.36": "0c1e570"}
SPLIT_MODES = {0: "none", 1: "layer", 2: "row", 3: "tensor"}    # llama-bench's split_mode_str
LAZY_MODES = {0: "off", 1: "auto", 2: "on"}                      # llama-bench's lazy_mode_str
GGML_DEVICE_CPU, GGML_DEVICE_GPU, GGML_DEVICE_IGPU, GGML_DEVICE_ACCEL = 0, 1, 2, 3  # enum ggml_backend_dev_type


@functools.cache
def _ggml():
    """libggml of the installed bindings through ctypes, with the prototypes used here (llama_cpp's
    own bindings have none of ggml's registry), or None where it cannot be loaded."""
    try:
        from llama_cpp._ggml import libggml as g
    except Exception:
        return None
    p, s, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    for name, args, res in (("ggml_commit", [], s), ("ggml_type_name", [ctypes.c_int], s),
                            ("ggml_backend_dev_count", [], i), ("ggml_backend_dev_get", [i], p),
                            ("ggml_backend_dev_type", [p], ctypes.c_int), ("ggml_backend_dev_description", [p], s),
                            ("ggml_backend_reg_count", [], i), ("ggml_backend_reg_get", [i], p),
                            ("ggml_backend_reg_name", [p], s), ("ggml_backend_reg_dev_count", [p], i)):
        try:
            fn = getattr(g, name)
        except AttributeError:
            return None
        fn.argtypes, fn.restype = args, res
    return g


def build_commit(raw: str | None, bindings_version: str | None) -> str:
    """llama-bench's build_commit of this build: `llama_commit()` is not in the shared libraries
    (it lives in llama.cpp's static common library), but ggml_commit() is, and when llama.cpp builds
    its ggml both run `git rev-parse --short HEAD` in the same tree. ggml adds "-dirty" where `git
    diff-index` sees changes; llama_commit() never does, so it is dropped (in the llama-cpp-python
    sdist it is spurious anyway: the index shipped in it has stale file times). Where the build knows
    no commit: the one the pinned bindings vendor (VENDORED_COMMIT), else "unknown" as llama.cpp says."""
    commit = (raw or "").strip().removesuffix("-dirty")
    if commit and commit != "unknown":
        return commit
    return VENDORED_COMMIT.get(bindings_version or "", "unknown")


def ggml_facts() -> dict:
    """What ggml itself says of this build and its devices, as llama-bench reports them: build_commit,
    cpu_info and gpu_info (the CPU/accelerator and GPU devices' descriptions, ", "-joined) and
    backends (the registered backends other than CPU, "," joined, "CPU" when none). {} without ggml."""
    import llama_cpp as L

    g = _ggml()
    if g is None:
        return {}
    devices = [g.ggml_backend_dev_get(i) for i in range(g.ggml_backend_dev_count())]
    kinds = [(g.ggml_backend_dev_type(d), (g.ggml_backend_dev_description(d) or b"").decode(errors="replace"))
             for d in devices]
    backends, rpc = [], False
    for reg in (g.ggml_backend_reg_get(i) for i in range(g.ggml_backend_reg_count())):
        name = (g.ggml_backend_reg_name(reg) or b"").decode(errors="replace")
        if name.startswith("RPC"):
            rpc = rpc or g.ggml_backend_reg_dev_count(reg) > 0
        elif name != "CPU":
            backends.append(name)
    backends += ["RPC"] if rpc else []
    return {"build_commit": build_commit((g.ggml_commit() or b"").decode(errors="replace"),
                                         getattr(L, "__version__", None)),
            "cpu_info": ", ".join(d for t, d in kinds if t in (GGML_DEVICE_CPU, GGML_DEVICE_ACCEL)),
            "gpu_info": ", ".join(d for t, d in kinds if t in (GGML_DEVICE_GPU, GGML_DEVICE_IGPU)),
            "backends": ",".join(backends) or "CPU"}


def ggml_type_name(type_id: int) -> str | None:
    g = _ggml()
    name = g.ggml_type_name(type_id) if g is not None else None
    return name.decode() if name else None


class LlamaCppRunner(LoadedInContext):
    """A GGUF through llama.cpp's C API (the Runner protocol of edgekit.runners)."""

    def __init__(self, path: Path, threads: int, gpu_layers: int = 0, ctx: int = 0, n_batch: int = 2048,
                 n_ubatch: int = 512, flash_attn: str = "auto", seed: int = 1234):
        self.path, self.threads, self.gpu_layers = Path(path), threads, gpu_layers
        self.ctx, self.n_batch, self.n_ubatch, self.flash_attn = ctx, n_batch, n_ubatch, flash_attn
        self.rng = np.random.default_rng(seed)
        self.model = self.context = None
        self.passed: dict = {}  # what load() passed to llama.cpp beyond the above (see result_settings)
        self.facts: dict = {"runtime": {}, "artifact": {}}  # what llama.cpp said at load (runtime_facts)

    # ------------------------------------------------------------ lifecycle

    @property
    def uses_gpu(self) -> bool:
        import llama_cpp as L

        return bool(self.gpu_layers) and bool(L.llama_supports_gpu_offload())

    def result_settings(self) -> dict:
        """The options edgekit sets, and once loaded what else it passed to llama.cpp: the library's
        defaults, which edgekit does not vary (KV cache types, split mode, main GPU, KQV and op
        offload, embeddings, load and lazy modes, repacking, host buffers), read back from the
        parameter structs it loaded with."""
        return {"llama_cpp": {"gpu_layers": self.gpu_layers, "n_batch": self.n_batch, "n_ubatch": self.n_ubatch,
                              "flash_attn": self.flash_attn, **self.passed}}

    def runtime_facts(self) -> dict:
        """What llama.cpp itself said at load, kept after close: {"runtime": build_commit, build_number,
        backends, cpu_info, gpu_info; "artifact": model_type (llama_model_desc), tensor_bytes
        (llama_model_size)}, each part the extra fields of RuntimeInfo and ArtifactInfo. build_number
        is None: llama_build_number() is not in the shared libraries (llama.cpp's static common
        library has it), and nothing else in the build records it."""
        return {"runtime": dict(self.facts["runtime"]), "artifact": dict(self.facts["artifact"])}

    def load(self) -> float:
        """Load model and context; returns seconds taken."""
        import llama_cpp as L

        errors = quiet_llama_logs()
        errors.clear()
        L.llama_backend_init()
        t0 = time.perf_counter()
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = self.gpu_layers
        self.model = L.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self.model:
            detail = f" ({errors[-1]})" if errors else ""
            raise EdgekitError(f"llama.cpp could not load {self.path}{detail}",
                               "check it with `edgekit inspect`; it may be truncated or from a newer llama.cpp")
        cparams = L.llama_context_default_params()
        cparams.n_ctx = self.ctx
        cparams.n_batch = self.n_batch
        cparams.n_ubatch = self.n_ubatch
        cparams.n_threads = cparams.n_threads_batch = self.threads
        cparams.flash_attn_type = FLASH_ATTN[self.flash_attn]
        cparams.swa_full = False  # as llama-bench
        cparams.no_perf = True
        self.context = L.llama_init_from_model(self.model, cparams)
        if not self.context:
            detail = f" ({errors[-1]})" if errors else ""
            raise EdgekitError(f"llama.cpp could not create a context of {self.ctx} tokens for {self.path.name}{detail}",
                               "lower --ctx or --gpu-layers (not enough memory)")
        self._record(L, mparams, cparams)
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.add_bos = bool(L.llama_vocab_get_add_bos(self.vocab))
        self.bos = L.llama_vocab_bos(self.vocab)
        self._buf = (L.llama_token * max(self.n_batch, 1))()
        self._tokens = np.frombuffer(self._buf, dtype=np.int32)  # a numpy view of the C array
        return time.perf_counter() - t0

    def _record(self, L, mparams, cparams) -> None:
        """Keep what was passed to llama.cpp and what it says of the build and the loaded model (the
        fields llama-bench reports; None where these bindings lack one)."""
        def field(params, name, convert=lambda v: v):
            value = getattr(params, name, None)
            return None if value is None else convert(value)

        load_mode = field(mparams, "load_mode", lambda v: L.llama_load_mode_name(v).decode())
        self.passed = {
            "type_k": field(cparams, "type_k", ggml_type_name), "type_v": field(cparams, "type_v", ggml_type_name),
            "split_mode": field(mparams, "split_mode", lambda v: SPLIT_MODES.get(v, str(v))),
            "main_gpu": field(mparams, "main_gpu", int), "offload_kqv": field(cparams, "offload_kqv", bool),
            "op_offload": field(cparams, "op_offload", bool), "embeddings": field(cparams, "embeddings", bool),
            "load_mode": load_mode, "lazy_mode": field(mparams, "lazy_mode", lambda v: LAZY_MODES.get(v, str(v))),
            "repack": field(mparams, "use_extra_bufts", bool), "no_host": field(mparams, "no_host", bool)}
        buf = ctypes.create_string_buffer(128)  # llama-bench's buffer: a longer description is cut the same
        L.llama_model_desc(self.model, buf, ctypes.sizeof(buf))
        self.facts = {"runtime": {**ggml_facts(), "build_number": None},
                      "artifact": {"model_type": buf.value.decode(errors="replace"),
                                   "tensor_bytes": int(L.llama_model_size(self.model))}}

    def close(self) -> None:
        import llama_cpp as L

        if self.context:
            L.llama_free(self.context)
            self.context = None
        if self.model:
            L.llama_model_free(self.model)
            self.model = None

    # ------------------------------------------------------------ facts

    def system_info(self) -> str:
        return system_info_here()

    def backend(self) -> str:
        import llama_cpp as L

        if L.llama_supports_gpu_offload():  # a GPU build offloads large batches even with 0 layers
            info = self.system_info().upper()
            for name in ("CUDA", "METAL", "VULKAN", "HIP", "SYCL"):
                if name in info:
                    return name.title() if name == "METAL" else name
            return "GPU"
        return "CPU"

    # ------------------------------------------------------------ tests

    def _decode(self, tokens: np.ndarray) -> None:
        import llama_cpp as L

        n = len(tokens)
        self._tokens[:n] = tokens
        rc = L.llama_decode(self.context, L.llama_batch_get_one(self._buf, n))
        if rc != 0:
            raise EdgekitError(f"llama_decode failed with code {rc}", "lower -p/-n or raise --ctx")

    def clear(self) -> None:
        import llama_cpp as L

        L.llama_memory_clear(L.llama_get_memory(self.context), False)

    def random_tokens(self, n: int) -> np.ndarray:
        tokens = self.rng.integers(0, self.n_vocab, size=n, dtype=np.int32)
        if n and self.add_bos:
            tokens[0] = self.bos
        return tokens

    def start(self, capacity: int) -> None:
        """The context's cache (allocated at load for --ctx tokens) emptied."""
        self.clear()

    def prompt(self, tokens: np.ndarray) -> None:
        import llama_cpp as L

        for done in range(0, len(tokens), self.n_batch):
            self._decode(tokens[done:done + self.n_batch])
        L.llama_synchronize(self.context)

    def step(self, token: int) -> None:
        import llama_cpp as L

        self._tokens[0] = token
        rc = L.llama_decode(self.context, L.llama_batch_get_one(self._buf, 1))
        if rc != 0:
            raise EdgekitError(f"llama_decode failed with code {rc}", "lower -p/-n or raise --ctx")
        L.llama_synchronize(self.context)

    def pick(self) -> int:
        import llama_cpp as L

        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self.context, -1), shape=(self.n_vocab,))
        return int(logits.argmax())

    def logits(self, ids) -> np.ndarray:
        """Every position's logits of one forward pass from an empty cache (the context needs
        n_ctx, n_batch and n_ubatch >= len(ids))."""
        import llama_cpp as L

        ids = list(ids)
        if len(ids) > min(self.n_batch, self.n_ubatch, self.ctx or len(ids)):
            raise ValueError(f"{len(ids)} tokens do not fit one batch of this context")
        self.clear()
        batch = L.llama_batch_init(len(ids), 0, 1)
        try:
            batch.n_tokens = len(ids)
            for i, token in enumerate(ids):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = True
            rc = L.llama_decode(self.context, batch)
            if rc != 0:
                raise EdgekitError(f"llama_decode failed with code {rc} on {len(ids)} tokens",
                                   "nothing was written; please report this checkpoint")
            L.llama_synchronize(self.context)
            out = np.ctypeslib.as_array(L.llama_get_logits(self.context), shape=(len(ids), self.n_vocab))
            return np.array(out, dtype=np.float32)
        finally:
            L.llama_batch_free(batch)
