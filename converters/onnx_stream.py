"""The ONNX decoder of a whole checkpoint built from one traced block, with its weights streamed.

optimum-onnx traces the whole model in torch, which holds about twice the weights at its peak
(34 GB for a 7B model in FP16): no laptop can export a 7B or 8B checkpoint that way. A decoder
is one block repeated, so edgekit traces a *template* instead: the same architecture and the same
attention dims (hidden size, heads, KV heads, head dim, rotary), but at most TEMPLATE_LAYERS layers,
a small MLP and a small vocabulary, every weight filled with its own seeded random values. That
graph is then assembled into the checkpoint's:

- its anonymous names (TorchScript's `onnx::MatMul_745`, `Constant_303`) are first given names
  from the graph's own scopes (`name_anonymous`: the traced export gets the same pass, so the two
  can be compared name for name);
- which checkpoint tensor every initializer is, and whether transposed, is found by value: each
  template weight is unique, so an initializer equals exactly one parameter or its transpose
  (`match_weights`, in the trace's child);
- the first layer, one middle layer and the last layer of the template are the patterns: layer 0
  is kept, the middle pattern is repeated for layers 1..N-2 (its inputs from the previous layer
  moved along), the last is kept as layer N-1; the template's layer 1 must equal the middle
  pattern moved back by one, or the checkpoint is not one repeated block and is refused;
- every initializer's bytes are read from the checkpoint's safetensors one tensor at a time,
  converted as transformers would load them (to the export's dtype, transposed where the graph
  holds the transpose) and written to the external data file as they come (`write_model`); for
  INT4 each MatMul weight is quantized there by onnxruntime's own blockwise quantizer, one tensor
  at a time, into the same MatMulNBits or DequantizeLinear nodes its whole-graph quantizer writes.

The result has the traced export's inputs, outputs, nodes and initializers (tests/test_onnx_stream.py
proves it, node for node and byte for byte, on both architectures); its peak memory is the
template's trace plus about two copies of the largest tensor, not the whole model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.converters.onnx_graph import TOKENIZER_FILES, run_optimum_export
from edgekit.errors import EdgekitError

TEMPLATE_LAYERS = 4      # first, two middle (one to check the other), last
TEMPLATE_VOCAB = 136     # small, and a number no attention dim of a real model is
TEMPLATE_MLP = 72        # likewise for the intermediate size
WEIGHT_MAP_FILE = "edgekit-weight-map.json"
ALIGN = 4096             # tensors of 1 MiB or more start on a page, so ONNX Runtime can map them
ALIGN_FROM = 1 << 20
INLINE_BELOW = 1024      # as onnx.save_model's size_threshold: shapes and scalars stay in the graph


# ---------------------------------------------------------------- the template


def template_config(config: dict) -> dict:
    """The checkpoint's config.json with at most TEMPLATE_LAYERS layers, a small MLP and vocabulary."""
    out = dict(config)
    out["num_hidden_layers"] = min(int(config["num_hidden_layers"]), TEMPLATE_LAYERS)
    out["intermediate_size"] = TEMPLATE_MLP
    out["vocab_size"] = TEMPLATE_VOCAB
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):  # ids of the real vocabulary
        out.pop(key, None)
    out.pop("layer_types", None)  # recomputed for the template's layer count
    return out


def streamable_problem(config: dict) -> str | None:
    """Why this checkpoint's layers are not one repeated block (None when they are)."""
    if config.get("use_sliding_window"):
        return "its layers differ (sliding-window attention from layer max_window_layers on)"
    types = set(config.get("layer_types") or [])
    if len(types) > 1:
        return f"its layers differ ({', '.join(sorted(types))})"
    return None


