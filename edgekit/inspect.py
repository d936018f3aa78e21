"""Facts about an artifact: a model file of any format (edgekit.formats), or an edgekit export
folder (its manifest, plus the facts of its ONNX decoder)."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.formats import all_formats, get_format, resolve_artifact
from edgekit.manifest import ExportManifest


def inspect_artifact(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise EdgekitError(f"{path} does not exist", "pass a .gguf file or an edgekit export folder")
    if path.is_dir():
        # an engine's profiles (every input, min/opt/max) are shown once, compact, by its format's facts
        manifest = ExportManifest.read(path).model_dump(exclude={"engine": {"profiles"}})
        facts = {"kind": "export", "path": str(path), **manifest}
        if get_format(facts["format"]).one_model_per_folder:
            model, fmt = resolve_artifact(path)
            facts["model"] = fmt.inspect(model)
        return facts
    for fmt in all_formats():
        if fmt.sniff(path):
            return fmt.inspect(path)
    raise EdgekitError(f"{path} is not a GGUF file, an .onnx file or an edgekit export folder",
                       "pass a .gguf or .onnx file, or a folder written by edgekit export")


def inspect_gguf(path: Path) -> dict:
    return get_format("gguf").inspect(Path(path))


def inspect_onnx(path: Path) -> dict:
    return get_format("onnx").inspect(Path(path))
