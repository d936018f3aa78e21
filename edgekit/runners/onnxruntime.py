"""ONNX decoders with KV cache through ONNX Runtime, with the llama.cpp runner's method.

The cache never goes through numpy: it lives in two sets of buffers on the provider's
device (KVCache), one bound as `past_key_values.N.key/value` and the other as
`present.N.key/value`, swapped after every step (IOBinding), so a decode step allocates
nothing. Only input ids, the attention mask, positions and (when asked for) the logits
row cross to the host.

pp: n_prompt random tokens (BOS first) from an empty cache, in n_batch chunks;
tg: n_gen single-token steps from an empty cache; TTFT: prompt + greedy pick of
the first token; a warm-up of each first.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.llamacpp_build import cache_root
from edgekit.runners import LoadedInContext, TwoBufferSets
from edgekit.tensorrt_profiles import derive_profiles, graph_inputs, ort_tensorrt_options

# ---------------------------------------------------------------- the model file


def load_graph(model_path: Path):
    """The model proto without external data (inline weights are read: parse it once per use)."""
    import onnx

    try:
        return onnx.load(str(model_path), load_external_data=False)
    except Exception as e:
        raise EdgekitError(f"{model_path} is not a readable ONNX model ({' '.join(str(e).split())[:120]})",
                           "re-run the export") from None


def check_onnx_complete(model_path: Path, model=None) -> None:
    """Every external-data file exists and is long enough for the tensors that point into it.
    `model` is the already-parsed proto (load_graph), if the caller has one."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    if model is None:
        model = load_graph(model_path)
    ends: dict[str, int] = {}
    for t in _all_initializers(model.graph):
        if uses_external_data(t):
            info = ExternalDataInfo(t)
            ends[info.location] = max(ends.get(info.location, 0), (info.offset or 0) + (info.length or 0))
    for location, end in ends.items():
        data = model_path.parent / location
        if not data.is_file():
            raise EdgekitError(f"external data file {location} of {model_path.name} is missing",
                               f"copy {location} next to {model_path.name} (the export writes both), or re-export")
        if data.stat().st_size < end:
            raise EdgekitError(f"external data file {location} is truncated ({data.stat().st_size} of {end} bytes)",
                               "copy it again or re-export")


def _all_initializers(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _all_initializers(attr.g)


PROVIDER_BACKEND = {
    "CPUExecutionProvider": "CPU",
    "CUDAExecutionProvider": "CUDA",
    "TensorrtExecutionProvider": "TensorRT",
    "NvTensorRTRTXExecutionProvider": "TensorRT-RTX",
    "CoreMLExecutionProvider": "CoreML",
    "DmlExecutionProvider": "DirectML",
    "XnnpackExecutionProvider": "XNNPACK",
}
PROVIDER_ALIASES = {v.lower(): k for k, v in PROVIDER_BACKEND.items()} | {"tensorrt-rtx": "NvTensorRTRTXExecutionProvider"}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "NvTensorRTRTXExecutionProvider")
GRAPH_OPT = ("disable", "basic", "extended", "all")
_ORT_DTYPE = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(bfloat16)": None}


def parse_providers(text: str | None) -> list[str] | None:
    """'cuda,cpu' or full provider names -> ONNX Runtime provider names, in order."""
    if not text:
        return None
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        name = PROVIDER_ALIASES.get(item.lower(), item)
        if name not in PROVIDER_BACKEND:
            raise EdgekitError(f"unknown execution provider '{item}'",
                               f"choose from: {', '.join(sorted(PROVIDER_ALIASES))} (comma-separated, in order)")
        out.append(name)
    return out


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def choose_providers(wanted: list[str] | None, preferred: tuple[str, ...], available: list[str]) -> list[str]:
    """The user's list (each must be available), else the target's preference order filtered by
    what this onnxruntime build has; CPU always last as the fallback for unsupported nodes."""
    if wanted:
        missing = [p for p in wanted if p not in available]
        if missing:
            raise EdgekitError(f"execution provider {missing[0]} is not in this onnxruntime build "
                               f"(available: {', '.join(available)})",
                               "install the onnxruntime package for it (e.g. onnxruntime-gpu for CUDA), or drop it")
        chosen = list(wanted)
    else:
        chosen = [p for p in preferred if p in available] or ["CPUExecutionProvider"]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def ort_build_commit() -> str | None:
    """The git commit ONNX Runtime was built from, from its build info line; None where it has none."""
    try:
        from onnxruntime.capi._pybind_state import get_build_info

        info = get_build_info()
    except Exception:
        return None
    for part in info.split(","):
        key, _, value = part.strip().partition("=")
        if key.endswith("git-commit-id") and value.strip():
            return value.strip()
    return None