def run_template_export(ckpt_path: str, work: str, precision: str) -> None:
    """The child's work: write the template checkpoint, trace it with optimum-onnx (as the traced
    export does the checkpoint), and record which parameter every float initializer is."""
    import onnx
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    src, work_dir = Path(ckpt_path), Path(work)
    tdir = work_dir / "template-checkpoint"
    config = AutoConfig.from_pretrained(str(src))
    tconfig = AutoConfig.for_model(**template_config(config.to_dict()))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tconfig, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # every value its own: the initializers are found by value
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    model.save_pretrained(str(tdir), safe_serialization=True)
    for f in TOKENIZER_FILES:
        if f != "config.json" and (src / f).is_file():
            shutil.copy2(src / f, tdir / f)
    del model
    out = work_dir / "template"
    run_optimum_export(str(tdir), str(out), precision)
    model_path = out / "model.onnx"
    traced = onnx.load(str(model_path))
    name_anonymous(traced.graph)
    onnx.save_model(traced, str(model_path))  # the template is small: one file, weights inline
    del traced
    reloaded = AutoModelForCausalLM.from_pretrained(
        str(tdir), dtype=torch.float16 if precision == "fp16" else torch.float32)
    params = {name: p.detach().float().numpy() for name, p in reloaded.named_parameters()}
    weight_map = match_weights(out / "model.onnx", params)
    (out / WEIGHT_MAP_FILE).write_text(json.dumps(weight_map, indent=1) + "\n")
    # the folder's config and tokenizer are the checkpoint's, as the traced export writes them: its
    # config as loaded in the export's dtype
    config.dtype = torch.float16 if precision == "fp16" else torch.float32
    config.save_pretrained(str(out))
    shutil.rmtree(tdir)


def _key(a: np.ndarray) -> tuple:
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a.shape, hashlib.sha256(a.tobytes()).hexdigest()


def match_weights(model_path: Path, params: dict[str, np.ndarray]) -> dict[str, dict]:
    """initializer name -> {"param": HF name, "transpose": bool} for every float initializer that is a
    parameter of the traced model or its transpose (each template weight has values of its own)."""
    import onnx
    from onnx import numpy_helper

    keys: dict[tuple, tuple[str, bool]] = {}
    for name, p in params.items():
        keys.setdefault(_key(p), (name, False))
        if p.ndim == 2:
            keys.setdefault(_key(p.T), (name, True))
    model = onnx.load(str(model_path))
    out = {}
    for t in model.graph.initializer:
        if t.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) or len(t.dims) == 0:
            continue
        hit = keys.get(_key(numpy_helper.to_array(t)))
        if hit:
            out[t.name] = {"param": hit[0], "transpose": hit[1]}
    return out


# ---------------------------------------------------------------- names


def _dotted(node_name: str) -> str:
    return node_name.strip("/").replace("/", ".")


