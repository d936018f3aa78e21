"""The one result schema every runner fills: one JSON document per benchmark run.

Units are suffixes: `_s` seconds, `_w` watts, `_j` joules, `_tok_s` tokens per
second, `_bytes` bytes, `_gb_s` gigabytes (1e9) per second.
"""

from __future__ import annotations

import json
import math
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from edgekit.errors import EdgekitError
from edgekit.runtimes import LLAMA_CPP, RUNTIMES
from edgekit.terminal import printable

SCHEMA_VERSION = 2  # 2: runtime options in settings.llama_cpp / settings.onnxruntime (1 is read too)

# What a measurement can be: finite, not negative, and within what any machine edgekit measures
# could reach (generous: a result beyond them is broken or made up, as a hostile device's can be).
MAX_TOK_S = 1e8                  # tokens per second
MAX_SECONDS = 1e7                # ~116 days
MAX_BYTES = 2**50                # 1 PiB
MAX_WATTS = 1e5                  # 100 kW
MAX_GB_S = 1e5                   # memory bandwidth, GB/s

Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
TokS = Annotated[float, Field(ge=0, le=MAX_TOK_S, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]
Watts = Annotated[float, Field(ge=0, le=MAX_WATTS, allow_inf_nan=False)]
Bytes = Annotated[int, Field(ge=0, le=MAX_BYTES)]
Count = Annotated[int, Field(ge=0)]


def problem_of(e: Exception) -> str:
    """A validation error as one short clause naming the field: `metrics.tg_tok_s.mean: Input should be
    a finite number (got nan)`; any other error as its text."""
    if isinstance(e, ValidationError) and e.errors():
        first = e.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "the document"
        got = first.get("input")
        got = "" if isinstance(got, (dict, list)) else f" (got {printable(repr(got), 60)})"
        more = f"; {e.error_count() - 1} more" if e.error_count() > 1 else ""
        return printable(f"{where}: {first.get('msg', 'invalid')}{got}{more}", 240)
    return printable(" ".join(str(e).split()), 160)


class Stat(BaseModel):
    """Mean, sample standard deviation and every sample (finite and not negative: speeds and times)."""

    mean: NonNegative
    stdev: NonNegative
    samples: list[NonNegative]

    @classmethod
    def of(cls, samples: list[float]) -> "Stat":
        if not samples:
            raise ValueError("no samples")
        return cls(mean=statistics.fmean(samples),
                   stdev=statistics.stdev(samples) if len(samples) > 1 else 0.0, samples=list(samples))


class ToolInfo(BaseModel):
    name: str = "edgekit"
    version: str


class HostInfo(BaseModel):
    hostname: str | None = None
    os: str | None = None
    machine: str | None = None
    cpu_model: str | None = None
    cpu_cores: Count | None = None
    ram_bytes: Bytes | None = None
    python: str | None = None
    accelerators: list[str] = []
    reached_as: str | None = None   # the SSH destination the run was started through (bench --host)


class ArtifactInfo(BaseModel):
    path: str
    format: str                     # gguf, onnx, tensorrt
    quant: str | None = None        # llama.cpp spelling
    size_bytes: Bytes
    sha256: str | None = None       # of the file; for ONNX, of model.onnx followed by its external data
    n_params: Count | None = None
    architecture: str | None = None
    model_type: str | None = None   # the runtime's own: llama.cpp's llama_model_desc ("qwen2 1.5B Q4_K - Medium")
    tensor_bytes: int | None = None  # llama.cpp's llama_model_size: bytes of all tensors (less than the file)


class RuntimeInfo(BaseModel):
    name: str                       # llama.cpp, onnxruntime, ...
    version: str
    backend: str                    # CPU, CUDA, Metal, ...
    build_flags: str | None = None
    # the runtime's own words (None where it has none, and in results written before edgekit kept them)
    build_commit: str | None = None  # the commit it was built from (llama.cpp: short hash, as llama-bench writes it)
    build_number: int | None = None  # llama.cpp's build number (not in its shared libraries: None)
    backends: str | None = None      # llama.cpp: ggml's registered backends, as llama-bench lists them ("CPU", "CUDA")
    cpu_info: str | None = None      # llama.cpp: its CPU (and accelerator) devices' descriptions
    gpu_info: str | None = None      # llama.cpp: its GPU devices' descriptions, "" when none


class LlamaCppSettings(BaseModel):
    gpu_layers: int
    n_batch: int
    n_ubatch: int
    flash_attn: str                 # auto/on/off
    # what else the runner passed to llama.cpp: the library's defaults, which edgekit does not vary
    # (read back from the parameter structs; None in results written before edgekit recorded them)
    type_k: str | None = None       # KV cache types, as ggml_type_name spells them ("f16")
    type_v: str | None = None
    split_mode: str | None = None   # none/layer/row/tensor
    main_gpu: int | None = None
    offload_kqv: bool | None = None
    op_offload: bool | None = None
    embeddings: bool | None = None
    load_mode: str | None = None    # llama_load_mode_name: auto, none, mmap, mlock, mmap+mlock, dio
    lazy_mode: str | None = None    # off/auto/on
    repack: bool | None = None      # use_extra_bufts (weight repacking)
    no_host: bool | None = None


class OnnxRuntimeSettings(BaseModel):
    gpu_layers: int                 # every layer on a GPU provider, else 0
    n_batch: int                    # prompt chunk (each runs whole)
    providers: list[str]            # execution providers, in order
    graph_optimization: str


class TensorRTSettings(BaseModel):
    gpu_layers: int                 # every layer: an engine runs whole on its GPU
    n_batch: int                    # prompt chunk (at most the engine's prefill profile)
    engine: str                     # generic (edgekit's runner) or edgellm (Edge-LLM's llm_bench)
    precision: str                  # fp16 / int4
    tensorrt_version: str | None = None
    tool: str | None = None         # what ran the engine: "edgekit runner" or the llm_bench path
    cuda_graph: bool = False        # decode replayed from a captured CUDA graph


class Settings(BaseModel):
    """What the run did; the runtime's own options in its part (`llama_cpp` or `onnxruntime`)."""

    n_prompt: int
    n_gen: int
    repetitions: int
    threads: int
    ctx: int
    warmup: bool = True
    random_tokens: bool = True      # speed does not depend on token values; llama-bench does the same
    llama_cpp: LlamaCppSettings | None = None
    onnxruntime: OnnxRuntimeSettings | None = None
    tensorrt: TensorRTSettings | None = None

    @property
    def runtime(self) -> LlamaCppSettings | OnnxRuntimeSettings | TensorRTSettings:
        part = self.llama_cpp or self.onnxruntime or self.tensorrt
        if part is None:
            raise ValueError("the settings hold no runtime part")
        return part

    @property
    def gpu_layers(self) -> int:
        return self.runtime.gpu_layers

    @property
    def n_batch(self) -> int:
        return self.runtime.n_batch

    @property
    def n_ubatch(self) -> int:
        return getattr(self.runtime, "n_ubatch", self.runtime.n_batch)

    @property
    def flash_attn(self) -> str | None:
        return getattr(self.runtime, "flash_attn", None)


RESULT_SETTINGS = {"llama_cpp": LlamaCppSettings, "onnxruntime": OnnxRuntimeSettings, "tensorrt": TensorRTSettings}  # a runtime's settings_field
# what schema 1 left out of an ONNX run's settings (or wrote as null)
V1_DEFAULTS = {"onnxruntime": {"gpu_layers": 0, "n_batch": 1, "providers": [], "graph_optimization": "all"}}


def settings_from_v1(settings: dict, fmt: str) -> dict:
    """Schema 1 kept every runtime's fields side by side (flash_attn "n/a" for ONNX, providers
    None for llama.cpp): the same facts in schema 2's per-runtime part."""
    common = {k: settings[k] for k in ("n_prompt", "n_gen", "repetitions", "threads", "ctx", "warmup",
                                       "random_tokens") if k in settings}
    runtime = next((r for r in RUNTIMES.values() if r.format == fmt and r.settings_field), LLAMA_CPP)
    fields = RESULT_SETTINGS[runtime.settings_field].model_fields
    part = {**V1_DEFAULTS.get(runtime.settings_field, {}),
            **{k: settings[k] for k in fields if k in settings and settings[k] is not None}}
    return {**common, runtime.settings_field: part}


class Metrics(BaseModel):
    pp_tok_s: Stat | None = None
    tg_tok_s: Stat | None = None
    ttft_s: Stat | None = None      # prompt of n_prompt tokens + the first generated token
    load_s: Seconds
    peak_rss_bytes: Bytes
    peak_gpu_mem_bytes: Bytes | None = None

    @model_validator(mode="after")
    def _within_bounds(self):
        for name, bound in (("pp_tok_s", MAX_TOK_S), ("tg_tok_s", MAX_TOK_S), ("ttft_s", MAX_SECONDS)):
            stat = getattr(self, name)
            if stat is not None and max([stat.mean, *stat.samples]) > bound:
                raise ValueError(f"{name} of {max([stat.mean, *stat.samples]):g} is beyond {bound:g}: not a measurement")
        return self


class PowerInfo(BaseModel):
    source: str | None = None       # e.g. "rapl:package-0+dram", "nvml:GPU0 total energy"
    excludes: str | None = None     # what the sensor cannot see
    unavailable: str | None = None  # why there is no power figure, when there is none
    sample_interval_s: Seconds | None = None
    idle_w: Watts | None = None
    pp_avg_w: Watts | None = None
    tg_avg_w: Watts | None = None
    pp_j_per_tok: NonNegative | None = None
    tg_j_per_tok: NonNegative | None = None
    pp_j_per_tok_above_idle: Finite | None = None  # below idle by noise: may be negative
    tg_j_per_tok_above_idle: Finite | None = None
    samples: list[tuple[Seconds, Watts]] = []   # (seconds since run start, watts)
    raw_log: str | None = None


class Roofline(BaseModel):
    bandwidth_gb_s: Annotated[float, Field(gt=0, le=MAX_GB_S, allow_inf_nan=False)]
    bandwidth_source: str           # "measured: ..." or a spec sheet
    bytes_per_token: Bytes          # weights read per token + KV cache at the mean context of the tg run
    tg_bound_tok_s: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    efficiency: NonNegative | None = None  # achieved tg / bound (above 1 is warned about, not refused)


class BenchResult(BaseModel):
    schema_version: int = SCHEMA_VERSION
    tool: ToolInfo
    created_utc: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    host: HostInfo
    target: str
    artifact: ArtifactInfo
    runtime: RuntimeInfo
    settings: Settings
    metrics: Metrics
    power: PowerInfo
    roofline: Roofline | None = None
    target_state: dict[str, Any] = {}   # clocks, power mode, temperatures, throttling: {"before": ..., "after": ...}
    warnings: list[str] = []

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def load(cls, path: Path) -> "BenchResult":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EdgekitError(f"{path} does not exist", "pass result files written by edgekit bench -o") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EdgekitError(f"{path} is not JSON ({' '.join(str(e).split())})",
                               "pass result files written by edgekit bench -o") from None
        version = data.get("schema_version", SCHEMA_VERSION) if isinstance(data, dict) else None
        if isinstance(data, dict) and (not isinstance(version, int) or isinstance(version, bool)):
            raise EdgekitError(f"{path} has schema_version {json.dumps(version)[:40]}, not a whole number",
                               "pass result files written by edgekit bench -o")
        if isinstance(data, dict) and version > SCHEMA_VERSION:
            raise EdgekitError(f"{path} has schema_version {data['schema_version']}, newer than this edgekit's "
                               f"{SCHEMA_VERSION}", "upgrade edgekit")
        if version == 1 and isinstance(data.get("settings"), dict):
            data = {**data, "schema_version": SCHEMA_VERSION,
                    "settings": settings_from_v1(data["settings"], (data.get("artifact") or {}).get("format"))}
        try:
            return cls.model_validate(data)
        except Exception as e:
            raise EdgekitError(f"{path} is not an edgekit bench result ({problem_of(e)})",
                               "pass result files written by edgekit bench -o (llama-bench format is output only)") from None

    def to_llama_bench(self) -> list[dict[str, Any]]:
        """llama-bench's JSON (`-o json`): one object per test, pp then tg, with every field llama-bench
        writes, in its order and with its JSON types (LLAMA_BENCH_FIELDS), so that llama.cpp's
        scripts/compare-llama-bench.py reads it. Where the result holds no value, the value is what
        llama-bench reports for the same run: the threadpool's "0x0"/false/50 (edgekit attaches
        none, so llama.cpp computes with ggml's default threadpool params); no devices list, tensor
        split, overrides, MoE offload, fitting or depth. Results written before edgekit kept the
        llama.cpp facts fall back to the llama.cpp defaults it passed then, the host's facts and
        edgekit's own model label; ONNX Runtime results take the same shape, with llama-bench's
        defaults in the llama.cpp-only fields. model_size is llama_model_size (tensor bytes)."""
        s, m, a, rt = self.settings, self.metrics, self.artifact, self.runtime
        lc = s.llama_cpp

        def passed(name: str, default):
            value = getattr(lc, name, None) if lc is not None else None
            return default if value is None else value

        base = {
            "build_commit": rt.build_commit or "unknown", "build_number": rt.build_number or 0,
            "cpu_info": rt.cpu_info if rt.cpu_info is not None else (self.host.cpu_model or ""),
            "gpu_info": rt.gpu_info if rt.gpu_info is not None else ", ".join(self.host.accelerators),
            "backends": rt.backends or rt.backend, "model_filename": a.path,
            "model_type": a.model_type or f"{a.architecture or '?'} {a.quant or '?'}",
            # llama-bench writes llama_model_size (artifact.tensor_bytes: the file less its header and
            # metadata); a result written before edgekit kept it falls back to the file's size
            "model_size": a.tensor_bytes if a.tensor_bytes is not None else a.size_bytes,
            "model_n_params": a.n_params or 0, "n_batch": s.n_batch, "n_ubatch": s.n_ubatch, "n_threads": s.threads,
            "cpu_mask": "0x0", "cpu_strict": False, "poll": 50,
            "type_k": passed("type_k", "f16"), "type_v": passed("type_v", "f16"), "n_gpu_layers": s.gpu_layers,
            "n_cpu_moe": 0, "split_mode": passed("split_mode", "layer"), "main_gpu": passed("main_gpu", 0),
            "no_kv_offload": not passed("offload_kqv", True),
            "flash_attn": LLAMA_BENCH_FLASH_ATTN.get(s.flash_attn or "", -1),
            "devices": "auto", "tensor_split": "0.00", "tensor_buft_overrides": "none",
            "load_mode": passed("load_mode", "auto"), "lazy_mode": passed("lazy_mode", "auto"),
            "embeddings": passed("embeddings", False), "no_op_offload": int(not passed("op_offload", True)),
            "no_host": passed("no_host", False), "repack": passed("repack", True), "fit_target": 0, "fit_min_ctx": 0,
        }
        test_time = datetime.fromisoformat(self.created_utc).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        out = []
        for n_prompt, n_gen, n_tok, stat in ((s.n_prompt, 0, s.n_prompt, m.pp_tok_s), (0, s.n_gen, s.n_gen, m.tg_tok_s)):
            if stat is None:
                continue
            samples_ns = [round(n_tok / ts * 1e9) for ts in stat.samples]
            out.append({**base, "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": 0, "test_time": test_time,
                        "avg_ns": sum(samples_ns) // len(samples_ns), "stddev_ns": _llama_bench_stdev_ns(samples_ns),
                        "avg_ts": stat.mean, "stddev_ts": stat.stdev,
                        "samples_ns": samples_ns, "samples_ts": stat.samples})
        return out


LLAMA_BENCH_FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}  # llama_flash_attn_type, written as an integer

