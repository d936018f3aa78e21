"""The exported ONNX decoder as a file: optimum's export that makes it (run_optimum_export, in a
child of both the traced and the streamed export), saving and moving it, running it for logits,
and the rewrites edgekit applies to optimum's graph.

Rewrites (each in place on `model.onnx`, inputs and outputs unchanged unless said):
- group_attention: attention over the KV cache as stored instead of repeated to every query head;
- slice_logits_to_last: the lm_head sees only the last position (`--logits last`);
- fuse_for_onnxruntime: ONNX Runtime's transformer optimizer (`--fuse`, contrib ops).

The helpers above them (quiet, save_model, move_model, onnx_logits) serve every ONNX step:
the export (converters/onnx.py) and the INT4 steps (converters/onnx_int4.py) too.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.runners.onnxruntime import OrtRunner

PROTOBUF_LIMIT = 2_000_000_000  # a ModelProto above 2 GB must keep its weights in external data
FUSED_OPS = ("RotaryEmbedding", "SkipSimplifiedLayerNormalization")


# ---------------------------------------------------------------- quiet third-party output


@contextlib.contextmanager
def quiet():
    """torch.onnx and optimum print tracer warnings and INFO lines by the hundred: keep them
    out of the user's terminal (errors still raise)."""
    names = ("optimum", "transformers", "onnxruntime", "torch.onnx", "onnxruntime.quantization",
             "onnxruntime.quantization.matmul_nbits_quantizer", "onnx_ir", "root")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# ---------------------------------------------------------------- optimum's export

OPSET = 18
# what optimum writes beside the model (and edgekit keeps in the export folder)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json", "config.json")


def run_optimum_export(ckpt_path: str, out: str, precision: str) -> None:
    """optimum-onnx's main_export in this process (what torch_export's child runs)."""
    try:
        from optimum.exporters.onnx import main_export
    except ImportError:
        raise EdgekitError("ONNX export needs optimum-onnx", "pip install 'edgekit[onnx]'") from None
    with quiet():
        main_export(ckpt_path, out, task="text-generation-with-past", opset=OPSET,
                    dtype="fp16" if precision == "fp16" else None, do_validation=False, local_files_only=True,
                    library_name="transformers", device="cpu")


# ---------------------------------------------------------------- model files


def save_model(model, dst: Path) -> None:
    """One .onnx file, with its weights in one `<name>_data` file when the proto would pass 2 GB."""
    import onnx

    large = model.ByteSize() > PROTOBUF_LIMIT if _proto_size_known(model) else True
    if large:
        onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=dst.name + "_data", size_threshold=1024)
    else:
        onnx.save_model(model, str(dst))


def _proto_size_known(model) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:  # protobuf refuses to size a message above 2 GB
        return False


def move_model(src: Path, dst: Path) -> None:
    """The exported model and its external data file (optimum's `model.onnx_data`), if any."""
    shutil.move(str(src), str(dst))
    data = src.parent / (src.name + "_data")
    if data.exists():
        shutil.move(str(data), str(dst.parent / (dst.name + "_data")))


def onnx_logits(model_path: Path, ids: list[int], threads: int | None = None) -> np.ndarray:
    """The logits of `ids` from the model at `model_path`, run by edgekit's ONNX Runtime runner."""
    with OrtRunner(model_path.parent, threads=threads or 1, model_file=model_path.name) as runner:
        return runner.logits(np.asarray(ids, dtype=np.int64))


# ---------------------------------------------------------------- rewrites


def _constant(graph, producer: dict, name: str):
    """The TensorProto behind `name` when it is a constant (an initializer or a Constant node's value), else None."""
    init = next((t for t in graph.initializer if t.name == name), None)
    if init is None and name in producer and producer[name].op_type == "Constant":
        init = next((a.t for a in producer[name].attribute if a.name == "value"), None)
    return init