def name_anonymous(graph) -> int:
    """Give TorchScript's numbered names (`onnx::MatMul_745` initializers and values, `Constant_303`
    nodes) names from the graph's scopes, in place; returns how many were renamed.

    An anonymous initializer is named after its consumer (`model.layers.0.self_attn.q_proj.MatMul.weight`
    for a MatMul's B), an anonymous Constant node and its value after the node it feeds
    (`/model/layers.0/self_attn/Unsqueeze/Constant_input1`), and an anonymous value after the node
    that makes it. The numbers depend on the whole trace; these names do not, so a graph assembled
    from a template and one traced whole agree name for name."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, k))
    io = {v.name for v in graph.input} | {v.name for v in graph.output}
    taken = {n.name for n in graph.node} | {o for n in graph.node for o in n.output} | \
        {t.name for t in graph.initializer} | io
    renames: dict[str, str] = {}

    def claim(old: str, new: str) -> None:
        if new in taken:
            raise EdgekitError(f"naming the traced graph: '{new}' (for '{old}') is taken",
                               "export with --method trace, and please report this checkpoint")
        taken.add(new)
        renames[old] = new

    def first_consumer(value: str):
        users = consumers.get(value)
        if not users:
            raise EdgekitError(f"naming the traced graph: nothing reads '{value}'",
                               "export with --method trace, and please report this checkpoint")
        return users[0]

    for t in graph.initializer:
        if t.name.startswith("onnx::"):
            node, k = first_consumer(t.name)
            claim(t.name, f"{_dotted(node.name)}.{'weight' if k == 1 and node.op_type == 'MatMul' else f'input{k}'}")
    changed = 0
    for node in graph.node:
        if not node.name.startswith("/") and node.op_type == "Constant":
            user, k = first_consumer(node.output[0])
            base = f"{user.name}/Constant_input{k}"
            if base in taken:
                raise EdgekitError(f"naming the traced graph: '{base}' is taken",
                                   "export with --method trace, and please report this checkpoint")
            taken.add(base)
            node.name = base
            claim(node.output[0], base + "_output_0")
            changed += 1
    for node in graph.node:
        for j, out in enumerate(node.output):
            if out.startswith("onnx::") and out not in renames:
                claim(out, f"{node.name}_output_{j}")
    for t in graph.initializer:
        t.name = renames.get(t.name, t.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
    return changed + len(renames)


def name_graph(model_path: Path) -> int:
    """name_anonymous on an ONNX file, in place (the graph only: external weights stay where they are)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    renamed = name_anonymous(model.graph)
    if renamed:
        onnx.save_model(model, str(model_path))
    return renamed


# ---------------------------------------------------------------- layers

_NODE_LAYER = re.compile(r"^/model/layers\.(\d+)/")
_TAG = re.compile(r"(layers\.|past_key_values\.|present\.)(\d+)(?=[./])")


def layer_index(name: str) -> int | None:
    """The layer a name belongs to (`model.layers.3.mlp...`, `/model/layers.3/...`, `present.3.key`), or None."""
    m = _TAG.search(name)
    return int(m.group(2)) if m else None


def _retag(name: str, moves: dict[int, int]) -> str:
    """`name` with its layer index moved by `moves` (template layer -> target layer)."""
    m = _TAG.search(name)
    if m is None:
        return name
    layer = int(m.group(2))
    if layer not in moves:
        raise EdgekitError(f"assembling the ONNX graph: '{name}' belongs to layer {layer}, which this block may not read",
                           "export with --method trace, and please report this checkpoint")
    return name[: m.start(2)] + str(moves[layer]) + name[m.end(2):]


@dataclass
class Assembly:
    graph: object                         # onnx GraphProto: nodes, inputs, outputs; the weights without data
    sources: dict[str, tuple[str, bool]]  # initializer name -> (checkpoint tensor, transposed)


def _segments(graph, n_template: int) -> tuple[list, list[list], list]:
    """The template's nodes as (before the layers, each layer's, after), refusing interleaved layers."""
    pre, layers, post = [], [[] for _ in range(n_template)], []
    last = -1
    for node in graph.node:
        m = _NODE_LAYER.match(node.name)
        if m is None:
            (pre if last < 0 else post).append(node)
            continue
        layer = int(m.group(1))
        if layer < last or post:
            raise EdgekitError(f"the traced template's layers are interleaved (node {node.name})",
                               "export with --method trace, and please report this checkpoint")
        last = layer
        layers[layer].append(node)
    return pre, layers, post


def _moved(nodes: list, moves: dict[int, int], layer_of: Callable[[str], int | None]) -> list:
    """Copies of `nodes` with every value, node and initializer name moved to its target layer."""
    import onnx

    out = []
    for node in nodes:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.name = _retag(node.name, moves)
        for i, name in enumerate(node.input):
            if name:
                new.input[i] = _retag(name, moves) if layer_of(name) is not None else name
        for i, name in enumerate(node.output):
            new.output[i] = _retag(name, moves)
        out.append(new)
    return out


def _signature(nodes: list) -> list:
    return [n.SerializeToString(deterministic=True) for n in nodes]


