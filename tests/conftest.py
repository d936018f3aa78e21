from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.synth import synthesize


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "tiny-qwen2"
    synthesize("tiny-qwen2", out, seed=1)
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "tiny-llama"
    synthesize("tiny-llama", out, seed=2)
    return out


@pytest.fixture(scope="session", params=["tiny_qwen2", "tiny_llama"])
def tiny_ckpt(request) -> Path:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Export each tiny checkpoint once (F16 kept, Q4_K_M and Q4_0, verified)."""
    from edgekit.converters.gguf import export_gguf

    cache: dict[Path, tuple[Path, object]] = {}

    def get(ckpt: Path):
        if ckpt not in cache:
            out = tmp_path_factory.mktemp("gguf") / ckpt.name
            manifest = export_gguf(str(ckpt), out, ["F16", "Q4_K_M", "Q4_0"], verify=True, threads=2)
            cache[ckpt] = (out, manifest)
        return cache[ckpt]

    return get
