"""TensorRT Edge-LLM (NVIDIA's LLM runtime for Jetson): the commands edgekit runs and the pure
readers of what they print, for the second engine path of `edgekit export tensorrt`.

Export runs on the workstation in a venv of its own (tensorrt-edgellm[export] pins transformers
5, which optimum-onnx 0.1 refuses beside it); `llm_build` and `llm_bench` are C++ tools built from
source on the device, of the exporter's own release. What each does and prints: docs/tensorrt.md
(read from the 0.10.0/0.11.0 sources; no device tool ran here).

Contract (all pure):
- `export_command(venv, checkpoint, out_dir)`: the exporter's argv (FP16, or a ModelOpt /
  AutoAWQ / GPTQ INT4 checkpoint as it is: its own `--quantization int4_awq` flag is a no-op on
  dense Qwen2/Llama).
- `llm_build_command(...)`, `llm_bench_command(...)`: the device tools' argv.
- `parse_llm_build_log(text)`: TensorRT's version and whether the build succeeded.
- `parse_llm_bench_csv(text)`: the one data row of e2e_<mode>_<len>.csv, checked (the device is
  untrusted: known mode, finite non-negative numbers, rows that agree with each other).
- `bench_csv_name(mode, length)`: the file llm_bench writes for a run.
- `support_problem(l4t, edgellm_version, precision)`: why a device/release/precision will not
  run, from Edge-LLM's own support matrix, or None.
Where the tools are on a machine: edgekit.tensorrt_tools.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass

from edgekit.errors import EdgekitError

EDGELLM_VERSION = "0.11.0"
MODES = ("prefill", "decode")
LENGTH_COLUMN = {"prefill": "input_len", "decode": "past_kv_len"}
LENGTH_FLAG = {"prefill": "--inputLen", "decode": "--pastKVLen"}
CSV_PREFIX = {"prefill": "e2e_prefill_inputlen", "decode": "e2e_decode_pastkvlen"}
HEADER = ("mode", "batch_size", "osl", "e2e_time_ms", "per_token_ms", "throughput_tps")
# Edge-LLM's support matrix: Orin takes FP16, INT8 and INT4, never FP8 or FP4
ORIN_PRECISIONS = ("fp16", "int8", "int4")


def export_command(venv: str, checkpoint: str, out_dir: str, *, externalize_int4_ffn: bool = False) -> list[str]:
    """The venv's `tensorrt-edgellm-export CHECKPOINT OUT` (positional arguments first:
    `--externalize-weights` given before them swallows them); `externalize_int4_ffn` keeps INT4
    FFN weights outside the graph, as Edge-LLM's benchmarks do for dense models on Orin."""
    return [f"{venv}/bin/tensorrt-edgellm-export", checkpoint, out_dir,
            *(["--externalize-weights", "int4_ffn"] if externalize_int4_ffn else [])]


def llm_build_command(llm_build: str, onnx_dir: str, engine_dir: str, *, max_input_len: int,
                      max_kv_cache: int, max_batch: int = 1) -> list[str]:
    if not 1 <= max_input_len <= max_kv_cache:
        raise EdgekitError(f"max input {max_input_len} and KV cache capacity {max_kv_cache} make no engine",
                           "pass 1 <= --max-prompt <= --max-context")
    return [llm_build, "--onnxDir", onnx_dir, "--engineDir", engine_dir, "--maxBatchSize", str(max_batch),
            "--maxInputLen", str(max_input_len), "--maxKVCacheCapacity", str(max_kv_cache)]


def llm_bench_command(llm_bench: str, engine_dir: str, mode: str, length: int, out_dir: str, *,
                      warmup: int = 3, iterations: int = 10, batch: int = 1) -> list[str]:
    if mode not in MODES:
        raise EdgekitError(f"unknown llm_bench mode '{mode}'", f"choose from: {', '.join(MODES)}")
    return [llm_bench, "--engineDir", engine_dir, "--mode", mode, LENGTH_FLAG[mode], str(length),
            "--batchSize", str(batch), "--warmup", str(warmup), "--iterations", str(iterations),
            "--outputDir", out_dir]


def bench_csv_name(mode: str, length: int) -> str:
    return f"{CSV_PREFIX[mode]}{length}.csv"


@dataclass(frozen=True)
class BuildFacts:
    tensorrt_version: str | None
    succeeded: bool
    engine: str | None  # the path llm_build says it saved


