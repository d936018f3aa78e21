"""An artifact as deploy sends it: its files (the model, its external data, the metadata beside
it in an export folder), their sha256 (checked against the export manifest) and sizes, and the
key of its folder on the device."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgekit.device.wheels import cached_sha256
from edgekit.errors import EdgekitError
from edgekit.formats import resolve_artifact
from edgekit.manifest import MANIFEST_NAME, ExportManifest

# ---------------------------------------------------------------- the artifact


@dataclass
class ArtifactFiles:
    """An artifact as deploy sends it: `files` (name in the export folder -> local path) with their
    sha256 and sizes, `main` the file a runner loads, `key` its folder under <remote>/models/."""

    key: str
    format: str
    main: str
    files: dict[str, Path]
    sha256: dict[str, str]
    sizes: dict[str, int]
    facts: object  # ModelFacts

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())


METADATA_FILES = ("manifest.json", "config.json", "genai_config.json", "generation_config.json",
                  "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def artifact_files(artifact: Path, hash_progress: Callable[[str, float, float], None] | None = None) -> ArtifactFiles:
    """The files of `artifact` (a model file or an export folder holding one) that a run on the
    device reads: the model file, its external data, and the small metadata files beside it in an
    export folder. sha256 of each, checked against the export manifest's where it has one (a
    mismatch means the file changed since its export: refused)."""
    artifact = Path(artifact)
    model, fmt = resolve_artifact(artifact)
    fmt.check(model)
    facts = fmt.facts(model)
    folder = model.parent
    names = [model.name, *facts.external_data]
    if artifact.is_dir() or (folder / MANIFEST_NAME).is_file():
        names += [n for n in METADATA_FILES if (folder / n).is_file() and n not in names]
    files = {n: folder / n for n in names}
    expected: dict[str, str] = {}
    if (folder / MANIFEST_NAME).is_file():
        try:
            manifest = ExportManifest.read(folder)
            expected = {f.file: f.sha256 for f in manifest.files if not facts.external_data}
        except EdgekitError:
            expected = {}
    sha, sizes = {}, {}
    for n, p in files.items():
        sizes[n] = p.stat().st_size
        if hash_progress:
            hash_progress(f"sha256 {n}", 0, 1)
        sha[n] = cached_sha256(p)
        if n in expected and expected[n] != sha[n]:
            raise EdgekitError(f"{p} does not match its export manifest (sha256 {sha[n][:12]}..., the manifest says "
                               f"{expected[n][:12]}...): it changed after the export",
                               "re-export it, or deploy the file itself rather than the export folder")
    digest = hashlib.sha256("".join(f"{n}\0{sha[n]}\0" for n in sorted(sha)).encode()).hexdigest()[:10]
    stem = artifact.name if artifact.is_dir() else model.stem
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "model"
    return ArtifactFiles(f"{key}-{digest}", fmt.name, model.name, files, sha, sizes, facts)
