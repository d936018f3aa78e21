"""Hugging Face checkpoint -> ONNX decoder with KV cache (FP32, FP16, INT4 weight-only).

The graph comes from optimum-onnx (`text-generation-with-past`: inputs input_ids,
attention_mask, position_ids, past_key_values.N.key/value; outputs logits and
present.N.key/value); edgekit then points each layer's attention at the cache as
stored instead of a copy repeated to every query head (group_attention). INT4 is
onnxruntime.quantization's MatMulNBitsQuantizer
(blockwise round-to-nearest, MatMulNBits contrib op) applied to the FP32 graph.
Beside the model go genai_config.json and the tokenizer files, so the folder
loads in onnxruntime-genai unchanged, and manifest.json.

As for GGUF, everything is built in a hidden folder beside the output and renamed
into place only after the checks passed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.formats.onnx import check_onnx_complete

Progress = Callable[[str, float, float], None]

PRECISIONS = ("fp32", "fp16", "int4")
QUANT_NAME = {"fp32": "F32", "fp16": "F16", "int4": "INT4"}  # manifest spelling, as llama.cpp's F32/F16
OPSET = 18
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx_data"  # optimum's name for the external weights
PROTOBUF_LIMIT = 2_000_000_000  # a ModelProto above 2 GB must keep its weights in external data
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json", "config.json")
ACCURACY_LEVELS = {0: "unset (the EP's default)", 1: "fp32", 2: "fp16", 3: "bf16", 4: "int8"}


@dataclass(frozen=True)
class Int4Options:
    """MatMulNBits settings. Smaller blocks: more scales (bigger file, closer to FP32);
    asymmetric: a zero point per block (closer, bigger, slower); accuracy_level 4 lets CPU
    kernels quantize activations to int8 per block (fastest on CPU, a little less exact);
    quantize_embedding also packs the token embedding (GatherBlockQuantized, opset 21)."""

    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int = 4
    quantize_embedding: bool = False

    def check(self) -> None:
        if self.block_size not in (16, 32, 64, 128, 256):
            raise EdgekitError(f"INT4 block size {self.block_size} is not supported",
                               "choose 16, 32, 64, 128 or 256 (32 is the default)")
        if self.accuracy_level not in ACCURACY_LEVELS:
            raise EdgekitError(f"accuracy level {self.accuracy_level} is not one of 0-4",
                               "choose 0 (unset), 1 (fp32), 2 (fp16), 3 (bf16) or 4 (int8, default)")


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


# ---------------------------------------------------------------- memory

# Peak RSS of the export child per byte of weights in the export dtype, measured on the
# r1-distill-qwen-1.5b preset: FP32 trace 14.9 GB for 7.1 GB of weights, FP16 8.0 GB for 3.55 GB
# (the model plus the exporter's folded, transposed copies of every Linear weight).
TRACE_PEAK_PER_WEIGHT_BYTE = {"fp32": 2.1, "fp16": 2.3}


def export_memory_bytes(n_params: int, precision: str) -> int:
    dtype = "fp16" if precision == "fp16" else "fp32"  # INT4 quantizes the FP32 graph
    return int(n_params * (2 if dtype == "fp16" else 4) * TRACE_PEAK_PER_WEIGHT_BYTE[dtype])


def check_memory(n_params: int, precision: str, meminfo: str | None = None) -> None:
    """Refuse up front an export that cannot fit, instead of meeting the OOM killer minutes later."""
    from edgekit.targets.host import parse_meminfo_bytes

    if meminfo is None:
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:
            return  # not Linux: no reliable figure, go ahead
    avail = parse_meminfo_bytes(meminfo, "MemAvailable")
    if avail is None:
        return
    avail += parse_meminfo_bytes(meminfo, "SwapFree") or 0
    need = export_memory_bytes(n_params, precision)
    if need > avail:
        dtype = "FP16" if precision == "fp16" else "FP32"
        raise EdgekitError(
            f"exporting {n_params / 1e9:.1f}B parameters to ONNX {precision} needs about {need / 1e9:.0f} GB of RAM "
            f"(the trace holds about {TRACE_PEAK_PER_WEIGHT_BYTE[dtype.lower()]}x the {dtype} weights); "
            f"{avail / 1e9:.0f} GB are available",
            "export on a machine with more memory (the folder then runs anywhere), free memory, or pass "
            "--no-memory-check to try anyway; GGUF export streams and needs far less")


# ---------------------------------------------------------------- steps


def torch_export(ckpt_path: Path, out: Path, fp16: bool) -> Path:
    """optimum-onnx's exporter (decoder with past, opset 18) in a child interpreter.

    The child holds torch, the model and the traced graph (about twice the FP32
    weights at its peak); running it apart keeps that peak out of the later steps
    and turns a crash (or the OOM killer) into one error line. Returns the model path.
    """
    from edgekit import native

    native.call("edgekit.converters.onnx:run_optimum_export", str(ckpt_path), str(out),
                "fp16" if fp16 else "fp32", library="optimum-onnx (torch)", what="the ONNX export",
                fixes={"SIGKILL": "nothing was written; the export was killed, usually by the OOM killer: it needs "
                                  "about 2x the FP32 weights in RAM (15 GB for 1.5B parameters)"})
    model = out / MODEL_FILE
    if not model.is_file():
        raise EdgekitError("optimum-onnx wrote no model.onnx", "please report this checkpoint")
    return model


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


def quantize_int4(src: Path, dst: Path, opts: Int4Options) -> None:
    """MatMulNBits INT4 of every MatMul weight (and optionally the embedding Gather)."""
    import onnx

    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                     MatMulNBitsQuantizer)
    except ImportError as e:
        raise EdgekitError(f"INT4 quantization needs onnxruntime's quantization tools ({e})",
                           "pip install 'edgekit[onnx]' (it brings onnxruntime and onnx-ir)") from None
    ops = ("MatMul", "Gather") if opts.quantize_embedding else ("MatMul",)
    config = DefaultWeightOnlyQuantConfig(block_size=opts.block_size, is_symmetric=opts.symmetric,
                                          accuracy_level=opts.accuracy_level or None, op_types_to_quantize=ops,
                                          quant_axes=(("MatMul", 0), ("Gather", 1)))
    with quiet():
        model = onnx.load(str(src))
        quantizer = MatMulNBitsQuantizer(model, algo_config=config)
        quantizer.process()
        del model
        save_model(quantizer.model.model, dst)


FUSED_OPS = ("RotaryEmbedding", "SkipSimplifiedLayerNormalization")


def fuse_for_onnxruntime(model_path: Path) -> dict[str, int]:
    """ONNX Runtime's transformer optimizer on the model, in place; returns how many of each fused op it made.

    Each rotary embedding (Slice/Neg/Concat/Mul/Add on q and k) becomes one RotaryEmbedding, and each
    residual Add + RMSNorm one SkipSimplifiedLayerNormalization (com.microsoft contrib ops): fewer,
    larger kernels per layer. Those ops exist only in ONNX Runtime (CPU and CUDA), not in TensorRT's
    ONNX parser, hence opt-in. The model_type only selects attention-fusion patterns, none of which
    match optimum's graphs; opt_level 0 bakes no session optimizations of this machine into the file.
    """
    from collections import Counter

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
    _move_model(staging / model_path.name, model_path)
    staging.rmdir()
    return fused


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


LOGITS_MODES = ("last", "all")


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
    from collections import defaultdict
    from onnx import helper, numpy_helper

    if n_heads % n_kv_heads:
        raise EdgekitError(f"{n_heads} attention heads are not a multiple of {n_kv_heads} KV heads",
                           "please report this checkpoint")
    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
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
    onnx.save_model(model, str(model_path))  # the proto alone: initializers in external data stay where they are
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


def genai_config(config: dict, model_type: str, model_file: str, generation: dict,
                 providers: list[dict] | None = None) -> dict:
    """onnxruntime-genai's genai_config.json for an optimum-layout decoder.

    past_present_share_buffer must be false: optimum's graph concatenates the new
    keys onto past (present grows by one per step) instead of writing into a
    preallocated buffer as the GroupQueryAttention graphs of genai's builder do.
    """
    from edgekit.architectures import head_dim, n_kv_heads

    eos = generation.get("eos_token_id", config.get("eos_token_id"))
    pad = generation.get("pad_token_id", config.get("pad_token_id"))
    if pad is None:
        pad = eos[0] if isinstance(eos, list) else eos
    ctx = int(config["max_position_embeddings"])
    return {
        "model": {
            "bos_token_id": generation.get("bos_token_id", config.get("bos_token_id", 1)),
            "context_length": ctx,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": providers or []},
                "filename": model_file,
                "head_size": head_dim(config),
                "hidden_size": int(config["hidden_size"]),
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
                "num_attention_heads": int(config["num_attention_heads"]),
                "num_hidden_layers": int(config["num_hidden_layers"]),
                "num_key_value_heads": n_kv_heads(config),
            },
            "eos_token_id": eos,
            "pad_token_id": pad,
            "type": model_type,
            "vocab_size": int(config["vocab_size"]),
        },
        "search": {
            "diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
            "max_length": ctx, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
            "num_return_sequences": 1, "past_present_share_buffer": False, "repetition_penalty": 1.0,
            "temperature": generation.get("temperature", 1.0), "top_k": generation.get("top_k", 50),
            "top_p": generation.get("top_p", 1.0),
        },
    }


# ---------------------------------------------------------------- INT4 reference


def dequantize_matmul_nbits(packed: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None,
                            k: int, n: int, block_size: int) -> np.ndarray:
    """MatMulNBits' 4-bit B (N x blocks x block_size/2 bytes, low nibble first) -> float32 [K, N],
    the layout of the MatMul weight it replaced."""
    n_blocks = packed.shape[1]
    q = np.empty((n, n_blocks, block_size), dtype=np.float32)
    q[..., 0::2] = packed & 0x0F
    q[..., 1::2] = packed >> 4
    scales = scales.reshape(n, n_blocks).astype(np.float32)
    if zero_points is None:
        zp = np.full((n, n_blocks), 8.0, dtype=np.float32)
    elif zero_points.dtype == np.uint8:  # 4-bit zero points, two per byte: [N, ceil(blocks / 2)]
        zb = zero_points.reshape(n, -1)
        zp = np.stack([zb & 0x0F, zb >> 4], axis=-1).reshape(n, -1)[:, :n_blocks].astype(np.float32)
    else:
        zp = zero_points.reshape(n, n_blocks).astype(np.float32)
    w = (q - zp[..., None]) * scales[..., None]
    return np.ascontiguousarray(w.reshape(n, n_blocks * block_size)[:, :k].T)


def dequantize_gather_block(data: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None,
                            block_size: int) -> np.ndarray:
    """GatherBlockQuantized's int4/uint4 table [rows, cols] (blocks along cols, the last one
    possibly short) -> float32."""
    rows, cols = data.shape
    padded = -(-cols // block_size) * block_size
    q = np.zeros((rows, padded), dtype=np.float32)
    q[:, :cols] = data.astype(np.float32)
    q = q.reshape(rows, -1, block_size)
    zp = 0.0 if zero_points is None else zero_points.astype(np.float32).reshape(rows, -1)[..., None]
    w = (q - zp) * scales.astype(np.float32).reshape(rows, -1)[..., None]
    return w.reshape(rows, padded)[:, :cols]


def fp32_weight_reader(fp32_path: Path):
    """name -> the FP32 graph's initializer as an array, external data memory-mapped (not loaded)."""
    import onnx
    from onnx import numpy_helper
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(fp32_path), load_external_data=False)
    index = {t.name: t for t in model.graph.initializer}

    def read(name: str) -> np.ndarray | None:
        t = index.get(name)
        if t is None or t.data_type != onnx.TensorProto.FLOAT:
            return None
        if uses_external_data(t):
            info = ExternalDataInfo(t)
            return np.memmap(fp32_path.parent / info.location, dtype=np.float32, mode="r",
                             offset=info.offset or 0, shape=tuple(t.dims))
        return numpy_helper.to_array(t)

    return read


