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

        facts = {"kind": "export", "path": str(path), **ExportManifest.read(path).model_dump()}
        if facts["format"] == "onnx":
            from edgekit.runners.onnxruntime import find_model

            facts["model"] = inspect_onnx(find_model(path))
        return facts
    if path.suffix == ".onnx":
        return inspect_onnx(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return inspect_gguf(path)
    raise EdgekitError(f"{path} is not a GGUF file, an .onnx file or an edgekit export folder",
                       "pass a .gguf or .onnx file, or a folder written by edgekit export")


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


ONNX_ELEM_BYTES = {1: 4, 10: 2, 16: 2, 11: 8, 7: 8, 6: 4, 2: 1, 3: 1, 9: 1, 21: 0.5, 22: 0.5}  # TensorProto types


def inspect_onnx(path: Path) -> dict:
    """Facts of an ONNX decoder read from its graph (weights not loaded): parameters, bytes,
    precision, KV cache layout, custom ops, external data."""
    import json

    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    from edgekit.converters.onnx import check_onnx_complete, load_graph

    path = Path(path)
    model = load_graph(path)
    check_onnx_complete(path, model)
    graph = model.graph
    init = {t.name: t for t in graph.initializer}

    def n_elem(t) -> int:
        n = 1
        for d in t.dims:
            n *= int(d)
        return n

    def n_bytes(t) -> int:
        if uses_external_data(t):
            return int(ExternalDataInfo(t).length or 0)
        if t.raw_data:
            return len(t.raw_data)
        return int(n_elem(t) * ONNX_ELEM_BYTES.get(t.data_type, 4))

    params = 0
    counted: set[str] = set()
    embedding: set[str] = set()
    ops = Counter(n.op_type for n in graph.node)
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            params += int(attrs["K"]) * int(attrs["N"])
            counted.update(i for i in node.input[1:] if i)
        elif node.op_type == "GatherBlockQuantized":
            params += n_elem(init[node.input[0]]) if node.input[0] in init else 0
            counted.update(i for i in (node.input[0], *node.input[2:]) if i)
            embedding.update(i for i in (node.input[0], *node.input[2:]) if i)
        elif node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == "input_ids" and node.input[0] in init:
            embedding.add(node.input[0])
    params += sum(n_elem(t) for name, t in init.items() if name not in counted and n_elem(t) > 1)
    total = sum(n_bytes(t) for t in init.values())
    if ops.get("MatMulNBits"):
        quant = "INT4"
    else:
        big = max(init.values(), key=n_elem, default=None)
        quant = {1: "F32", 10: "F16", 16: "BF16"}.get(big.data_type, str(big.data_type)) if big is not None else None
    past = [i for i in graph.input if i.name.startswith("past_key_values.")]
    kv = {}
    if past:
        dims = [d.dim_value for d in past[0].type.tensor_type.shape.dim]
        elem = ONNX_ELEM_BYTES.get(past[0].type.tensor_type.elem_type, 4)
        kv = {"layers": len(past) // 2, "kv_heads": dims[1], "head_dim": dims[3], "dtype_bytes": elem,
              "bytes_per_position": int(len(past) * dims[1] * dims[3] * elem)}
    logits_out = next((o for o in graph.output if o.name == "logits"), None)
    seq = logits_out.type.tensor_type.shape.dim[1] if logits_out is not None else None
    externals = sorted({ExternalDataInfo(t).location for t in init.values() if uses_external_data(t)})
    # optimum's graph repeats the cache to every query head (Unsqueeze, then Expand); edgekit's export
    # (and a graph without grouped heads) multiplies by the present key/value as stored
    unsqueezed = {n.output[0] for n in graph.node if n.op_type == "Unsqueeze" and n.input[0].startswith("present.")}
    repeats = any(n.op_type == "Expand" and n.input[0] in unsqueezed for n in graph.node)
    attention = ("GroupQueryAttention" if ops.get("GroupQueryAttention") else None if not past else
                 "cache repeated per query head" if repeats else "cache read as stored")
    arch = None
    for meta in ("config.json", "genai_config.json"):
        try:
            cfg = json.loads((path.parent / meta).read_text(encoding="utf-8"))
            arch = (cfg.get("architectures") or [None])[0] if meta == "config.json" else cfg["model"]["type"]
            if arch:
                break
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return {
        "kind": "onnx",
        "path": str(path),
        "size_bytes": path.stat().st_size + sum((path.parent / e).stat().st_size for e in externals),
        "architecture": arch,
        "quant": quant,
        "n_params": int(params),
        "weights_bytes": int(total),
        "embedding_bytes": int(sum(n_bytes(init[n]) for n in embedding)),
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "ir_version": model.ir_version,
        "inputs": [i.name for i in graph.input if not i.name.startswith("past_key_values.")] +
                  ([f"past_key_values.0-{len(past) // 2 - 1}.key/value"] if past else []),
        "kv_cache": kv,
        "logits": None if seq is None else "last position" if seq.dim_value == 1 else "every position",
        "attention": attention,
        "contrib_ops": {k: v for k, v in ops.items() if k in ("MatMulNBits", "GatherBlockQuantized",
                                                              "GroupQueryAttention", "SkipSimplifiedLayerNormalization")},
        "n_nodes": len(graph.node),
        "external_data": externals,
    }