def assemble(template_model, weight_map: dict[str, dict], n_layers: int, vocab_size: int) -> Assembly:
    """The checkpoint's graph (all `n_layers`) from the template's (named by name_anonymous):
    nodes, inputs and outputs in the traced export's order; initializers as empty TensorProtos of the
    right name, shape and dtype, with `sources` saying which checkpoint tensor fills each."""
    import onnx

    graph = template_model.graph
    n_t = len({int(m.group(1)) for n in graph.node if (m := _NODE_LAYER.match(n.name))})
    producer_layer: dict[str, int] = {}
    for node in graph.node:
        m = _NODE_LAYER.match(node.name)
        if m:
            for o in node.output:
                producer_layer[o] = int(m.group(1))
    init_names = {t.name for t in graph.initializer}

    def layer_of(name: str) -> int | None:
        if name in producer_layer:
            return producer_layer[name]
        if name in init_names or name.startswith(("past_key_values.", "present.")):
            return layer_index(name)
        return None

    pre, layers, post = _segments(graph, n_t)
    if any(not seg for seg in layers):
        raise EdgekitError("the traced template has a layer without nodes",
                           "export with --method trace, and please report this checkpoint")
    last_t = n_t - 1
    # target layer -> (template layer, moves)
    if n_layers == n_t:
        plan = [(i, {i: i, **({i - 1: i - 1} if i else {}), 0: 0}) for i in range(n_layers)]
    else:
        if n_t != TEMPLATE_LAYERS:
            raise EdgekitError(f"a template of {n_t} layers cannot make {n_layers}", "please report this")
        mid = 2
        moves_mid = lambda i: {mid: i, mid - 1: i - 1, 0: 0}  # noqa: E731
        check = _moved(layers[mid], moves_mid(1), layer_of)
        if _signature(check) != _signature(layers[1]):
            raise EdgekitError("this checkpoint's traced layers are not one repeated block",
                               "export with --method trace (it needs about 2x the weights in RAM)")
        plan = [(0, {0: 0})] + [(mid, moves_mid(i)) for i in range(1, n_layers - 1)] + \
            [(last_t, {last_t: n_layers - 1, last_t - 1: n_layers - 2, 0: 0})]
    out = onnx.GraphProto()
    out.name = graph.name
    out.node.extend(pre)
    for t_layer, moves in plan:
        out.node.extend(_moved(layers[t_layer], moves, layer_of))
    out.node.extend(_moved(post, {last_t: n_layers - 1, 0: 0}, layer_of))

    def expand(values) -> list:
        """Graph inputs/outputs: the per-layer ones for every target layer, in layer order."""
        result, done = [], False
        for v in values:
            layer = layer_index(v.name) if v.name.startswith(("past_key_values.", "present.")) else None
            if layer is None:
                result.append(v)
                continue
            if done:
                continue
            done = True
            per_layer = [x for x in values if x.name.startswith(("past_key_values.", "present."))]
            for i, (t_layer, moves) in enumerate(plan):
                for x in per_layer:
                    if layer_index(x.name) == t_layer:
                        y = onnx.ValueInfoProto()
                        y.CopyFrom(x)
                        y.name = _retag(x.name, {t_layer: i})
                        result.append(y)
        return result

    out.input.extend(expand(list(graph.input)))
    outputs = expand(list(graph.output))
    for o in outputs:
        if o.name == "logits":
            dims = o.type.tensor_type.shape.dim
            if len(dims) == 3 and dims[2].dim_value == TEMPLATE_VOCAB:
                dims[2].dim_value = vocab_size
    out.output.extend(outputs)

    sources: dict[str, tuple[str, bool]] = {}
    inits: list = []
    for t in graph.initializer:
        layer = layer_index(t.name)
        targets = [(t.name, {})] if layer is None else \
            [(_retag(t.name, {layer: i}), {layer: i}) for i, (t_layer, _) in enumerate(plan) if t_layer == layer]
        hit = weight_map.get(t.name)
        for name, moves in targets:
            if hit is None:
                if TEMPLATE_VOCAB in t.dims or TEMPLATE_MLP in t.dims:
                    raise EdgekitError(f"the traced template's initializer {t.name} is no checkpoint tensor "
                                       "but has the template's own size",
                                       "export with --method trace, and please report this checkpoint")
                copy = onnx.TensorProto()
                copy.CopyFrom(t)  # a constant of the graph itself, the same at every size
                copy.name = name
                inits.append(copy)
                continue
            sources[name] = (_retag(hit["param"], moves) if moves else hit["param"], bool(hit["transpose"]))
            inits.append(onnx.TensorProto(name=name, data_type=t.data_type))
    out.initializer.extend(inits)
    return Assembly(out, sources)


