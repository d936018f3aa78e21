"""Runners, one module per runtime (llamacpp.py, onnxruntime.py): what bench, parity and (later)
eval need of a runtime. `edgekit.bench` times the calls; a runner only does the work.

The protocol, for a runner `r` of one model:
- `r.load()` loads model and context (the caller times it); `r.close()` frees them.
- `r.backend()` ("CPU", "CUDA", "Metal", ...), `r.system_info()` (the runtime's build line),
  `r.uses_gpu` (known before load: it picks the power sensor), `r.result_settings()` (the
  runtime's own fields of the result's `settings`: gpu_layers, batches, flash attention,
  providers, graph optimization; once loaded, also what else the runner passed to the runtime).
- `r.runtime_facts()`: what the runtime itself says of its build and the loaded model, kept after
  close: {"runtime": extra RuntimeInfo fields (build_commit, build_number, backends, cpu_info,
  gpu_info), "artifact": extra ArtifactInfo fields (model_type, tensor_bytes)}; a part may be
  empty, and a runner without the method adds nothing (the llama-bench form then falls back).
- `r.random_tokens(n)`: n random token ids, BOS first where the vocabulary adds one (speed does
  not depend on token values; llama-bench does the same).
- `r.start(capacity)`: an empty KV cache with room for `capacity` tokens; allocation happens
  here, before any clock starts (as llama.cpp's context and genai's Generator allocate theirs).
- `r.prompt(tokens)`: decode `tokens` onto the cache (in the runtime's batches), synchronised.
- `r.step(token)`: one single-token decode onto the cache, synchronised.
- `r.pick()`: the greedy next token from the last decode's logits.
- `r.logits(ids)`: float32 logits [len(ids), vocab] of one forward pass from an empty cache.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Runner(Protocol):
    uses_gpu: bool

    def load(self) -> None: ...

    def close(self) -> None: ...

    def backend(self) -> str: ...

    def system_info(self) -> str: ...

    def result_settings(self) -> dict[str, Any]: ...

    def runtime_facts(self) -> dict[str, dict[str, Any]]: ...

    def random_tokens(self, n: int) -> np.ndarray: ...

    def start(self, capacity: int) -> None: ...

    def prompt(self, tokens: np.ndarray) -> None: ...

    def step(self, token: int) -> None: ...

    def pick(self) -> int: ...

    def logits(self, ids) -> np.ndarray: ...


class LoadedInContext:
    """`with runner:` loads it and closes it afterwards (both runners share this)."""

    def __enter__(self):
        self.load()
        return self

    def __exit__(self, *exc):
        self.close()
        return False