def find_model(folder: Path, model_file: str | None = None) -> Path:
    folder = Path(folder)
    if model_file:
        path = folder / model_file
    else:
        genai = folder / "genai_config.json"
        name = None
        if genai.is_file():
            try:
                name = json.loads(genai.read_text(encoding="utf-8"))["model"]["decoder"]["filename"]
            except (json.JSONDecodeError, KeyError, TypeError):
                name = None
        candidates = [folder / name] if name else sorted(folder.glob("*.onnx"))
        if len(candidates) != 1:
            raise EdgekitError(f"{folder} holds {len(candidates)} .onnx files", "pass the folder of one ONNX export")
        path = candidates[0]
    if not path.is_file():
        raise EdgekitError(f"{path} does not exist", "pass a folder written by edgekit export onnx")
    return path


def provider_options(providers: list[str], inputs: list, max_context: int, n_batch: int,
                     cache_dir: Path) -> list:
    """`providers` as InferenceSession takes them, with ONNX Runtime's TensorRT EP given explicit
    profiles and caches: prefill (a chunk of up to n_batch tokens over a cache of up to
    max_context - chunk) and decode (one token over 0..max_context-1), from the graph's own dims
    (edgekit.tensorrt_profiles), and its engine and timing caches under `cache_dir`. Without
    profiles the EP builds an engine for the first shapes it meets and rebuilds whenever a shape
    leaves the range seen so far: minutes inside a measured run. Other providers pass as they are."""
    out: list = []
    for name in providers:
        if name != "TensorrtExecutionProvider":
            out.append(name)
            continue
        chunk = max(1, min(n_batch, max_context - 1))
        profiles = derive_profiles(inputs, chunk, max_context, chunked_prefill=True)
        out.append((name, {**ort_tensorrt_options(profiles), "trt_engine_cache_enable": "True",
                           "trt_engine_cache_path": str(cache_dir), "trt_timing_cache_enable": "True",
                           "trt_timing_cache_path": str(cache_dir)}))
    return out