# llama-bench's fields (tools/llama-bench/llama-bench.cpp: test::get_fields(), then the JSON printer's
# samples_ns and samples_ts), in its order; tests/test_llama_bench_format.py checks them against that source.
LLAMA_BENCH_FIELDS = (
    "build_commit", "build_number", "cpu_info", "gpu_info", "backends", "model_filename", "model_type", "model_size",
    "model_n_params", "n_batch", "n_ubatch", "n_threads", "cpu_mask", "cpu_strict", "poll", "type_k", "type_v",
    "n_gpu_layers", "n_cpu_moe", "split_mode", "main_gpu", "no_kv_offload", "flash_attn", "devices", "tensor_split",
    "tensor_buft_overrides", "load_mode", "lazy_mode", "embeddings", "no_op_offload", "no_host", "repack",
    "fit_target", "fit_min_ctx", "n_prompt", "n_gen", "n_depth", "test_time", "avg_ns", "stddev_ns", "avg_ts",
    "stddev_ts", "samples_ns", "samples_ts",
)


def _llama_bench_stdev_ns(samples: list[int]) -> int:
    """llama-bench's stdev of its uint64 nanosecond samples, in its integer arithmetic:
    sqrt(sum(x^2) / (n-1) - mean^2 * n / (n-1)) with the integer mean, truncated (0 for one sample),
    without the uint64 wrap-around that garbles it there once samples pass about 4 s."""
    n = len(samples)
    if n <= 1:
        return 0
    mean = sum(samples) // n
    var = sum(x * x for x in samples) // (n - 1) - mean * mean * n // (n - 1)
    return int(math.sqrt(max(var, 0)))


