"""TensorRT Edge-LLM engines, benched by Edge-LLM's own `llm_bench` (C++; built on the device
from the release that exported the model): edgekit does not drive these engines step by step, it
runs the runtime's benchmark tool and reads its CSV (edgekit.edgellm.parse_llm_bench_csv) into
the same result as every other runtime (edgekit.bench, with `times_itself`).

What each of edgekit's tests is in llm_bench's terms (one llm_bench invocation per repetition,
with its own warm-up and `iterations` timed runs, their mean):
- pp: `--mode prefill --inputLen n_prompt`: the prompt from an empty cache.
- tg: `--mode decode --pastKVLen n_gen // 2`, times n_gen: a step's time is linear in the cache
  it reads, so n_gen steps from an empty cache take n_gen steps at the middle depth.
- TTFT: the prefill of n_prompt tokens (its logits give the first token; llm_bench's prefill
  includes them).
Power windows span each whole invocation, the engine's load by llm_bench included.

Contract: `EdgeLlmRunner(folder, n_prompt, n_gen, llm_bench=None, iterations=10, warmup=3)`;
`measure(test, n)` -> seconds; no step-by-step methods (an EdgekitError says so). The CSV is
untrusted: a row of another mode, length or batch is refused. Never ran against a real llm_bench
(tested with a stand-in that writes llm_bench's CSV format, read from its source).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgekit.child import run_logged
from edgekit.edgellm import bench_csv_name, llm_bench_command, parse_llm_bench_csv
from edgekit.errors import EdgekitError
from edgekit.manifest import ExportManifest
from edgekit.runners import LoadedInContext
from edgekit.tensorrt_tools import find_tool
from edgekit.terminal import printable

ENGINE_DIR = "engine"


class EdgeLlmRunner(LoadedInContext):
    uses_gpu = True
    times_itself = True

    def __init__(self, folder: Path, n_prompt: int, n_gen: int, llm_bench: str | None = None, iterations: int = 10,
                 warmup: int = 3, timeout_s: float = 3600):
        self.folder = Path(folder)
        self.manifest = ExportManifest.read(self.folder)
        if self.manifest.engine is None or self.manifest.engine.engine != "edgellm":
            raise EdgekitError(f"{self.folder} is not an Edge-LLM engine folder",
                               "pass a folder written by edgekit export tensorrt --engine edgellm")
        self.record = self.manifest.engine
        self.n_prompt, self.n_gen = n_prompt, n_gen
        self.llm_bench, self.iterations, self.warmup, self.timeout_s = llm_bench, iterations, warmup, timeout_s

    def engine_dir(self) -> Path:
        local = self.folder / ENGINE_DIR
        path = local if local.is_dir() else Path(self.record.location or local)
        if not (path / "config.json").is_file():
            raise EdgekitError(f"the Edge-LLM engine {path} is not on this machine; it runs only where it was built "
                               f"({self.record.built_on})", "bench it there: edgekit bench FOLDER --host DEST")
        return path

    def load(self) -> None:
        self.llm_bench = self.llm_bench or find_tool("llm_bench")
        if self.llm_bench is None:
            raise EdgekitError("this machine has no llm_bench (TensorRT Edge-LLM's benchmark tool)",
                               "build Edge-LLM's examples on the device (its install guide: cmake ... && make), put "
                               "llm_bench on PATH or set EDGEKIT_LLM_BENCH")
        self.engine = self.engine_dir()
        if self.n_prompt > self.record.max_prompt:
            raise EdgekitError(f"-p {self.n_prompt} is more than the engine's {self.record.max_prompt} input tokens",
                               f"pass -p {self.record.max_prompt} or less, or rebuild with --max-prompt "
                               f"{self.n_prompt}")

    def close(self) -> None:
        pass

    def run(self, mode: str, length: int):
        """One llm_bench invocation -> its checked CSV row."""
        with tempfile.TemporaryDirectory(prefix="edgekit-llm-bench-") as out:
            argv = llm_bench_command(self.llm_bench, str(self.engine), mode, length, out, warmup=self.warmup,
                                     iterations=self.iterations)
            log = Path(out) / "llm_bench.log"
            rc, timed_out = run_logged(argv, log, self.timeout_s)
            said = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            if timed_out or rc != 0:
                last = printable(said[-1], 200) if said else "no output"
                raise EdgekitError(f"llm_bench --mode {mode} at {length} failed (exit {rc}"
                                   f"{', timed out' if timed_out else ''}): {last}",
                                   "run it by hand on the device: " + " ".join(argv[:7]))
            csv_path = Path(out) / bench_csv_name(mode, length)
            try:
                text = csv_path.read_text(encoding="utf-8")
            except OSError:
                raise EdgekitError(f"llm_bench wrote no {csv_path.name}", "use llm_bench of Edge-LLM 0.10 or later") \
                    from None
        row = parse_llm_bench_csv(text, csv_path.name)
        if (row.mode, row.length, row.batch_size) != (mode, length, 1):
            raise EdgekitError(f"{csv_path.name} holds a {row.mode} row at {row.length} for batch {row.batch_size}, "
                               f"not the {mode} at {length} for batch 1 asked for", "re-run llm_bench")
        return row

    def measure(self, test: str, n: int) -> float:
        if test in ("pp", "ttft"):
            return self.run("prefill", n).e2e_time_ms / 1000
        if test == "tg":
            return n * self.run("decode", n // 2).e2e_time_ms / 1000
        raise ValueError(f"unknown test {test}")

    # ------------------------------------------------------------ facts

    def backend(self) -> str:
        return "CUDA"

    def system_info(self) -> str:
        return (f"TensorRT Edge-LLM {self.manifest.tools.get('tensorrt-edgellm', '?')}; llm_bench {self.llm_bench}; "
                f"TensorRT {self.record.tensorrt_version or '?'}")

    def result_settings(self) -> dict:
        return {"tensorrt": {"gpu_layers": int(self.record.dims.get("layers", 0)), "n_batch": self.n_prompt,
                             "engine": "edgellm", "precision": self.record.precision,
                             "tensorrt_version": self.record.tensorrt_version, "tool": f"llm_bench {self.llm_bench}",
                             "cuda_graph": False}}

    def runtime_facts(self) -> dict:
        return {"runtime": {}, "artifact": {}}

    def random_tokens(self, n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.int64)  # llm_bench makes its own inputs

    def _not_stepwise(self, *_args):
        raise EdgekitError("Edge-LLM engines are benched by llm_bench, not step by step",
                           "use edgekit bench (it runs llm_bench); eval needs an ONNX or GGUF artifact")

    start = prompt = step = pick = logits = _not_stepwise