class OrtRunner(LoadedInContext):
    """An ONNX decoder through ONNX Runtime (the Runner protocol of edgekit.runners)."""

    def __init__(self, folder: Path, threads: int, providers: list[str] | None = None, graph_opt: str = "all",
                 model_file: str | None = None, n_batch: int = 2048, seed: int = 1234, max_context: int = 4096):
        self.folder = Path(folder)
        self.max_context = max_context  # the TensorRT EP's profiles reach this far
        self.path = find_model(self.folder, model_file)
        self.threads, self.wanted, self.graph_opt, self.n_batch = threads, providers, graph_opt, n_batch
        self.rng = np.random.default_rng(seed)
        self.session = None
        self.kv_start_tokens = 256  # a cache's first size; it doubles when outgrown

    # ------------------------------------------------------------ lifecycle

    def load(self, preferred: tuple[str, ...] = ("CPUExecutionProvider",)) -> float:
        import onnxruntime as ort

        if self.graph_opt not in GRAPH_OPT:
            raise EdgekitError(f"unknown graph optimization level '{self.graph_opt}'", f"choose from: {', '.join(GRAPH_OPT)}")
        self.providers = choose_providers(self.wanted, preferred, ort.get_available_providers())
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.graph_opt]
        so.log_severity_level = 3
        t0 = time.perf_counter()
        try:
            providers = self.providers
            if "TensorrtExecutionProvider" in providers:
                providers = provider_options(providers, graph_inputs(load_graph(self.path)), self.max_context,
                                             self.n_batch, cache_root() / "ort-tensorrt" / self.path.parent.name)
            self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as e:
            # only now read the graph in Python (with inline weights that costs their size in RAM, which
            # would otherwise sit in the measured process): a missing or short data file gets its own line
            check_onnx_complete(self.path)
            raise EdgekitError(f"onnxruntime could not load {self.path.name} ({' '.join(str(e).split())[:200]})",
                               "check it with `edgekit inspect`; re-export it if it is damaged") from None
        load_s = time.perf_counter() - t0
        self._describe()
        self._prepare_io()
        return load_s

    def _describe(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        need = ("input_ids", "attention_mask")
        if any(n not in inputs for n in need) or "logits" not in outputs:
            raise EdgekitError(f"{self.path.name} is not a decoder with KV cache (inputs {', '.join(inputs)})",
                               "export it with `edgekit export onnx` (optimum's text-generation-with-past layout)")
        self.past_names = sorted((n for n in inputs if n.startswith("past_key_values.")), key=_layer_key)
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]
        missing = [n for n in self.present_names if n not in outputs]
        if not self.past_names or missing:
            raise EdgekitError(f"{self.path.name} has no matching past/present KV inputs and outputs",
                               "export it with `edgekit export onnx` (text-generation-with-past)")
        past = inputs[self.past_names[0]]
        self.kv_dtype = _ORT_DTYPE.get(past.type)
        if self.kv_dtype is None:
            raise EdgekitError(f"KV cache type {past.type} is not supported", "export as fp32, fp16 or int4")
        self.kv_heads, self.head_dim = int(past.shape[1]), int(past.shape[3])
        self.has_positions = "position_ids" in inputs
        logits = self.session.get_outputs()[outputs.index("logits")]
        vocab = logits.shape[-1]
        self.logits_dtype = _ORT_DTYPE.get(logits.type) or np.float32
        self.last_logits_only = logits.shape[1] == 1  # exported with --logits last
        self.n_vocab = int(vocab) if isinstance(vocab, int) else self._config_vocab()
        self.bos = self._bos()
        self.device = "cuda" if self.providers[0] in GPU_PROVIDERS else "cpu"

    def _genai(self) -> dict:
        try:
            return json.loads((self.folder / "genai_config.json").read_text(encoding="utf-8"))["model"]
        except (OSError, json.JSONDecodeError, KeyError):
            return {}

    def _config_vocab(self) -> int:
        vocab = self._genai().get("vocab_size")
        if not vocab:
            raise EdgekitError(f"the vocabulary size of {self.path.name} is unknown", "keep genai_config.json beside it")
        return int(vocab)

    def _bos(self) -> int | None:
        bos = self._genai().get("bos_token_id")
        return int(bos) if isinstance(bos, int) else None

    def close(self) -> None:
        self.session = self._binding = self._logits_row = None

    # ------------------------------------------------------------ facts

    def backend(self) -> str:
        return PROVIDER_BACKEND.get(self.providers[0], self.providers[0])

    @property
    def uses_gpu(self) -> bool:
        return bool(self.wanted) and self.wanted[0] in GPU_PROVIDERS

    def result_settings(self) -> dict:
        return {"onnxruntime": {"gpu_layers": self.n_layers if self.backend() != "CPU" else 0,
                                "n_batch": self.n_batch, "providers": self.providers,
                                "graph_optimization": self.graph_opt}}

    def system_info(self) -> str:
        import onnxruntime as ort

        return f"onnxruntime {ort.__version__}; providers {','.join(self.providers)}; graph optimization {self.graph_opt}"

    def runtime_facts(self) -> dict:
        """What ONNX Runtime says of its build: {"runtime": {"build_commit": the git commit of its
        build info ("ORT Build Info: git-branch=..., git-commit-id=fab30a4, ...")}, "artifact": {}}
        (ONNX Runtime has no model description of its own: the llama-bench form builds one)."""
        return {"runtime": {"build_commit": ort_build_commit()}, "artifact": {}}

    @property
    def n_layers(self) -> int:
        return len(self.past_names) // 2

    # ------------------------------------------------------------ the step

    def empty_cache(self, tokens: int = 0) -> "KVCache":
        """A cache with room for `tokens` (at least kv_start_tokens); it grows when outgrown."""
        return KVCache(self, max(tokens, self.kv_start_tokens))

    def _prepare_io(self) -> None:
        """What every step reuses: the mask and position arrays it slices, the one-row logits
        buffer, and one IOBinding for the session, bound through its C++ object when this
        onnxruntime has one (the Python wrapper adds bookkeeping to every binding, two per KV
        tensor per step; its cost: docs/benchmarks.md)."""
        from onnxruntime import OrtDevice, OrtValue

        self._mask, self._positions = np.ones(256, dtype=np.int64), np.arange(256, dtype=np.int64)
        self._logits_row = OrtValue.ortvalue_from_shape_and_type((1, 1, self.n_vocab), self.logits_dtype,
                                                                 self.device, 0)
        self._binding = binding = self.session.io_binding()
        raw = _raw_iobinding(binding)
        if raw is not None:
            device = OrtDevice.make(self.device, 0)._get_c_device()
            self._bind_cpu_input = raw.bind_input  # (name, array): the arrays live until step returns

            def bind_input(name, shape, ptr):
                raw.bind_input(name, device, self.kv_dtype, shape, ptr)

            def bind_output(name, shape, ptr):
                raw.bind_output(name, device, self.kv_dtype, shape, ptr)
        else:
            self._bind_cpu_input = binding.bind_cpu_input

            def bind_input(name, shape, ptr):
                binding.bind_input(name, self.device, 0, self.kv_dtype, shape, ptr)

            def bind_output(name, shape, ptr):
                binding.bind_output(name, self.device, 0, self.kv_dtype, shape, ptr)
        self._bind_kv_input, self._bind_kv_output = bind_input, bind_output

    def forward(self, tokens: np.ndarray, cache: "KVCache", pos: int):
        """Run `tokens` at positions pos.. on `cache` (advanced in place); returns (logits OrtValue, cache).

        Each layer's past is bound from the cache's front buffers and its present (past + the
        new tokens, written by the graph's Concat) into the back buffers, which then become the
        front: a decode step allocates nothing. The logits of a one-row step go to a buffer of
        the runner's own, so they hold until the next step. What is left of the host's share is
        two bindings per KV tensor, which the growing shapes make unavoidable (its size:
        docs/benchmarks.md).
        """
        from onnxruntime import OrtValue

        n = len(tokens)
        end = pos + n
        if pos != cache.tokens:
            raise ValueError(f"the cache holds {cache.tokens} tokens, not {pos}")
        ids = np.ascontiguousarray(tokens, dtype=np.int64).reshape(1, n)
        if len(self._mask) < end:
            grown = max(2 * len(self._mask), end)
            self._mask, self._positions = np.ones(grown, dtype=np.int64), np.arange(grown, dtype=np.int64)
        mask = self._mask[:end].reshape(1, end)
        positions = self._positions[pos:end].reshape(1, n)
        try:
            cache.make_room(end)
            bind_in, bind_out = self._bind_kv_input, self._bind_kv_output
            past, present = [1, self.kv_heads, pos, self.head_dim], [1, self.kv_heads, end, self.head_dim]
            self._bind_cpu_input("input_ids", ids)
            self._bind_cpu_input("attention_mask", mask)
            if self.has_positions:
                self._bind_cpu_input("position_ids", positions)
            for name, buffer in zip(self.past_names, cache.front_ptrs):
                bind_in(name, past, buffer)
            for name, buffer in zip(self.present_names, cache.back_ptrs):
                bind_out(name, present, buffer)
            rows = 1 if self.last_logits_only else n
            if rows == 1:
                logits = self._logits_row
            else:
                logits = OrtValue.ortvalue_from_shape_and_type((1, rows, self.n_vocab), self.logits_dtype,
                                                               self.device, 0)
            self._binding.bind_ortvalue_output("logits", logits)
            self.session.run_with_iobinding(self._binding)
        except Exception as e:  # allocation failures, provider errors: one line, not a traceback
            detail = " ".join(str(e).split())
            raise EdgekitError(f"onnxruntime failed running {self.path.name} on {n} tokens at position {pos} "
                               f"({detail[-200:]})", "lower -p/-n or --batch, or free memory") from None
        cache.advance(end)
        return logits, cache

    def run(self, tokens: np.ndarray, cache: "KVCache | None" = None, pos: int = 0):
        """Tokens in n_batch chunks; returns (last chunk's logits OrtValue, cache, next position)."""
        cache = cache if cache is not None else self.empty_cache(len(tokens))
        logits = None
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            logits, cache = self.forward(chunk, cache, pos)
            pos += len(chunk)
        return logits, cache, pos

    @staticmethod
    def last_row(logits) -> np.ndarray:
        return logits.numpy()[0, -1]

    # ------------------------------------------------------------ uses

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """Logits of every position of one forward pass (float32 [n, vocab]), for parity checks."""
        cache = self.empty_cache(len(ids))
        logits, _cache = self.forward(np.asarray(ids, dtype=np.int64), cache, 0)
        return logits.numpy()[0].astype(np.float32)

    def generate_greedy(self, prompt: list[int], n_new: int, eos: set[int] | None = None) -> list[int]:
        """Greedy decoding: the prompt, then one step on the cache per new token but the last
        (its logits would pick a token nobody asked for)."""
        logits, cache, pos = self.run(np.asarray(prompt, dtype=np.int64))
        return self.continue_greedy(logits, cache, pos, n_new, eos)

    def continue_greedy(self, logits, cache: "KVCache", pos: int, n_new: int, eos: set[int] | None = None) -> list[int]:
        out: list[int] = []
        for i in range(n_new):
            token = int(self.last_row(logits).argmax())
            out.append(token)
            if (eos and token in eos) or i == n_new - 1:
                break
            logits, cache = self.forward(np.array([token], dtype=np.int64), cache, pos)
            pos += 1
        return out

    def _random(self, n: int) -> np.ndarray:
        return self.rng.integers(0, self.n_vocab, size=n, dtype=np.int64)

    def _prompt_tokens(self, n_prompt: int) -> np.ndarray:
        tokens = self._random(n_prompt)
        if self.bos is not None and n_prompt:
            tokens[0] = self.bos
        return tokens

    # ------------------------------------------------------------ the Runner protocol (bench)

    def random_tokens(self, n: int) -> np.ndarray:
        return self._prompt_tokens(n)

    def start(self, capacity: int) -> None:
        self._cache, self._pos, self._last = self.empty_cache(capacity), 0, None
        self._one = np.zeros(1, dtype=np.int64)

    def prompt(self, tokens: np.ndarray) -> None:
        self._last, self._cache, self._pos = self.run(np.asarray(tokens, dtype=np.int64), self._cache, self._pos)

    def step(self, token: int) -> None:
        self._one[0] = token
        self._last, self._cache = self.forward(self._one, self._cache, self._pos)
        self._pos += 1

    def pick(self) -> int:
        return int(self.last_row(self._last).argmax())


