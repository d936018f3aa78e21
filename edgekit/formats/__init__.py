"""Artifact formats, one module per format, in one table.

Each format module (gguf.py, onnx.py, tensorrt.py) provides a module-level `FORMAT`
that satisfies `Format`: what its files look like (`sniff`, `find_in`), whether one is whole
(`check`), what it holds (`facts` -> ModelFacts; `inspect` -> the full fact dict of
`edgekit inspect`), which runtime runs it (`runtime`, `runtime_version`) and how
(`make_runner`). bench, inspect and the roofline ask this table; nothing else branches on
a format's name, and runners never import converters.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgekit.errors import EdgekitError

# name -> module; the order is the order `resolve_artifact` asks them
FORMATS: dict[str, str] = {"gguf": "edgekit.formats.gguf", "onnx": "edgekit.formats.onnx",
                           "tensorrt": "edgekit.formats.tensorrt", "edgellm-onnx": "edgekit.formats.edgellm_onnx"}


def manifest_format(folder: Path) -> str | None:
    """The `format` of the edgekit manifest in `folder` (a small JSON read), or None without one."""
    try:
        data = json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("format") if isinstance(data, dict) and isinstance(data.get("format"), str) else None


@dataclass(frozen=True)
class ModelFacts:
    """What an artifact holds, in the units bench, roofline and plan need.

    `weight_bytes_per_token` is what generating one token reads of the weights (all of them
    but what is only looked up: the token embedding, unless it doubles as the output);
    `kv_bytes_per_position` what the KV cache adds per position of context."""

    format: str
    path: Path                       # the file a runner loads
    quant: str | None
    size_bytes: int                  # on disk, external data included
    n_params: int
    architecture: str | None
    weight_bytes_per_token: int
    kv_bytes_per_position: int
    n_layers: int | None = None
    external_data: tuple[str, ...] = ()
    context_length: int | None = None  # the model's trained context, where the artifact says
    n_vocab: int | None = None
    details: dict[str, Any] = field(default_factory=dict, compare=False)  # the full inspect dict

    def bytes_per_token(self, ctx_tokens: float) -> int:
        """Bytes read to generate one token at a context of `ctx_tokens`."""
        return int(self.weight_bytes_per_token + self.kv_bytes_per_position * ctx_tokens)


class Format(Protocol):
    name: str          # "gguf", "onnx": the manifest's and the result's spelling
    runtime: str       # the runtime that runs it, as results name it ("llama.cpp", "onnxruntime")
    library: str       # the native library a crash would come from, for error lines
    # an export folder holds one model file, named alike in every export (ONNX: model.onnx), so
    # tables name it with its folder and `inspect FOLDER` shows the model; GGUF folders hold one per quant
    one_model_per_folder: bool
    # `check()` and `facts()` read only the file's header: cheap before a run or a child loads it
    # (GGUF); else they parse the graph (ONNX: its inline weights), so bench reads them after the run
    reads_header_only: bool

    def sniff(self, path: Path) -> bool:
        """Is this file of this format (cheap: a suffix or magic bytes; never raises on foreign or short files)."""

    def find_in(self, folder: Path) -> list[Path]:
        """The model file(s) of this format in an export folder (ONNX: the decoder, by genai_config.json)."""

    def check(self, path: Path) -> None:
        """Raise an EdgekitError when the artifact is truncated, corrupt or incomplete."""

    def inspect(self, path: Path) -> dict:
        """Every fact `edgekit inspect` shows (the artifact is checked first)."""

    def facts(self, path: Path) -> ModelFacts: ...

    def context_length(self, path: Path) -> int | None:
        """The context the model was trained for, read cheaply (a header, a small JSON), or None."""

    def make_runner(self, path: Path, settings, spec):
        """A Runner for `path` with these BenchSettings on this TargetSpec."""

    def runtime_version(self) -> str:
        """'<distribution> <version>' of the installed runtime."""


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise EdgekitError(f"no format '{name}'", f"known: {', '.join(FORMATS)}")
    return importlib.import_module(FORMATS[name]).FORMAT


def all_formats() -> list[Format]:
    return [get_format(name) for name in FORMATS]


def resolve_artifact(path: Path) -> tuple[Path, Format]:
    """A model file, or an export folder holding exactly one, -> (the file, its format)."""
    path = Path(path)
    if not path.exists():
        raise EdgekitError(f"{path} does not exist", "pass a .gguf file, an .onnx file or an edgekit export folder")
    if path.is_dir():
        found = [(f, fmt) for fmt in all_formats() for f in fmt.find_in(path)]
        if len(found) == 1:
            return found[0]
        if not found:
            raise EdgekitError(f"{path} holds no .gguf or .onnx file", "pass a model file or an edgekit export folder")
        raise EdgekitError(f"{path} holds {len(found)} model files ({', '.join(f.name for f, _ in found)})",
                           "pass one of them")
    for fmt in all_formats():
        if fmt.sniff(path):
            return path, fmt
    with open(path, "rb") as f:
        magic = f.read(4)
    raise EdgekitError(f"{path} is not a GGUF file (starts with {magic!r}) and not an .onnx file",
                       "pass a .gguf file, e.g. one written by edgekit export gguf, or an ONNX export folder")