def check_sources(assembly: Assembly, ckpt) -> None:
    """Every initializer's checkpoint tensor exists, and every checkpoint tensor is in the graph."""
    used = {param for param, _ in assembly.sources.values()}
    missing = sorted(used - set(ckpt.tensor_info))
    if missing:
        raise EdgekitError(f"the assembled ONNX graph needs {missing[0]}, which the checkpoint lacks",
                           "the checkpoint's tensors do not match its config.json; re-download or re-save it")
    unused = sorted(set(ckpt.tensor_info) - used)
    if unused:
        raise EdgekitError(f"the assembled ONNX graph leaves {unused[0]} of the checkpoint unused"
                           + (f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""),
                           "export with --method trace, and please report this checkpoint")


# ---------------------------------------------------------------- weights


class ExternalData:
    """The one external data file of a model, written front to back."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "wb")

    def add(self, proto):
        """`proto` (a TensorProto with its bytes inline) as one pointing at this file; its bytes
        are written here. Tensors of 1 MiB or more start on a 4 KiB boundary."""
        from onnx import numpy_helper

        raw = proto.raw_data if proto.HasField("raw_data") else numpy_helper.to_array(proto).tobytes()
        return self.add_bytes(proto, memoryview(raw))

    def add_array(self, template, arr: np.ndarray):
        """An initializer named and typed as `template` (no data) holding `arr`."""
        t = type(template)()
        t.name, t.data_type = template.name, template.data_type
        t.dims.extend(arr.shape)
        return self.add_bytes(t, memoryview(np.ascontiguousarray(arr)).cast("B"))

    def add_bytes(self, proto, raw: memoryview):
        import onnx

        if len(raw) >= ALIGN_FROM and self.file.tell() % ALIGN:
            self.file.write(b"\0" * (ALIGN - self.file.tell() % ALIGN))
        offset = self.file.tell()
        self.file.write(raw)
        t = onnx.TensorProto(name=proto.name, data_type=proto.data_type)
        t.dims.extend(proto.dims)
        t.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(offset)), ("length", str(len(raw)))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return t

    def close(self) -> None:
        self.file.close()


def checkpoint_reader(ckpt, sources: dict[str, tuple[str, bool]], model_dtype: str):
    """name -> array for an assembly's initializers: the checkpoint tensor loaded in the model's dtype
    (as transformers loads it for the trace), then in the initializer's dtype, transposed where the
    graph multiplies by the transpose. One tensor in memory at a time (the source is memory-mapped)."""
    import torch

    model = {"fp32": torch.float32, "fp16": torch.float16}[model_dtype]

    def read(proto) -> np.ndarray:
        import onnx

        param, transpose = sources[proto.name]
        t = ckpt.read_tensor(param)
        to = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.FLOAT16: torch.float16}[proto.data_type]
        if to != model:  # an FP16 model's weight held in FP32: rounded to FP16 first, as the trace's was
            t = t.to(model)
        if transpose:
            t = t.T
        out = torch.empty(t.shape, dtype=to)
        out.copy_(t)  # dtype and layout in one pass: the source and the result, no third copy
        del t
        return out.numpy()

    return read


def onnx_reader(model_path: Path):
    """name -> array for the initializers of an ONNX file, external data memory-mapped."""
    from onnx import helper, numpy_helper
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    def read(t) -> np.ndarray:
        if uses_external_data(t):
            info = ExternalDataInfo(t)
            dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
            return np.memmap(model_path.parent / info.location, dtype=dtype, mode="r", offset=info.offset or 0,
                             shape=tuple(t.dims))
        return numpy_helper.to_array(t)

    read.model_dir = Path(model_path).parent.absolute()
    return read


def int4_quantizer(opts):
    """onnxruntime's per-node weight-only quantizer for these Int4Options (MatMulNBits or QDQ; the
    embedding Gather too with quantize_embedding), and the config its whole-model quantizer takes."""
    try:
        from onnxruntime.quantization import QuantFormat
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            DefaultWeightOnlyQuantizer,
        )
    except ImportError as e:
        raise EdgekitError(f"INT4 quantization needs onnxruntime's quantization tools ({e})",
                           "pip install 'edgekit[onnx]' (it brings onnxruntime and onnx-ir)") from None
    opts.check()
    ops = ("MatMul", "Gather") if opts.quantize_embedding else ("MatMul",)
    config = DefaultWeightOnlyQuantConfig(block_size=opts.block_size, is_symmetric=opts.symmetric,
                                          accuracy_level=opts.accuracy_level or None, op_types_to_quantize=ops,
                                          quant_axes=(("MatMul", 0), ("Gather", 1)),
                                          quant_format=QuantFormat.QDQ if opts.form == "qdq" else QuantFormat.QOperator)
    return DefaultWeightOnlyQuantizer(config), config


def quantized_header(header, config):
    """The model header (IR version, opsets) onnxruntime's whole-model quantizer would leave: its
    own process() run on the header with no nodes."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.ModelProto()
    model.CopyFrom(header)
    model.graph.Clear()
    quantizer = MatMulNBitsQuantizer(model, algo_config=config)
    quantizer.process()
    return quantizer.model.model