def quantization_error_steps(w: np.ndarray, deq: np.ndarray, scales: np.ndarray, block_axis: int,
                             block_size: int) -> float:
    """max |dequantized - original| in units of each block's step (|scale|)."""
    step = np.abs(np.repeat(scales.astype(np.float32), block_size, axis=1))  # [rows, blocks*bs]
    step = step[:, : (w.shape[0] if block_axis == 0 else w.shape[1])]
    if block_axis == 0:  # MatMul weights [K, N], blocks along K; scales [N, blocks]
        step = step.T
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(np.asarray(deq, dtype=np.float32) - np.asarray(w, dtype=np.float32)) / np.maximum(step, 1e-30)
    return float(np.nanmax(ratio)) if ratio.size else 0.0


def build_dequantized_reference(int4_path: Path, out_path: Path, fp32_path: Path | None = None) -> dict:
    """The INT4 graph with every MatMulNBits turned back into a MatMul (and GatherBlockQuantized into
    a Gather) on its dequantized FP32 weights: what the INT4 model computes, up to kernel arithmetic.

    Weights stream to one external data file as they are dequantized, so building it needs the
    INT4 model plus one FP32 weight in RAM (the 1.5B reference is 7 GB on disk, not in memory).
    With `fp32_path`, each dequantized weight is also compared with its FP32 original: round to
    nearest keeps every weight within half a step (with zero points) or one step (symmetric:
    the largest magnitude maps to -8, the other side clamps at +7).
    Returns {"weights": replaced, "max_error_steps": ..., "bound_steps": ..., "passed": ...}.
    """
    import onnx
    from onnx import helper, numpy_helper

    original = fp32_weight_reader(fp32_path) if fp32_path else None
    worst, bound, compared = 0.0, 0.5, 0

    model = onnx.load(str(int4_path))
    graph = model.graph
    init = {t.name: t for t in graph.initializer}
    arr = lambda name: numpy_helper.to_array(init[name]) if name in init else None  # noqa: E731
    data_name = out_path.name + "_data"
    new_nodes, dropped, added = [], set(), []
    with open(out_path.parent / data_name, "wb") as data:
        def external(name: str, w: np.ndarray):
            offset = data.tell()
            raw = np.ascontiguousarray(w, dtype=np.float32).tobytes()
            data.write(raw)
            t = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=list(w.shape))
            t.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            added.append(t)

        for node in graph.node:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "MatMulNBits" and attrs.get("bits", 4) == 4:
                zp = arr(node.input[3]) if len(node.input) > 3 and node.input[3] else None
                scales = arr(node.input[2])
                w = dequantize_matmul_nbits(arr(node.input[1]), scales, zp, attrs["K"], attrs["N"],
                                            attrs["block_size"])
                src = original(_source_name(node.input[1])) if original else None
                if src is not None:
                    bound = max(bound, 1.0 if zp is None else 0.5)
                    worst = max(worst, quantization_error_steps(src, w, scales.reshape(attrs["N"], -1), 0,
                                                                attrs["block_size"]))
                    compared += 1
                name = _source_name(node.input[1]) + "_dequantized"
                external(name, w)
                dropped.update(i for i in node.input[1:] if i)
                out = node.output[0]
                if len(node.input) > 5 and node.input[5]:  # bias
                    mid = out + "_nobias"
                    new_nodes += [helper.make_node("MatMul", [node.input[0], name], [mid], name=node.name),
                                  helper.make_node("Add", [mid, node.input[5]], [out], name=node.name + "_bias")]
                    dropped.discard(node.input[5])
                else:
                    new_nodes.append(helper.make_node("MatMul", [node.input[0], name], [out], name=node.name))
            elif node.op_type == "GatherBlockQuantized":
                zp = arr(node.input[3]) if len(node.input) > 3 and node.input[3] else None
                scales = arr(node.input[2])
                w = dequantize_gather_block(arr(node.input[0]), scales, zp, attrs["block_size"])
                src = original(_source_name(node.input[0])) if original else None
                if src is not None:
                    bound = max(bound, 1.0 if zp is None else 0.5)
                    worst = max(worst, quantization_error_steps(src, w, scales.reshape(w.shape[0], -1), 1,
                                                                attrs["block_size"]))
                    compared += 1
                name = _source_name(node.input[0]) + "_dequantized"
                external(name, w)
                dropped.update(i for i in (node.input[0], *node.input[2:]) if i)
                new_nodes.append(helper.make_node("Gather", [name, node.input[1]], list(node.output),
                                                  name=node.name, axis=attrs.get("gather_axis", 0)))
            else:
                new_nodes.append(node)
        replaced = len(added)
        kept = []
        for t in graph.initializer:  # big unquantized weights (an FP32 embedding) too: the proto stays < 2 GB
            if t.name in dropped:
                continue
            if t.data_type == onnx.TensorProto.FLOAT and t.ByteSize() > (1 << 20):
                external(t.name, numpy_helper.to_array(t))
            else:
                kept.append(t)
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    onnx.save_model(model, str(out_path))
    return {"weights": replaced, "compared_to_fp32": compared, "max_error_steps": worst,
            "bound_steps": bound, "passed": compared == replaced and worst <= bound * 1.001 + 1e-4}


