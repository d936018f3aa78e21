"""Facts about an artifact: a GGUF file, or an edgekit export folder (its manifest)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from edgekit.errors import EdgekitError


def inspect_artifact(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise EdgekitError(f"{path} does not exist", "pass a .gguf file or an edgekit export folder")
    if path.is_dir():
        from edgekit.manifest import ExportManifest

        return {"kind": "export", "path": str(path), **ExportManifest.read(path).model_dump()}
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return inspect_gguf(path)
    raise EdgekitError(f"{path} is not a GGUF file or an edgekit export folder",
                       "pass a .gguf file or a folder written by edgekit export")


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    try:
        return f.contents()
    except Exception:
        return default


def inspect_gguf(path: Path) -> dict:
    from edgekit.converters.gguf import check_gguf_complete, file_type_name

    check_gguf_complete(path)
    import gguf

    reader = gguf.GGUFReader(path)
    arch = _field(reader, "general.architecture", "unknown")
    a = lambda key, default=None: _field(reader, f"{arch}.{key}", default)  # noqa: E731
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    n_tokens = len(tokens.data) if tokens is not None else 0
    bos, eos = _field(reader, "tokenizer.ggml.bos_token_id"), _field(reader, "tokenizer.ggml.eos_token_id")
    token_text = (lambda i: _field(reader, "tokenizer.ggml.tokens", [])[i] if i is not None and i < n_tokens else None)
    ftype = _field(reader, "general.file_type")
    types = Counter(t.tensor_type.name for t in reader.tensors)
    return {
        "kind": "gguf",
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "architecture": arch,
        "name": _field(reader, "general.name"),
        "quant": file_type_name(ftype) if ftype is not None else None,
        # rope_freqs holds precomputed rope scaling factors, not parameters
        "n_params": int(sum(int(t.n_elements) for t in reader.tensors if not t.name.startswith("rope_freqs"))),
        "n_tensors": len(reader.tensors),
        "tensor_types": dict(types.most_common()),
        "context_length": a("context_length"),
        "embedding_length": a("embedding_length"),
        "block_count": a("block_count"),
        "feed_forward_length": a("feed_forward_length"),
        "head_count": a("attention.head_count"),
        "head_count_kv": a("attention.head_count_kv"),
        "rope_freq_base": a("rope.freq_base"),
        "tokenizer": {
            "model": _field(reader, "tokenizer.ggml.model"),
            "pre": _field(reader, "tokenizer.ggml.pre"),
            "n_tokens": n_tokens,
            "bos_token_id": bos,
            "bos_token": token_text(bos),
            "eos_token_id": eos,
            "eos_token": token_text(eos),
            "add_bos": _field(reader, "tokenizer.ggml.add_bos_token"),
            "chat_template": "tokenizer.chat_template" in reader.fields,
        },
        "gguf_version": _field(reader, "GGUF.version"),
    }
