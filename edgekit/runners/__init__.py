"""Runners, one module per runtime: load an artifact, time prompt processing and generation.

`Runner` is what `edgekit bench` needs of a runtime; llamacpp.py and onnxruntime.py fill it.
"""

from __future__ import annotations


class Runner:
    """load() -> seconds; backend() and system_info() for the result; the three timed tests
    (pp from an empty cache, tg single-token steps from an empty cache, TTFT = prompt +
    greedy first token), each returning seconds; close()."""

    load_s: float = 0.0

    def load(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def backend(self) -> str:
        raise NotImplementedError

    def system_info(self) -> str:
        raise NotImplementedError

    def time_prompt(self, n_prompt: int) -> float:
        raise NotImplementedError

    def time_generate(self, n_gen: int) -> float:
        raise NotImplementedError

    def time_first_token(self, n_prompt: int) -> float:
        raise NotImplementedError

    def warmup(self, n_prompt: int, n_gen: int) -> None:
        """One untimed run of each test (first-run allocations, kernel selection, caches)."""
        if n_prompt:
            self.time_prompt(n_prompt)
        if n_gen:
            self.time_generate(min(n_gen, 4))

    def __enter__(self):
        self.load_s = self.load()
        return self

    def __exit__(self, *exc):
        self.close()
        return False
