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


class TwoBufferSets:
    """One sequence's KV cache as two buffer sets used in turns (both runners' caches): the step
    reads each layer's past from the front set and writes its present (past + new tokens) into the
    back set; then they swap. A subclass's `_allocate(capacity)` returns (its handle of one set,
    the address of each tensor's slot) and `_release(handle)` frees one (or nothing, where the
    runtime frees by reference). A back set too small for the next step is replaced by one twice
    the front's size (the front is what is read, so nothing is copied)."""

    def __init__(self, capacity: int):
        self.tokens = 0
        self.front_capacity = self.back_capacity = max(1, capacity)
        self.front, self.front_ptrs = self._allocate(self.front_capacity)
        self.back, self.back_ptrs = self._allocate(self.back_capacity)

    def _allocate(self, capacity: int) -> tuple[Any, list[int]]:
        raise NotImplementedError

    def _release(self, handle: Any) -> None:
        pass

    def make_room(self, tokens: int) -> None:
        """The back set holds `tokens` tokens after this."""
        if tokens > self.back_capacity:
            self._release(self.back)
            self.back_capacity = max(tokens, 2 * self.front_capacity)
            self.back, self.back_ptrs = self._allocate(self.back_capacity)

    def advance(self, tokens: int) -> None:
        """The step wrote `tokens` tokens into the back set: it becomes the front."""
        self.front, self.back = self.back, self.front
        self.front_ptrs, self.back_ptrs = self.back_ptrs, self.front_ptrs
        self.front_capacity, self.back_capacity = self.back_capacity, self.front_capacity
        self.tokens = tokens

    def free(self) -> None:
        for handle in (self.front, self.back):
            self._release(handle)
        self.front = self.back = None
