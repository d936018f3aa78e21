"""ONNX: a decoder with KV cache in optimum's layout (an edgekit export folder), run by ONNX Runtime."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from edgekit.formats import ModelFacts, manifest_format
from edgekit.runners.onnxruntime import (
    OrtRunner,
    available_providers,
    check_onnx_complete,
    choose_providers,
    find_model,
    load_graph,
)
from edgekit.runtimes import ONNXRUNTIME

ONNX_ELEM_BYTES = {1: 4, 10: 2, 16: 2, 11: 8, 7: 8, 6: 4, 2: 1, 3: 1, 9: 1, 21: 0.5, 22: 0.5}  # TensorProto types


def _inspect(path: Path) -> dict:
    """Facts of an ONNX decoder read from its graph (weights not loaded): parameters, bytes,
    precision, KV cache layout, custom ops, external data."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

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


class ONNXFormat:
    name = "onnx"
    runtime = ONNXRUNTIME.name
    library = ONNXRUNTIME.label
    one_model_per_folder = True
    reads_header_only = False

    def sniff(self, path: Path) -> bool:
        return Path(path).suffix == ".onnx" and Path(path).is_file() and not _other_export(Path(path).parent)

    def find_in(self, folder: Path) -> list[Path]:
        return [find_model(folder)] if any(Path(folder).glob("*.onnx")) and not _other_export(folder) else []

    def check(self, path: Path) -> None:
        check_onnx_complete(Path(path))

    def inspect(self, path: Path) -> dict:
        return _inspect(Path(path))

    def facts(self, path: Path) -> ModelFacts:
        d = self.inspect(path)
        genai = _genai_model(path)
        return ModelFacts(format=self.name, path=Path(path), quant=d["quant"], size_bytes=d["size_bytes"],
                          n_params=d["n_params"], architecture=d["architecture"],
                          weight_bytes_per_token=d["weights_bytes"] - d["embedding_bytes"],
                          kv_bytes_per_position=d["kv_cache"].get("bytes_per_position", 0),
                          n_layers=d["kv_cache"].get("layers"), external_data=tuple(d["external_data"]),
                          context_length=_int(genai.get("context_length")), n_vocab=_int(genai.get("vocab_size")),
                          details=d)

    def context_length(self, path: Path) -> int | None:
        return _int(_genai_model(path).get("context_length"))

    def make_runner(self, path: Path, settings, spec):
        o = settings.onnxruntime
        providers = choose_providers(o.providers, spec.onnxruntime_providers, available_providers())
        return OrtRunner(Path(path).parent, threads=settings.threads, providers=providers, graph_opt=o.graph_opt,
                         model_file=Path(path).name, n_batch=o.n_batch,
                         max_context=settings.ctx or settings.n_prompt + settings.n_gen + 1)

    def runtime_version(self) -> str:
        return ONNXRUNTIME.version_text()


def _other_export(folder: Path) -> bool:
    """An export of another format that holds .onnx files (Edge-LLM's ONNX, for its own builder)."""
    return manifest_format(folder) not in (None, "onnx")


def _int(value) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def _genai_model(path: Path) -> dict:
    """genai_config.json's "model" part beside an export's model file ({} without one): the context
    and vocabulary the export was made with."""
    try:
        genai = json.loads((Path(path).parent / "genai_config.json").read_text(encoding="utf-8"))["model"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return genai if isinstance(genai, dict) else {}


FORMAT = ONNXFormat()