def _raw_iobinding(binding):
    """The C++ IOBinding behind onnxruntime's Python one (a private attribute since 2020), or
    None where a release has none: then the public methods serve, a little slower a call."""
    return getattr(binding, "_iobinding", None)


def _layer_key(name: str) -> tuple[int, str]:
    parts = name.split(".")
    return (int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0, parts[-1])


class KVCache(TwoBufferSets):
    """One sequence's KV cache: two buffer sets, used in turns.

    ONNX Runtime reads each layer's past from the front set and writes its present (the past
    and the new tokens) into the back set; then they swap. A set is one flat OrtValue on the
    provider's device with a slot per past/present tensor, room for `capacity` tokens each;
    a slot is bound at the step's shape (the first kv_heads * tokens * head_dim elements of a
    [1, kv_heads, tokens, head_dim] tensor), so the steps reuse the same memory and a cache
    costs two allocations, not two per tensor (what an allocation through the Python API costs:
    docs/benchmarks.md). A back set too small for the next step is replaced by
    one twice the front's size (the front is what is read, so nothing is copied): at most
    log2(length / start) allocations per sequence. Pages are touched only as tokens are
    written, so an unused tail costs address space, not RSS.
    """

    def __init__(self, runner: OrtRunner, capacity: int):
        self.runner = runner
        super().__init__(capacity)

    def _allocate(self, capacity: int) -> tuple:
        from onnxruntime import OrtValue

        r = self.runner
        slot = -(-r.kv_heads * max(capacity, 1) * r.head_dim // 64) * 64  # elements, 64-aligned slots
        block = OrtValue.ortvalue_from_shape_and_type((len(r.past_names) * slot,), r.kv_dtype, r.device, 0)
        base, stride = block.data_ptr(), slot * np.dtype(r.kv_dtype).itemsize
        return block, [base + i * stride for i in range(len(r.past_names))]