# Weights from this size on reach the quantizer as external data, a file it memory-maps: protobuf
# cannot hold a message of 2 GB or more (a 7B model's FP32 lm_head is 2.2 GB), and an inline weight
# costs two more copies (the message's bytes, and onnx_ir's array of them): at 1.5B the INT4 export
# peaked at 4.1 GB with the 0.93 GB lm_head inline.
PROTO_WEIGHT_LIMIT = 512 << 20


@contextlib.contextmanager
def _weight_proto(proto, read: Callable, scratch: Path):
    """The weight `proto` names as a TensorProto the quantizer can read, and the folder its external
    data is relative to: inline below PROTO_WEIGHT_LIMIT; above, the source file's own bytes when
    they are already as the graph holds them, else a scratch file written once and removed after."""
    import onnx
    from onnx import numpy_helper
    from onnx.external_data_helper import uses_external_data

    source = getattr(read, "model_dir", None)
    if source is not None and uses_external_data(proto) and _nbytes(proto) >= PROTO_WEIGHT_LIMIT:
        yield proto, source
        return
    w = read(proto)
    if w.nbytes < PROTO_WEIGHT_LIMIT:
        t = numpy_helper.from_array(np.asarray(w), proto.name)
        del w
        yield t, None
        return
    path = scratch / f".edgekit-weight-{os.getpid()}.bin"
    try:
        with open(path, "wb") as f:
            f.write(memoryview(np.ascontiguousarray(w)).cast("B"))
        t = onnx.TensorProto(name=proto.name, data_type=proto.data_type, dims=list(w.shape))
        del w
        t.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", path.name), ("offset", "0")):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        yield t, scratch
    finally:
        path.unlink(missing_ok=True)


