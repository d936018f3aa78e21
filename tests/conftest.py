from __future__ import annotations

import shutil
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


def _hf_written(preset: str, std: float, folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from edgekit.synth import synthesize

    synth = folder.parent / f"{folder.name}-synth"
    synthesize(preset, synth, seed=seed)  # config and tokenizer; the weights come from transformers
    config = AutoConfig.from_pretrained(synth)
    config.initializer_range = std
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # norms at 1 +- 0.1, as trained models have them, so swapped norms matter
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder, safe_serialization=True)
    for f in synth.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            shutil.copy(f, folder / f.name)
    shutil.rmtree(synth)
    return folder


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """(preset, initializer_range) -> a checkpoint folder written by transformers itself (cached)."""
    cache: dict[tuple[str, float], Path] = {}

    def get(preset: str, std: float) -> Path:
        if (preset, std) not in cache:
            cache[preset, std] = _hf_written(preset, std, tmp_path_factory.mktemp("hf") / f"{preset}-{std}")
        return cache[preset, std]

    return get


@pytest.fixture(scope="session")
def onnx_export(tmp_path_factory):
    """Export a checkpoint to ONNX once per (checkpoint, precision, options), verified."""
    cache = {}

    def get(ckpt, precision, logits="last", fuse=False, **int4):
        from edgekit.converters import onnx as onnx_conv
        from edgekit.converters.onnx_int4 import Int4Options

        key = (ckpt, precision, logits, fuse, tuple(sorted(int4.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("onnx") / f"{ckpt.name}-{precision}"
            manifest = onnx_conv.export_onnx(str(ckpt), out, precision, Int4Options(**int4),
                                             verify=True, threads=2, logits=logits, fuse=fuse)
            cache[key] = (out, manifest)
        return cache[key]

    return get