def group_attention(model_path: Path, n_heads: int, n_kv_heads: int, head_dim: int) -> int:
    """Attention over the KV cache as it is stored (kv_heads), not repeated to every query head.

    optimum's graph repeats each layer's whole present key and value n_heads/n_kv_heads times
    (transformers' repeat_kv: Unsqueeze, Expand, Reshape), then transposes and scales the
    repeated key, every step: at 1.5B (12 query heads, 2 KV heads) that is 6x the cache written
    and read again per layer and step (what that cost: docs/benchmarks.md). Rewritten, the query
    heads of one group become rows of one matrix:

        scores = Reshape(MatMul(Reshape(Q * s_k, [0, kv, -1, d]), Transpose(present.key)), [0, H, -1, 0])
        out    = Reshape(MatMul(Reshape(probs, [0, kv, -1, 0]), present.value), [0, H, -1, d])

    (s_k, the key's scale, moves onto the query: the product is the same.) Mask, softmax and
    everything else stay as exported, and so does every input and output, so onnxruntime-genai
    and the runner load the file as before (standard ONNX ops only, so TensorRT's parser should
    too: not tried here). Returns how many
    layers were rewritten (0 where nothing is repeated: n_heads == n_kv_heads).
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    grouped = group_attention_graph(model.graph, n_heads, n_kv_heads, head_dim)
    if grouped:
        onnx.save_model(model, str(model_path))  # the proto alone: initializers in external data stay where they are
    return grouped


def group_attention_graph(graph, n_heads: int, n_kv_heads: int, head_dim: int) -> int:
    """group_attention on a GraphProto in memory (the streamed export rewrites its graph before any
    weight is written); returns how many layers were rewritten."""
    from onnx import helper, numpy_helper

    if n_heads % n_kv_heads:
        raise EdgekitError(f"{n_heads} attention heads are not a multiple of {n_kv_heads} KV heads",
                           "please report this checkpoint")
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    def repeated(present: str):
        """The Reshape output that holds `present` repeated to every query head, if that is how it is used."""
        for unsq in consumers[present]:
            if unsq.op_type != "Unsqueeze":
                continue
            for expand in consumers[unsq.output[0]]:
                if expand.op_type == "Expand" and expand.input[0] == unsq.output[0]:
                    reshapes = consumers[expand.output[0]]
                    if len(reshapes) == 1 and reshapes[0].op_type == "Reshape":
                        return reshapes[0].output[0]
        return None

    def gather_index(node) -> int | None:
        index = _constant(graph, producer, node.input[1])
        return int(numpy_helper.to_array(index).reshape(-1)[0]) if index is not None else None

    def is_scalar(name: str) -> bool:
        value = _constant(graph, producer, name)
        return value is not None and int(np.prod(list(value.dims) or [1])) == 1

    shapes = {"q": [0, n_kv_heads, -1, head_dim], "scores": [0, n_heads, -1, 0],
              "probs": [0, n_kv_heads, -1, 0], "out": [0, n_heads, -1, head_dim]}
    plan = []  # per layer: (q.k MatMul, its replacement, probs.v MatMul, its replacement, key Shapes, key)
    graph_outputs = {o.name for o in graph.output}
    layer_outputs = sorted(o.name for o in graph.output if o.name.startswith("present.") and o.name.endswith(".key"))
    for key in layer_outputs:
        value = key[: -len(".key")] + ".value"
        rk, rv = repeated(key), repeated(value)
        if rk is None or rv is None or rk in graph_outputs or rv in graph_outputs:
            continue
        k_users = consumers[rk]
        transposes = [n for n in k_users if n.op_type == "Transpose"]
        shape_users = [n for n in k_users if n.op_type == "Shape"]
        if len(transposes) != 1 or len(transposes) + len(shape_users) != len(k_users) \
                or any(s.attribute for s in shape_users):  # a sliced Shape would renumber the dims
            continue
        perm = next((list(a.ints) for a in transposes[0].attribute if a.name == "perm"), None)
        scale = consumers[transposes[0].output[0]]
        if perm != [0, 1, 3, 2] or len(scale) != 1 or scale[0].op_type != "Mul":
            continue
        k_scale = scale[0].input[1] if scale[0].input[0] == transposes[0].output[0] else scale[0].input[0]
        qk = consumers[scale[0].output[0]]
        if not is_scalar(k_scale) or len(qk) != 1 or qk[0].op_type != "MatMul" \
                or qk[0].input[1] != scale[0].output[0]:
            continue
        # the key's Shape only feeds its batch/length/head_dim (not the head count, which changes)
        gathers = [g for s in shape_users for g in consumers[s.output[0]]]
        if any(g.op_type != "Gather" or gather_index(g) not in (0, 2, 3, -1, -2, -4) for g in gathers):
            continue
        pv, v_cast = consumers[rv], None
        if len(pv) == 1 and pv[0].op_type == "Cast":  # FP16 exports multiply probabilities and values in FP32
            v_cast, pv = pv[0], consumers[pv[0].output[0]]
        if len(pv) != 1 or pv[0].op_type != "MatMul" or pv[0].input[1] != (v_cast.output[0] if v_cast else rv):
            continue
        tag = key[len("present."): -len(".key")]
        p = f"edgekit_grouped_{tag}"
        q_scaled, q_grouped, kt, s_grouped = p + "_q_scaled", p + "_q", p + "_key_t", p + "_scores"
        p_grouped, o_grouped = p + "_probs", p + "_out"
        qk_nodes = [
            helper.make_node("Mul", [qk[0].input[0], k_scale], [q_scaled], name=p + "_q_scale"),
            helper.make_node("Reshape", [q_scaled, "edgekit_grouped_q_shape"], [q_grouped], name=p + "_q_reshape"),
            helper.make_node("Transpose", [key], [kt], perm=[0, 1, 3, 2], name=p + "_key_transpose"),
            helper.make_node("MatMul", [q_grouped, kt], [s_grouped], name=p + "_qk"),
            helper.make_node("Reshape", [s_grouped, "edgekit_grouped_scores_shape"], [qk[0].output[0]],
                             name=p + "_scores_reshape")]
        v_input = value
        pv_nodes = [
            helper.make_node("Reshape", [pv[0].input[0], "edgekit_grouped_probs_shape"], [p_grouped],
                             name=p + "_probs_reshape")]
        if v_cast is not None:  # cast the cache as stored: 1/group of the repeated copy's work
            v_input = p + "_value_cast"
            pv_nodes.append(helper.make_node("Cast", [value], [v_input], name=p + "_value_cast",
                                             to=next(a.i for a in v_cast.attribute if a.name == "to")))
        pv_nodes += [
            helper.make_node("MatMul", [p_grouped, v_input], [o_grouped], name=p + "_pv"),
            helper.make_node("Reshape", [o_grouped, "edgekit_grouped_out_shape"], [pv[0].output[0]],
                             name=p + "_out_reshape")]
        plan.append((qk[0], qk_nodes, pv[0], pv_nodes, shape_users, key))
    if not plan:
        return 0
    graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), f"edgekit_grouped_{k}_shape")
                             for k, v in shapes.items())
    for qk_node, qk_nodes, pv_node, pv_nodes, shape_users, key in plan:
        for s in shape_users:
            s.input[0] = key
        for old, new in ((qk_node, qk_nodes), (pv_node, pv_nodes)):
            at = list(graph.node).index(old)
            graph.node.remove(old)
            for i, node in enumerate(new):
                graph.node.insert(at + i, node)
    _drop_dead_nodes(graph)
    return len(plan)


def _drop_dead_nodes(graph) -> None:
    """Remove the nodes none of whose outputs is used (by a node or as a graph output), until none is
    left, and the inline initializers nothing reads any more (external ones keep their bytes)."""
    from onnx.external_data_helper import uses_external_data

    while True:
        used = {o.name for o in graph.output} | {i for n in graph.node for i in n.input}
        keep = [n for n in graph.node if any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used or uses_external_data(t)]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)


def slice_logits_to_last(model_path: Path) -> None:
    """Feed the lm_head only the last position's hidden state: logits become [batch, 1, vocab].

    A prompt of n tokens then skips n-1 rows of the largest matmul (about 15 % of the prompt's
    work at 1.5B with a 152k vocabulary) and never allocates n x vocab floats; llama.cpp does
    the same when only the last token's logits are asked for. onnxruntime-genai reads the last
    row either way. Weights are untouched, so external data stays valid.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    node = producer.get("logits")
    while node is not None and node.op_type not in ("MatMul", "MatMulNBits"):
        node = producer.get(node.input[0]) if node.op_type in ("Cast", "Identity") else None
    if node is None:
        raise EdgekitError(f"{model_path.name}: no lm_head MatMul produces 'logits'",
                           "export with --logits all, and please report this checkpoint")
    hidden = node.input[0]
    graph.initializer.extend([
        numpy_helper.from_array(np.array([-1], np.int64), "edgekit_last_position_start"),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), "edgekit_last_position_end"),
        numpy_helper.from_array(np.array([1], np.int64), "edgekit_sequence_axis")])
    sliced = helper.make_node("Slice", [hidden, "edgekit_last_position_start", "edgekit_last_position_end",
                                        "edgekit_sequence_axis"], [hidden + "_last_position"],
                              name="edgekit_last_position")
    graph.node.insert(list(graph.node).index(node), sliced)
    node.input[0] = hidden + "_last_position"
    dim = next(o for o in graph.output if o.name == "logits").type.tensor_type.shape.dim[1]
    dim.Clear()
    dim.dim_value = 1
    onnx.save_model(model, str(model_path))  # the proto alone: initializers in external data stay where they are