def _nbytes(proto) -> int:
    from onnx import helper

    return int(np.prod(proto.dims)) * np.dtype(helper.tensor_dtype_to_np_dtype(proto.data_type)).itemsize


@contextlib.contextmanager
def _working_dir(folder: Path | None):
    if folder is None:
        yield
        return
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _weight_input(node, ops) -> str | None:
    if node.op_type not in ops:
        return None
    return node.input[1] if node.op_type == "MatMul" else node.input[0] if node.op_type == "Gather" else None


@dataclass
class Streamed:
    """A model whose weights are read one at a time: the header (IR version, opsets), the graph (the
    initializers named in `fill` carry no data) and `read(initializer) -> array`."""
    header: object
    graph: object
    read: Callable
    fill: set[str]
    sources: dict | None = None  # from a checkpoint: initializer -> (checkpoint tensor, transposed)


def streamed_file(model_path: Path) -> Streamed:
    """An ONNX file as a Streamed model: graph loaded without its weights, which are memory-mapped."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return Streamed(model, model.graph, onnx_reader(model_path), {t.name for t in model.graph.initializer})


def streamed_checkpoint(header, assembly: Assembly, ckpt, model_dtype: str) -> Streamed:
    return Streamed(header, assembly.graph, checkpoint_reader(ckpt, assembly.sources, model_dtype),
                    set(assembly.sources), dict(assembly.sources))


def write_model(src: Streamed, out_path: Path, int4=None, progress: Callable[[int, int], None] | None = None):
    """`src` saved to `out_path`, every initializer in `src.fill` read one at a time into
    `<out_path>_data`; with `int4` (Int4Options) each quantizable weight is quantized there by
    onnxruntime's per-node quantizer instead: the MatMulNBits / DequantizeLinear / GatherBlockQuantized
    nodes, names and bytes its whole-model quantizer writes. Other initializers stay inline.
    Returns the saved ModelProto (without the weights)."""
    import onnx
    from onnx import numpy_helper

    header, graph, read, fill = src.header, src.graph, src.read, src.fill
    quantizer, config = int4_quantizer(int4) if int4 is not None else (None, None)
    ops = tuple(config.op_types_to_quantize) if config is not None else ()
    by_name = {t.name: t for t in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    data = ExternalData(out_path.with_name(out_path.name + "_data"))
    done, total = 0, len(fill)
    consumed: set[str] = set()
    added: list = []
    nodes: list = []

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    try:
        for node in graph.node:
            w_name = _weight_input(node, ops) if quantizer is not None else None
            if w_name in fill and w_name not in consumed and readers[w_name] == 1:
                with _weight_proto(by_name[w_name], read, out_path.parent) as (weight, folder):
                    mini = onnx.GraphProto()
                    mini.initializer.append(weight)
                    with _working_dir(folder):  # the quantizer reads external data from the current folder
                        new = quantizer.quantize(node, [mini])
                left = [t for t in mini.initializer if t.name != w_name]
                if len(left) != len(mini.initializer):  # quantized: the weight itself is not written
                    consumed.add(w_name)
                    added.extend(data.add(t) if t.ByteSize() >= INLINE_BELOW else t for t in left)
                    tick()
                    nodes.extend(new)
                    continue
            nodes.append(node)
        inits = []
        for t in graph.initializer:
            if t.name in consumed:
                continue
            if t.name in fill:
                arr = read(t)
                inits.append(data.add_array(t, arr) if arr.nbytes >= INLINE_BELOW
                             else numpy_helper.from_array(np.asarray(arr), t.name))
                del arr
                tick()
            else:
                inits.append(t)
        inits.extend(added)
    finally:
        data.close()
    model = quantized_header(header, config) if config is not None else onnx.ModelProto()
    if config is None:
        model.CopyFrom(header)
    model.graph.CopyFrom(graph)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    onnx.save_model(model, str(out_path))
    return model
