"""TensorRT: an engine folder written by `edgekit export tensorrt` (model.engine, manifest.json
with the engine's record, genai_config.json and the tokenizer), run by TensorRT on the GPU that
built it.

What the folder holds is read from its manifest, never from the engine (a plan is opaque and
only the TensorRT that wrote it reads it): the model's parameters and dims, the precision, the
profiles, and what the engine is bound to (`engine.runs_only_on`). An engine built on a device
and kept there has no model.engine in the folder; its manifest names where it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.formats import ModelFacts
from edgekit.manifest import MANIFEST_NAME, ExportManifest
from edgekit.runners.edgellm import EdgeLlmRunner
from edgekit.runners.tensorrt import TensorRTRunner
from edgekit.runtimes import TENSORRT

ENGINE_SUFFIXES = (".engine", ".plan")


def _manifest(path: Path) -> ExportManifest:
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    m = ExportManifest.read(folder)
    if m.format != "tensorrt" or m.engine is None:
        raise EdgekitError(f"{folder} is a {m.format} export, not a TensorRT engine folder",
                           "pass a folder written by edgekit export tensorrt")
    return m


def _is_engine_folder(folder: Path) -> bool:
    try:
        data = json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == "tensorrt"


def _genai(folder: Path) -> dict:
    try:
        model = json.loads((Path(folder) / "genai_config.json").read_text(encoding="utf-8"))["model"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return model if isinstance(model, dict) else {}


def _dims(shape) -> str:
    return "x".join(map(str, shape))


def _compact(shapes: dict) -> dict[str, str]:
    """input -> "min..max (opt X)"; the past key/value inputs, alike but for their names, as one line."""
    out: dict[str, str] = {}
    past = [k for k in shapes if k.startswith("past_key_values.")]
    for name, s in shapes.items():
        if name in past[1:]:
            continue
        label = f"past_key_values.* ({len(past)})" if name in past else name
        out[label] = f"{_dims(s['min'])}..{_dims(s['max'])} (opt {_dims(s['opt'])})"
    return out


class TensorRTFormat:
    name = "tensorrt"
    runtime = TENSORRT.name
    library = TENSORRT.label
    one_model_per_folder = True
    reads_header_only = True  # the manifest: a small JSON

    def sniff(self, path: Path) -> bool:
        p = Path(path)
        return p.suffix in ENGINE_SUFFIXES and p.is_file() and _is_engine_folder(p.parent)

    def find_in(self, folder: Path) -> list[Path]:
        if not _is_engine_folder(folder):
            return []
        m = _manifest(folder)
        local = [Path(folder) / f.file for f in m.files if f.format == "tensorrt"]
        return [p for p in local if p.is_file()] or [Path(folder) / MANIFEST_NAME]

    def check(self, path: Path) -> None:
        m = _manifest(path)
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        for f in m.files:
            p = folder / f.file
            if m.engine.location and not p.exists():
                continue  # kept on the device that built it
            if not p.is_file() or p.stat().st_size != f.size_bytes:
                got = p.stat().st_size if p.is_file() else "missing"
                raise EdgekitError(f"{p} is not the engine the manifest names ({got} bytes, expected "
                                   f"{f.size_bytes})", "build it again: edgekit export tensorrt")

    def inspect(self, path: Path) -> dict:
        self.check(path)
        m = _manifest(path)
        e = m.engine
        engine_file = next((f for f in m.files if f.format == "tensorrt"), None)
        return {
            "format": self.name, "path": str(path), "architecture": m.architecture, "n_params": m.n_params,
            "quant": engine_file.quant if engine_file else e.precision.upper(),
            "size_bytes": engine_file.size_bytes if engine_file else None,
            "engine": e.engine, "builder": e.builder, "tensorrt_version": e.tensorrt_version,
            "device": e.device, "compute_capability": e.compute_capability, "accelerators": e.accelerators,
            "built_on": e.built_on, "location": e.location, "precision": e.precision,
            "max_prompt": e.max_prompt, "max_context": e.max_context,
            "profiles": {p["name"]: _compact(p["shapes"]) for p in e.profiles},
            "dims": e.dims, "source_onnx_sha256": e.source_onnx_sha256, "block_size": e.block_size,
            "runs_only_on": e.runs_only_on, "source": m.source.spec,
        }

    def facts(self, path: Path) -> ModelFacts:
        """Bytes per token from the model (the engine's own layout is TensorRT's): FP16 weights 2
        bytes each, INT4 half a byte plus an FP16 scale per block; the token embedding (a lookup,
        kept FP16) read only at its rows; an FP16 KV cache."""
        m = _manifest(path)
        e = m.engine
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        hidden = int((_genai(folder).get("decoder") or {}).get("hidden_size") or 0)
        embedding = m.vocab_size * hidden
        matmul = max(m.n_params - embedding, 0)
        per_weight = 2.0 if e.precision == "fp16" else 0.5 + 2.0 / (e.block_size or 32)
        kv = 2 * int(e.dims["layers"]) * int(e.dims["kv_heads"]) * int(e.dims["head_size"]) * 2
        size = sum(f.size_bytes for f in m.files if f.format == "tensorrt")
        return ModelFacts(format=self.name, path=Path(path), quant=e.precision.upper(), size_bytes=size,
                          n_params=m.n_params, architecture=m.architecture,
                          weight_bytes_per_token=int(matmul * per_weight), kv_bytes_per_position=kv,
                          n_layers=int(e.dims["layers"]), context_length=e.max_context, n_vocab=m.vocab_size,
                          details=self.inspect(path))

    def context_length(self, path: Path) -> int | None:
        """The engine's own limit: its decode profile's largest cache (max_context)."""
        try:
            return _manifest(path).engine.max_context
        except EdgekitError:
            return None

    def make_runner(self, path: Path, settings, spec):
        """The engine's own runner: edgekit's TensorRT runner for a generic engine (refusing a prompt
        beyond its prefill profile before anything loads), Edge-LLM's llm_bench for its engines."""
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        e = _manifest(folder).engine
        if settings.n_prompt > e.max_prompt:
            raise EdgekitError(f"-p {settings.n_prompt} is more than the engine's prefill profile of {e.max_prompt} "
                               "tokens", f"pass -p {e.max_prompt} or less, or rebuild with --max-prompt "
                               f"{settings.n_prompt}")
        if e.engine == "edgellm":
            return EdgeLlmRunner(folder, settings.n_prompt, settings.n_gen)
        return TensorRTRunner(folder, n_batch=max(settings.tensorrt.n_batch, settings.n_prompt))

    def device_needs(self, path: Path) -> dict[str, str]:
        """What a device must have to run this engine (names of doctor's "tensorrt tools"), each with its fix."""
        if _manifest(path).engine.engine == "edgellm":
            return {"llm_bench": "build TensorRT Edge-LLM's C++ examples on the device (its install guide) and put "
                                 "llm_bench on PATH, or set EDGEKIT_LLM_BENCH"}
        return {"python bindings": "install JetPack's TensorRT bindings (sudo apt install python3-libnvinfer) and "
                                   "deploy again: the venv links them; the device can build with trtexec meanwhile"}

    def runtime_version(self) -> str:
        return TENSORRT.version_text()


FORMAT = TensorRTFormat()