# ---------------------------------------------------------------- edgekit eval: quality, one JSON document per run

EVAL_SCHEMA_VERSION = 1


class EvalText(BaseModel):
    """The text scored: edgekit's shipped one (its file name) or the --text file (its path)."""

    name: str
    sha256: str                     # of the scored text's UTF-8 bytes (the shipped file's header excluded)
    chars: int
    tokens: int                     # the whole text in the artifact's tokenizer (BOS included where it adds one)


class EvalSettings(BaseModel):
    threads: int
    add_bos: bool                   # each chunk's first token is BOS (replacing a text token, as llama-perplexity)
    scored_per_chunk: int           # ctx - 1 - ctx // 2: positions of the second half, each predicting the next token
    onnx_logits: str | None = None  # ONNX: "all" (one pass per chunk) or "last" (the chunk stepped token by token)
    method: str = ("llama-perplexity: the text cut into ctx-token chunks, each from an empty cache; the first half "
                   "of a chunk is context only, the second half is scored")


class Distribution(BaseModel):
    """Of one per-position quantity over all scored positions."""

    mean: Finite
    median: Finite
    p99: Finite
    max: Finite


class KLInfo(BaseModel):
    """The artifact against a reference on the same tokens (llama-perplexity --kl-divergence's figures)."""

    reference: ArtifactInfo         # format "hf" for a Hugging Face checkpoint run through transformers
    reference_runtime: RuntimeInfo
    kl_divergence: Distribution     # KL(reference || artifact) of the next-token distributions, nats
    same_top_rate: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]  # positions where both agree on the top token
    delta_p_mean: Finite            # mean of p_artifact - p_reference of the correct next token (fraction, not %)
    delta_p_stdev: NonNegative
    reference_perplexity: NonNegative
    ln_ppl_ratio: Finite             # mean of nll_artifact - nll_reference = ln(PPL / reference PPL)


