"""Edge-LLM's ONNX: the folder `tensorrt-edgellm-export` writes (model.onnx and its weights,
embedding.safetensors, config.json, the tokenizer and chat template), with an edgekit
manifest.json listing every file. It is no model a runtime loads: it is what Edge-LLM's
`llm_build` makes an engine of, on the device the engine will run on (`edgekit export tensorrt
--engine edgellm`), so deploy sends it whole (every file the manifest lists) and bench refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.formats import ModelFacts, manifest_format
from edgekit.manifest import ExportManifest
from edgekit.runtimes import TENSORRT

NAME = "edgellm-onnx"
MAIN = "model.onnx"


def _folder(path: Path) -> Path:
    return Path(path) if Path(path).is_dir() else Path(path).parent


def _manifest(path: Path) -> ExportManifest:
    m = ExportManifest.read(_folder(path))
    if m.format != NAME:
        raise EdgekitError(f"{_folder(path)} is a {m.format} export, not Edge-LLM's ONNX",
                           "pass a folder written by edgekit export tensorrt --engine edgellm")
    return m


def model_dims(folder: Path) -> dict[str, int]:
    """layers, kv_heads, head_size and hidden of the model, from the exported config.json."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        return {"layers": int(cfg["num_hidden_layers"]), "kv_heads": int(cfg.get("num_key_value_heads") or heads),
                "head_size": int(cfg.get("head_dim") or hidden // heads), "hidden": hidden}
    except (OSError, ValueError, KeyError, TypeError):
        raise EdgekitError(f"{folder}/config.json does not give the model's dims",
                           "export it again: edgekit export tensorrt --engine edgellm") from None


class EdgeLlmOnnxFormat:
    name = NAME
    runtime = TENSORRT.name
    library = "TensorRT Edge-LLM"
    one_model_per_folder = True
    reads_header_only = True  # the manifest and config.json

    def sniff(self, path: Path) -> bool:
        p = Path(path)
        return p.name == MAIN and p.is_file() and manifest_format(p.parent) == NAME

    def find_in(self, folder: Path) -> list[Path]:
        return [Path(folder) / MAIN] if manifest_format(folder) == NAME and (Path(folder) / MAIN).is_file() else []

    def check(self, path: Path) -> None:
        folder = _folder(path)
        for f in _manifest(path).files:
            p = folder / f.file
            if not p.is_file() or p.stat().st_size != f.size_bytes:
                got = p.stat().st_size if p.is_file() else "missing"
                raise EdgekitError(f"{p} is not the file the manifest names ({got} bytes, expected {f.size_bytes})",
                                   "export it again: edgekit export tensorrt --engine edgellm")

    def facts(self, path: Path) -> ModelFacts:
        """What the engine will read per token: FP16 weights 2 bytes each, INT4 (AWQ, group 128) half a
        byte plus an FP16 scale per group; the embedding (its own file, a lookup) not at all; an FP16 KV."""
        m = _manifest(path)
        folder = _folder(path)
        dims = model_dims(folder)
        quant = m.files[0].quant
        matmul = max(m.n_params - m.vocab_size * dims["hidden"], 0)
        per_weight = 2.0 if quant == "FP16" else 0.5 + 2.0 / 128
        return ModelFacts(format=self.name, path=folder / MAIN, quant=quant,
                          size_bytes=sum(f.size_bytes for f in m.files), n_params=m.n_params,
                          architecture=m.architecture, weight_bytes_per_token=int(matmul * per_weight),
                          kv_bytes_per_position=2 * dims["layers"] * dims["kv_heads"] * dims["head_size"] * 2,
                          n_layers=dims["layers"], external_data=tuple(f.file for f in m.files[1:]),
                          context_length=m.context_length, n_vocab=m.vocab_size)

    def inspect(self, path: Path) -> dict:
        self.check(path)
        m = _manifest(path)
        return {"format": self.name, "path": str(path), "architecture": m.architecture, "n_params": m.n_params,
                "quant": m.files[0].quant, "size_bytes": sum(f.size_bytes for f in m.files),
                "files": [f.file for f in m.files], "dims": model_dims(_folder(path)),
                "exporter": m.tools.get("tensorrt-edgellm"), "source": m.source.spec,
                "note": "Edge-LLM's ONNX: its llm_build makes the engine on the device (export tensorrt --engine "
                        "edgellm --on DEST)"}

    def context_length(self, path: Path) -> int | None:
        try:
            return _manifest(path).context_length
        except EdgekitError:
            return None

    def make_runner(self, path: Path, settings, spec):
        raise EdgekitError("Edge-LLM's ONNX is not run as it is: its llm_build makes an engine of it on the device",
                           f"edgekit export tensorrt {_folder(path)} --engine edgellm --on DEST, then bench that folder")

    def runtime_version(self) -> str:
        return TENSORRT.version_text()


FORMAT = EdgeLlmOnnxFormat()
