"""The one result schema every runner fills: one JSON document per benchmark run.

Units are suffixes: `_s` seconds, `_w` watts, `_j` joules, `_tok_s` tokens per
second, `_bytes` bytes, `_gb_s` gigabytes (1e9) per second.
"""

from __future__ import annotations

import json
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from edgekit.errors import EdgekitError

SCHEMA_VERSION = 2  # 2: runtime options in settings.llama_cpp / settings.onnxruntime (1 is read too)


class Stat(BaseModel):
    """Mean, sample standard deviation and every sample."""

    mean: float
    stdev: float
    samples: list[float]

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
    cpu_cores: int | None = None
    ram_bytes: int | None = None
    python: str | None = None
    accelerators: list[str] = []


class ArtifactInfo(BaseModel):
    path: str
    format: str                     # gguf, onnx, tensorrt
    quant: str | None = None        # llama.cpp spelling
    size_bytes: int
    sha256: str | None = None       # of the file; for ONNX, of model.onnx followed by its external data
    n_params: int | None = None
    architecture: str | None = None


class RuntimeInfo(BaseModel):
    name: str                       # llama.cpp, onnxruntime, ...
    version: str
    backend: str                    # CPU, CUDA, Metal, ...
    build_flags: str | None = None


class LlamaCppSettings(BaseModel):
    gpu_layers: int
    n_batch: int
    n_ubatch: int
    flash_attn: str                 # auto/on/off


class OnnxRuntimeSettings(BaseModel):
    gpu_layers: int                 # every layer on a GPU provider, else 0
    n_batch: int                    # prompt chunk (each runs whole)
    providers: list[str]            # execution providers, in order
    graph_optimization: str


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

    @property
    def runtime(self) -> LlamaCppSettings | OnnxRuntimeSettings:
        part = self.llama_cpp or self.onnxruntime
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


def settings_from_v1(settings: dict, fmt: str) -> dict:
    """Schema 1 kept every runtime's fields side by side (flash_attn "n/a" for ONNX, providers
    None for llama.cpp): the same facts in schema 2's per-runtime part."""
    common = {k: settings[k] for k in ("n_prompt", "n_gen", "repetitions", "threads", "ctx", "warmup",
                                       "random_tokens") if k in settings}
    if fmt == "onnx":
        part = {"onnxruntime": {"gpu_layers": settings.get("gpu_layers", 0), "n_batch": settings.get("n_batch", 1),
                                "providers": settings.get("providers") or [],
                                "graph_optimization": settings.get("graph_optimization") or "all"}}
    else:
        part = {"llama_cpp": {k: settings[k] for k in ("gpu_layers", "n_batch", "n_ubatch", "flash_attn")
                              if k in settings}}
    return {**common, **part}


class Metrics(BaseModel):
    pp_tok_s: Stat | None = None
    tg_tok_s: Stat | None = None
    ttft_s: Stat | None = None      # prompt of n_prompt tokens + the first generated token
    load_s: float
    peak_rss_bytes: int
    peak_gpu_mem_bytes: int | None = None


class PowerInfo(BaseModel):
    source: str | None = None       # e.g. "rapl:package-0+dram", "nvml:GPU0 total energy"
    excludes: str | None = None     # what the sensor cannot see
    unavailable: str | None = None  # why there is no power figure, when there is none
    sample_interval_s: float | None = None
    idle_w: float | None = None
    pp_avg_w: float | None = None
    tg_avg_w: float | None = None
    pp_j_per_tok: float | None = None
    tg_j_per_tok: float | None = None
    pp_j_per_tok_above_idle: float | None = None
    tg_j_per_tok_above_idle: float | None = None
    samples: list[tuple[float, float]] = []   # (seconds since run start, watts)
    raw_log: str | None = None


class Roofline(BaseModel):
    bandwidth_gb_s: float
    bandwidth_source: str           # "measured: ..." or a spec sheet
    bytes_per_token: int            # weights read per token + KV cache at the mean context of the tg run
    tg_bound_tok_s: float
    efficiency: float | None = None  # achieved tg / bound


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
            raise EdgekitError(f"{path} is not an edgekit bench result ({' '.join(str(e).split())[:160]})",
                               "pass result files written by edgekit bench -o (llama-bench format is output only)") from None

    def to_llama_bench(self) -> list[dict[str, Any]]:
        """llama-bench's JSON (`-o json`): one object per test, pp and tg, for the overlapping fields."""
        s, m = self.settings, self.metrics
        base = {
            "build_commit": None, "build_number": None,
            "cpu_info": self.host.cpu_model, "gpu_info": ", ".join(self.host.accelerators),
            "backends": self.runtime.backend, "model_filename": self.artifact.path,
            "model_type": f"{self.artifact.architecture or '?'} {self.artifact.quant or '?'}",
            "model_size": self.artifact.size_bytes, "model_n_params": self.artifact.n_params,
            "n_batch": s.n_batch, "n_ubatch": s.n_ubatch, "n_threads": s.threads, "n_gpu_layers": s.gpu_layers,
            "flash_attn": {"on": 1, "off": 0}.get(s.flash_attn or "", -1), "n_depth": 0, "test_time": self.created_utc,
        }
        out = []
        for n_prompt, n_gen, n_tok, stat in ((s.n_prompt, 0, s.n_prompt, m.pp_tok_s), (0, s.n_gen, s.n_gen, m.tg_tok_s)):
            if stat is None:
                continue
            samples_ns = [round(n_tok / ts * 1e9) for ts in stat.samples]
            out.append({**base, "n_prompt": n_prompt, "n_gen": n_gen,
                        "avg_ns": round(statistics.fmean(samples_ns)),
                        "stddev_ns": round(statistics.stdev(samples_ns)) if len(samples_ns) > 1 else 0,
                        "avg_ts": stat.mean, "stddev_ts": stat.stdev,
                        "samples_ns": samples_ns, "samples_ts": stat.samples})
        return out