def fuse_for_onnxruntime(model_path: Path) -> dict[str, int]:
    """ONNX Runtime's transformer optimizer on the model, in place; returns how many of each fused op it made.

    Each rotary embedding (Slice/Neg/Concat/Mul/Add on q and k) becomes one RotaryEmbedding, and each
    residual Add + RMSNorm one SkipSimplifiedLayerNormalization (com.microsoft contrib ops): fewer,
    larger kernels per layer. Those ops exist only in ONNX Runtime (CPU and CUDA), not in TensorRT's
    ONNX parser, hence opt-in. The model_type only selects attention-fusion patterns, none of which
    match optimum's graphs; opt_level 0 bakes no session optimizations of this machine into the file.
    """
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError as e:
        raise EdgekitError(f"--fuse needs onnxruntime's transformer tools ({e})", "pip install 'edgekit[onnx]'") from None
    with quiet():
        opt = optimize_model(str(model_path), model_type="gpt2", num_heads=0, hidden_size=0, opt_level=0)
    counts = Counter(node.op_type for node in opt.model.graph.node)
    fused = {op: counts[op] for op in FUSED_OPS if counts[op]}
    if not fused:
        raise EdgekitError("ONNX Runtime's optimizer found nothing to fuse in this graph",
                           "export without --fuse (nothing was written), and please report this checkpoint")
    staging = model_path.parent / ".fused"
    staging.mkdir()
    save_model(opt.model, staging / model_path.name)  # the weights were read into memory: the old files can go
    del opt
    model_path.with_name(model_path.name + "_data").unlink(missing_ok=True)
    model_path.unlink()
    move_model(staging / model_path.name, model_path)
    staging.rmdir()
    return fused
