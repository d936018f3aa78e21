"""GGUF through llama.cpp's C API (llama-cpp-python's low-level bindings), llama-bench's method.

pp: one prompt of n_prompt random tokens decoded in n_batch chunks (BOS first when
the vocabulary adds one), synchronised. tg: n_gen single-token decodes from an
empty KV cache, each synchronised. The KV cache is cleared before every
repetition and one warm-up of each test runs first. Token values are random:
speed does not depend on them, and llama-bench does the same.
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError

FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}

_LOG = {"callback": None, "errors": []}


def quiet_llama_logs() -> list[str]:
    """Route llama.cpp's log to a list of its error lines (it prints everything by default).

    Returns that list; it is kept for the process, so the C side never calls a freed callback.
    """
    import llama_cpp as L

    if _LOG["callback"] is None:
        def on_log(level, text, _user):
            try:
                if level == 3 and text and text.strip():  # GGML_LOG_LEVEL_ERROR
                    _LOG["errors"].append(text.decode("utf-8", "replace").strip())
                    del _LOG["errors"][:-20]
            except Exception:  # never raise into C
                pass

        _LOG["callback"] = L.llama_log_callback(on_log)
        L.llama_log_set(_LOG["callback"], ctypes.c_void_p(0))
    return _LOG["errors"]


class LlamaCppRunner:
    def __init__(self, path: Path, threads: int, gpu_layers: int = 0, ctx: int = 0, n_batch: int = 512,
                 n_ubatch: int = 512, flash_attn: str = "auto", seed: int = 1234):
        self.path, self.threads, self.gpu_layers = Path(path), threads, gpu_layers
        self.ctx, self.n_batch, self.n_ubatch, self.flash_attn = ctx, n_batch, n_ubatch, flash_attn
        self.rng = np.random.default_rng(seed)
        self.model = self.context = None

    # ------------------------------------------------------------ lifecycle

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
        cparams.no_perf = True
        self.context = L.llama_init_from_model(self.model, cparams)
        if not self.context:
            detail = f" ({errors[-1]})" if errors else ""
            raise EdgekitError(f"llama.cpp could not create a context of {self.ctx} tokens for {self.path.name}{detail}",
                               "lower --ctx or --gpu-layers (not enough memory)")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.add_bos = bool(L.llama_vocab_get_add_bos(self.vocab))
        self.bos = L.llama_vocab_bos(self.vocab)
        self._buf = (L.llama_token * max(self.n_batch, 1))()
        self._tokens = np.frombuffer(self._buf, dtype=np.int32)  # a numpy view of the C array
        return time.perf_counter() - t0

    def close(self) -> None:
        import llama_cpp as L

        if self.context:
            L.llama_free(self.context)
            self.context = None
        if self.model:
            L.llama_model_free(self.model)
            self.model = None

    def __enter__(self):
        self.load_s = self.load()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ------------------------------------------------------------ facts

    def system_info(self) -> str:
        import llama_cpp as L

        return L.llama_print_system_info().decode(errors="replace").strip()

    def backend(self) -> str:
        import llama_cpp as L

        if self.gpu_layers and L.llama_supports_gpu_offload():
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

    def _random(self, n: int) -> np.ndarray:
        return self.rng.integers(0, self.n_vocab, size=n, dtype=np.int32)

    def prompt(self, n_prompt: int) -> None:
        import llama_cpp as L

        done = 0
        while done < n_prompt:
            n = min(n_prompt - done, self.n_batch)
            tokens = self._random(n)
            if done == 0 and self.add_bos:
                tokens[0] = self.bos
            self._decode(tokens)
            done += n
        L.llama_synchronize(self.context)

    def generate(self, n_gen: int) -> None:
        import llama_cpp as L

        token = np.array([self.bos if self.add_bos else self._random(1)[0]], dtype=np.int32)
        for _ in range(n_gen):
            self._decode(token)
            L.llama_synchronize(self.context)
            token = self._random(1)

    def time_prompt(self, n_prompt: int) -> float:
        self.clear()
        t0 = time.perf_counter()
        self.prompt(n_prompt)
        return time.perf_counter() - t0

    def time_generate(self, n_gen: int) -> float:
        self.clear()
        t0 = time.perf_counter()
        self.generate(n_gen)
        return time.perf_counter() - t0

    def time_first_token(self, n_prompt: int) -> float:
        """Prompt + one generated token, from an empty cache: time to first token."""
        import llama_cpp as L

        self.clear()
        t0 = time.perf_counter()
        if n_prompt:
            self.prompt(n_prompt)
        self._decode(self._random(1))
        L.llama_synchronize(self.context)
        return time.perf_counter() - t0

    def warmup(self, n_prompt: int, n_gen: int) -> None:
        if n_prompt:
            self.time_prompt(n_prompt)
        if n_gen:
            self.time_generate(1)
