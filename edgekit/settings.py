"""BenchSettings: everything a benchmark run is told, built by the CLI (or a script) and passed
whole to the library, to a child process, and later to a device, so that a remote run uses
exactly what a local run uses. Runtime-specific options live in their runtime's part."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LlamaCppOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gpu_layers: int | None = None          # None: the target's default (all on Jetson/Apple/NVIDIA hosts)
    n_batch: int = Field(2048, ge=1)       # logical batch for prompt decoding
    n_ubatch: int = Field(512, ge=1)       # physical batch
    flash_attn: Literal["auto", "on", "off"] = "auto"


class OnnxRuntimeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    providers: list[str] | None = None     # None: the target's, filtered by what this onnxruntime has
    graph_opt: Literal["disable", "basic", "extended", "all"] = "all"
    n_batch: int = Field(2048, ge=1)       # prompt chunk size (each chunk runs whole)


class TensorRTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_batch: int = Field(2048, ge=1)       # prompt chunk; capped at the engine's prefill profile (max_prompt)


class BenchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_prompt: int = 512                    # prompt tokens per pp test (0: no pp, no TTFT)
    n_gen: int = 128                       # generated tokens per tg test (0: no tg)
    repetitions: int = 5
    threads: int | None = None             # None: the target's big cores, within what this process may use
    ctx: int = 0                           # 0: what the run needs
    power: str = "auto"                    # a sensor name, auto or none
    target: str = "auto"                   # auto (detect), or a name from `edgekit targets`
    idle_s: float = 2.0                    # idle baseline before the tests, when a sensor is read
    sample_interval_s: float = 0.1
    hash_artifact: bool = True
    llama_cpp: LlamaCppOptions = LlamaCppOptions()
    onnxruntime: OnnxRuntimeOptions = OnnxRuntimeOptions()
    tensorrt: TensorRTOptions = TensorRTOptions()