def parse_llm_build_log(text: str) -> BuildFacts:
    version = re.search(r"Using TRT_VERSION=(\d+(?:\.\d+)*)", text)
    saved = re.search(r"Engine saved to (\S+)", text)
    ok = "LLM engine built successfully." in text and "Failed to build LLM engine." not in text
    return BuildFacts(version.group(1) if version else None, ok, saved.group(1) if saved else None)


@dataclass(frozen=True)
class BenchRow:
    mode: str
    batch_size: int
    osl: int
    e2e_time_ms: float      # mean over the iterations, per step
    per_token_ms: float
    throughput_tps: float   # per sequence (not times the batch)
    length: int             # input_len (prefill) or past_kv_len (decode)


def _number(row: dict, key: str, kind, name: str):
    try:
        v = kind(row[key])
    except (KeyError, TypeError, ValueError):
        raise EdgekitError(f"{name}: column {key} is missing or not a number ({row.get(key)!r})",
                           "re-run llm_bench; check it is the release of the exporter") from None
    if isinstance(v, float) and not math.isfinite(v) or v < 0:
        raise EdgekitError(f"{name}: {key} is {v}", "re-run llm_bench; a negative or infinite time is no result")
    return v


def parse_llm_bench_csv(text: str, name: str = "llm_bench CSV") -> BenchRow:
    """The data row of an llm_bench E2E CSV (header + one row), checked."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if len(rows) != 1:
        raise EdgekitError(f"{name} holds {len(rows)} data rows, not one", "re-run llm_bench with --outputDir")
    row = rows[0]
    mode = row.get("mode")
    if mode not in MODES:
        raise EdgekitError(f"{name}: mode {mode!r} is not prefill or decode", "bench with --mode prefill|decode")
    missing = [h for h in (*HEADER, LENGTH_COLUMN[mode]) if h not in row]
    if missing:
        raise EdgekitError(f"{name} lacks the columns {', '.join(missing)}", "use llm_bench of Edge-LLM 0.10 or later")
    out = BenchRow(mode, _number(row, "batch_size", int, name), _number(row, "osl", int, name),
                   _number(row, "e2e_time_ms", float, name), _number(row, "per_token_ms", float, name),
                   _number(row, "throughput_tps", float, name), _number(row, LENGTH_COLUMN[mode], int, name))
    tokens = out.length if mode == "prefill" else 1
    # per_token = e2e / tokens and tps = 1000 * tokens / e2e (llm_bench's own arithmetic, 4 decimals)
    if out.e2e_time_ms <= 0 or abs(out.per_token_ms * tokens - out.e2e_time_ms) > 1e-3 * max(1.0, out.e2e_time_ms) \
            or abs(out.throughput_tps - 1000 * tokens / out.e2e_time_ms) > 1e-3 * max(1.0, out.throughput_tps):
        raise EdgekitError(f"{name}: its times disagree (e2e {out.e2e_time_ms} ms, per token {out.per_token_ms} "
                           f"ms, {out.throughput_tps} tok/s for {tokens} tokens)",
                           "re-run llm_bench; these numbers are not one measurement")
    return out


def support_problem(l4t: str | None, edgellm_version: str, precision: str) -> str | None:
    """Why Edge-LLM `edgellm_version` will not build or run `precision` on an Orin with L4T
    `l4t` ('R36.4.3' = JetPack 6.2; R38 = JetPack 7), or None. From Edge-LLM's support matrix:
    0.11 supports Orin on JetPack 7.2 only (0.10 also JetPack 6.2+; a vendor guide names 0.6.0 for
    6.2); Orin runs FP16, INT8 and INT4, never FP8 or FP4."""
    if precision.lower() not in ORIN_PRECISIONS:
        return f"an Orin runs Edge-LLM engines in {', '.join(ORIN_PRECISIONS)} only, not {precision}"
    m = re.fullmatch(r"R(\d+)(?:\.\d+)*", l4t or "")
    if m is None:
        return None  # not a Jetson we can tell: the device's own build decides
    major = tuple(int(x) for x in edgellm_version.split(".")[:2])
    if int(m.group(1)) < 38 and major >= (0, 11):
        return (f"Edge-LLM {edgellm_version} supports Orin on JetPack 7.2 only; this device runs L4T {l4t} "
                "(JetPack 6): use Edge-LLM 0.10 (JetPack 6.2+) or flash JetPack 7.2")
    if int(m.group(1)) < 36:
        return f"L4T {l4t} is JetPack 5 or older: Edge-LLM needs JetPack 6.2 or newer"
    return None
