"""deploy.json: the record a deploy leaves on the device (RemoteManifest): edgekit's wheel, the
runtimes with their recipes and build, the models in the store and the artifacts linked to them."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel

MANIFEST = "deploy.json"


# ---------------------------------------------------------------- the remote manifest


class RuntimeRecord(BaseModel):
    name: str                        # llama.cpp, onnxruntime
    distribution: str                # llama-cpp-python, onnxruntime-gpu, ...
    version: str
    recipe: str                      # the install line it came from (its env and pip arguments)
    wheel: str | None = None         # the wheel installed, when one was
    wheel_origin: str | None = None  # where that wheel came from ("built on pi@10.0.0.5", "--wheels DIR")
    wheel_sha256: str | None = None
    backends: list[str] = []         # as the device's doctor reads them (CPU, CUDA, Metal, ...)
    build: str | None = None         # llama.cpp's system info


class ModelRecord(BaseModel):
    size_bytes: int
    names: list[str] = []            # the names it was deployed under


class ArtifactRecord(BaseModel):
    format: str
    main: str                        # the file a runner loads, in models/<key>/
    files: dict[str, str]            # name -> sha256
    source: str                      # where it came from on the workstation
    deployed_utc: str


class RemoteManifest(BaseModel):
    schema_version: int = 1
    edgekit_version: str | None = None
    edgekit_wheel_sha256: str | None = None
    python: str | None = None
    target: str | None = None
    runtimes: dict[str, RuntimeRecord] = {}
    models: dict[str, ModelRecord] = {}      # sha256 -> record
    artifacts: dict[str, ArtifactRecord] = {}
    updated_utc: str | None = None


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