class EvalResult(BaseModel):
    schema_version: int = EVAL_SCHEMA_VERSION
    kind: str = "eval"              # tells an eval file from a bench result (which has no `kind`)
    tool: ToolInfo
    created_utc: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    host: HostInfo
    artifact: ArtifactInfo
    runtime: RuntimeInfo
    text: EvalText
    ctx: int                        # tokens per chunk
    chunks: int                     # chunks evaluated
    n_tokens: int                   # positions scored (chunks x settings.scored_per_chunk)
    perplexity: NonNegative         # exp(mean negative log-likelihood of the scored tokens)
    perplexity_stderr: NonNegative  # llama-perplexity's "+/-": PPL x the standard error of the mean nll
    nll_mean: NonNegative
    settings: EvalSettings
    kl: KLInfo | None = None        # with --reference
    seconds: Seconds
    warnings: list[str] = []

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @staticmethod
    def is_eval(data: Any) -> bool:
        return isinstance(data, dict) and data.get("kind") == "eval"

    @classmethod
    def load(cls, path: Path) -> "EvalResult":
        fix = "pass result files written by edgekit eval -o"
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EdgekitError(f"{path} does not exist", fix) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EdgekitError(f"{path} is not JSON ({' '.join(str(e).split())})", fix) from None
        version = data.get("schema_version") if isinstance(data, dict) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > EVAL_SCHEMA_VERSION:
            raise EdgekitError(f"{path} has eval schema_version {version}, newer than this edgekit's "
                               f"{EVAL_SCHEMA_VERSION}", "upgrade edgekit")
        try:
            return cls.model_validate(data)
        except Exception as e:
            raise EdgekitError(f"{path} is not an edgekit eval result ({problem_of(e)})", fix) from None
