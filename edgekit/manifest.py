"""manifest.json: what an export produced, from what, with which tools, and how it checked out."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from edgekit.errors import EdgekitError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
TOOL_PACKAGES = ("edgekit", "gguf", "llama-cpp-python", "transformers", "torch", "safetensors", "tokenizers",
                 "onnx", "onnxruntime", "optimum", "optimum-onnx")


class SourceInfo(BaseModel):
    spec: str                      # what the user passed
    path: str                      # the folder read (the HF cache snapshot for hub ids)
    hub_id: str | None = None
    dtype: str                     # stored dtype of the source weights


class ArtifactFile(BaseModel):
    file: str                      # name inside the export folder
    format: Literal["gguf", "onnx", "tensorrt", "edgellm-onnx"]
    quant: str                     # llama.cpp spelling: Q4_K_M, F16, ...
    size_bytes: int
    sha256: str
    seconds: float                 # time to produce this file
    verify: dict[str, Any] | None = None
    options: dict[str, Any] | None = None   # how it was made (e.g. INT4 block size, symmetry)


class EngineInfo(BaseModel):
    """What a TensorRT engine is bound to and how it was built (a tensorrt export's manifest)."""

    engine: Literal["generic", "edgellm"]
    builder: str                        # "tensorrt 10.3.0", "tensorrt-rtx 1.7.1.116", "trtexec"
    tensorrt_version: str | None
    device: str | None = None           # the GPU it was built on (trtexec's "Selected Device"), None: none seen
    compute_capability: str | None = None  # "8.7"
    accelerators: list[str] = []        # TensorRT-RTX: the GPU architectures the plan holds code for
    built_on: str                       # "this machine" or the device as deploy reached it
    location: str | None = None         # where the engine is, when it stayed on the device that built it
    precision: Literal["fp16", "int4"]
    max_prompt: int
    max_context: int
    profiles: list[dict[str, Any]]      # converters.tensorrt.Profile.to_dict()
    dims: dict[str, Any]                # layers, kv_heads, head_size of the model
    source_onnx_sha256: str
    block_size: int | None = None       # INT4
    runs_only_on: str                   # the sentence inspect shows


class ExportManifest(BaseModel):
    schema_version: int = SCHEMA_VERSION
    format: Literal["gguf", "onnx", "tensorrt", "edgellm-onnx"]
    created_utc: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    source: SourceInfo
    architecture: str              # HF class
    n_params: int
    vocab_size: int
    context_length: int
    tokenizer: dict[str, Any] = {}
    name: str | None = None
    opset: int | None = None       # ONNX exports
    files: list[ArtifactFile]
    verified: bool | None = None        # were the files checked against the source (None: not recorded)
    verify_skipped: str | None = None   # why not, when they were not
    tools: dict[str, str]
    host: dict[str, Any] = {}
    total_s: float
    engine: EngineInfo | None = None    # tensorrt exports

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: Path) -> "ExportManifest":
        path = Path(folder) / MANIFEST_NAME
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise EdgekitError(f"no {MANIFEST_NAME} in {folder}", "pass an edgekit export folder or a model file") from None
        except Exception as e:
            raise EdgekitError(f"{path} is not a valid edgekit manifest ({' '.join(str(e).split())[:160]})",
                               "re-run the export") from None


def verify_decision(verify: bool | None, n_params: int) -> tuple[bool, str | None]:
    """--verify/--no-verify/default -> (verify?, why not). The default checks models up to 3B
    parameters: above, transformers' float32 reference alone needs over 12 GB."""
    if verify is None:
        if n_params <= 3_000_000_000:
            return True, None
        return False, (f"not verified: {n_params / 1e9:.1f}B parameters is over the 3B default "
                       "(pass --verify to check anyway)")
    return verify, None if verify else "not verified: --no-verify"


def tool_versions() -> dict[str, str]:
    out = {}
    for pkg in TOOL_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def sha256_of(path: Path, chunk: int = 8 << 20, *more: Path) -> str:
    """sha256 of a file, or of several files' bytes in order (an .onnx and its external data)."""
    h = hashlib.sha256()
    for p in (path, *more):
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()