# accuracy level -> how MatMulNBits' CPU kernels round the activations (MLAS: 1 fp32, 2 fp16,
# 3 bf16, 4 int8 per block of block_size along K, symmetric, scale = max |x| / 127)
ACTIVATION_ROUNDING = {2: "fp16", 3: "bf16", 4: "int8"}


def with_activation_rounding(ref_path: Path, dst: Path, mode: str, block_size: int) -> int:
    """A copy of the dequantized reference (`build_dequantized_reference`) whose every MatMul on a
    dequantized weight first rounds its input the way MatMulNBits' kernels at an accuracy level do
    (`mode`: fp16, bf16 or int8). `dst` sits beside `ref_path` and shares its external data file.
    Returns the number of MatMuls changed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(ref_path), load_external_data=False)
    graph = model.graph
    consts = [numpy_helper.from_array(np.array([0, 0, -1, block_size], dtype=np.int64), "_rnd_blocks"),
              numpy_helper.from_array(np.array([-1], dtype=np.int64), "_rnd_last"),
              numpy_helper.from_array(np.array(127.0, dtype=np.float32), "_rnd_127"),
              numpy_helper.from_array(np.array(1e-30, dtype=np.float32), "_rnd_tiny")]
    nodes, changed = [], 0
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1].endswith("_dequantized"):
            x, y = node.input[0], f"{node.name}_rounded_input"
            p = f"{node.name}_rnd"
            if mode in ("fp16", "bf16"):
                to = TensorProto.FLOAT16 if mode == "fp16" else TensorProto.BFLOAT16
                nodes += [helper.make_node("Cast", [x], [p + "_low"], to=to),
                          helper.make_node("Cast", [p + "_low"], [y], to=TensorProto.FLOAT)]
            else:  # int8 per block: blocks on a new last axis, scale per block, round, scale back
                nodes += [helper.make_node("Shape", [x], [p + "_shape"]),
                          helper.make_node("Reshape", [x, "_rnd_blocks"], [p + "_b"]),
                          helper.make_node("Abs", [p + "_b"], [p + "_abs"]),
                          helper.make_node("ReduceMax", [p + "_abs", "_rnd_last"], [p + "_max"], keepdims=1),
                          helper.make_node("Div", [p + "_max", "_rnd_127"], [p + "_s0"]),
                          helper.make_node("Max", [p + "_s0", "_rnd_tiny"], [p + "_s"]),
                          helper.make_node("Div", [p + "_b", p + "_s"], [p + "_q0"]),
                          helper.make_node("Round", [p + "_q0"], [p + "_q"]),
                          helper.make_node("Mul", [p + "_q", p + "_s"], [p + "_dq"]),
                          helper.make_node("Reshape", [p + "_dq", p + "_shape"], [y])]
            node.input[0] = y
            changed += 1
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(consts)
    onnx.save_model(model, str(dst))
    return changed


def _source_name(quantized_name: str) -> str:
    for suffix in ("_Q4G", "_Q4"):
        if quantized_name.endswith(suffix):
            return quantized_name[: -len(suffix)]
    return quantized_name


# ---------------------------------------------------------------- parity


# INT4 is checked twice against the FP32 graph run on its own dequantized weights:
# - the weights: the model with every MatMulNBits set to accuracy_level 1 (fp32 compute) must
#   match to float rounding (3e-6 x logit std measured on the tiny checkpoints). This pins the
#   packed weights and our reading of them; a wrong packing moves logits by O(1) x std.
# - the shipped kernels at the chosen accuracy level: against the same reference, with the
#   tolerance derived as for unquantized exports (parity.compare_to_reference): the reference
#   once more with the level's activation rounding emulated (with_activation_rounding) says how
#   far rounding alone moves this checkpoint's logits (int8 at level 4: 0.03 x std on tiny
#   checkpoints at initializer_range 0.02, about 1 x std at 0.5, where a deep stack of large
#   weights amplifies every rounding). Level 1 must match to float rounding; level 0 lets the
#   provider choose, so only a gross bound applies.
INT4_WEIGHTS_REL_TOL = 0.002
INT4_LEVEL0_REL_TOL = 0.5


def onnx_logits(model_path: Path, ids: list[int], threads: int | None = None) -> np.ndarray:
    from edgekit.runners.onnxruntime import OrtRunner

    with OrtRunner(model_path.parent, threads=threads or 1, model_file=model_path.name) as runner:
        return runner.logits(np.asarray(ids, dtype=np.int64))


def with_accuracy_level(src: Path, dst: Path, level: int) -> None:
    """A copy of an INT4 model with every MatMulNBits at `level` (same weights)."""
    import onnx

    model = onnx.load(str(src))
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for attr in node.attribute:
                if attr.name == "accuracy_level":
                    attr.i = level
                    break
            else:
                node.attribute.append(onnx.helper.make_attribute("accuracy_level", level))
    save_model(model, dst)


def verify_int4(final: Path, fp32: Path, work: Path, ref: np.ndarray, got: np.ndarray, ids: list[int],
                threads: int | None, accuracy_level: int, block_size: int) -> dict:
    """FP32 graph vs transformers, INT4 weights and kernels vs the dequantized reference, KL vs FP32."""
    from edgekit import parity

    base = onnx_logits(fp32, ids, threads)
    qdq_path = work / "reference.onnx"
    weights = build_dequantized_reference(final, qdq_path, fp32)
    qdq = onnx_logits(qdq_path, ids, threads)
    if accuracy_level == 1:
        exact = got
    else:
        with_accuracy_level(final, work / "fp32-compute.onnx", 1)
        exact = onnx_logits(work / "fp32-compute.onnx", ids, threads)
    mode = ACTIVATION_ROUNDING.get(accuracy_level)
    if mode:
        with_activation_rounding(qdq_path, work / "reference-rounded.onnx", mode, block_size)
        kernels = parity.compare_to_reference(qdq, got, emulated=onnx_logits(work / "reference-rounded.onnx", ids,
                                                                             threads))
    else:
        kernels = parity.compare_to_reference(qdq, got, INT4_WEIGHTS_REL_TOL if accuracy_level == 1
                                              else INT4_LEVEL0_REL_TOL)
    tol = kernels["rel_tol"]
    # top-1 is not asked of the kernels: with int8 activations near-ties flip on random weights
    kernels["passed"] = bool(np.isfinite(got).all() and kernels["rel_p999_diff"] <= tol)
    info = {"weights_vs_fp32": weights,
            "weights_vs_dequantized": parity.compare_to_reference(qdq, exact, INT4_WEIGHTS_REL_TOL),
            "vs_dequantized": {**kernels, "accuracy_level": accuracy_level},
            "vs_fp32": {**parity.compare_quantized(base, got), "vs": "F32"},
            "fp32_vs_transformers": parity.compare_to_reference(ref, base, parity.FLOOR_REL)}
    bad = [k for k in ("fp32_vs_transformers", "weights_vs_fp32", "weights_vs_dequantized", "vs_dequantized")
           if not info[k]["passed"]]
    if not info["vs_fp32"]["finite"]:
        bad.append("non-finite logits")
    if bad:
        w, k, f = info["weights_vs_dequantized"], info["vs_dequantized"], info["fp32_vs_transformers"]
        raise EdgekitError(
            f"INT4 ONNX check failed ({', '.join(bad)}): INT4 weights within {weights['max_error_steps']:.3g} "
            f"quantization steps of FP32 (bound {weights['bound_steps']}, {weights['compared_to_fp32']} of "
            f"{weights['weights']} compared); 99.9th pct |logit diff| / logit std: FP32 graph vs "
            f"transformers {f['rel_p999_diff']:.3g} (tolerance {f['rel_tol']}), INT4 weights vs dequantized "
            f"reference {w['rel_p999_diff']:.3g} (tolerance {INT4_WEIGHTS_REL_TOL}), INT4 at accuracy level "
            f"{accuracy_level} {k['rel_p999_diff']:.3g} (tolerance {tol:.3g}"
            + (f" = {k['rule']}, where {k['precision_rel_p999']:.3g} is what the level's rounding alone does"
               if "rule" in k else "") + ")",
            "nothing was written; please report this checkpoint, or pass --no-verify")
    return info


# ---------------------------------------------------------------- the export


def export_onnx(checkpoint: str, out_dir: Path, precision: str = "int4", int4: Int4Options | None = None,
                verify: bool | None = None, threads: int | None = None, force: bool = False,
                memory_check: bool = True, logits: str = "last", fuse: bool = False,
                progress: Progress | None = None):
    """Export CHECKPOINT to an ONNX folder at `out_dir`; returns the ExportManifest."""
    from edgekit import parity
    from edgekit.architectures import head_dim, n_kv_heads
    from edgekit.atomic import atomic_dir, check_output_dir
    from edgekit.checkpoint import open_checkpoint
    from edgekit.checkpoint import model_basename
    from edgekit.hf_schema import check_tokenizer_fits, read_tokenizer_json
    from edgekit.manifest import ArtifactFile, ExportManifest, SourceInfo, sha256_of, tool_versions, verify_decision
    from edgekit.targets.host import host_facts

    t_start = time.perf_counter()
    precision = precision.lower()
    if precision not in PRECISIONS:
        raise EdgekitError(f"unknown precision '{precision}'", f"choose from: {', '.join(PRECISIONS)}")
    int4 = int4 or Int4Options()
    int4.check()
    if logits not in LOGITS_MODES:
        raise EdgekitError(f"unknown logits mode '{logits}'", "choose last (default) or all")
    out_dir = Path(out_dir)
    check_output_dir(out_dir, force)
    ckpt = open_checkpoint(checkpoint)
    check_output_dir(out_dir, force, inputs=(ckpt.path,))
    # no tokenizer, or one that does not fit the model: no runnable export; say so before minutes of work
    check_tokenizer_fits(read_tokenizer_json(ckpt.path), int(ckpt.config["vocab_size"]))
    if memory_check:
        check_memory(ckpt.n_params, precision)
    verify, verify_skipped = verify_decision(verify, ckpt.n_params)
    threads = threads or os.cpu_count() or 1
    name = model_basename(ckpt)
    step = {"n": 0}
    steps = 2 + (precision == "int4") + bool(verify) + bool(fuse)

    def tick(label: str) -> None:
        step["n"] += 1
        if progress:
            progress(f"onnx {precision}: {label}", step["n"], steps)

    with atomic_dir(out_dir, force=force, inputs=(ckpt.path,)) as tmp:
        work = tmp / ".export"
        t0 = time.perf_counter()
        tick("torch export")
        exported = torch_export(ckpt.path, work, fp16=precision == "fp16")
        grouped = group_attention(exported, int(ckpt.config["num_attention_heads"]), n_kv_heads(ckpt.config),
                                  head_dim(ckpt.config))
        for f in TOKENIZER_FILES:
            if (work / f).is_file():
                shutil.move(str(work / f), str(tmp / f))
        final = tmp / MODEL_FILE
        verify_info = None
        ids = ref = None
        if verify:
            ids = parity.probe_ids(ckpt.path)
            ref, emulated = parity.reference_logits(ckpt.path, ids, threads,
                                                    precision="onnx-fp16" if precision == "fp16" else None)
        if precision == "int4":
            tick("INT4 quantization")
            quantize_int4(exported, final, int4)
        else:
            _move_model(exported, final)
        if fuse:
            tick("fusing for ONNX Runtime")
        fused = fuse_for_onnxruntime(final) if fuse else {}
        check_onnx_complete(final)
        seconds = time.perf_counter() - t0
        if verify:
            tick("parity check")
            got = onnx_logits(final, ids, threads)
            if precision == "int4":
                verify_info = verify_int4(final, exported, work, ref, got, ids, threads, int4.accuracy_level,
                                          int4.block_size)
            else:
                verify_info = parity.compare_to_reference(
                    ref, got, parity.FLOOR_REL if precision == "fp32" else None, emulated=emulated)
                if not verify_info["passed"]:
                    raise EdgekitError(parity.disagreement(f"{precision.upper()} ONNX", verify_info),
                                       "nothing was written; please report this checkpoint, or pass --no-verify")
        if logits == "last":
            slice_logits_to_last(final)
            if verify:  # the sliced graph's only row is the full graph's last row
                last = onnx_logits(final, ids, threads)
                if last.shape[0] != 1 or not np.allclose(last[0], got[-1], rtol=1e-4, atol=1e-4 * float(np.std(got))):
                    raise EdgekitError("the last-position logits graph disagrees with the full graph",
                                       "nothing was written; export with --logits all and please report this")
            check_onnx_complete(final)
        shutil.rmtree(work)
        tick("genai_config.json")
        generation = _read_json(tmp / "generation_config.json")
        (tmp / "genai_config.json").write_text(
            json.dumps(genai_config(ckpt.config, ckpt.arch.model_type, MODEL_FILE, generation), indent=2) + "\n",
            encoding="utf-8")
        files = [ArtifactFile(file=MODEL_FILE, format="onnx", quant=QUANT_NAME[precision],
                              size_bytes=final.stat().st_size, sha256=sha256_of(final), seconds=round(seconds, 3),
                              verify=verify_info,
                              options={"logits": logits, "fused": fused, "grouped_attention_layers": grouped,
                                       **(asdict(int4) if precision == "int4" else {})})]
        data = tmp / DATA_FILE
        if data.exists():
            files.append(ArtifactFile(file=DATA_FILE, format="onnx", quant=QUANT_NAME[precision],
                                      size_bytes=data.stat().st_size, sha256=sha256_of(data), seconds=0.0))
        cfg = ckpt.config
        manifest = ExportManifest(
            format="onnx",
            source=SourceInfo(spec=checkpoint, path=str(ckpt.path), hub_id=ckpt.hub_id, dtype=ckpt.source_dtype),
            architecture=ckpt.arch.hf_class, n_params=ckpt.n_params, vocab_size=int(cfg["vocab_size"]),
            context_length=int(cfg["max_position_embeddings"]), tokenizer={"files": sorted(
                f for f in TOKENIZER_FILES if (tmp / f).is_file())},
            files=files, verified=verify, verify_skipped=verify_skipped, tools=tool_versions(), host=host_facts(),
            total_s=round(time.perf_counter() - t_start, 3),
            name=name, opset=OPSET)
        manifest.write(tmp)
    return manifest


def _move_model(src: Path, dst: Path) -> None:
    """The exported model and its external data file (optimum's `model.onnx_data`), if any."""
    shutil.move(str(src), str(dst))
    data = src.parent / (src.name + "_data")
    if data.exists():
        shutil.move(str(data), str(dst.parent / (dst.name + "_data")))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
